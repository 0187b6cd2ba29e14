#![allow(clippy::unwrap_used)]
//! The fuzz seed corpora (`fuzz/corpus/<target>/`) as a regression suite on stable Rust.
//!
//! Files named `valid_*` or `telegram_*` must parse and survive `parse(to_json(x)) == x`;
//! `broken_*` files must be rejected with an error; any other file (e.g. the hash-named inputs
//! `cargo fuzz run` adds) must merely not panic. A crash found by fuzzing becomes a regression
//! test by copying the input here as `broken_<what>.json` (or `valid_<what>.json`).

use std::fmt::Debug;
use std::fs;
use std::path::Path;

use ringcast_core::SignalingError;
use ringcast_core::signaling::group::{JoinPayload, JoinResponse};

/// Checks every file of the corpus of `target`; returns how many named seed files it checked.
fn check_corpus<T: Debug + PartialEq>(
    target: &str,
    parse: fn(&[u8]) -> Result<T, SignalingError>,
    to_json: fn(&T) -> String,
) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();

    let mut named = 0;
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let result = parse(&fs::read(&path).unwrap());
        if name.starts_with("valid_") || name.starts_with("telegram_") {
            let parsed = result.unwrap_or_else(|e| panic!("{target}/{name} must parse: {e}"));
            let again = parse(to_json(&parsed).as_bytes());
            assert_eq!(again, Ok(parsed), "{target}/{name} must round-trip");
            named += 1;
        } else if name.starts_with("broken_") {
            assert!(
                result.is_err(),
                "{target}/{name} must be rejected: {result:?}"
            );
            named += 1;
        }
    }
    named
}

#[test]
fn group_response_corpus() {
    let checked = check_corpus("group_response", JoinResponse::parse, JoinResponse::to_json);
    assert!(
        checked >= 6,
        "only {checked} named seed files in group_response"
    );
}

#[test]
fn group_join_corpus() {
    let checked = check_corpus("group_join", JoinPayload::parse, JoinPayload::to_json);
    assert!(
        checked >= 6,
        "only {checked} named seed files in group_join"
    );
}
