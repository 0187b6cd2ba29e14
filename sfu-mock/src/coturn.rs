//! A real TURN server for tests: coturn's `turnserver` on loopback with one long-term
//! credential user, started by [`Coturn::start`] and killed on drop.
//!
//! Needs `turnserver` on PATH (Debian package `coturn`, installed by `scripts/setup.sh`).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The realm coturn is started with.
pub const REALM: &str = "ringcast";

/// How long [`Coturn::start`] waits for the server to answer a STUN Binding Request.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A coturn process listening on a free UDP port of 127.0.0.1 (relaying on 127.0.0.1 too,
/// loopback peers allowed, no TLS/DTLS/TCP, no CLI), killed on drop.
#[derive(Debug)]
pub struct Coturn {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Coturn {
    /// Starts coturn with the single user `user:password` (long-term credentials, realm
    /// [`REALM`]) and waits until it answers STUN.
    ///
    /// # Errors
    /// Spawning fails (e.g. `turnserver` is not installed), it exits at start, or it does not
    /// answer within 10 s.
    pub fn start(user: &str, password: &str) -> io::Result<Self> {
        // A free UDP port on loopback (released just before coturn binds it).
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir =
            std::env::temp_dir().join(format!("ringcast-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                &format!("--user={user}:{password}"),
                &format!("--realm={REALM}"),
                "--lt-cred-mech",
                "--no-tls",
                "--no-dtls",
                "--no-tcp",
                "--allow-loopback-peers",
                "--no-cli",
                "--log-file=stdout",
            ])
            .arg(format!("--pidfile={}", dir.join("pid").display()))
            .arg(format!("--userdb={}", dir.join("db.sqlite").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run turnserver: {e}")))?;
        let mut coturn = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        coturn.wait_ready()?;
        Ok(coturn)
    }

    /// The server's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends STUN Binding Requests until coturn answers (it takes a moment to bind).
    fn wait_ready(&mut self) -> io::Result<()> {
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut request = [0u8; 20];
        request[1] = 0x01;
        request[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        request[8..20].copy_from_slice(b"ringcastprob");
        let start = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "turnserver exited at start: {status}"
                )));
            }
            let _ = probe.send_to(&request, self.addr);
            if let Ok((n, from)) = probe.recv_from(&mut buf)
                && from == self.addr
                && n >= 20
                && buf[0..2] == [0x01, 0x01]
            {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("turnserver did not answer on {} within 10 s", self.addr),
                ));
            }
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
