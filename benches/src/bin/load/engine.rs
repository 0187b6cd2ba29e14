//! ringcast itself as a [`System`]: one [`Engine`], calls joined through sfu-mock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ringcast::{CallState, EndReason, Engine, EventKind, SendPath, SharedSource, StreamSource};

use crate::sfu::Sfu;
use crate::system::{CHATS, Sample, System, chat_tones};

/// Waits (up to `limit`) until `n` more calls of `engine` connect; a call that ends meanwhile
/// is an error, and so is the limit.
pub(crate) fn wait_connected(engine: &Engine, n: usize, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut connected = 0;
    while connected < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match engine.events().recv_timeout(left) {
            Ok(e) => match e.kind {
                EventKind::ConnectionChanged(CallState::Connected) => connected += 1,
                EventKind::ConnectionChanged(CallState::Ended(r)) => {
                    return Err(format!("call {} ended: {r:?}", e.chat_id));
                }
                _ => {}
            },
            Err(_) => return Err(format!("{connected}/{n} connected after {limit:?}")),
        }
    }
    Ok(())
}

/// The engine under test and the calls it holds.
pub(crate) struct Ringcast {
    engine: Engine,
    tones: Vec<SharedSource>,
    /// Chat ids of live calls, oldest first (the soak's churn stops the oldest).
    live: VecDeque<i64>,
    next_key: i64,
    /// `Connected` events seen, and calls stopped on purpose.
    connected: usize,
    stopped: usize,
    /// Join payload and SFU answer of each live call, for the diagnostics of a call that
    /// ends on its own.
    signaling: HashMap<i64, (String, String)>,
    /// When each live call was connected to its source.
    started: HashMap<i64, Instant>,
}

/// What the SFU counted for every live call, checked call by call ([`Ringcast::verify_live`]).
#[derive(Debug, Default)]
pub(crate) struct LiveCheck {
    /// Live calls checked.
    pub(crate) calls: usize,
    /// Of them, those the SFU saw connected with no loss and at least 98 % of the packets
    /// their age implies (50 a second).
    pub(crate) verified: usize,
    /// Of the verified, those whose RTP sequence number wrapped at the SFU (so SRTP's
    /// rollover counter moved) while every packet was decrypted there.
    pub(crate) verified_past_wrap: usize,
    /// Up to ten calls that failed, with what the SFU said.
    pub(crate) failures: Vec<String>,
}

impl Ringcast {
    /// Writes what is known about a call that ended on its own to
    /// `target/load-failure-<key>.json` (join, answer, SFU stats, engine stats) and names it.
    fn diagnose(&self, key: i64, reason: &EndReason, sfu: &Sfu) -> String {
        let (join, answer) = self.signaling.get(&key).cloned().unwrap_or_default();
        let doc = serde_json::json!({
            "chat_id": key,
            "reason": format!("{reason:?}"),
            "join": join,
            "answer": answer,
            "engine_stats": format!("{:?}", self.engine.stats()),
            "sfu_stats": sfu.stats_text().unwrap_or_else(|e| e),
        });
        let path = format!("target/load-failure-{key}.json");
        match std::fs::write(&path, doc.to_string()) {
            Ok(()) => format!("call {key} ended: {reason:?} (diagnostics in {path})"),
            Err(_) => format!("call {key} ended: {reason:?}"),
        }
    }

    pub(crate) fn new(shards: usize, send_path: SendPath) -> Result<Self, String> {
        let engine = Engine::builder()
            .shards(shards)
            .send_path(send_path)
            .event_queue(1 << 16)
            .cert_pool(256)
            .build()
            .map_err(|e| e.to_string())?;
        let tones = chat_tones()?;
        Ok(Self {
            engine,
            tones,
            live: VecDeque::new(),
            next_key: 0,
            connected: 0,
            stopped: 0,
            signaling: HashMap::new(),
            started: HashMap::new(),
        })
    }

    /// Stops the `k` oldest calls and starts `k` new ones (the soak's churn), waiting until
    /// the new ones are connected.
    pub(crate) fn churn(&mut self, k: usize, sfu: &Sfu) -> Result<(), String> {
        let n = self.live.len();
        for _ in 0..k.min(n) {
            if let Some(key) = self.live.pop_front() {
                self.signaling.remove(&key);
                self.started.remove(&key);
                self.engine
                    .stop(key)
                    .map_err(|e| format!("stop {key}: {e}"))?;
                self.stopped += 1;
            }
        }
        self.grow_to(n, sfu)
    }

