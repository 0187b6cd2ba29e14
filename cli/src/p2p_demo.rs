//! `ringcast p2p-demo`: N 1:1 calls between two engines in one process over
//! real loopback UDP, this function playing the messenger.
//!
//! Engine A places every call (caller), engine B answers (callee). For each call the demo runs
//! the Diffie-Hellman exchange through the Engine API (`init_exchange` / `exchange_keys`),
//! compares both sides' key fingerprint and emojis, starts both ends (`connect_p2p`), and then
//! relays every [`EventKind::SignalingData`] of one engine to the other's
//! `send_signaling_data`. Each direction plays a tone (A→B 400..680 Hz, B→A 1000..1420 Hz,
//! eight of each, one shared encoder per tone); each side decodes what it receives with libopus
//! and checks the dominant frequency is the one its peer sends. The last stdout line is
//! `{"calls": N, "keys_match": K, "emojis_match": E, "verified_both_ways": V}`; the exit status
//! is non-zero unless all three equal N.

use std::time::{Duration, Instant};

use clap::Args;
use opus::{Channels, Decoder};
use ringcast::{
    DhConfig, Engine, EngineEvent, EventKind, LIBRARY_VERSIONS, P2pState, SharedSource,
    StreamSource,
};
use ringcast_core::media::ToneSource;
use ringcast_core::signaling::p2p::dh::TELEGRAM_DH_PRIME;
use sfu_mock::analysis::ToneMeter;

use crate::{at_least_one, duration_secs};

/// Distinct tones per direction (shared encoders: N calls cost 16 encoders, not 2N).
const TONES: usize = 8;
/// Packets skipped before measuring (encoder look-ahead, decoder warm-up).
const SKIP_PACKETS: u32 = 10;
/// Packets decoded per direction and call (0.5 s).
const MEASURE_PACKETS: u32 = 25;
/// Relative tolerance of the measured frequency (adjacent tones are >= 6 % apart).
const TOLERANCE: f32 = 0.02;
/// User ids: A's peers are B_USERS + i, B's peers A_USERS + i.
const A_USERS: i64 = 1_000_000;
const B_USERS: i64 = 2_000_000;

/// `ringcast p2p-demo` arguments.
#[derive(Debug, Args)]
pub(crate) struct P2pDemoArgs {
    /// 1:1 calls to run between the two engines.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_one())]
    calls: usize,
    /// Leave out the per-call rows on stderr above 12 calls (the JSON summary is always the
    /// last stdout line).
    #[arg(long)]
    json: bool,
    /// Give up on calls not verified after this many seconds.
    #[arg(long, value_name = "S", default_value = "60", value_parser = duration_secs, allow_negative_numbers = true)]
    timeout: Duration,
    /// Shards of each engine.
    #[arg(long, value_name = "K", default_value_t = 1)]
    shards: usize,
}

fn a_to_b_hz(i: usize) -> f32 {
    400.0 + 40.0 * (i % TONES) as f32
}

fn b_to_a_hz(i: usize) -> f32 {
    1000.0 + 60.0 * (i % TONES) as f32
}

/// What one side of one call has heard.
struct Ear {
    decoder: Decoder,
    meter: ToneMeter,
    packets: u32,
    pcm: Vec<i16>,
    /// Dominant frequency once measured.
    heard: Option<f32>,
}

impl Ear {
    fn new() -> Result<Self, String> {
        Ok(Self {
            decoder: Decoder::new(48_000, Channels::Mono).map_err(|e| format!("opus: {e}"))?,
            meter: ToneMeter::new(),
            packets: 0,
            pcm: vec![0; 5760],
            heard: None,
        })
    }

    /// Decodes one packet unless the measurement is done; returns true when it completes.
    fn hear(&mut self, payload: &[u8]) -> bool {
        if self.heard.is_some() {
            return false;
        }
        self.packets += 1;
        // Decode from the start so the decoder state is continuous; measure after the skip.
        let Ok(n) = self.decoder.decode(payload, &mut self.pcm, false) else {
            return false;
        };
        if self.packets <= SKIP_PACKETS {
            return false;
        }
        self.meter.push(self.pcm.get(..n).unwrap_or(&[]));
        if self.packets >= SKIP_PACKETS + MEASURE_PACKETS {
            self.heard = Some(self.meter.dominant_hz().unwrap_or(0.0));
            return true;
        }
        false
    }
}

