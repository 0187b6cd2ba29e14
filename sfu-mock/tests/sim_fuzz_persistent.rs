#![allow(clippy::unwrap_used)]
//! The `call_datagrams` fuzz target's persistent mode (`fuzz/harness/call.rs`,
//! `call::Persistent`) on stable Rust: one connected world takes every seed of
//! `fuzz/corpus/call_datagrams` in turn, twice over, under the same checks as a fresh world per
//! input, and is rebuilt only when an input ended call 0.

#[path = "../../fuzz/harness/call.rs"]
mod call;

use std::fs;
use std::path::Path;

#[test]
fn one_world_takes_every_seed_in_turn() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/call_datagrams");
    let mut seeds: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 8, "{} seeds", seeds.len());
    let mut world = call::Persistent::default();
    let mut ended = 0;
    for round in 0..2 {
        for path in &seeds {
            let data = fs::read(path).unwrap();
            let outcome = world.feed(&data);
            eprintln!("round {round} {}: {outcome:?}", path.display());
            if outcome != call::Outcome::Connected {
                ended += 1;
            }
        }
    }
    assert!(
        world.builds() <= 1 + ended,
        "rebuilt only after call 0 ended"
    );
}
