//! The 1:1 half of the [`Engine`] API, in the shape of ntgcalls' P2P methods
//! (`createP2PCall`, `initExchange`, `exchangeKeys`, `skipExchange`, `connectP2P`,
//! `sendSignalingData`, `onSignalingData`).
//!
//! A 1:1 call is keyed by the peer's user id, in the same id space as group calls' chat ids
//! (as in ntgcalls): [`EngineEvent::chat_id`](super::EngineEvent) is that user id for a 1:1
//! call's events, and `set_stream_sources`, `pause`, `resume`, `mute`, `unmute` and `stop`
//! take it like a chat id.
//!
//! Sequence (telegram-signaling.md §4.2), the application moving the values through the
//! messenger:
//!
//! | caller (A)                                   | callee (B)                                   |
//! |----------------------------------------------|----------------------------------------------|
//! | `create_p2p_call(b)`                         |                                              |
//! | `init_exchange(b, dh, None)` → `g_a_hash`    | `create_p2p_call(a)`                         |
//! |                                              | `init_exchange(a, dh, Some(g_a_hash))` → `g_b` |
//! | `exchange_keys(b, g_b, 0)` → `{fp, g_a}`     |                                              |
//! |                                              | `exchange_keys(a, g_a, fp)` → `{fp, g_a}`    |
//! | `connect_p2p(b, ..)`                         | `connect_p2p(a, ..)`                         |
//! | [`EventKind::SignalingData`] ⇄ `send_signaling_data` (both ways, until connected) |  |
//!
//! The Diffie-Hellman work (a few 2048-bit exponentiations) runs on the calling thread, not on
//! a shard, so it never delays the pacer. The call moves to a shard at `connect_p2p`; until
//! then its source and pause/mute settings are kept here and applied when it starts.
//!
//! The exchange itself (its states and checks) is engine-core's
//! [`KeyExchange`](ringcast_core::signaling::p2p::KeyExchange); this module keeps it per call
//! behind a mutex and maps its errors to [`EngineError`].
//!
//! **Randomness.** The DH secrets come from a hash DRBG (SHA-256 in counter mode over a 32-byte
//! secret, engine-core's [`DhRng`]) owned by the engine: the secret is drawn from the OS, or derived from
//! [`EngineBuilder::seed`](super::EngineBuilder::seed) when one is set (reproducible runs and
//! tests; a seeded engine's DH secrets are as guessable as its seed). The server's `random` is
//! XORed in as the spec requires.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;

use ringcast_core::endpoint::P2pSnapshot;
use ringcast_core::media::ToneSource;
use ringcast_core::p2p_call::{self, MAX_STUN_SERVERS, MAX_TURN_SERVERS, P2pConfig};
use ringcast_core::signaling::p2p::dh::DH_BYTES;
pub use ringcast_core::signaling::p2p::exchange::AuthParams;
use ringcast_core::signaling::p2p::{
    DhConfig, DhParams, DhRng, ExchangeError, Framing, KeyExchange, Role, select_version,
};
use ringcast_core::turn::TurnServer;
use ringcast_core::{FrameSource, OpusFrame, SourceError};

use super::Engine;
use crate::error::EngineError;
use crate::shard::Request;
use crate::source::StreamSource;

/// A `phoneConnectionWebrtc` entry (ntgcalls `RTCServer`) for [`Engine::connect_p2p`]. Entries
/// with `stun` over UDP are used as STUN servers (server-reflexive candidates), entries with
/// `turn` over UDP and a user name and password as TURN servers (relay candidates, long-term
/// credentials; [`ringcast_core::turn`]), IPv4 address preferred. TURN over TCP/TLS and
/// Telegram reflectors (`peer_tag`) are not implemented.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtcServer {
    /// Server id.
    pub id: i64,
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// UDP/TCP port.
    pub port: u16,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN password.
    pub password: Option<String>,
    /// Usable as TURN.
    pub turn: bool,
    /// Usable as STUN.
    pub stun: bool,
    /// TCP rather than UDP.
    pub tcp: bool,
    /// Telegram reflector tag (`phoneConnection`); reflectors are not supported.
    pub peer_tag: Option<Vec<u8>>,
}

