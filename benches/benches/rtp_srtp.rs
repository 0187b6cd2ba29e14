//! RTP packetize + SRTP protect of one 60-160 byte Opus frame, from "here is a frame" to "here
//! is the protected datagram", on a connected str0m `Rtc` (ICE + DTLS done in memory between
//! two str0m instances on a fake clock; str0m's default aws-lc-rs provider; the SRTP profile
//! str0m negotiates with itself is AEAD_AES_256_GCM, the dimpl server's first choice):
//!
//! - `ringcast_rtp_mode`: what `Call::write_frame` does. RTP mode, `RtpWrite` with the
//!   ssrc-audio-level extension, `StreamTx::write_rtp`, then `handle_input(Timeout)` and
//!   `poll_output` until the `Transmit`.
//! - `ringcast_fast_path`: what `Call` does now, on our str0m patch (third_party/README.md):
//!   `DirectApi::write_rtp_into` returns the protected datagram at once, into the buffer of
//!   the previous one; `handle_input(Timeout)` + `poll_output` run only when str0m's own
//!   deadline is due (RTCP, consent), as `Transport` drives it (`Drive::WhenDue`).
//! - `str0m_frame_api`: the obvious alternative, str0m's frame-level `Writer::write` (str0m's
//!   Opus packetizer assigns seq/timestamp) with `.audio_level(..)`, on an otherwise identical
//!   `Rtc`, polled the same way.
//! - `floor_aes256gcm`: the same wire bytes built by hand (12-byte header + the one-byte
//!   audio-level extension) and sealed with aws-lc-rs AES-256-GCM (RFC 7714 IV) into a reused
//!   buffer: the cost of the crypto alone, no str0m bookkeeping, no allocation.
//!
//! The peer `Rtc` is driven between batches of 50 packets (1 s of fake time), outside the
//! measured time, so STUN consent and RTCP keep the session alive; what the sender does with
//! those (answering STUN, emitting SR) inside a batch is measured, the peer's work is not.
//! Before criterion runs, a counting global allocator reports heap allocations per packet for
//! both str0m paths (stderr) and checks every frame came out as exactly one RTP datagram.
//!
//! `cargo bench -p ringcast-benches --bench rtp_srtp -- --warm-up-time 1 --measurement-time 3`
// A counting allocator needs `unsafe`: it forwards every call to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use ringcast_core::crypto::generate_certificate;
use ringcast_core::str0m::config::DtlsCert;
use ringcast_core::str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use ringcast_core::str0m::net::{Protocol, Receive, Transmit};
use ringcast_core::str0m::rtp::{ExtensionValues, RtpWrite, SeqNo, Ssrc};
use ringcast_core::str0m::{Candidate, Event, IceCreds, Input, Output, Rtc, RtcConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PT_OPUS: u8 = 111;
const AUDIO_LEVEL_ID: u8 = 1;
const SSRC: u32 = 0x1234_5678;
const FRAME: Duration = Duration::from_millis(20);
const SAMPLES_PER_FRAME: u32 = 960;
/// Packets per measured batch; the peer is driven between batches (1 s of fake time).
const BATCH: u64 = 50;
const SIZES: [usize; 3] = [60, 100, 160];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `StreamTx::write_rtp` in RTP mode (ringcast).
    Rtp,
    /// `Writer::write` in frame mode (str0m's packetizer).
    Frame,
    /// The send fast path (our str0m patch): `DirectApi::write_rtp_into` into a recycled
    /// buffer, str0m's timeout only when its own deadline is due (what `Transport` does).
    Fast,
}

/// A sender `Rtc` connected to an in-memory peer, plus the sender's RTP counters.
struct Link {
    api: Api,
    sender: Rtc,
    peer: Rtc,
    now: Instant,
    mid: Mid,
    seq: u64,
    rtp_time: u32,
    /// Non-RTP datagrams the sender emitted during a batch, delivered to the peer after it.
    to_peer: Vec<Transmit>,
    /// Length of the last protected RTP datagram.
    last_len: usize,
    /// The fast path's recycled buffer.
    spare: Vec<u8>,
    /// str0m's last deadline (the fast path drives it only then).
    deadline: Instant,
}

fn rtc_config(rtp_mode: bool, cert: &DtlsCert) -> RtcConfig {
    // The session shape of `Call::connect` (the same function builds it): Opus only,
    // ssrc-audio-level only, peer stats every second.
    ringcast_core::transport::opus_rtc_config(&IceCreds::new(), cert, None, PT_OPUS, AUDIO_LEVEL_ID)
        .set_rtp_mode(rtp_mode)
        .set_stats_interval(Some(Duration::from_secs(1)))
}

