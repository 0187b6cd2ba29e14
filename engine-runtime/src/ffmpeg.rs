//! The external processes that decode and encode media: the `ffmpeg` binary (Debian's `ffmpeg`
//! package; `scripts/setup.sh` installs it) and the application's shell commands.
//!
//! ringcast does what gotgcall, ntgcalls and py-tgcalls do, spawning ffmpeg, but once per
//! distinct input rather than once per call (see [`crate::play`]). This module owns the
//! processes' lifetime:
//!
//! - every child runs in its own process group and gets `SIGKILL` when the thread that spawned
//!   it ends (`PR_SET_PDEATHSIG`), so neither a dropped engine nor an exiting process leaves an
//!   ffmpeg behind; a shell command's own children share its group and are killed with it;
//! - a process's `Drop` kills the group and reaps the child;
//! - standard error is read by a thread of its own into a bounded tail ([`STDERR_TAIL_BYTES`]),
//!   which becomes the [`SourceError::Decoder`] of a process that failed.
//!
//! `unsafe` here: `pre_exec` (the death signal, set between fork and exec) and `kill(2)` of the
//! child's process group.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ringcast_core::SourceError;

use crate::sync::lock;

/// Bytes of a process's standard error kept for its error message: the last lines that fit.
pub const STDERR_TAIL_BYTES: usize = 2048;

/// Where the `ffmpeg` binary is. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ffmpeg {
    path: PathBuf,
}

impl Default for Ffmpeg {
    /// `ffmpeg`, looked up on `PATH`.
    fn default() -> Self {
        Self::new("ffmpeg")
    }
}

