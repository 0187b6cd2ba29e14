//! The key-exchange state of one 1:1 call, from creation to the agreed key (telegram-signaling.md
//! §4.2), without I/O, threads or a clock.
//!
//! [`KeyExchange`] strings the [`dh`](super::dh) steps together in the order the messenger moves
//! their values, and refuses every step out of that order with [`ExchangeError::OutOfOrder`]
//! naming where it is:
//!
//! | caller                                 | callee                                          |
//! |----------------------------------------|-------------------------------------------------|
//! | [`KeyExchange::init`] (no hash) → `g_a_hash` |                                           |
//! |                                        | [`KeyExchange::init`] (`g_a_hash`) → `g_b`      |
//! | [`KeyExchange::complete`] (`g_b`) → fingerprint, `g_a` |                                 |
//! |                                        | [`KeyExchange::complete`] (`g_a`, fingerprint)  |
//!
//! or [`KeyExchange::skip`] with a key agreed elsewhere; then [`KeyExchange::key`] gives the
//! [`CallKey`] and [`KeyExchange::set_connected`] records that the call was started with it.
//!
//! **Randomness** comes in as an argument: [`KeyExchange::init`] draws its 256-byte secrets from
//! a closure, which the runtime backs with a [`DhRng`] (a hash DRBG over a 32-byte secret the
//! runtime draws from the OS, or derives from a seed for reproducible runs).

use std::fmt;

use super::dh::{CallKey, CalleeExchange, CallerExchange, DH_BYTES, DhParams, sha256};
use super::{P2pError, Role};

/// Attempts [`KeyExchange::init`] makes when its own value comes out of range (probability about
/// 2^-63 each), as ntgcalls retries.
const INIT_ATTEMPTS: usize = 4;

/// Hash DRBG for the Diffie-Hellman secrets: SHA-256(secret || counter || block) in counter
/// mode. Its `Debug` output hides the secret.
#[derive(Clone)]
pub struct DhRng {
    secret: [u8; 32],
    counter: u64,
}

impl fmt::Debug for DhRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhRng")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl DhRng {
    /// A generator over `secret`, which must come from a CSPRNG (the OS).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self { secret, counter: 0 }
    }

    /// A reproducible generator whose secret is derived from `seed` (tests, simulation, seeded
    /// engines): its output is as guessable as the seed.
    pub fn from_seed(seed: u64) -> Self {
        Self::from_secret(sha256(&[b"ringcast p2p dh drbg", &seed.to_le_bytes()]))
    }

    /// The next 256 bytes: one DH secret.
    pub fn next_bytes(&mut self) -> [u8; DH_BYTES] {
        self.counter += 1;
        let mut out = [0u8; DH_BYTES];
        for (i, chunk) in out.chunks_mut(32).enumerate() {
            let block = (i as u64).to_le_bytes();
            chunk.copy_from_slice(&sha256(&[
                &self.secret,
                &self.counter.to_le_bytes(),
                &block,
            ]));
        }
        out
    }

    /// The first 8 bytes of [`Self::next_bytes`], little-endian (a Miller-Rabin seed).
    pub fn next_u64(&mut self) -> u64 {
        let bytes = self.next_bytes();
        let mut x = [0u8; 8];
        x.copy_from_slice(&bytes[..8]);
        u64::from_le_bytes(x)
    }
}

/// What [`KeyExchange::complete`] returns (ntgcalls `AuthParams`): the values for
/// `phone.confirmCall` on the caller's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParams {
    /// The key's fingerprint (`key_fingerprint` of `phone.confirmCall` / `phoneCall`).
    pub key_fingerprint: i64,
    /// The caller's `g_a` (both sides return it; the caller sends it with `phone.confirmCall`).
    pub g_a_or_b: Vec<u8>,
}

/// Why a [`KeyExchange`] step was refused. Exhaustive: a step is either out of order or fails
/// a check, and callers map the two to their own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The step does not apply where the exchange is; nothing changed.
    #[error("not possible while the key exchange is {state}")]
    OutOfOrder {
        /// Where the exchange is ([`KeyExchange::state`]).
        state: &'static str,
    },
    /// A check of the exchange failed ([`P2pError`]); after [`KeyExchange::complete`] the
    /// exchange is failed and the call must be discarded.
    #[error(transparent)]
    Check(#[from] P2pError),
}