/// The key of a 1:1 call as both users compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2pKeyInfo {
    /// Which end this engine is.
    pub role: Role,
    /// `key_fingerprint`.
    pub key_fingerprint: i64,
    /// The four verification emojis (`SHA256(key || g_a)`, telegram-signaling.md §4.5). After
    /// [`Engine::skip_exchange`] `g_a` is unknown and these are computed over the key alone,
    /// so they will not match what a Telegram client shows.
    pub emoji: [&'static str; 4],
}

/// A 1:1 call's state, media state and counters, as [`Engine::p2p_call_info`] returns them.
pub type P2pCallInfo = P2pSnapshot;

/// Signaling packets kept for a call that is not on a shard yet.
const MAX_EARLY_SIGNALING: usize = 32;

/// The engine-side part of a 1:1 call.
struct Setup {
    exchange: KeyExchange,
    source: Option<Box<dyn FrameSource>>,
    muted: bool,
    paused: bool,
    /// Signaling that arrived before `connect_p2p` (the messenger can be faster than the
    /// callee's application), delivered when the call starts.
    early_signaling: Vec<Vec<u8>>,
}

/// The DH secrets' generator: seeded from `seed` when the engine has one, else from the OS
/// (engine-core takes no OS randomness itself).
fn dh_rng(seed: Option<u64>) -> Result<DhRng, EngineError> {
    match seed {
        Some(seed) => Ok(DhRng::from_seed(seed)),
        None => {
            let mut secret = [0u8; 32];
            aws_lc_rs::rand::fill(&mut secret)
                .map_err(|_| EngineError::Randomness("os random generator failed"))?;
            Ok(DhRng::from_secret(secret))
        }
    }
}

/// The engine error for a key-exchange step `step` of the call with `user_id` that was refused.
fn exchange_error(user_id: i64, step: &'static str) -> impl FnOnce(ExchangeError) -> EngineError {
    move |e| match e {
        ExchangeError::OutOfOrder { state } => EngineError::OutOfOrder {
            user_id,
            step,
            state,
        },
        ExchangeError::Check(e) => EngineError::KeyExchange(e),
    }
}

/// 1:1 state kept by the engine (not by a shard).
pub(super) struct P2pSetups {
    setups: Mutex<HashMap<i64, Arc<Mutex<Setup>>>>,
    /// The last validated `(g, p)`: validation of a non-Telegram prime costs 64 Miller-Rabin
    /// rounds, and the server's answer rarely changes (the spec's cache by `version`).
    params: Mutex<Option<(i32, Vec<u8>, DhParams)>>,
    rng: Mutex<DhRng>,
    /// Bitrate knobs of the tone sources playing on calls (group and 1:1), by id.
    bitrates: Mutex<HashMap<i64, Arc<AtomicI32>>>,
}

impl std::fmt::Debug for P2pSetups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pSetups").finish_non_exhaustive()
    }
}

impl P2pSetups {
    pub(super) fn new(seed: Option<u64>) -> Result<Self, EngineError> {
        Ok(Self {
            setups: Mutex::new(HashMap::new()),
            params: Mutex::new(None),
            rng: Mutex::new(dh_rng(seed)?),
            bitrates: Mutex::new(HashMap::new()),
        })
    }

    fn get(&self, user_id: i64) -> Result<Arc<Mutex<Setup>>, EngineError> {
        lock(&self.setups)
            .get(&user_id)
            .cloned()
            .ok_or(EngineError::ConnectionNotFound(user_id))
    }

    /// The setup of a 1:1 call that is not on a shard yet.
    fn pending(&self, user_id: i64) -> Option<Arc<Mutex<Setup>>> {
        let setup = lock(&self.setups).get(&user_id).cloned()?;
        let on_shard = lock(&setup).exchange.is_connected();
        (!on_shard).then_some(setup)
    }

    /// Runs `f` on the setup of a 1:1 call that is not on a shard yet, deciding that under the
    /// setup's lock (`connect_p2p` holds it while it moves the call, so whatever `f` stores is
    /// either taken along or `f` does not run).
    fn with_pending<R>(&self, user_id: i64, f: impl FnOnce(&mut Setup) -> R) -> Option<R> {
        let setup = lock(&self.setups).get(&user_id).cloned()?;
        let mut setup = lock(&setup);
        if setup.exchange.is_connected() {
            return None;
        }
        Some(f(&mut setup))
    }