/// One call, both ends.
struct Pair {
    keys_match: bool,
    emojis_match: bool,
    a_connected: bool,
    b_connected: bool,
    ended: Option<String>,
    /// What A (caller) hears: B's tone.
    a_ear: Ear,
    /// What B (callee) hears: A's tone.
    b_ear: Ear,
}

impl Pair {
    fn verified(&self, i: usize) -> bool {
        let ok = |heard: Option<f32>, want: f32| {
            heard.is_some_and(|h| (h - want).abs() <= want * TOLERANCE)
        };
        ok(self.a_ear.heard, b_to_a_hz(i)) && ok(self.b_ear.heard, a_to_b_hz(i))
    }
}

/// DH, key check and connect for call `i` through both engines' APIs.
fn set_up(
    a: &Engine,
    b: &Engine,
    i: usize,
    dh: &DhConfig,
    tones_a: &[SharedSource],
    tones_b: &[SharedSource],
) -> Result<(bool, bool), String> {
    let (peer_of_a, peer_of_b) = (B_USERS + i as i64, A_USERS + i as i64);
    let e =
        |step: &'static str| move |err: ringcast::EngineError| format!("call {i}: {step}: {err}");
    a.create_p2p_call(peer_of_a).map_err(e("create (A)"))?;
    b.create_p2p_call(peer_of_b).map_err(e("create (B)"))?;
    // phone.requestCall carries g_a_hash; phone.acceptCall g_b; phone.confirmCall g_a + fp.
    let g_a_hash = a
        .init_exchange(peer_of_a, dh, None)
        .map_err(e("init (A)"))?;
    let g_b = b
        .init_exchange(peer_of_b, dh, Some(&g_a_hash))
        .map_err(e("init (B)"))?;
    let auth_a = a
        .exchange_keys(peer_of_a, &g_b, 0)
        .map_err(e("exchange (A)"))?;
    let auth_b = b
        .exchange_keys(peer_of_b, &auth_a.g_a_or_b, auth_a.key_fingerprint)
        .map_err(e("exchange (B)"))?;
    let key_a = a.p2p_key(peer_of_a).map_err(e("key (A)"))?;
    let key_b = b.p2p_key(peer_of_b).map_err(e("key (B)"))?;
    let keys_match = auth_a.key_fingerprint == auth_b.key_fingerprint
        && key_a.key_fingerprint == key_b.key_fingerprint;
    let emojis_match = key_a.emoji == key_b.emoji;
    a.set_stream_sources(peer_of_a, StreamSource::Shared(tones_a[i % TONES].clone()))
        .map_err(e("source (A)"))?;
    b.set_stream_sources(peer_of_b, StreamSource::Shared(tones_b[i % TONES].clone()))
        .map_err(e("source (B)"))?;
    let versions: Vec<String> = LIBRARY_VERSIONS.iter().map(|v| (*v).to_owned()).collect();
    a.connect_p2p(peer_of_a, &[], &versions, true)
        .map_err(e("connect (A)"))?;
    b.connect_p2p(peer_of_b, &[], &versions, true)
        .map_err(e("connect (B)"))?;
    Ok((keys_match, emojis_match))
}

struct Tally {
    relayed: u64,
    relay_rejected: u64,
}

/// Handles one engine event: relays signaling to the other engine, feeds audio to the ear.
fn on_event(
    event: EngineEvent,
    from_a: bool,
    other: &Engine,
    pairs: &mut [Pair],
    tally: &mut Tally,
) {
    let base = if from_a { B_USERS } else { A_USERS };
    let Some(i) = usize::try_from(event.chat_id - base)
        .ok()
        .filter(|i| *i < pairs.len())
    else {
        return;
    };
    let Some(pair) = pairs.get_mut(i) else {
        return;
    };
    match event.kind {
        EventKind::SignalingData(bytes) => {
            let to = if from_a { A_USERS } else { B_USERS } + i as i64;
            tally.relayed += 1;
            if other.send_signaling_data(to, &bytes).is_err() {
                tally.relay_rejected += 1;
            }
        }
        EventKind::AudioReceived { payload, .. } => {
            let ear = if from_a {
                &mut pair.a_ear
            } else {
                &mut pair.b_ear
            };
            ear.hear(&payload);
        }
        EventKind::P2pConnectionChanged(P2pState::Connected) => {
            if from_a {
                pair.a_connected = true;
            } else {
                pair.b_connected = true;
            }
        }
        EventKind::P2pConnectionChanged(P2pState::Ended(r)) => {
            let side = if from_a { "caller" } else { "callee" };
            pair.ended.get_or_insert(format!("{side} ended: {r:?}"));
        }
        _ => {}
    }
}