    /// Calls that ended without being asked to since the last look, with their reasons;
    /// they are dropped from the live set (the soak counts them as failures).
    pub(crate) fn take_unexpected_ends(&mut self) -> Vec<(i64, EndReason)> {
        let mut ended = Vec::new();
        while let Ok(e) = self.engine.events().try_recv() {
            match e.kind {
                EventKind::ConnectionChanged(CallState::Connected) => self.connected += 1,
                EventKind::ConnectionChanged(CallState::Ended(EndReason::Stopped)) => {}
                EventKind::ConnectionChanged(CallState::Ended(r)) => {
                    if let Some(i) = self.live.iter().position(|k| *k == e.chat_id) {
                        self.live.remove(i);
                        self.started.remove(&e.chat_id);
                        self.stopped += 1;
                    }
                    ended.push((e.chat_id, r));
                }
                _ => {}
            }
        }
        ended
    }

    /// Checks every live call at the SFU: found by its audio SSRC (from its join payload) in
    /// its chat, connected, nothing lost, and at least 98 % of the packets its age implies
    /// (a call whose SRTP failed at the sequence wrap stops being counted there).
    pub(crate) fn verify_live(&self, sfu: &Sfu) -> Result<LiveCheck, String> {
        let stats = sfu.stats_json()?;
        let now = Instant::now();
        let mut check = LiveCheck::default();
        for key in &self.live {
            check.calls += 1;
            let ssrc = self
                .signaling
                .get(key)
                .and_then(|(join, _)| serde_json::from_str::<serde_json::Value>(join).ok())
                .and_then(|j| j["ssrc"].as_u64());
            let chat = (*key as usize) % CHATS;
            let entry = stats["chats"][chat.to_string()]
                .as_array()
                .and_then(|list| {
                    list.iter()
                        .find(|p| p["ssrc"].as_u64() == ssrc && p["left"] == false)
                })
                .cloned();
            let age = self
                .started
                .get(key)
                .map_or(0.0, |t| now.duration_since(*t).as_secs_f64());
            // 50 packets a second, less a second for connecting, less 2 %.
            let expected = ((age - 1.0).max(0.0) * 50.0 * 0.98) as u64;
            let (ok, wraps) = match &entry {
                Some(p) => {
                    let packets = p["packets"].as_u64().unwrap_or(0);
                    let ok = p["connected"] == true
                        && p["lost"].as_u64() == Some(0)
                        && packets >= expected;
                    (ok, p["seq_wraps"].as_u64().unwrap_or(0))
                }
                None => (false, 0),
            };
            if ok {
                check.verified += 1;
                if wraps > 0 {
                    check.verified_past_wrap += 1;
                }
            } else if check.failures.len() < 10 {
                check.failures.push(format!(
                    "call {key} (ssrc {ssrc:?}, {age:.0} s old, {expected} packets expected): \
                     {}",
                    entry.map_or_else(|| "not at the SFU".to_owned(), |e| e.to_string())
                ));
            }
        }
        Ok(check)
    }
}

impl System for Ringcast {
    fn name(&self) -> &'static str {
        "ringcast"
    }

    fn grow_to(&mut self, n: usize, sfu: &Sfu) -> Result<(), String> {
        while self.live.len() < n {
            let key = self.next_key;
            let chat = (key as usize) % CHATS;
            let join = self.engine.create_call(key).map_err(|e| e.to_string())?;
            let answer = sfu.join(chat, &join)?;
            self.engine
                .connect(key, &answer)
                .map_err(|e| e.to_string())?;
            self.signaling.insert(key, (join, answer));
            self.started.insert(key, Instant::now());
            self.engine
                .set_stream_sources(key, StreamSource::Shared(self.tones[chat].clone()))
                .map_err(|e| e.to_string())?;
            self.live.push_back(key);
            self.next_key += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.connected - self.stopped < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.engine.events().recv_timeout(left) {
                Ok(e) => match e.kind {
                    EventKind::ConnectionChanged(CallState::Connected) => self.connected += 1,
                    EventKind::ConnectionChanged(CallState::Ended(EndReason::Stopped)) => {}
                    EventKind::ConnectionChanged(CallState::Ended(r)) => {
                        return Err(self.diagnose(e.chat_id, &r, sfu));
                    }
                    _ => {}
                },
                Err(_) => {
                    return Err(format!(
                        "{}/{n} connected after 60 s",
                        self.connected - self.stopped
                    ));
                }
            }
        }
        Ok(())
    }

    fn sample(&self) -> Sample {
        let s = self.engine.stats().unwrap_or_default();
        Sample {
            packets_sent: s.packets_sent,
            connected: self.connected - self.stopped,
            lateness: s.lateness,
            causes: s.lateness_causes,
        }
    }
}