impl Ffmpeg {
    /// The binary at `path` (a bare name is looked up on `PATH`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `ffmpeg -version` and returns its first line, or
    /// [`SourceError::FfmpegNotFound`] if the binary does not run.
    pub fn check(&self) -> Result<String, SourceError> {
        let not_found = |reason: String| SourceError::FfmpegNotFound {
            path: self.path.display().to_string(),
            reason,
        };
        let output = Command::new(&self.path)
            .arg("-version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| not_found(e.to_string()))?;
        if !output.status.success() {
            return Err(not_found(format!(
                "`-version` exited with {}",
                output.status
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let first = text.lines().next().unwrap_or_default().to_owned();
        if !first.starts_with("ffmpeg") {
            return Err(not_found(format!("`-version` printed {first:?}")));
        }
        Ok(first)
    }

    /// A command for this ffmpeg with the arguments every use shares: no interaction on stdin,
    /// no banner, errors only on standard error.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error"]);
        cmd
    }

    /// The `ffprobe` beside this ffmpeg (same directory; on `PATH` for a bare name). Debian's
    /// `ffmpeg` package installs both.
    pub fn ffprobe(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join("ffprobe"),
            _ => PathBuf::from("ffprobe"),
        }
    }

    /// The program name of [`SourceError::Decoder`] for this binary.
    pub(crate) fn program(&self) -> String {
        "ffmpeg".to_owned()
    }
}

/// A shell command line, run with `/bin/sh -c`.
pub(crate) fn shell_command(line: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(line);
    cmd
}

/// `arg` in single quotes for `/bin/sh` (a `'` inside becomes `'\''`).
pub(crate) fn shell_quote(arg: &std::ffi::OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', "'\\''"))
}

/// The program name of a shell command line, for error messages: its first word.
pub(crate) fn shell_program(line: &str) -> String {
    line.split_whitespace()
        .next()
        .unwrap_or("sh")
        .rsplit('/')
        .next()
        .unwrap_or("sh")
        .to_owned()
}

/// What a [`Process`] connects to the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipes {
    /// Its standard output is read (decoders).
    Stdout,
    /// Its standard input is written (recorders).
    Stdin,
    /// Both: written and read (an encoder of frames the application pushes).
    Both,
    /// Neither (RTMP push: ffmpeg reads and writes by itself).
    None,
}

/// The bounded tail of a process's standard error.
#[derive(Debug, Default)]
struct StderrTail {
    text: String,
}

impl StderrTail {
    fn push_line(&mut self, line: &str) {
        self.text.push_str(line.trim_end());
        self.text.push('\n');
        if self.text.len() > STDERR_TAIL_BYTES {
            let mut cut = self.text.len() - STDERR_TAIL_BYTES;
            // Cut at a line (and char) boundary.
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            let cut = self.text[cut..].find('\n').map_or(cut, |nl| cut + nl + 1);
            self.text.drain(..cut);
        }
    }
}

/// Signals a [`Process`]'s group from any thread, safely against pid reuse: the group id is
/// cleared, under the same lock, before the child is reaped, so a signal never reaches a
/// process that merely inherited the number. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Killer {
    pgid: Arc<Mutex<Option<libc::pid_t>>>,
}

impl Killer {
    /// Sends `signal` to the group, if the child was not reaped yet.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        let guard = lock(&self.pgid);
        if let Some(pgid) = *guard {
            // SAFETY: kill(2) with a negative pid signals the process group we created for
            // the child (process_group(0) makes its pid the group id). The child is not
            // reaped while `pgid` is set (see `Process::reap`), so the id is still ours.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }

    /// Kills the group.
    pub(crate) fn kill(&self) {
        self.signal(libc::SIGKILL);
    }
}

/// A running child process: killed (with its process group) and reaped on drop.
#[derive(Debug)]
pub(crate) struct Process {
    program: String,
    child: Child,
    killer: Killer,
    stderr: Arc<Mutex<StderrTail>>,
    stderr_thread: Option<JoinHandle<()>>,
    /// Set once the child was reaped.
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `cmd` in a process group of its own, with `SIGKILL` on the death of the calling
    /// thread, its standard error read into a tail and `pipes` connected.
    ///
    /// The death signal follows the *thread* that spawns (prctl(2)): spawn from the thread
    /// that owns the process for its whole life (a decoder's own thread), never from a
    /// short-lived one.
    ///
    /// A program that cannot be started is [`SourceError::FfmpegNotFound`] when `ffmpeg` is
    /// `Some` (the command is that ffmpeg) and [`SourceError::Decoder`] otherwise.
    pub(crate) fn spawn(
        mut cmd: Command,
        program: String,
        pipes: Pipes,
        ffmpeg: Option<&Ffmpeg>,
    ) -> Result<Self, SourceError> {
        cmd.stdin(if matches!(pipes, Pipes::Stdin | Pipes::Both) {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if matches!(pipes, Pipes::Stdout | Pipes::Both) {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2)
        // and getppid(2), both async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl: then nobody would kill us.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("parent exited before exec"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| match ffmpeg {
            Some(ffmpeg) if e.kind() == std::io::ErrorKind::NotFound => {
                SourceError::FfmpegNotFound {
                    path: ffmpeg.path().display().to_string(),
                    reason: e.to_string(),
                }
            }
            _ => SourceError::Decoder {
                program: program.clone(),
                reason: format!("cannot start: {e}"),
                stderr: String::new(),
            },
        })?;
        let stderr = Arc::new(Mutex::new(StderrTail::default()));
        let stderr_thread = child.stderr.take().and_then(|pipe| {
            let tail = stderr.clone();
            std::thread::Builder::new()
                .name("ringcast-stderr".into())
                .spawn(move || {
                    let mut reader = BufReader::new(pipe);
                    let mut line = Vec::new();
                    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                        let text = String::from_utf8_lossy(&line);
                        lock(&tail).push_line(&text);
                        line.clear();
                    }
                })
                .ok()
        });
        let killer = Killer {
            pgid: Arc::new(Mutex::new(libc::pid_t::try_from(child.id()).ok())),
        };
        Ok(Self {
            program,
            child,
            killer,
            stderr,
            stderr_thread,
            status: None,
        })
    }

    /// The child's standard output (once; [`Pipes::Stdout`] and [`Pipes::Both`]).
    pub(crate) fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's standard input (once; [`Pipes::Stdin`] and [`Pipes::Both`]).
    pub(crate) fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// A handle that signals the process group from other threads.
    pub(crate) fn killer(&self) -> Killer {
        self.killer.clone()
    }

    /// Kills the process group (no effect once reaped).
    pub(crate) fn kill(&self) {
        self.killer.kill();
    }