/// Runs `ringcast p2p-demo`.
pub(crate) fn run(o: &P2pDemoArgs) -> Result<(), String> {
    let started = Instant::now();
    let build = |seed: u64| {
        Engine::builder()
            .shards(o.shards)
            .receive_audio(true)
            .event_queue(65_536)
            .connect_timeout(Duration::from_secs(30))
            .seed(seed)
            .build()
            .map_err(|e| format!("engine: {e}"))
    };
    let a = build(0xA11CE)?;
    let b = build(0xB0B)?;
    let mut server_random = vec![0u8; 256];
    let mut rng = fastrand::Rng::with_seed(7);
    rng.fill(&mut server_random);
    let dh = DhConfig {
        g: 3,
        p: TELEGRAM_DH_PRIME.to_vec(),
        random: server_random,
    };
    let tone = |hz: f32| -> Result<SharedSource, String> {
        Ok(SharedSource::new(Box::new(
            ToneSource::new(hz, None).map_err(|e| e.to_string())?,
        )))
    };
    let tones_a = (0..TONES)
        .map(|k| tone(a_to_b_hz(k)))
        .collect::<Result<Vec<_>, _>>()?;
    let tones_b = (0..TONES)
        .map(|k| tone(b_to_a_hz(k)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut pairs = Vec::with_capacity(o.calls);
    for _ in 0..o.calls {
        pairs.push(Pair {
            keys_match: false,
            emojis_match: false,
            a_connected: false,
            b_connected: false,
            ended: None,
            a_ear: Ear::new()?,
            b_ear: Ear::new()?,
        });
    }
    eprintln!(
        "p2p-demo: {} calls, engine A (caller) and B (callee), {} shard(s) each, loopback UDP",
        o.calls, o.shards
    );
    let deadline = started + o.timeout;
    let (setup_tx, setup_rx) = crossbeam_channel::unbounded();
    let mut tally = Tally {
        relayed: 0,
        relay_rejected: 0,
    };
    let mut setup_errors = Vec::new();
    let mut set_up_count = 0usize;
    std::thread::scope(|scope| {
        // Two setup workers (the DH exponentiations are the expensive part), while this thread
        // relays signaling and listens.
        let workers = 2.min(o.calls);
        for w in 0..workers {
            let (a, b, dh, tones_a, tones_b, tx) =
                (&a, &b, &dh, &tones_a, &tones_b, setup_tx.clone());
            scope.spawn(move || {
                for i in (w..o.calls).step_by(workers) {
                    let r = set_up(a, b, i, dh, tones_a, tones_b);
                    if tx.send((i, r)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(setup_tx);
        let mut next_progress = started + Duration::from_secs(1);
        loop {
            let mut idle = true;
            while let Ok((i, r)) = setup_rx.try_recv() {
                set_up_count += 1;
                match (r, pairs.get_mut(i)) {
                    (Ok((k, e)), Some(p)) => {
                        p.keys_match = k;
                        p.emojis_match = e;
                    }
                    (Err(e), _) => setup_errors.push(e),
                    _ => {}
                }
            }
            for _ in 0..4096 {
                match a.events().try_recv() {
                    Ok(ev) => {
                        idle = false;
                        on_event(ev, true, &b, &mut pairs, &mut tally);
                    }
                    Err(_) => break,
                }
            }
            for _ in 0..4096 {
                match b.events().try_recv() {
                    Ok(ev) => {
                        idle = false;
                        on_event(ev, false, &a, &mut pairs, &mut tally);
                    }
                    Err(_) => break,
                }
            }
            let done = set_up_count == o.calls
                && pairs.iter().all(|p| {
                    p.ended.is_some() || (p.a_ear.heard.is_some() && p.b_ear.heard.is_some())
                });
            let now = Instant::now();
            if now >= next_progress || done || now >= deadline {
                next_progress += Duration::from_secs(1);
                progress(&a, &b, &pairs, set_up_count, &tally, started);
            }
            if done || now >= deadline {
                break;
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let keys_match = pairs.iter().filter(|p| p.keys_match).count();
    let emojis_match = pairs.iter().filter(|p| p.emojis_match).count();
    let verified = pairs
        .iter()
        .enumerate()
        .filter(|(i, p)| p.verified(*i))
        .count();
    let show = !o.json || o.calls <= 12;
    let mut failures: Vec<String> = setup_errors;
    for (i, p) in pairs.iter().enumerate() {
        if show {
            eprintln!(
                "  call {i:>4}: key {} emoji {} | B hears {:>7} (sent {:.0}) | A hears {:>7} (sent {:.0}) {}",
                yes(p.keys_match),
                yes(p.emojis_match),
                fmt_hz(p.b_ear.heard),
                a_to_b_hz(i),
                fmt_hz(p.a_ear.heard),
                b_to_a_hz(i),
                if p.verified(i) {
                    "verified"
                } else {
                    "NOT verified"
                }
            );
        }
        if !p.verified(i) && failures.len() < 10 {
            failures.push(format!(
                "call {i}: caller {}connected, callee {}connected, A heard {:?} ({} packets), B heard {:?} ({} packets){}",
                if p.a_connected { "" } else { "not " },
                if p.b_connected { "" } else { "not " },
                p.a_ear.heard,
                p.a_ear.packets,
                p.b_ear.heard,
                p.b_ear.packets,
                p.ended.as_deref().map(|e| format!(", {e}")).unwrap_or_default()
            ));
        }
    }
    for f in &failures {
        eprintln!("  FAIL {f}");
    }
    eprintln!(
        "{verified}/{} calls verified both ways, {keys_match} keys and {emojis_match} emoji sets matched, {} signaling packets relayed ({} rejected), {:.1} s",
        o.calls,
        tally.relayed,
        tally.relay_rejected,
        started.elapsed().as_secs_f64()
    );
    a.shutdown();
    b.shutdown();
    println!(
        "{{\"calls\": {}, \"keys_match\": {keys_match}, \"emojis_match\": {emojis_match}, \"verified_both_ways\": {verified}}}",
        o.calls
    );
    if verified == o.calls && keys_match == o.calls && emojis_match == o.calls {
        Ok(())
    } else {
        Err(format!(
            "{verified}/{} calls verified both ways ({keys_match} keys, {emojis_match} emojis matched)",
            o.calls
        ))
    }
}

fn yes(b: bool) -> &'static str {
    if b { "ok" } else { "MISMATCH" }
}

fn fmt_hz(h: Option<f32>) -> String {
    h.map_or_else(|| "-".to_owned(), |h| format!("{h:.1}"))
}

fn progress(
    a: &Engine,
    b: &Engine,
    pairs: &[Pair],
    set_up: usize,
    tally: &Tally,
    started: Instant,
) {
    let count = |f: &dyn Fn(&Pair) -> bool| pairs.iter().filter(|p| f(p)).count();
    let connected = count(&|p| p.a_connected && p.b_connected);
    let heard_ab = count(&|p| p.b_ear.heard.is_some());
    let heard_ba = count(&|p| p.a_ear.heard.is_some());
    let ended = count(&|p| p.ended.is_some());
    let (mut sent, mut recv, mut rtt_sum, mut rtt_n) = (0u64, 0u64, 0.0f64, 0u32);
    for engine in [a, b] {
        if let Ok(calls) = engine.p2p_calls() {
            for c in calls {
                sent += c.stats.bytes_sent;
                recv += c.stats.bytes_received;
                if let Some(rtt) = c.link.rtt {
                    rtt_sum += rtt.as_secs_f64() * 1000.0;
                    rtt_n += 1;
                }
            }
        }
    }
    let rtt = if rtt_n > 0 {
        format!("{:.2} ms", rtt_sum / f64::from(rtt_n))
    } else {
        "-".to_owned()
    };
    eprintln!(
        "[{:>5.1} s] set up {set_up}/{n}, connected {connected}/{n}, heard A→B {heard_ab} B→A {heard_ba}, ended {ended}, signaling {} relayed, {:.1} MB sent / {:.1} MB received, mean rtt {rtt}",
        started.elapsed().as_secs_f64(),
        tally.relayed,
        sent as f64 / 1e6,
        recv as f64 / 1e6,
        n = pairs.len(),
    );
}