/// Everything `rtc` wants to send now, delivered to `to`; returns how many datagrams moved.
fn drain_into(rtc: &mut Rtc, to: &mut Rtc, now: Instant, connected: &mut bool) -> usize {
    let mut moved = 0;
    loop {
        match rtc.poll_output().expect("poll_output") {
            Output::Timeout(_) => return moved,
            Output::Transmit(t) => {
                deliver(to, now, &t);
                moved += 1;
            }
            Output::Event(Event::Connected) => *connected = true,
            Output::Event(_) => {}
        }
    }
}

fn deliver(to: &mut Rtc, now: Instant, t: &Transmit) {
    let receive = Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)
        .expect("a datagram str0m produced parses");
    to.handle_input(Input::Receive(now, receive))
        .expect("peer accepts the datagram");
}

impl Link {
    /// Builds both sides with ringcast's roles toward the SFU (sender ICE-controlled and DTLS
    /// server, peer controlling and DTLS client) and runs ICE + DTLS to `Connected`.
    fn connect(api: Api, cert_a: &DtlsCert, cert_b: &DtlsCert) -> Self {
        let mut now = Instant::now();
        let sender_addr: SocketAddr = "10.0.0.1:40000".parse().expect("address");
        let peer_addr: SocketAddr = "10.0.0.2:32001".parse().expect("address");
        let mut sender = rtc_config(api != Api::Frame, cert_a).build(now);
        let mut peer = rtc_config(true, cert_b).build(now);
        sender.add_local_candidate(Candidate::host(sender_addr, "udp").expect("candidate"));
        sender.add_remote_candidate(Candidate::host(peer_addr, "udp").expect("candidate"));
        peer.add_local_candidate(Candidate::host(peer_addr, "udp").expect("candidate"));
        let sender_creds = sender.direct_api().local_ice_credentials();
        let sender_fp = sender.direct_api().local_dtls_fingerprint().clone();
        let peer_creds = peer.direct_api().local_ice_credentials();
        let peer_fp = peer.direct_api().local_dtls_fingerprint().clone();
        let mid = Mid::from("0");
        {
            let mut d = sender.direct_api();
            d.set_remote_ice_credentials(peer_creds);
            d.set_remote_fingerprint(peer_fp);
            d.set_ice_controlling(false);
            d.start_dtls(false).expect("start dtls");
            d.declare_media(mid, MediaKind::Audio);
            d.declare_stream_tx(Ssrc::from(SSRC), None, mid, None);
        }
        {
            let mut d = peer.direct_api();
            d.set_remote_ice_credentials(sender_creds);
            d.set_remote_fingerprint(sender_fp);
            d.set_ice_controlling(true);
            d.start_dtls(true).expect("start dtls");
            d.declare_media(mid, MediaKind::Audio);
            d.expect_stream_rx(Ssrc::from(SSRC), None, mid, None);
        }
        let (mut sender_up, mut peer_up) = (false, false);
        for _ in 0..400 {
            sender.handle_input(Input::Timeout(now)).expect("timeout");
            peer.handle_input(Input::Timeout(now)).expect("timeout");
            loop {
                let moved = drain_into(&mut sender, &mut peer, now, &mut sender_up)
                    + drain_into(&mut peer, &mut sender, now, &mut peer_up);
                if moved == 0 {
                    break;
                }
            }
            if sender_up && peer_up {
                break;
            }
            now += Duration::from_millis(5);
        }
        assert!(sender_up && peer_up, "in-memory ICE + DTLS did not connect");
        Self {
            api,
            sender,
            peer,
            now,
            mid,
            seq: 1,
            rtp_time: 0,
            to_peer: Vec::with_capacity(64),
            last_len: 0,
            spare: Vec::new(),
            deadline: now,
        }
    }

    /// The next packet as `Call::write_frame` builds it (with the ssrc-audio-level extension).
    fn rtp_write(&self, now: Instant, payload: &Arc<[u8]>) -> RtpWrite {
        let ext = ExtensionValues {
            audio_level: Some(-30),
            voice_activity: Some(true),
            ..Default::default()
        };
        RtpWrite::new(
            Pt::from(PT_OPUS),
            SeqNo::from(self.seq),
            self.rtp_time,
            now,
            payload.clone(),
        )
        .ext_vals(ext)
    }

