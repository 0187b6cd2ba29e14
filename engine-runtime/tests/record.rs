//! Recording end to end: two speakers with different tones in one chat of sfu-mock (which
//! forwards each participant's audio to the others); listening calls record the mix to an mp3,
//! each speaker to a flac of its own, and the mix into a shell command (py-tgcalls' PLAYBACK
//! SHELL kind of ffmpeg line). Each file, decoded back, holds the tones it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::media::{MediaDir, children_named, decode, power};
use common::{join_with, no_edit, wait_connected};
use ringcast::{Engine, EngineError, RecordConfig, RecordOutput, SourceError};
use sfu_mock::server::{Server, ServerOptions};

const SPEAKER_A: f64 = 440.0;
const SPEAKER_B: f64 = 1000.0;
/// The listeners' own tone (each hears the others'): not one the checks look at.
const LISTENER: f32 = 3000.0;
/// A frequency nobody plays.
const CONTROL: f64 = 700.0;

#[test]
fn records_the_mix_each_speaker_and_into_a_shell_command() {
    let dir = MediaDir::new("record");
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let engine = Engine::builder().shards(2).build().unwrap();
    assert!(matches!(
        engine.record(99, RecordConfig::file(dir.0.join("x.mp3"))),
        Err(EngineError::ConnectionNotFound(99))
    ));

    // Calls 1 and 2 speak; 3, 4 and 5 listen (and play a tone of their own).
    let mut ssrcs = Vec::new();
    for (key, hz) in [
        (1, SPEAKER_A as f32),
        (2, SPEAKER_B as f32),
        (3, LISTENER),
        (4, LISTENER),
        (5, LISTENER),
    ] {
        let (_, _, ssrc) = join_with(&engine, &sfu, key, 7, hz, no_edit, |r| r);
        ssrcs.push(ssrc);
    }
    // Bad configs are typed errors.
    assert!(matches!(
        engine.record(3, RecordConfig::file(dir.0.join("x.xyz"))),
        Err(EngineError::Source(SourceError::InvalidArgument { .. }))
    ));
    assert!(matches!(
        engine.record(3, RecordConfig::shell("  ")),
        Err(EngineError::Source(SourceError::InvalidArgument { .. }))
    ));
    wait_connected(&engine, 5, Duration::from_secs(10));

    let mixed = dir.0.join("mixed.mp3");
    let shell_wav = dir.0.join("shell.wav");
    let r_mixed = engine.record(3, RecordConfig::file(&mixed)).unwrap();
    let r_each = engine
        .record(
            4,
            RecordConfig::file(dir.0.join("speaker-{ssrc}.flac")).per_speaker(),
        )
        .unwrap();
    let r_shell = engine
        .record(
            5,
            RecordConfig::shell(format!(
                "ffmpeg -y -loglevel quiet -f s16le -ar 48000 -ac 1 -i pipe:0 {}",
                shell_wav.display()
            )),
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!r_mixed.is_finished());
    let started = Instant::now();
    let s_mixed = r_mixed.stop().unwrap();
    let s_each = r_each.stop().unwrap();
    let s_shell = r_shell.stop().unwrap();
    eprintln!("stopped in {:?}", started.elapsed());
    eprintln!("mixed: {s_mixed:?}\nper speaker: {s_each:?}\nshell: {s_shell:?}");
    assert_eq!(s_mixed.outputs.len(), 1);
    assert!(s_mixed.outputs[0].frames >= 100, "{s_mixed:?}");
    assert_eq!(s_mixed.speakers, 4, "two speakers and two other listeners");

    // The mix holds both speakers' tones.
    for (name, path) in [("mixed mp3", &mixed), ("shell wav", &shell_wav)] {
        let pcm = decode(path);
        let secs = pcm.len() as f64 / 48_000.0;
        assert!(secs >= 2.0, "{name}: {secs:.2} s");
        let (a, b, c) = (
            power(&pcm, SPEAKER_A),
            power(&pcm, SPEAKER_B),
            power(&pcm, CONTROL),
        );
        eprintln!("{name}: {secs:.2} s, power {a:.2e} @440, {b:.2e} @1000, {c:.2e} @700");
        assert!(a > 100.0 * c, "{name}: 440 Hz {a:.2e} vs control {c:.2e}");
        assert!(b > 100.0 * c, "{name}: 1000 Hz {b:.2e} vs control {c:.2e}");
    }

    // Each speaker's file holds its own tone only.
    for (ssrc, own, other) in [
        (ssrcs[0], SPEAKER_A, SPEAKER_B),
        (ssrcs[1], SPEAKER_B, SPEAKER_A),
    ] {
        let path = dir.0.join(format!("speaker-{ssrc}.flac"));
        let out = s_each
            .outputs
            .iter()
            .find(|o| o.ssrc == Some(ssrc))
            .unwrap_or_else(|| panic!("no output for {ssrc}: {s_each:?}"));
        assert_eq!(out.output, RecordOutput::File(path.clone()));
        assert!(out.frames >= 100, "{out:?}");
        let pcm = decode(&path);
        let (p_own, p_other, p_ctl) = (power(&pcm, own), power(&pcm, other), power(&pcm, CONTROL));
        eprintln!("speaker {ssrc}: {p_own:.2e} @{own}, {p_other:.2e} @{other}, {p_ctl:.2e} @700");
        assert!(
            p_own > 100.0 * p_other,
            "speaker {ssrc}: {p_own:.2e} vs {p_other:.2e}"
        );
        assert!(
            p_own > 100.0 * p_ctl,
            "speaker {ssrc}: {p_own:.2e} vs {p_ctl:.2e}"
        );
    }
    assert_eq!(
        children_named("ffmpeg"),
        0,
        "an ffmpeg outlived its recording"
    );

    // A command that fails: the recording reports it, typed, with its stderr; dropping a
    // recording that runs leaves nothing behind.
    let failing = engine
        .record(
            3,
            RecordConfig::shell("echo 'cannot write here' >&2; exit 4"),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let err = failing.stop().expect_err("exit 4");
    assert!(
        matches!(&err, SourceError::Decoder { reason, stderr, .. }
            if reason == "exited with status 4" && stderr.contains("cannot write here")),
        "{err:?}"
    );
    // A command that stops reading: the stop does not hang; it kills it after STOP_TIMEOUT.
    let stalled = engine.record(5, RecordConfig::shell("sleep 60")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let err = stalled.stop().expect_err("killed");
    let waited = started.elapsed();
    assert!(
        waited >= ringcast::record::STOP_TIMEOUT && waited < ringcast::record::STOP_TIMEOUT * 2,
        "{waited:?}"
    );
    assert!(
        matches!(&err, SourceError::Decoder { reason, .. } if reason == "killed by signal 9"),
        "{err:?}"
    );
    let dropped = engine
        .record(4, RecordConfig::file(dir.0.join("dropped.wav")))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(children_named("ffmpeg"), 1);
    drop(dropped);
    assert_eq!(children_named("ffmpeg"), 0);
}