    /// Waits for the child to exit, then reaps it: first without reaping (`WNOWAIT`), so that
    /// the [`Killer`] can forget the group id before the id is free for reuse.
    fn reap(&mut self) -> std::io::Result<ExitStatus> {
        {
            let pid: libc::id_t = self.child.id();
            loop {
                // SAFETY: waitid(2) with WNOWAIT only reads the child's state into `info`, a
                // zeroed siginfo_t we own; it does not reap, so std's Child stays valid.
                let r = unsafe {
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
                };
                if r == 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    break;
                }
            }
        }
        *lock(&self.killer.pgid) = None;
        self.child.wait()
    }

    /// Waits for the child to exit and turns a failure into [`SourceError::Decoder`] with the
    /// tail of its standard error. `killed_by_us` says the caller killed it on purpose: that
    /// is not a failure.
    pub(crate) fn finish(&mut self, killed_by_us: bool) -> Result<(), SourceError> {
        let status = match self.status {
            Some(status) => status,
            None => {
                let status = self.reap().map_err(|e| SourceError::Decoder {
                    program: self.program.clone(),
                    reason: format!("wait failed: {e}"),
                    stderr: String::new(),
                })?;
                self.status = Some(status);
                // Standard error closes when the process (group) is gone.
                if let Some(thread) = self.stderr_thread.take() {
                    let _ = thread.join();
                }
                status
            }
        };
        if status.success() || killed_by_us {
            return Ok(());
        }
        Err(self.failure(describe(status)))
    }

    /// A [`SourceError::Decoder`] for this process with `reason` and the tail of its stderr.
    pub(crate) fn failure(&self, reason: String) -> SourceError {
        SourceError::Decoder {
            program: self.program.clone(),
            reason,
            stderr: lock(&self.stderr).text.clone(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            let _ = self.reap();
        }
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
    }
}

/// "exited with status 1", "killed by signal 9".
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_passes_any_argument_through_sh_unchanged() {
        for arg in [
            "plain",
            "with space",
            "it's",
            "'",
            "$HOME `x` \\ \"q\" ;|&",
            "",
        ] {
            let line = format!("printf %s {}", shell_quote(std::ffi::OsStr::new(arg)));
            let out = shell_command(&line).output().expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), arg, "{line}");
        }
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let mut tail = StderrTail::default();
        for i in 0..1000 {
            tail.push_line(&format!("line {i}\n"));
        }
        assert!(tail.text.len() <= STDERR_TAIL_BYTES);
        assert!(tail.text.starts_with("line "), "{}", &tail.text[..20]);
        assert!(tail.text.ends_with("line 999\n"));
    }

    #[test]
    fn a_failing_command_reports_status_and_stderr() {
        let cmd = shell_command("echo 'no such input' >&2; exit 3");
        let mut p = Process::spawn(cmd, "sh".into(), Pipes::None, None).expect("spawn");
        let err = p.finish(false).expect_err("exit 3 is a failure");
        let SourceError::Decoder { reason, stderr, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(reason, "exited with status 3");
        assert_eq!(stderr.trim(), "no such input");
        assert!(err.to_string().contains("no such input"), "{err}");
    }

    #[test]
    fn a_missing_ffmpeg_is_typed() {
        let ffmpeg = Ffmpeg::new("/nonexistent/ffmpeg");
        assert!(matches!(
            ffmpeg.check(),
            Err(SourceError::FfmpegNotFound { .. })
        ));
        let err = Process::spawn(
            ffmpeg.command(),
            "ffmpeg".into(),
            Pipes::Stdout,
            Some(&ffmpeg),
        )
        .expect_err("no binary");
        assert!(matches!(err, SourceError::FfmpegNotFound { .. }), "{err:?}");
    }

    #[test]
    fn drop_kills_the_whole_group() {
        // A shell whose child sleeps: dropping the process must kill the sleeper too.
        let cmd = shell_command("sleep 60 & echo $! >&2; wait");
        let p = Process::spawn(cmd, "sh".into(), Pipes::None, None).expect("spawn");
        let sleeper = loop {
            let text = lock(&p.stderr).text.clone();
            if let Some(pid) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u32>().ok())
            {
                break pid;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(Path::new(&format!("/proc/{sleeper}")).exists());
        drop(p);
        // The sleeper was our grandchild: once killed, init reaps it.
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !Path::new(&format!("/proc/{sleeper}")).exists()
                || std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "sleep {sleeper} survived its group's kill");
    }
}
