//! `--kernel-floor`: what the kernel alone charges the sending core per datagram on this
//! machine, with no WebRTC at all. It bounds what any engine can reach here: at 50 packets a
//! second per stream, a floor of F µs allows at most 1,000,000 / (50 · F) streams per core even
//! if RTP, SRTP and pacing cost nothing.
//!
//! The shape mirrors the ramp: `--floor-sockets` UDP sockets on 127.0.0.1 (one per call, as
//! Telegram's 5-tuple identity needs), each sending one 130-byte datagram every 20 ms to one
//! receiving socket (sfu-mock's single port), in 1 ms ticks of a twentieth of the sockets. The
//! sender thread is pinned to the first core, the receiver to the others. Two ways to send:
//! - `sendto`: one `sendto(2)` per datagram;
//! - `io_uring`: through the engine's own send path, `UringSender`
//!   (`engine-runtime/src/uring_send.rs`, exposed to this tool as `ringcast::bench`): one
//!   `SENDMSG` entry per datagram in a pre-allocated slot, the sockets registered, one
//!   `io_uring_enter` per tick, and each datagram's buffer handed back for the next one as the
//!   pacer's are.
//!
//! Each runs with loopback's receive processing on the sending core (the default) and steered
//! to the receiver's cores (RPS on `lo`, as `--steer-loopback`; root), `--floor-runs` times in
//! an interleaved order. CPU is the sender thread's own (`CLOCK_THREAD_CPUTIME_ID`), so the
//! sleep between ticks costs nothing and the receiver is not counted.
#![allow(unsafe_code)] // libc sendto, clock and affinity calls

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringcast::bench::UringSender;
use serde_json::{Value, json};

use crate::args::Args;
use crate::host::LoopbackSteering;

/// Bytes per datagram: an Opus frame of ~100 bytes with its RTP header, extensions and tag.
const DATAGRAM: usize = 130;
/// Frame interval: each socket sends once per 20 ms, spread over 20 ticks of 1 ms.
const TICKS_PER_FRAME: usize = 20;
const TICK: Duration = Duration::from_millis(1);

/// How the sender hands datagrams to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    SendTo,
    IoUring,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Self::SendTo => "sendto",
            Self::IoUring => "io_uring",
        }
    }
}

/// One measurement: CPU of the sender thread per datagram.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// CPU time per datagram (`CLOCK_THREAD_CPUTIME_ID`: the scheduler's exact runtime).
    cpu_us: f64,
    sent: u64,
    received: u64,
}