    fn params(&self, dh: &DhConfig) -> Result<DhParams, EngineError> {
        if let Some((g, p, params)) = lock(&self.params).as_ref()
            && *g == dh.g
            && *p == dh.p
        {
            return Ok(params.clone());
        }
        let seed = lock(&self.rng).next_u64();
        let params = dh.validate(seed)?;
        *lock(&self.params) = Some((dh.g, dh.p.clone(), params.clone()));
        Ok(params)
    }
}

/// A tone whose Opus bitrate can be changed while it plays ([`Engine::set_bitrate`]).
struct ControlledTone {
    tone: ToneSource,
    requested: Arc<AtomicI32>,
    applied: i32,
}

impl FrameSource for ControlledTone {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        let want = self.requested.load(Ordering::Relaxed);
        if want != self.applied {
            // The value was range-checked by `set_bitrate`; libopus accepts it.
            self.tone.set_bitrate(want)?;
            self.applied = want;
        }
        self.tone.next_frame()
    }
}

/// Bitrate a tone starts with (ToneSource's default).
const TONE_BITRATE: i32 = 32_000;

impl Engine {
    /// Opens a source on the API thread. Tones get a bitrate knob registered under `id`;
    /// any other source removes the knob (its bitrate is fixed).
    pub(super) fn open_source(
        &self,
        id: i64,
        source: StreamSource,
    ) -> Result<Box<dyn FrameSource>, EngineError> {
        if let StreamSource::Tone { frequency_hz } = source {
            let requested = Arc::new(AtomicI32::new(TONE_BITRATE));
            let tone = ControlledTone {
                tone: ToneSource::new(frequency_hz, None)?,
                requested: requested.clone(),
                applied: TONE_BITRATE,
            };
            lock(&self.p2p.bitrates).insert(id, requested);
            return Ok(Box::new(tone));
        }
        lock(&self.p2p.bitrates).remove(&id);
        Ok(source.open(&self.media)?)
    }

    /// Changes the Opus bitrate of what call `chat_id` (group or 1:1) plays, from the next
    /// frame on. Only [`StreamSource::Tone`] re-encodes; other sources send fixed packets.
    ///
    /// # Errors
    /// [`EngineError::InvalidBitrate`] outside 6000..=510000;
    /// [`EngineError::ConnectionNotFound`]; [`EngineError::BitrateUnsupported`] if the call
    /// plays no tone.
    pub fn set_bitrate(&self, chat_id: i64, bits_per_second: i32) -> Result<(), EngineError> {
        if !(6_000..=510_000).contains(&bits_per_second) {
            return Err(EngineError::InvalidBitrate(bits_per_second));
        }
        if self.p2p.pending(chat_id).is_none() && !self.exists(chat_id)? {
            return Err(EngineError::ConnectionNotFound(chat_id));
        }
        let knob = lock(&self.p2p.bitrates).get(&chat_id).cloned();
        let knob = knob.ok_or(EngineError::BitrateUnsupported(chat_id))?;
        knob.store(bits_per_second, Ordering::Relaxed);
        Ok(())
    }

    /// True if a shard has a live group or 1:1 call with this id.
    fn exists(&self, chat_id: i64) -> Result<bool, EngineError> {
        self.request(self.shard_of(chat_id), |reply| Request::Exists {
            chat_id,
            reply,
        })
    }

    /// Creates a 1:1 call with the user `user_id` (ntgcalls `createP2PCall`). Nothing is sent
    /// until [`Engine::connect_p2p`].
    ///
    /// # Errors
    /// [`EngineError::ConnectionExists`] if a group or 1:1 call with this id is live.
    pub fn create_p2p_call(&self, user_id: i64) -> Result<(), EngineError> {
        if self.exists(user_id)? {
            return Err(EngineError::ConnectionExists(user_id));
        }
        let mut setups = lock(&self.p2p.setups);
        if let Some(old) = setups.get(&user_id) {
            // A call that went to a shard and has ended since can be replaced; any other is
            // live (still setting up).
            if !lock(old).exchange.is_connected() {
                return Err(EngineError::ConnectionExists(user_id));
            }
        }
        setups.insert(
            user_id,
            Arc::new(Mutex::new(Setup {
                exchange: KeyExchange::new(),
                source: None,
                muted: false,
                paused: false,
                early_signaling: Vec::new(),
            })),
        );
        Ok(())
    }