    /// One 20 ms frame in, its protected datagram out (dropped after reading its length, as a
    /// socket send would consume it). Returns the number of RTP datagrams that came out.
    fn send_frame(&mut self, payload: &Arc<[u8]>) -> usize {
        self.now += FRAME;
        let now = self.now;
        let mut fast = None;
        match self.api {
            Api::Fast => {
                let write = self.rtp_write(now, payload);
                let mut buf = std::mem::take(&mut self.spare);
                let t = self
                    .sender
                    .direct_api()
                    .write_rtp_into(Ssrc::from(SSRC), write, now, &mut buf)
                    .ok()
                    .flatten()
                    .expect("a connected link takes the fast path");
                fast = Some(Vec::<u8>::from(t.contents));
            }
            Api::Rtp => {
                let write = self.rtp_write(now, payload);
                let mut api = self.sender.direct_api();
                let stream = api.stream_tx(&Ssrc::from(SSRC)).expect("declared stream");
                stream.write_rtp(write);
            }
            Api::Frame => {
                let rtp_time = MediaTime::new(u64::from(self.rtp_time), Frequency::FORTY_EIGHT_KHZ);
                self.sender
                    .writer(self.mid)
                    .expect("declared media")
                    .audio_level(-30, true)
                    .write(Pt::from(PT_OPUS), now, rtp_time, payload.clone())
                    .expect("write");
            }
        }
        self.seq += 1;
        self.rtp_time = self.rtp_time.wrapping_add(SAMPLES_PER_FRAME);
        let mut rtp = 0;
        if let Some(datagram) = fast {
            self.last_len = black_box(datagram.len());
            self.spare = datagram;
            rtp += 1;
            if now < self.deadline {
                return rtp;
            }
        }
        self.sender
            .handle_input(Input::Timeout(now))
            .expect("timeout");
        loop {
            match self.sender.poll_output().expect("poll_output") {
                Output::Timeout(t) => {
                    self.deadline = t;
                    return rtp;
                }
                Output::Transmit(t) if is_rtp(&t.contents) => {
                    // What `Call::poll_rtc` does with it: take the Vec without a copy.
                    let datagram: Vec<u8> = t.contents.into();
                    self.last_len = black_box(datagram.len());
                    rtp += 1;
                }
                Output::Transmit(t) => self.to_peer.push(t),
                Output::Event(_) => {}
            }
        }
    }

    /// Outside the measurement: hands the sender's STUN/RTCP to the peer and lets both answer.
    fn service_peer(&mut self) {
        let now = self.now;
        for t in self.to_peer.drain(..) {
            deliver(&mut self.peer, now, &t);
        }
        self.peer
            .handle_input(Input::Timeout(now))
            .expect("timeout");
        let mut up = true;
        loop {
            let moved = drain_into(&mut self.peer, &mut self.sender, now, &mut up)
                + drain_into(&mut self.sender, &mut self.peer, now, &mut up);
            if moved == 0 {
                break;
            }
        }
    }
}

/// RTP, not RTCP/STUN/DTLS (RFC 5761 / RFC 7983 demultiplexing).
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, b1, ..] if !(192..=223).contains(b1))
}

/// The floor: the same packet built by hand and sealed with AES-256-GCM as RFC 7714 does it.
struct Floor {
    key: LessSafeKey,
    salt: [u8; 12],
    seq: u64,
    rtp_time: u32,
    buf: Vec<u8>,
}

impl Floor {
    fn new() -> Self {
        let key = UnboundKey::new(&AES_256_GCM, &[7u8; 32]).expect("aes-256-gcm key");
        Self {
            key: LessSafeKey::new(key),
            salt: [9u8; 12],
            seq: 1,
            rtp_time: 0,
            buf: Vec::with_capacity(1500),
        }
    }

    fn protect(&mut self, payload: &[u8]) -> usize {
        let seq = (self.seq & 0xffff) as u16;
        let roc = (self.seq >> 16) as u32;
        self.buf.clear();
        // V=2, X=1 (one extension), M=0, PT=111, seq, timestamp, SSRC.
        self.buf.extend_from_slice(&[0x90, PT_OPUS]);
        self.buf.extend_from_slice(&seq.to_be_bytes());
        self.buf.extend_from_slice(&self.rtp_time.to_be_bytes());
        self.buf.extend_from_slice(&SSRC.to_be_bytes());
        // One-byte header extension (RFC 8285): audio level -30 dBov with the V bit, padded.
        self.buf
            .extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, AUDIO_LEVEL_ID << 4, 0x80 | 30, 0, 0]);
        let header_len = self.buf.len();
        self.buf.extend_from_slice(payload);
        // RFC 7714 §8.1: IV = salt XOR (00 00 || SSRC || ROC || SEQ).
        let mut iv = self.salt;
        for (i, b) in SSRC.to_be_bytes().into_iter().enumerate() {
            iv[2 + i] ^= b;
        }
        for (i, b) in roc.to_be_bytes().into_iter().enumerate() {
            iv[6 + i] ^= b;
        }
        for (i, b) in seq.to_be_bytes().into_iter().enumerate() {
            iv[10 + i] ^= b;
        }
        let (header, body) = self.buf.split_at_mut(header_len);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&*header), body)
            .expect("seal");
        self.buf.extend_from_slice(tag.as_ref());
        self.seq += 1;
        self.rtp_time = self.rtp_time.wrapping_add(SAMPLES_PER_FRAME);
        self.buf.len()
    }
}

