//! A Python interop peer (`interop/<script>`) as a child process speaking JSON lines: shared by
//! the aiortc tests of engine-runtime and sfu-mock, which include this file with `#[path]`.
//!
//! Every wait is bounded; a line with an `error` key is the script failing (usually aiortc not
//! installed); the child is killed if the test panics before it exits.
#![allow(dead_code)] // each test uses part

use std::fmt::Display;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The running script.
pub(crate) struct PythonPeer {
    script: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PythonPeer {
    /// Runs `python3 interop/<script> <args>...`.
    pub(crate) fn spawn(script: &'static str, args: &[String]) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../interop")
            .join(script);
        let mut child = Command::new("python3")
            .arg(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 (install it and run scripts/setup.sh for aiortc): {e}")
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("child stdout");
        // One reader thread: lines arrive through a channel so every wait is bounded.
        let (tx, lines) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            script,
            child,
            stdin,
            lines,
        }
    }

    fn parse(&self, what: &str, line: &str) -> serde_json::Value {
        let script = self.script;
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{script} {what} line is not JSON ({e}): {line}"));
        if let Some(err) = v.get("error") {
            panic!(
                "{script} failed before its {what}: {err} (is aiortc installed? run scripts/setup.sh)"
            );
        }
        v
    }

    /// The next line (`what` it should be, for messages), within `limit`.
    pub(crate) fn next(&self, what: &str, limit: Duration) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("{} gave no {what} line within {limit:?}", self.script));
        self.parse(what, &line)
    }

    /// The next line if one is waiting.
    pub(crate) fn try_next(&self, what: &str) -> Option<serde_json::Value> {
        match self.lines.try_recv() {
            Ok(line) => Some(self.parse(what, &line)),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                panic!("{} exited before its {what}", self.script)
            }
        }
    }

    /// Writes `line` to the script's stdin.
    pub(crate) fn send(&mut self, line: impl Display) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("write to {}: {e}", self.script));
        stdin.flush().expect("flush");
    }

    /// Closes stdin (the script stops reading; aiortc_p2p.py stops sending and exits).
    pub(crate) fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Closes stdin and waits (at most `limit`) for a clean exit.
    pub(crate) fn finish(mut self, limit: Duration) {
        self.close_stdin();
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "{} exited with {status}", self.script);
                return;
            }
            assert!(Instant::now() < end, "{} did not exit", self.script);
            thread::sleep(Duration::from_millis(20));
        }
    }
}