    /// First DH step (ntgcalls `initExchange`). The caller passes `g_a_hash = None` and gets
    /// `SHA256(g_a)` for `phone.requestCall`; the callee passes the caller's `g_a_hash` from
    /// `phoneCallRequested` and gets `g_b` for `phone.acceptCall`. `dh_config` is
    /// `messages.getDhConfig`'s answer; `p` and `g` are validated (safe 2048-bit prime,
    /// generator residue conditions), the last validated pair cached.
    ///
    /// # Errors
    /// [`EngineError::KeyExchange`] with the failed check; [`EngineError::OutOfOrder`] unless
    /// the call was just created.
    pub fn init_exchange(
        &self,
        user_id: i64,
        dh_config: &DhConfig,
        g_a_hash: Option<&[u8]>,
    ) -> Result<Vec<u8>, EngineError> {
        let setup = self.p2p.get(user_id)?;
        let mut setup = lock(&setup);
        // Checked before validating `dh_config`, so an out-of-order call costs nothing.
        setup
            .exchange
            .check_init()
            .map_err(exchange_error(user_id, "init_exchange"))?;
        let params = self.p2p.params(dh_config)?;
        setup
            .exchange
            .init(&params, &dh_config.random, g_a_hash, || {
                lock(&self.p2p.rng).next_bytes()
            })
            .map_err(exchange_error(user_id, "init_exchange"))
    }

    /// Second DH step (ntgcalls `exchangeKeys`). The caller passes the callee's `g_b` (from
    /// `phoneCallAccepted`; `fingerprint` is ignored) and gets the key fingerprint and `g_a`
    /// for `phone.confirmCall`. The callee passes `g_a` and `key_fingerprint` from `phoneCall`;
    /// `g_a` is checked against the `g_a_hash` given to [`Engine::init_exchange`] and the
    /// fingerprint against the key.
    ///
    /// # Errors
    /// [`EngineError::KeyExchange`] with the failed check (after which the call must be
    /// stopped); [`EngineError::OutOfOrder`] unless `init_exchange` came first.
    pub fn exchange_keys(
        &self,
        user_id: i64,
        g_a_or_b: &[u8],
        fingerprint: i64,
    ) -> Result<AuthParams, EngineError> {
        let setup = self.p2p.get(user_id)?;
        let mut setup = lock(&setup);
        setup
            .exchange
            .complete(g_a_or_b, fingerprint)
            .map_err(exchange_error(user_id, "exchange_keys"))
    }

    /// Uses a key agreed elsewhere instead of the DH steps (ntgcalls `skipExchange`);
    /// `is_outgoing` is true on the caller's side.
    ///
    /// # Errors
    /// [`EngineError::InvalidKeyLength`]; [`EngineError::OutOfOrder`] unless the call was just
    /// created.
    pub fn skip_exchange(
        &self,
        user_id: i64,
        key: &[u8],
        is_outgoing: bool,
    ) -> Result<(), EngineError> {
        let bytes = <[u8; DH_BYTES]>::try_from(key)
            .map_err(|_| EngineError::InvalidKeyLength { len: key.len() })?;
        let setup = self.p2p.get(user_id)?;
        let mut setup = lock(&setup);
        let role = if is_outgoing {
            Role::Caller
        } else {
            Role::Callee
        };
        setup
            .exchange
            .skip(bytes, role)
            .map_err(exchange_error(user_id, "skip_exchange"))
    }

    /// The call's key fingerprint and verification emojis, once the key is known.
    ///
    /// # Errors
    /// [`EngineError::ConnectionNotFound`]; [`EngineError::OutOfOrder`] before the key exists.
    pub fn p2p_key(&self, user_id: i64) -> Result<P2pKeyInfo, EngineError> {
        let setup = self.p2p.get(user_id)?;
        let setup = lock(&setup);
        let (key, role) = setup
            .exchange
            .key()
            .map_err(exchange_error(user_id, "p2p_key"))?;
        Ok(P2pKeyInfo {
            role,
            key_fingerprint: key.fingerprint(),
            emoji: key.emoji(),
        })
    }