/// Where a 1:1 call's key exchange is.
#[derive(Debug, Clone)]
enum State {
    Created,
    Caller(Box<CallerExchange>),
    Callee(Box<CalleeExchange>),
    Keyed(CallKey, Role),
    /// The call was started with the key.
    Connected(CallKey, Role),
    /// A check failed; the call must be stopped.
    Failed,
}

/// The key exchange of one 1:1 call; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct KeyExchange {
    state: State,
}

impl Default for KeyExchange {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyExchange {
    /// A new exchange, before either DH step.
    pub fn new() -> Self {
        Self {
            state: State::Created,
        }
    }

    /// Where the exchange is: `"created"`, `"waiting for g_b"`, `"waiting for g_a"`, `"keyed"`,
    /// `"connected"` or `"failed"`.
    pub fn state(&self) -> &'static str {
        match self.state {
            State::Created => "created",
            State::Caller(_) => "waiting for g_b",
            State::Callee(_) => "waiting for g_a",
            State::Keyed(..) => "keyed",
            State::Connected(..) => "connected",
            State::Failed => "failed",
        }
    }

    /// True once [`Self::set_connected`] has run.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected(..))
    }

    /// Whether [`Self::init`] is in order now, to ask before validating its parameters.
    ///
    /// # Errors
    /// [`ExchangeError::OutOfOrder`] unless the exchange was just created.
    pub fn check_init(&self) -> Result<(), ExchangeError> {
        match self.state {
            State::Created => Ok(()),
            _ => Err(self.out_of_order()),
        }
    }

    fn out_of_order(&self) -> ExchangeError {
        ExchangeError::OutOfOrder {
            state: self.state(),
        }
    }

    /// First DH step. The caller passes `g_a_hash = None` and gets `SHA256(g_a)` for
    /// `phone.requestCall`; the callee passes the caller's `g_a_hash` (from
    /// `phoneCallRequested`) and gets `g_b` for `phone.acceptCall`. `server_random` is the
    /// `random` of the `messages.dhConfig` answer `params` were validated from; `own_random`
    /// gives 256 bytes of fresh randomness per call, and is called again (up to 4 times in all)
    /// when an own value comes out of range.
    ///
    /// # Errors
    /// [`ExchangeError::OutOfOrder`] unless the exchange was just created;
    /// [`ExchangeError::Check`] with the failed check. Either way nothing changed.
    pub fn init(
        &mut self,
        params: &DhParams,
        server_random: &[u8],
        g_a_hash: Option<&[u8]>,
        mut own_random: impl FnMut() -> [u8; DH_BYTES],
    ) -> Result<Vec<u8>, ExchangeError> {
        self.check_init()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let own = own_random();
            let result = match g_a_hash {
                None => CallerExchange::new(params, server_random, &own).map(|c| {
                    let hash = c.g_a_hash().to_vec();
                    (State::Caller(Box::new(c)), hash)
                }),
                Some(hash) => CalleeExchange::new(params, hash, server_random, &own).map(|c| {
                    let g_b = c.g_b().to_vec();
                    (State::Callee(Box::new(c)), g_b)
                }),
            };
            match result {
                Ok((state, out)) => {
                    self.state = state;
                    return Ok(out);
                }
                Err(P2pError::OwnValueOutOfRange { .. } | P2pError::SecretOutOfRange)
                    if attempt < INIT_ATTEMPTS => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Second DH step. The caller passes the callee's `g_b` (from `phoneCallAccepted`;
    /// `fingerprint` is ignored) and gets the key fingerprint and `g_a` for
    /// `phone.confirmCall`. The callee passes `g_a` and `key_fingerprint` from `phoneCall`;
    /// `g_a` is checked against the `g_a_hash` given to [`Self::init`] and the fingerprint
    /// against the key.
    ///
    /// # Errors
    /// [`ExchangeError::OutOfOrder`] unless [`Self::init`] came first (nothing changed);
    /// [`ExchangeError::Check`] with the failed check, after which the exchange is failed.
    pub fn complete(
        &mut self,
        g_a_or_b: &[u8],
        fingerprint: i64,
    ) -> Result<AuthParams, ExchangeError> {
        let (key, role, g_a) = match std::mem::replace(&mut self.state, State::Failed) {
            State::Caller(c) => {
                let g_a = c.g_a().to_vec();
                (c.complete(g_a_or_b)?, Role::Caller, g_a)
            }
            State::Callee(c) => (
                c.complete(g_a_or_b, fingerprint)?,
                Role::Callee,
                g_a_or_b.to_vec(),
            ),
            other => {
                self.state = other;
                return Err(self.out_of_order());
            }
        };
        let auth = AuthParams {
            key_fingerprint: key.fingerprint(),
            g_a_or_b: g_a,
        };
        self.state = State::Keyed(key, role);
        Ok(auth)
    }

    /// Uses a key agreed elsewhere instead of the DH steps (ntgcalls `skipExchange`). `g_a` is
    /// unknown then, so the key's emojis are computed over the key alone.
    ///
    /// # Errors
    /// [`ExchangeError::OutOfOrder`] unless the exchange was just created.
    pub fn skip(&mut self, key: [u8; DH_BYTES], role: Role) -> Result<(), ExchangeError> {
        self.check_init()?;
        self.state = State::Keyed(CallKey::from_parts(key, &[]), role);
        Ok(())
    }

    /// The agreed key and this side's role, once the key is known (before or after the call
    /// was connected).
    ///
    /// # Errors
    /// [`ExchangeError::OutOfOrder`] before the key exists.
    pub fn key(&self) -> Result<(&CallKey, Role), ExchangeError> {
        match &self.state {
            State::Keyed(key, role) | State::Connected(key, role) => Ok((key, *role)),
            _ => Err(self.out_of_order()),
        }
    }

    /// The key to start the call with: like [`Self::key`], but only before
    /// [`Self::set_connected`].
    ///
    /// # Errors
    /// [`ExchangeError::OutOfOrder`] before the key exists or once connected.
    pub fn key_to_connect(&self) -> Result<(&CallKey, Role), ExchangeError> {
        match &self.state {
            State::Keyed(key, role) => Ok((key, *role)),
            _ => Err(self.out_of_order()),
        }
    }

    /// Records that the call was started with the key ([`Self::key_to_connect`]).
    ///
    /// # Errors
    /// [`ExchangeError::OutOfOrder`] unless the key is known and the call not yet connected.
    pub fn set_connected(&mut self) -> Result<(), ExchangeError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Keyed(key, role) => {
                self.state = State::Connected(key, role);
                Ok(())
            }
            other => {
                self.state = other;
                Err(self.out_of_order())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::dh::TELEGRAM_DH_PRIME;
    use super::*;

    fn params() -> DhParams {
        DhParams::new(3, &TELEGRAM_DH_PRIME, 1).unwrap()
    }

    fn server_random() -> Vec<u8> {
        (0..DH_BYTES).map(|i| (i * 7) as u8).collect()
    }

    /// Both sides from the first step to the agreed key, each with its own seeded DRBG.
    fn run(caller_seed: u64, callee_seed: u64) -> (KeyExchange, KeyExchange, AuthParams) {
        let (params, random) = (params(), server_random());
        let mut caller_rng = DhRng::from_seed(caller_seed);
        let mut callee_rng = DhRng::from_seed(callee_seed);
        let mut caller = KeyExchange::new();
        let mut callee = KeyExchange::new();
        let g_a_hash = caller
            .init(&params, &random, None, || caller_rng.next_bytes())
            .unwrap();
        assert_eq!(caller.state(), "waiting for g_b");
        let g_b = callee
            .init(&params, &random, Some(&g_a_hash), || {
                callee_rng.next_bytes()
            })
            .unwrap();
        assert_eq!(callee.state(), "waiting for g_a");
        let auth = caller.complete(&g_b, 0).unwrap();
        assert_eq!(sha256(&[&auth.g_a_or_b]).to_vec(), g_a_hash);
        let callee_auth = callee
            .complete(&auth.g_a_or_b, auth.key_fingerprint)
            .unwrap();
        assert_eq!(callee_auth, auth);
        (caller, callee, auth)
    }

    #[test]
    fn caller_and_callee_agree_on_the_key() {
        let (caller, callee, auth) = run(1, 2);
        let (caller_key, caller_role) = caller.key().unwrap();
        let (callee_key, callee_role) = callee.key().unwrap();
        assert_eq!((caller_role, callee_role), (Role::Caller, Role::Callee));
        assert_eq!(caller_key.as_bytes(), callee_key.as_bytes());
        assert_eq!(caller_key.fingerprint(), auth.key_fingerprint);
        assert_eq!(caller_key.emoji(), callee_key.emoji());
        assert_eq!(caller.state(), "keyed");
    }

    #[test]
    fn seeded_runs_are_deterministic() {
        let (a, _, auth_a) = run(7, 8);
        let (b, _, auth_b) = run(7, 8);
        assert_eq!(auth_a, auth_b);
        assert_eq!(a.key().unwrap().0.as_bytes(), b.key().unwrap().0.as_bytes());
        let (_, _, other) = run(7, 9);
        assert_ne!(other.key_fingerprint, auth_a.key_fingerprint);

        let mut rng = DhRng::from_seed(5);
        let first = rng.next_bytes();
        assert_ne!(first, rng.next_bytes(), "every draw is fresh");
        assert_eq!(DhRng::from_seed(5).next_bytes(), first);
        assert_ne!(DhRng::from_seed(6).next_bytes(), first);
        assert_ne!(DhRng::from_secret([5; 32]).next_bytes(), first);
    }

    /// The DRBG's construction, pinned by a value computed independently (Python hashlib):
    /// block i of draw n is SHA-256(SHA-256("ringcast p2p dh drbg" || seed) || n || i), all
    /// integers 64-bit little-endian. Seeded engines keep their DH secrets across releases.
    #[test]
    fn drbg_matches_its_definition() {
        let bytes = DhRng::from_seed(42).next_bytes();
        assert_eq!(bytes[..8], [0xe0, 0x94, 0x58, 0x1d, 0x99, 0x56, 0x1d, 0xc0]);
        assert_eq!(bytes[DH_BYTES - 4..], [0xe7, 0x8d, 0xc7, 0x5c]);
        assert_eq!(DhRng::from_seed(42).next_u64(), 0xc01d_5699_1d58_94e0);
    }

    #[test]
    fn callee_refuses_a_g_a_that_does_not_match_its_hash() {
        let (params, random) = (params(), server_random());
        let mut rng = DhRng::from_seed(3);
        let mut caller = KeyExchange::new();
        let g_a_hash = caller
            .init(&params, &random, None, || rng.next_bytes())
            .unwrap();
        let mut callee = KeyExchange::new();
        callee
            .init(&params, &random, Some(&g_a_hash), || rng.next_bytes())
            .unwrap();
        let mut other = KeyExchange::new();
        other
            .init(&params, &random, None, || rng.next_bytes())
            .unwrap();
        let State::Caller(other) = &other.state else {
            panic!("caller state expected");
        };
        let err = callee.complete(other.g_a(), 0).unwrap_err();
        assert_eq!(err, ExchangeError::Check(P2pError::GaHashMismatch));
        assert_eq!(callee.state(), "failed");
        assert!(matches!(
            callee.complete(other.g_a(), 0),
            Err(ExchangeError::OutOfOrder { state: "failed" })
        ));
    }

    #[test]
    fn callee_refuses_a_wrong_fingerprint() {
        let (params, random) = (params(), server_random());
        let mut rng = DhRng::from_seed(4);
        let mut caller = KeyExchange::new();
        let mut callee = KeyExchange::new();
        let g_a_hash = caller
            .init(&params, &random, None, || rng.next_bytes())
            .unwrap();
        let g_b = callee
            .init(&params, &random, Some(&g_a_hash), || rng.next_bytes())
            .unwrap();
        let auth = caller.complete(&g_b, 0).unwrap();
        let wrong = auth.key_fingerprint ^ 1;
        let err = callee.complete(&auth.g_a_or_b, wrong).unwrap_err();
        assert_eq!(
            err,
            ExchangeError::Check(P2pError::FingerprintMismatch {
                received: wrong,
                computed: auth.key_fingerprint,
            })
        );
        assert_eq!(callee.state(), "failed");
        assert!(callee.key().is_err());
    }

    #[test]
    fn steps_out_of_order_are_refused_and_change_nothing() {
        let (params, random) = (params(), server_random());
        let mut rng = DhRng::from_seed(5);
        let mut exchange = KeyExchange::new();
        let created = ExchangeError::OutOfOrder { state: "created" };
        assert_eq!(exchange.complete(&[1; DH_BYTES], 0), Err(created.clone()));
        assert_eq!(exchange.key().unwrap_err(), created);
        assert_eq!(exchange.key_to_connect().unwrap_err(), created);
        assert_eq!(exchange.set_connected(), Err(created));
        assert_eq!(exchange.check_init(), Ok(()));
        assert_eq!(exchange.state(), "created");

        exchange
            .init(&params, &random, None, || rng.next_bytes())
            .unwrap();
        let waiting = ExchangeError::OutOfOrder {
            state: "waiting for g_b",
        };
        assert_eq!(
            exchange.init(&params, &random, None, || rng.next_bytes()),
            Err(waiting.clone())
        );
        assert_eq!(
            exchange.skip([9; DH_BYTES], Role::Caller),
            Err(waiting.clone())
        );
        assert_eq!(exchange.check_init(), Err(waiting));
        assert_eq!(exchange.state(), "waiting for g_b");
    }

    #[test]
    fn skip_then_connect() {
        let mut exchange = KeyExchange::new();
        exchange.skip([9; DH_BYTES], Role::Callee).unwrap();
        let (key, role) = exchange.key_to_connect().unwrap();
        assert_eq!((key.as_bytes(), role), (&[9; DH_BYTES], Role::Callee));
        exchange.set_connected().unwrap();
        assert!(exchange.is_connected());
        assert_eq!(exchange.key().unwrap().1, Role::Callee);
        let connected = ExchangeError::OutOfOrder { state: "connected" };
        assert_eq!(exchange.key_to_connect().unwrap_err(), connected);
        assert_eq!(exchange.set_connected(), Err(connected.clone()));
        assert_eq!(exchange.skip([1; DH_BYTES], Role::Callee), Err(connected));
    }

    #[test]
    fn init_retries_a_degenerate_secret_then_gives_up() {
        let (params, random) = (params(), server_random());
        // own XOR server = 0: a degenerate secret, retried with the next draw.
        let degenerate: [u8; DH_BYTES] = random.clone().try_into().unwrap();
        let mut rng = DhRng::from_seed(6);
        let mut draws = 0;
        let mut exchange = KeyExchange::new();
        exchange
            .init(&params, &random, None, || {
                draws += 1;
                if draws == 1 {
                    degenerate
                } else {
                    rng.next_bytes()
                }
            })
            .unwrap();
        assert_eq!(draws, 2);

        let mut draws = 0;
        let mut exchange = KeyExchange::new();
        let err = exchange.init(&params, &random, None, || {
            draws += 1;
            degenerate
        });
        assert_eq!(err, Err(ExchangeError::Check(P2pError::SecretOutOfRange)));
        assert_eq!(draws, INIT_ATTEMPTS);
        assert_eq!(exchange.state(), "created");
    }

    #[test]
    fn init_refuses_a_short_hash_and_stays_created() {
        let (params, random) = (params(), server_random());
        let mut rng = DhRng::from_seed(7);
        let mut exchange = KeyExchange::new();
        let err = exchange.init(&params, &random, Some(&[0; 31]), || rng.next_bytes());
        assert_eq!(
            err,
            Err(ExchangeError::Check(P2pError::GaHashWrongSize { len: 31 }))
        );
        assert_eq!(exchange.state(), "created");
    }
}
