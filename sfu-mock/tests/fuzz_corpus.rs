#![allow(clippy::unwrap_used)]
//! The seed corpora of the fuzz targets that need the SFU (`fuzz/corpus/control_api`,
//! `fuzz/corpus/call_datagrams`) as a regression suite on stable Rust. The checks are the fuzz
//! targets' own (`fuzz/harness/*.rs`, included here), plus the seeds' expected outcomes.
//!
//! `capture_makes_the_corpus_seed_set` captures the `call_datagrams` seeds from a fresh
//! simulated call and checks it yields the checked-in set of seed files (the bytes differ
//! whenever the call's randomness or wire format changes, so only names are compared);
//! `RINGCAST_WRITE_SEEDS=1 cargo test -p sfu-mock --test fuzz_corpus capture` rewrites them.

#[path = "../../fuzz/harness/call.rs"]
mod call;
#[path = "../../fuzz/harness/control.rs"]
mod control;

use std::fs;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    files.sort();
    files
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn control_api_corpus() {
    let mut fixture = control::Fixture::new();
    let mut named = 0;
    for (name, data) in corpus("control_api") {
        let outcome = fixture.feed(&data);
        if name.starts_with("valid_") || name.starts_with("telegram_") {
            assert!(
                matches!(
                    outcome,
                    control::Outcome::Joined(_) | control::Outcome::Leave(_)
                ),
                "control_api/{name} must be accepted: {outcome:?}"
            );
            named += 1;
        } else if name.starts_with("broken_") {
            assert!(
                matches!(outcome, control::Outcome::Refused(_)),
                "control_api/{name} must be refused: {outcome:?}"
            );
            named += 1;
        }
    }
    assert!(named >= 8, "only {named} named seeds in control_api");
}

/// Every captured datagram, replayed as the SFU, leaves the call connected and sending; other
/// named seeds say what they expect in their name (`ends_*` may end the call).
#[test]
fn call_datagrams_corpus() {
    let mut named = 0;
    for (name, data) in corpus("call_datagrams") {
        let outcome = call::run(&data);
        eprintln!("call_datagrams/{name}: {outcome:?}");
        if name.starts_with("ends_") {
            named += 1;
        } else if ["stun_", "dtls_", "srtp_", "srtcp_", "mixed_", "broken_"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            assert_eq!(
                outcome,
                call::Outcome::Connected,
                "call_datagrams/{name} must leave the call connected"
            );
            named += 1;
        }
    }
    assert!(named >= 8, "only {named} named seeds in call_datagrams");
}

#[test]
fn call_datagrams_framing() {
    let a: &[u8] = &[1, 2, 3];
    let b: &[u8] = &[];
    let input = call::encode(call::FLAG_SPACED, &[a, b, a]);
    assert_eq!(call::decode(&input), (call::FLAG_SPACED, vec![a, b, a]));
    // A length past the end takes the rest; a lone byte is a datagram of its own.
    assert_eq!(call::decode(&[0, 0, 9, 1, 2]), (0, vec![&[1_u8, 2][..]]));
    assert_eq!(call::decode(&[0, 7]), (0, vec![&[7_u8][..]]));
    assert_eq!(call::decode(&[]), (0, vec![]));
}

/// Captures the `call_datagrams` seeds: a few of each kind the SFU sent to call 0 (STUN,
/// the DTLS handshake flights, SRTP, SRTCP), one file each, plus a few multi-datagram seeds.
/// Writes them into the corpus with `RINGCAST_WRITE_SEEDS=1`; otherwise into a scratch
/// directory, and checks the capture yields the same seed files as the corpus has.
#[test]
fn capture_makes_the_corpus_seed_set() {
    let write_corpus = std::env::var_os("RINGCAST_WRITE_SEEDS").is_some();
    let mut w = call::connected_world(true);
    w.run_for(std::time::Duration::from_secs(8));
    let target = w
        .snapshot(ringcast_core::sim::SimCallId(0))
        .unwrap()
        .local_addr
        .unwrap();
    let log = w.sfu_mut().log.take().unwrap();
    let dir = if write_corpus {
        corpus_dir("call_datagrams")
    } else {
        std::env::temp_dir().join(format!("ringcast-call-datagrams-{}", std::process::id()))
    };
    fs::create_dir_all(&dir).unwrap();
    let mut per_kind: std::collections::HashMap<&str, usize> = Default::default();
    let mut picked: Vec<Vec<u8>> = Vec::new();
    for (dir_, addr, bytes) in &log {
        if *dir_ != call::Dir::ToCall || *addr != target {
            continue;
        }
        let kind = call::kind_name(bytes);
        let n = per_kind.entry(kind).or_default();
        let limit = if kind == "dtls" { 8 } else { 3 };
        if *n >= limit {
            continue;
        }
        let name = format!("{kind}_{n}.bin");
        *n += 1;
        fs::write(dir.join(&name), call::encode(0, &[bytes])).unwrap();
        picked.push(bytes.clone());
        eprintln!("{name}: {} bytes", bytes.len());
    }
    let all: Vec<&[u8]> = picked.iter().map(Vec::as_slice).collect();
    fs::write(dir.join("mixed_all_at_once.bin"), call::encode(0, &all)).unwrap();
    fs::write(
        dir.join("mixed_spaced.bin"),
        call::encode(call::FLAG_SPACED, &all),
    )
    .unwrap();
    eprintln!("kinds: {per_kind:?}");
    for kind in ["stun", "dtls", "srtp", "srtcp"] {
        assert!(
            per_kind.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} captured: {per_kind:?}"
        );
    }
    if !write_corpus {
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && n.ends_with(".bin"))
                .collect();
            v.sort();
            v
        };
        let captured = names(&dir);
        // The captured kinds; `broken_*` seeds are made by hand and hash-named ones by libFuzzer.
        let captured_kind = |n: &String| {
            ["stun_", "dtls_", "srtp_", "srtcp_", "mixed_"]
                .iter()
                .any(|p| n.starts_with(p))
        };
        let checked_in: Vec<String> = names(&corpus_dir("call_datagrams"))
            .into_iter()
            .filter(captured_kind)
            .collect();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(
            captured, checked_in,
            "RINGCAST_WRITE_SEEDS=1 rewrites the corpus"
        );
    }
}