fn payload(size: usize) -> Arc<[u8]> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

/// Sends `packets` frames in batches, counting allocations inside the sender's part only.
fn allocations_per_packet(link: &mut Link, payload: &Arc<[u8]>, packets: u64) -> f64 {
    let mut allocations = 0;
    let mut rtp = 0;
    for _ in 0..packets / BATCH {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        for _ in 0..BATCH {
            rtp += link.send_frame(payload);
        }
        COUNTING.with(|c| c.set(false));
        allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
        link.service_peer();
    }
    assert_eq!(
        rtp as u64,
        packets / BATCH * BATCH,
        "every frame must leave as exactly one RTP datagram"
    );
    allocations as f64 / (packets / BATCH * BATCH) as f64
}

fn rtp_srtp(c: &mut Criterion) {
    let cert_a = generate_certificate().expect("certificate");
    let cert_b = generate_certificate().expect("certificate");

    // str0m moves these by value on every write/poll (memcpy shows in profiles).
    eprintln!(
        "rtp_srtp sizes: str0m Output {} B, RtpWrite {} B, ExtensionValues {} B",
        size_of::<Result<Output, ringcast_core::str0m::RtcError>>(),
        size_of::<RtpWrite>(),
        size_of::<ExtensionValues>()
    );

    // Steady state: 6,000 packets (2 minutes of fake time, so SR and consent are included)
    // after a warm-up of 500 that fills str0m's queues and buffers.
    for size in SIZES {
        let data = payload(size);
        let mut lens = Vec::new();
        for (name, api) in [
            ("ringcast_rtp_mode", Api::Rtp),
            ("str0m_frame_api", Api::Frame),
            ("ringcast_fast_path", Api::Fast),
        ] {
            let mut link = Link::connect(api, &cert_a, &cert_b);
            allocations_per_packet(&mut link, &data, 500);
            let per_packet = allocations_per_packet(&mut link, &data, 6_000);
            eprintln!("rtp_srtp allocations: {name}/{size}: {per_packet:.3} per packet");
            lens.push(link.last_len);
        }
        let mut floor = Floor::new();
        lens.push(floor.protect(&data));
        assert!(
            lens.iter().all(|&l| l == lens[0]),
            "all variants must produce the same datagram size, got {lens:?}"
        );
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        for _ in 0..1_000 {
            black_box(floor.protect(&data));
        }
        COUNTING.with(|c| c.set(false));
        let per_packet = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 1_000.0;
        eprintln!("rtp_srtp allocations: floor_aes256gcm/{size}: {per_packet:.3} per packet");
    }

    let mut group = c.benchmark_group("rtp_srtp");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let data = payload(size);
        for (name, api) in [
            ("ringcast_rtp_mode", Api::Rtp),
            ("str0m_frame_api", Api::Frame),
            ("ringcast_fast_path", Api::Fast),
        ] {
            // One connected link per benchmark: criterion calls the closure once per sample.
            let mut link = Link::connect(api, &cert_a, &cert_b);
            group.bench_with_input(BenchmarkId::new(name, size), &data, |b, data| {
                b.iter_custom(|iters| {
                    let mut measured = Duration::ZERO;
                    let mut left = iters;
                    let mut rtp = 0;
                    while left > 0 {
                        let n = left.min(BATCH);
                        let start = Instant::now();
                        for _ in 0..n {
                            rtp += link.send_frame(data);
                        }
                        measured += start.elapsed();
                        link.service_peer();
                        left -= n;
                    }
                    // A session that dropped would send nothing, and look fast.
                    assert_eq!(rtp as u64, iters, "one RTP datagram per frame");
                    measured
                })
            });
        }
        group.bench_with_input(
            BenchmarkId::new("floor_aes256gcm", size),
            &data,
            |b, data| {
                let mut floor = Floor::new();
                b.iter(|| floor.protect(data))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, rtp_srtp);
criterion_main!(benches);