    /// Starts the call (ntgcalls `connectP2P`): binds its own UDP socket on the shard that owns
    /// `user_id`, and from then on the call emits [`EventKind::SignalingData`] for the
    /// messenger and takes the peer's with [`Engine::send_signaling_data`]. `versions` is
    /// `phoneCall.protocol.library_versions`; the highest one implemented, in any order (as
    /// ntgcalls picks it: [`select_version`]), picks the signaling framing ("13.0.0"/"12.0.0"
    /// SCTP-carried "signaling V3", "9.0.0"/"8.0.0" reliable, "7.0.0" raw). The UDP STUN servers among `rtc_servers`
    /// (at most [`MAX_STUN_SERVERS`]) add server-reflexive candidates, the UDP TURN servers with
    /// credentials (at most [`MAX_TURN_SERVERS`]) relay candidates; Telegram reflectors are not
    /// used (see [`RtcServer`]). With `p2p_allowed = false` the call is relay only: it uses and
    /// signals only its relay candidates, so the peer never learns its address. The outcome
    /// arrives as
    /// [`EventKind::P2pConnectionChanged`].
    ///
    /// [`EventKind::SignalingData`]: super::EventKind::SignalingData
    /// [`EventKind::P2pConnectionChanged`]: super::EventKind::P2pConnectionChanged
    ///
    /// # Errors
    /// [`EngineError::OutOfOrder`] before the key exists; [`EngineError::NoCommonVersion`];
    /// [`EngineError::RelayOnlyUnsupported`] when `p2p_allowed` is false and `rtc_servers` has
    /// no usable TURN server; socket errors.
    pub fn connect_p2p(
        &self,
        user_id: i64,
        rtc_servers: &[RtcServer],
        versions: &[String],
        p2p_allowed: bool,
    ) -> Result<(), EngineError> {
        let setup = self.p2p.get(user_id)?;
        let mut setup = lock(&setup);
        let (key, role) = setup
            .exchange
            .key_to_connect()
            .map_err(exchange_error(user_id, "connect_p2p"))?;
        let (key, role) = (key.clone(), role);
        let turn_servers = turn_servers(rtc_servers);
        if !p2p_allowed && turn_servers.is_empty() {
            return Err(EngineError::RelayOnlyUnsupported);
        }
        let framing = select_version(versions)
            .and_then(Framing::for_version)
            .ok_or_else(|| EngineError::NoCommonVersion {
                offered: versions.to_vec(),
            })?;
        let stun_servers = stun_servers(rtc_servers);
        if stun_servers.len() + turn_servers.len() < rtc_servers.len() {
            tracing::debug!(
                user_id,
                servers = rtc_servers.len(),
                stun = stun_servers.len(),
                turn = turn_servers.len(),
                "TCP servers and reflectors are not used; UDP STUN and TURN servers are"
            );
        }
        let seed = self.next_call_seed();
        let placeholder = SocketAddr::from(([127, 0, 0, 1], 0)); // the shard binds the socket
        let mut config = P2pConfig::new(role, key, seed, self.certs.take()?, placeholder);
        config.framing = framing;
        config.crypto = Some(self.crypto.clone());
        config.connect_timeout = self.connect_timeout;
        config.stun_servers = stun_servers;
        config.turn_servers = turn_servers;
        config.relay_only = !p2p_allowed;
        let mut commands = Vec::new();
        if let Some(source) = setup.source.take() {
            commands.push(p2p_call::Command::SetSource(source));
        }
        if setup.muted {
            commands.push(p2p_call::Command::Mute);
        }
        if setup.paused {
            commands.push(p2p_call::Command::Pause);
        }
        self.request(self.shard_of(user_id), |reply| Request::CreateP2p {
            user_id,
            config: Box::new(config),
            commands,
            reply,
        })??;
        setup
            .exchange
            .set_connected()
            .map_err(exchange_error(user_id, "connect_p2p"))?;
        for bytes in std::mem::take(&mut setup.early_signaling) {
            // Rejections are counted by the call; the application sees them as it would have.
            let _ = self.request(self.shard_of(user_id), |reply| Request::P2pSignaling {
                user_id,
                bytes,
                reply,
            })?;
        }
        Ok(())
    }

