//! Media helpers of the play, RTMP and recording tests: test media made with ffmpeg at test
//! time, decoded back, measured, and the ffmpeg children of this process counted.

use std::f64::consts::TAU;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The tests that count this process's ffmpeg children run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lock of [`SERIAL`] for the test's duration.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A directory for one test's media, removed when dropped.
pub(crate) struct MediaDir(pub(crate) PathBuf);

impl MediaDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ringcast-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for MediaDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs ffmpeg to make test media; `args` go between the global options and the output.
pub(crate) fn make(out: &Path, args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg is installed (scripts/setup.sh)");
    assert!(status.success(), "ffmpeg could not make {}", out.display());
}

/// Makes `out`, an mp4 of ffmpeg's lavfi `video` source (H.264) with the lavfi `audio` source
/// (AAC) beside it, as long as the shorter of the two.
pub(crate) fn av_clip(out: &Path, video: &str, audio: &str) {
    make(
        out,
        &[
            "-f",
            "lavfi",
            "-i",
            video,
            "-f",
            "lavfi",
            "-i",
            audio,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ],
    );
}

/// ffmpeg's lavfi source of a `hz` sine lasting `seconds`, at 48 kHz.
pub(crate) fn sine(hz: u32, seconds: f32) -> String {
    format!("sine=frequency={hz}:duration={seconds}:sample_rate=48000")
}

/// Makes `name` in `dir` holding a `hz` sine of `seconds`, encoded with `codec_args`.
pub(crate) fn tone_file(
    dir: &MediaDir,
    name: &str,
    hz: u32,
    seconds: f32,
    codec_args: &[&str],
) -> PathBuf {
    let out = dir.path(name);
    let input = sine(hz, seconds);
    let mut args = vec!["-f", "lavfi", "-i", &input];
    args.extend_from_slice(codec_args);
    make(&out, &args);
    out
}

/// The file decoded to mono 48 kHz samples (full scale 1.0).
pub(crate) fn decode(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "pipe:1"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "decoding {}", path.display());
    out.stdout
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
        .collect()
}

/// Goertzel power of `hz` in 48 kHz `pcm`, normalised by the length.
pub(crate) fn power(pcm: &[f32], hz: f64) -> f64 {
    let coeff = 2.0 * (TAU * hz / 48_000.0).cos();
    let (mut s1, mut s2) = (0.0_f64, 0.0_f64);
    for &x in pcm {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (pcm.len() as f64).powi(2)
}

/// Children of this process whose command is `name` (ffmpeg, sh...), zombies included: a
/// child counts until it was reaped.
pub(crate) fn children_named(name: &str) -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let Some((head, tail)) = stat.rsplit_once(") ") else {
                return false;
            };
            let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or_default();
            let ppid = tail.split_whitespace().nth(1).unwrap_or_default();
            comm == name && ppid == me
        })
        .count()
}

/// Waits up to `limit` for no child named `name`; returns how many are left.
pub(crate) fn wait_no_children(name: &str, limit: Duration) -> usize {
    let end = Instant::now() + limit;
    loop {
        let n = children_named(name);
        if n == 0 || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
