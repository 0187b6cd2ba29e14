//! An in-test UDP relay between one engine call and sfu-mock, which a test can switch to drop
//! everything (a broken path), and which records the RTP going through it so a test can
//! replay it. Portable and unprivileged: no network namespace or firewall needed.
//!
//! ```text
//! engine socket <-> [front] relay [back] <-> sfu-mock
//! ```
//! The engine is given a join response whose candidate is `front`; sfu-mock learns `back` as
//! the participant's address from the engine's forwarded ICE checks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Datagrams kept per direction for replay.
const CAPTURE: usize = 256;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    blocked: AtomicBool,
    dropped: AtomicU64,
    engine: Mutex<Option<SocketAddr>>,
    /// SRTP (RTP, not RTCP) datagrams sfu-mock sent to the engine, oldest first.
    to_engine_rtp: Mutex<Vec<Vec<u8>>>,
    /// SRTP datagrams the engine sent to sfu-mock.
    to_sfu_rtp: Mutex<Vec<Vec<u8>>>,
}

/// A running relay. Dropping it stops its threads.
pub(crate) struct Relay {
    front: UdpSocket,
    back: UdpSocket,
    sfu: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// RTP (not RTCP) by RFC 7983 and RFC 5761: first byte 128..=191, payload type outside the
/// RTCP range 64..=95.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..=191).contains(&d[0]) && !(64..=95).contains(&(d[1] & 0x7F))
}

fn record(list: &Mutex<Vec<Vec<u8>>>, d: &[u8]) {
    let mut l = list.lock().unwrap();
    if l.len() >= CAPTURE {
        l.remove(0);
    }
    l.push(d.to_vec());
}

/// One direction of the relay, on its own thread: each datagram read from `rx` goes out `tx`
/// to `dest(shared, source)` (`None`: not sent), its RTP recorded in `capture`, unless the
/// relay is blocked (then it is dropped and counted).
fn forward(
    rx: &UdpSocket,
    tx: &UdpSocket,
    shared: &Arc<Shared>,
    capture: fn(&Shared) -> &Mutex<Vec<Vec<u8>>>,
    dest: impl Fn(&Shared, SocketAddr) -> Option<SocketAddr> + Send + 'static,
) -> JoinHandle<()> {
    let (rx, tx, shared) = (
        rx.try_clone().unwrap(),
        tx.try_clone().unwrap(),
        shared.clone(),
    );
    std::thread::spawn(move || {
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = vec![0u8; 2048];
        while !shared.stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = rx.recv_from(&mut buf) else {
                continue;
            };
            let d = &buf[..n];
            let to = dest(&shared, from);
            if shared.blocked.load(Ordering::Relaxed) {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(to) = to else {
                continue;
            };
            if is_rtp(d) {
                record(capture(&shared), d);
            }
            let _ = tx.send_to(d, to);
        }
    })
}

impl Relay {
    /// Starts a relay in front of `sfu`.
    pub(crate) fn start(sfu: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        let shared = Arc::new(Shared::default());
        let threads = vec![
            // engine -> sfu: the engine's address is learnt from what it sends.
            forward(
                &front,
                &back,
                &shared,
                |s| &s.to_sfu_rtp,
                move |s, from| {
                    *s.engine.lock().unwrap() = Some(from);
                    Some(sfu)
                },
            ),
            // sfu -> engine, once the engine's address is known.
            forward(
                &back,
                &front,
                &shared,
                |s| &s.to_engine_rtp,
                |s, _| *s.engine.lock().unwrap(),
            ),
        ];
        Self {
            front,
            back,
            sfu,
            shared,
            threads,
        }
    }

    /// The address the engine must be given as the SFU's candidate.
    pub(crate) fn front_addr(&self) -> SocketAddr {
        self.front.local_addr().unwrap()
    }

    /// The address sfu-mock sees the participant at.
    pub(crate) fn back_addr(&self) -> SocketAddr {
        self.back.local_addr().unwrap()
    }

    /// Rewrites sfu-mock's join response so its candidate is this relay.
    pub(crate) fn rewrite_response(&self, response: &str) -> String {
        let sfu_port = self.sfu.port().to_string();
        let relay_port = self.front_addr().port().to_string();
        let out = response.replace(&format!("\"{sfu_port}\""), &format!("\"{relay_port}\""));
        assert_ne!(out, response, "the response names the sfu's port");
        out
    }

    /// Drop everything in both directions (true) or forward again (false).
    pub(crate) fn set_blocked(&self, blocked: bool) {
        self.shared.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Datagrams dropped while blocked.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// SRTP packets sfu-mock sent to the engine through the relay (the last 256).
    pub(crate) fn captured_to_engine(&self) -> Vec<Vec<u8>> {
        self.shared.to_engine_rtp.lock().unwrap().clone()
    }

    /// SRTP packets the engine sent to sfu-mock through the relay (the last 256).
    pub(crate) fn captured_to_sfu(&self) -> Vec<Vec<u8>> {
        self.shared.to_sfu_rtp.lock().unwrap().clone()
    }

    /// Sends `d` to the engine from the relay's front address (the SFU address the engine
    /// knows), as an on-path attacker could.
    pub(crate) fn inject_to_engine(&self, d: &[u8]) {
        let engine = self
            .shared
            .engine
            .lock()
            .unwrap()
            .expect("engine address known");
        self.front.send_to(d, engine).unwrap();
    }

    /// Sends `d` to sfu-mock from the relay's back address (the participant's address).
    pub(crate) fn inject_to_sfu(&self, d: &[u8]) {
        self.back.send_to(d, self.sfu).unwrap();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
