//! TURN servers in a 1:1 call: two `P2pCall`s over real loopback UDP with a real TURN server
//! (coturn's `turnserver`, long-term credentials) started and stopped by each test.
//!
//! A relay-only caller (ntgcalls' `p2pAllowed = false`) signals only its relayed candidate and
//! sends everything through the server in Send indications; the callee's checks and media come
//! back to it in Data indications. A wrong password fails the allocation (counted) and the call
//! still connects on host candidates.
//!
//! Needs `turnserver` on PATH (package `coturn`, installed by `scripts/setup.sh`): without it the
//! tests fail, they do not skip.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast_core::p2p_call::P2pConfig;
use ringcast_core::signaling::p2p::{CallKey, Role};
use ringcast_core::turn::TurnServer;

mod common;

use common::p2p::{End, assert_tone, dh_exchange, run, set_tone};

const CALLER_HZ: f32 = 440.0;
const CALLEE_HZ: f32 = 1000.0;
const USER: &str = "ringcast-user";
const PASSWORD: &str = "ringcast-pass";

/// A coturn process on loopback, killed on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

/// coturn's pid file and user database directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Coturn {
    fn start() -> Self {
        // A free UDP port on loopback (released just before coturn binds it).
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("ringcast-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                &format!("--user={USER}:{PASSWORD}"),
                "--realm=ringcast",
                "--lt-cred-mech",
                "--no-tls",
                "--no-dtls",
                "--no-tcp",
                "--allow-loopback-peers",
                "--no-cli",
                "--log-file=stdout",
                "--simple-log",
            ])
            .arg(format!("--pidfile={}", dir.join("pid").display()))
            .arg(format!("--userdb={}", dir.join("db.sqlite").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run turnserver (run scripts/setup.sh to install coturn): {e}")
            });
        let mut coturn = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: TempDir(dir),
        };
        coturn.wait_ready();
        coturn
    }

    /// Sends STUN Binding Requests until coturn answers (it takes a moment to bind).
    fn wait_ready(&mut self) {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut request = [0u8; 20];
        request[1] = 0x01;
        request[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        request[8..20].copy_from_slice(b"ringcastprob");
        let start = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("turnserver exited at start: {status}");
            }
            let _ = probe.send_to(&request, self.addr);
            if let Ok((n, from)) = probe.recv_from(&mut buf)
                && from == self.addr
                && n >= 20
                && buf[0..2] == [0x01, 0x01]
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "turnserver did not answer on {} within 10 s",
                self.addr
            );
        }
    }

    fn server(&self, password: &str) -> TurnServer {
        TurnServer {
            addr: self.addr,
            username: USER.to_owned(),
            password: password.to_owned(),
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An end playing its role's tone; `configure` adjusts the call (TURN servers).
fn end(role: Role, key: CallKey, seed: u64, configure: impl FnOnce(&mut P2pConfig)) -> End {
    let mut end = End::configured(role, key, seed, Instant::now(), configure);
    set_tone(
        &mut end,
        if role == Role::Caller {
            CALLER_HZ
        } else {
            CALLEE_HZ
        },
    );
    end
}

#[test]
fn a_relay_only_call_goes_through_coturn_both_ways() {
    let coturn = Coturn::start();
    let (caller_key, callee_key) = dh_exchange();
    let mut caller = end(Role::Caller, caller_key, 11, |c| {
        c.turn_servers = vec![coturn.server(PASSWORD)];
        c.relay_only = true;
    });
    let mut callee = end(Role::Callee, callee_key, 22, |_| {});
    let caller_host = caller.addr;
    let start = Instant::now();
    run(
        &mut caller,
        &mut callee,
        Duration::from_secs(10),
        Duration::from_millis(100),
        &mut |_, bytes| vec![bytes],
        |a, b| a.audio_packets >= 50 && b.audio_packets >= 50,
    );
    println!(
        "connected: caller after {:?}, callee after {:?}",
        caller.connected_at.map(|t| t - start),
        callee.connected_at.map(|t| t - start)
    );
    assert_tone(&caller, CALLEE_HZ, "caller");
    assert_tone(&callee, CALLER_HZ, "callee");
    let (cs, es) = (caller.call.stats().clone(), callee.call.stats().clone());
    println!("caller {cs:?}\ncallee {es:?}");
    assert_eq!(cs.turn_allocations, 1);
    assert_eq!(cs.turn_failed, 0);
    // Everything the caller heard came through coturn in Data indications, and everything
    // ICE sent went out in Send indications.
    assert!(
        cs.turn_relayed_in >= caller.audio_packets,
        "{} relayed in, {} audio packets",
        cs.turn_relayed_in,
        caller.audio_packets
    );
    assert!(
        cs.turn_relayed_out >= 50,
        "{} relayed out",
        cs.turn_relayed_out
    );
    // The callee only ever talked to the relay: the caller's host address never reached it.
    assert!(
        !callee.call.remote_addrs().contains(&caller_host),
        "callee learned the caller's host address {caller_host}: {:?}",
        callee.call.remote_addrs()
    );
    assert!(
        callee
            .call
            .remote_addrs()
            .iter()
            .all(|a| a.ip() == coturn.addr.ip() && a.port() != coturn.addr.port()),
        "callee's remote candidates are not the relay: {:?}",
        callee.call.remote_addrs()
    );
}

#[test]
fn a_wrong_turn_password_fails_the_allocation_and_the_call_connects_on_host_candidates() {
    let coturn = Coturn::start();
    let (caller_key, callee_key) = dh_exchange();
    let mut caller = end(Role::Caller, caller_key, 11, |c| {
        c.turn_servers = vec![coturn.server("wrong")];
    });
    let mut callee = end(Role::Callee, callee_key, 22, |_| {});
    run(
        &mut caller,
        &mut callee,
        Duration::from_secs(10),
        Duration::from_millis(100),
        &mut |_, bytes| vec![bytes],
        |a, b| a.audio_packets >= 50 && b.audio_packets >= 50 && a.call.stats().turn_failed > 0,
    );
    assert_tone(&caller, CALLEE_HZ, "caller");
    assert_tone(&callee, CALLER_HZ, "callee");
    let cs = caller.call.stats().clone();
    println!("caller {cs:?}");
    assert_eq!(cs.turn_failed, 1);
    assert_eq!(cs.turn_allocations, 0);
    assert_eq!(cs.turn_relayed_out + cs.turn_relayed_in, 0);
    // Unauthenticated Allocate, then the authenticated retry that got 401 again.
    assert!(
        cs.turn_requests_sent >= 2,
        "{} TURN requests",
        cs.turn_requests_sent
    );
}