    /// Signaling bytes from the messenger (`updatePhoneCallSignalingData.data`) for the call
    /// with `user_id` (ntgcalls `sendSignalingData`). Before [`Engine::connect_p2p`] up to 32
    /// packets are kept and delivered when the call starts.
    ///
    /// # Errors
    /// [`EngineError::P2pCall`] when the call rejects the packet (tampered, truncated,
    /// replayed, wrong key: counted in [`P2pCallInfo::channel`], the call goes on);
    /// [`EngineError::ConnectionNotFound`].
    pub fn send_signaling_data(&self, user_id: i64, bytes: &[u8]) -> Result<(), EngineError> {
        let kept = self.p2p.with_pending(user_id, |setup| {
            if setup.early_signaling.len() >= MAX_EARLY_SIGNALING {
                return Err(EngineError::QueueFull);
            }
            setup.early_signaling.push(bytes.to_vec());
            Ok(())
        });
        if let Some(result) = kept {
            return result;
        }
        self.request(self.shard_of(user_id), |reply| Request::P2pSignaling {
            user_id,
            bytes: bytes.to_vec(),
            reply,
        })?
    }

    /// One live 1:1 call's state and counters (bytes, packets, RTT, loss, signaling).
    ///
    /// # Errors
    /// [`EngineError::ConnectionNotFound`] if it is not on a shard (not connected yet, or
    /// ended).
    pub fn p2p_call_info(&self, user_id: i64) -> Result<P2pCallInfo, EngineError> {
        self.request(self.shard_of(user_id), |reply| Request::P2pInfo {
            user_id,
            reply,
        })?
        .ok_or(EngineError::ConnectionNotFound(user_id))
    }

    /// Every live 1:1 call on a shard.
    ///
    /// # Errors
    /// A shard that does not answer.
    pub fn p2p_calls(&self) -> Result<Vec<P2pCallInfo>, EngineError> {
        let mut all = Vec::new();
        for shard in 0..self.shards.len() {
            all.extend(self.request(shard, |reply| Request::P2pList { reply })?);
        }
        Ok(all)
    }

    /// For a 1:1 call still setting up: stores the source / flag and returns true. False if
    /// `id` is not such a call (then it goes to the shard).
    pub(super) fn p2p_pending_command(
        &self,
        id: i64,
        command: &mut Option<ringcast_core::Command>,
    ) -> bool {
        let mut stop = false;
        let handled = self.p2p.with_pending(id, |setup| {
            match command.take() {
                Some(ringcast_core::Command::SetSource(s)) => setup.source = Some(s),
                Some(ringcast_core::Command::Pause) => setup.paused = true,
                Some(ringcast_core::Command::Resume) => setup.paused = false,
                Some(ringcast_core::Command::Mute) => setup.muted = true,
                Some(ringcast_core::Command::Unmute) => setup.muted = false,
                Some(ringcast_core::Command::Stop) => stop = true,
                // A command this code does not know yet: the shard decides.
                Some(other) => {
                    *command = Some(other);
                    return false;
                }
                None => {}
            }
            true
        });
        if stop {
            self.p2p_forget(id);
        }
        handled.unwrap_or(false)
    }

    /// Forgets engine-side state of a call that is stopped on its shard.
    pub(super) fn p2p_forget(&self, id: i64) {
        lock(&self.p2p.setups).remove(&id);
        lock(&self.p2p.bitrates).remove(&id);
    }
}

/// The UDP STUN servers among `rtc_servers`, IPv4 address preferred, at most
/// [`MAX_STUN_SERVERS`] (the rest are left out, in order).
fn stun_servers(rtc_servers: &[RtcServer]) -> Vec<SocketAddr> {
    rtc_servers
        .iter()
        .filter(|s| s.stun && !s.tcp && s.port != 0)
        .filter_map(|s| {
            s.ipv4
                .map(IpAddr::V4)
                .or(s.ipv6.map(IpAddr::V6))
                .map(|ip| SocketAddr::new(ip, s.port))
        })
        .take(MAX_STUN_SERVERS)
        .collect()
}

/// The UDP TURN servers with a user name and password among `rtc_servers`, IPv4 address
/// preferred, at most [`MAX_TURN_SERVERS`] (the rest are left out, in order).
fn turn_servers(rtc_servers: &[RtcServer]) -> Vec<TurnServer> {
    rtc_servers
        .iter()
        .filter(|s| s.turn && !s.tcp && s.port != 0)
        .filter_map(|s| {
            let ip = s.ipv4.map(IpAddr::V4).or(s.ipv6.map(IpAddr::V6))?;
            Some(TurnServer {
                addr: SocketAddr::new(ip, s.port),
                username: s.username.clone()?,
                password: s.password.clone()?,
            })
        })
        .take(MAX_TURN_SERVERS)
        .collect()
}
