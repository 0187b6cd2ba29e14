//! `ringcast play` against the `sfu-mock` binary, over real UDP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// The sfu-mock binary beside ours; built on demand when only this package's tests were built.
fn sfu_mock_bin() -> PathBuf {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_ringcast"));
    let path = ours.with_file_name("sfu-mock");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "sfu-mock", "--bin", "sfu-mock"])
            .status()
            .expect("running cargo to build sfu-mock");
        assert!(status.success(), "building sfu-mock failed");
    }
    path
}

struct Sfu {
    child: Child,
    http: String,
}

impl Sfu {
    fn start() -> Self {
        let mut child = Command::new(sfu_mock_bin())
            .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sfu-mock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addrs: Value = serde_json::from_str(&line).expect("sfu-mock's first line is JSON");
        assert!(addrs["udp"].as_str().unwrap().starts_with("127.0.0.1:"));
        Self {
            child,
            http: addrs["http"].as_str().unwrap().to_owned(),
        }
    }

    fn join_url(&self, chat: &str) -> String {
        format!("http://{}/v1/chats/{chat}/join", self.http)
    }

    fn stats(&self) -> Value {
        let body = ureq::get(&format!("http://{}/v1/stats", self.http))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn play(url: &str, tone: &str, seconds: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args([
            "play",
            "--join-url",
            url,
            "--tone",
            tone,
            "--seconds",
            seconds,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ringcast play failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap()
}

/// Checks the SFU's view of the participant the summary describes.
fn verify(stats: &Value, chat: &str, summary: &Value, tone_hz: f64) {
    let ssrc = summary["ssrc"].as_u64().unwrap();
    let sent = summary["packets_sent"].as_u64().unwrap();
    let p = stats["chats"][chat]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ssrc"].as_u64() == Some(ssrc))
        .expect("participant at the sfu");
    assert!(summary["connected"].as_bool().unwrap());
    assert!(summary["connect_ms"].as_f64().unwrap() < 2000.0);
    assert!(sent >= 140, "3 s of audio is 150 packets, sent {sent}");
    let received = p["packets"].as_u64().unwrap();
    assert!(
        received as f64 >= sent as f64 * 0.95,
        "sfu verified {received} of {sent} packets"
    );
    assert_eq!(p["dropped_no_audio_level"].as_u64(), Some(0));
    let hz = p["dominant_hz"].as_f64().expect("decoded audio");
    assert!(
        (hz - tone_hz).abs() <= 5.0,
        "dominant {hz} Hz, sent {tone_hz} Hz"
    );
}

#[test]
fn play_an_mp3_file_is_verified_by_the_sfu() {
    let dir = std::env::temp_dir().join(format!("ringcast-cli-mp3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mp3 = dir.join("song.mp3");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("sine=frequency=523:duration=5")
        .args(["-c:a", "libmp3lame"])
        .arg(&mp3)
        .status()
        .expect("ffmpeg is installed (scripts/setup.sh)");
    assert!(made.success());
    let sfu = Sfu::start();
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["play", "--join-url", &sfu.join_url("3"), "--file"])
        .arg(&mp3)
        .args(["--seconds", "3"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let summary = summary(&out);
    verify(&sfu.stats(), "3", &summary, 523.0);
}

/// Power of 48 kHz mono `pcm` at `hz` (Goertzel).
fn power_at(pcm: &[i16], hz: f64) -> f64 {
    let coeff = 2.0 * (std::f64::consts::TAU * hz / 48_000.0).cos();
    let (mut s1, mut s2) = (0.0_f64, 0.0_f64);
    for &x in pcm {
        let s0 = f64::from(x) / 32_768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / pcm.len().max(1) as f64
}

#[test]
fn play_record_writes_what_the_other_participant_says() {
    let dir = std::env::temp_dir().join(format!("ringcast-cli-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("heard.wav");
    let sfu = Sfu::start();
    let url = sfu.join_url("5");
    let speaker = play(&url, "440", "5");
    let listener = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args([
            "play",
            "--join-url",
            &url,
            "--tone",
            "880",
            "--seconds",
            "4",
            "--record",
        ])
        .arg(&wav)
        .output()
        .unwrap();
    let _ = speaker.wait_with_output();
    let summary = summary(&listener);
    assert!(
        summary["recorded_frames"].as_u64().unwrap() >= 100,
        "{summary}"
    );
    let decoded = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-i"])
        .arg(&wav)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "pipe:1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(decoded.status.success());
    let pcm: Vec<i16> = decoded
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(pcm.len() >= 48_000 * 2, "{} samples recorded", pcm.len());
    // The other participant's tone, not our own (the SFU does not send us back our audio).
    let heard = power_at(&pcm, 440.0);
    let own = power_at(&pcm, 880.0);
    let control = power_at(&pcm, 660.0);
    assert!(
        heard > 100.0 * control.max(1e-12),
        "440: {heard}, 660: {control}"
    );
    assert!(heard > 100.0 * own.max(1e-12), "440: {heard}, 880: {own}");
}

#[test]
fn play_tone_is_verified_by_the_sfu() {
    let sfu = Sfu::start();
    let out = play(&sfu.join_url("1"), "440", "3")
        .wait_with_output()
        .unwrap();
    let summary = summary(&out);
    verify(&sfu.stats(), "1", &summary, 440.0);
}

#[test]
fn two_calls_in_two_chats_each_verified() {
    let sfu = Sfu::start();
    let a = play(&sfu.join_url("10"), "440", "3");
    let b = play(&sfu.join_url("20"), "1000", "3");
    let a = summary(&a.wait_with_output().unwrap());
    let b = summary(&b.wait_with_output().unwrap());
    let stats = sfu.stats();
    verify(&stats, "10", &a, 440.0);
    verify(&stats, "20", &b, 1000.0);
}

#[test]
fn refused_join_exits_nonzero_with_a_message() {
    let sfu = Sfu::start();
    let out = play(&sfu.join_url("not-a-number"), "440", "1")
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 400"), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn unreachable_sfu_exits_nonzero() {
    // Nothing listens on this port: the POST itself fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/chats/1/join", closed.local_addr().unwrap());
    drop(closed);
    let out = play(&url, "440", "1").wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("POST"));
}
