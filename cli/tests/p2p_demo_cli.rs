//! `ringcast p2p-demo`: twenty 1:1 calls between two engines in one process, keys, emojis and
//! tones checked both ways; the last stdout line is the JSON summary, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn p2p_demo_cli_verifies_twenty_calls() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["p2p-demo", "--calls", "20", "--json", "--timeout", "50"])
        .output()
        .expect("run ringcast");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(out.status.success(), "p2p-demo failed: {stdout}");
    let last = stdout.lines().last().expect("output");
    let v: serde_json::Value = serde_json::from_str(last).expect("json last line");
    assert_eq!(
        v,
        serde_json::json!({"calls": 20, "keys_match": 20, "emojis_match": 20, "verified_both_ways": 20})
    );
    assert_eq!(
        last,
        r#"{"calls": 20, "keys_match": 20, "emojis_match": 20, "verified_both_ways": 20}"#
    );
}