/// Runs the floor measurement and returns its report.
pub(crate) fn kernel_floor(args: &Args) -> Result<Value, String> {
    let sockets = args.floor_sockets;
    let frames = args.floor_frames;
    if args.cores < 2 {
        return Err("--kernel-floor needs two cores (sender and receiver apart)".to_owned());
    }
    let mut steer = match LoopbackSteering::read() {
        Ok(steering) => Some(steering),
        Err(e) => {
            eprintln!("load: cannot steer loopback ({e}); measuring without RPS only");
            None
        }
    };
    let receiver_mask = (1..args.cores.min(64)).fold(0_u64, |m, c| m | 1 << c);
    let mut results: Vec<(Way, bool, Vec<Sample>)> = Vec::new();
    for way in [Way::SendTo, Way::IoUring] {
        for rps in [false, true] {
            if rps && steer.is_none() {
                continue;
            }
            results.push((way, rps, Vec::new()));
        }
    }
    eprintln!(
        "load: kernel floor, {sockets} sockets x {frames} frames of {DATAGRAM} bytes, {} runs",
        args.floor_runs
    );
    for run in 0..args.floor_runs {
        for (way, rps, samples) in &mut results {
            if let Some(steer) = steer.as_mut() {
                steer.set(if *rps { receiver_mask } else { 0 })?;
            }
            let sample = measure(*way, sockets, frames, args.cores)?;
            // A send path that sends nothing would measure nothing.
            if sample.sent == 0 || sample.received == 0 {
                return Err(format!(
                    "{}: {} sent, {} received: the measurement is void",
                    way.name(),
                    sample.sent,
                    sample.received
                ));
            }
            eprintln!(
                "load: run {} {:>8} rps {:>3}: {:.2} µs per datagram ({} sent, {} received)",
                run + 1,
                way.name(),
                if *rps { "on" } else { "off" },
                sample.cpu_us,
                sample.sent,
                sample.received
            );
            samples.push(sample);
        }
    }
    drop(steer);
    let rows: Vec<Value> = results
        .iter()
        .map(|(way, rps, samples)| {
            let mut totals: Vec<f64> = samples.iter().map(|s| s.cpu_us).collect();
            totals.sort_by(f64::total_cmp);
            let median = totals[totals.len() / 2];
            json!({
                "way": way.name(),
                "rps": rps,
                "cpu_us_per_datagram": totals,
                "median_us": median,
                "max_streams_per_core_at_50pps": (1e6 / (50.0 * median)).floor(),
                "samples": samples.iter().map(|s| json!({
                    "cpu_us": s.cpu_us,
                    "sent": s.sent, "received": s.received,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "kernel_floor": {
            "sockets": sockets,
            "frames_per_socket": frames,
            "datagram_bytes": DATAGRAM,
            "runs": args.floor_runs,
            "results": rows,
        }
    }))
}

/// Sends `frames` datagrams from each of `sockets` sockets in 1 ms ticks and returns the
/// sender thread's CPU per datagram.
fn measure(way: Way, sockets: usize, frames: usize, cores: usize) -> Result<Sample, String> {
    let receiver = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    // As sfu-mock's socket (8 MiB asked; the kernel caps it at net.core.rmem_max).
    let _ = socket2::SockRef::from(&receiver).set_recv_buffer_size(8 << 20);
    receiver
        .set_read_timeout(Some(Duration::from_millis(5)))
        .map_err(|e| e.to_string())?;
    let target = receiver.local_addr().map_err(|e| e.to_string())?;
    let senders: Vec<UdpSocket> = (0..sockets)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("socket: {e} (raise the open-file limit)"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let rx = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            pin_thread(cores, |cpu| cpu >= 1);
            let mut buf = [0_u8; 2048];
            loop {
                match receiver.recv(&mut buf) {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        })
    };
    let send = std::thread::spawn(move || -> Result<(u64, f64), String> {
        pin_thread(cores, |cpu| cpu == 0);
        let payload = [0x80_u8; DATAGRAM];
        let dest = sockaddr(target);
        let per_tick = sockets.div_ceil(TICKS_PER_FRAME);
        let mut ring = match way {
            Way::IoUring => {
                let mut ring = UringSender::new(per_tick).map_err(|e| format!("io_uring: {e}"))?;
                for socket in &senders {
                    ring.add_socket(socket.as_raw_fd());
                }
                Some(ring)
            }
            Way::SendTo => None,
        };
        // Buffers handed back by the ring, refilled for the next datagrams (the engine's
        // str0m writes each packet into one of these).
        let mut spare: Vec<Vec<u8>> = Vec::with_capacity(per_tick * 2);
        let cpu0 = thread_cpu_us();
        let mut sent = 0_u64;
        let mut next = Instant::now();
        for _frame in 0..frames {
            for tick in 0..TICKS_PER_FRAME {
                let first = tick * per_tick;
                let batch = first.min(sockets)..(first + per_tick).min(sockets);
                match ring.as_mut() {
                    Some(ring) => {
                        for i in batch {
                            let mut buf = spare.pop().unwrap_or_default();
                            buf.clear();
                            buf.extend_from_slice(&payload);
                            spare.extend(ring.push(i, target, buf));
                        }
                        ring.submit();
                    }
                    None => {
                        for i in batch {
                            // SAFETY: the buffer and address outlive the call.
                            let n = unsafe {
                                libc::sendto(
                                    senders[i].as_raw_fd(),
                                    payload.as_ptr().cast(),
                                    payload.len(),
                                    libc::MSG_DONTWAIT,
                                    (&raw const dest).cast(),
                                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                                )
                            };
                            sent += u64::from(n > 0);
                        }
                    }
                }
                next += TICK;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
        if let Some(ring) = ring.as_mut() {
            // Reaps the last tick's completions (UDP sends complete inline).
            ring.submit();
            let counters = ring.counters();
            sent = counters.sent;
            if counters.errors + counters.dropped_full > 0 {
                return Err(format!("the ring refused datagrams: {counters:?}"));
            }
        }
        Ok((sent, thread_cpu_us() - cpu0))
    });
    let result = send.join().map_err(|_| "the sender panicked".to_owned());
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let _ = rx.join();
    let (sent, cpu) = result??;
    Ok(Sample {
        cpu_us: cpu / sent.max(1) as f64,
        sent,
        received: received.load(Ordering::Relaxed),
    })
}

fn sockaddr(addr: std::net::SocketAddr) -> libc::sockaddr_in {
    let std::net::SocketAddr::V4(v4) = addr else {
        unreachable!("the receiver binds 127.0.0.1")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Pins the calling thread to the cores `keep` selects (of the machine's `cores`).
fn pin_thread(cores: usize, keep: impl Fn(usize) -> bool) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity take valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in (0..cores).filter(|c| keep(*c)) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The calling thread's CPU time in µs (the scheduler's exact runtime). `getrusage`'s
/// per-thread user/system split is not used: on this VM it is sampled at the tick and came out
/// 0 % or 100 % kernel for the same kind of run.
fn thread_cpu_us() -> f64 {
    // SAFETY: clock_gettime fills the struct it is given.
    let clock = unsafe {
        let mut clock: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut clock);
        clock
    };
    clock.tv_sec as f64 * 1e6 + clock.tv_nsec as f64 / 1e3
}
