//! Helpers shared by the sfu-mock integration tests.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // each test uses part

pub mod p2p;

use ringcast_core::signaling::Ssrc;
use ringcast_core::signaling::group::{DtlsFingerprint, JoinPayload};

/// A group-call join payload with `ufrag`, audio SSRC `ssrc` and a fixed password and
/// fingerprint: what the control-API tests post.
pub fn join_payload(ufrag: &str, ssrc: u32) -> String {
    JoinPayload {
        ufrag: ufrag.to_owned(),
        pwd: "0123456789abcdefghijklmn".to_owned(),
        fingerprints: vec![DtlsFingerprint {
            hash: "sha-256".to_owned(),
            setup: "passive".to_owned(),
            fingerprint: vec!["AB"; 32].join(":"),
        }],
        ssrc: Ssrc(ssrc),
        ssrc_groups: Vec::new(),
    }
    .to_json()
}
