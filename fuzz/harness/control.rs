//! Shared by the `control_api` fuzz target and its stable replay in
//! `sfu-mock/tests/fuzz_corpus.rs` (both include this file with `#[path]`).
//!
//! Input layout: byte 0 picks the endpoint (even: `POST .../join`, odd: `POST .../leave`), the
//! rest is the request body.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // shared by a fuzz target and a test

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ringcast_core::crypto::{CallCrypto, CryptoOptions};
use ringcast_core::signaling::group::{JoinPayload, JoinResponse};
use ringcast_core::str0m::crypto::CryptoProvider;
use sfu_mock::control::parse_leave;
use sfu_mock::{Sfu, SfuConfig, SfuError};

/// The chat every join goes to.
const CHAT: i64 = -100_123;
/// Joins a fixture SFU takes before it is rebuilt (left participants keep a slot).
pub const JOINS_PER_SFU: usize = 256;

/// What the control API would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A join answered 200 with a response for this SSRC.
    Joined(u32),
    /// A leave body named this SSRC.
    Leave(u32),
    /// 400 with this message.
    Refused(String),
}

/// An SFU as the control API's UDP thread owns it.
pub struct Fixture {
    sfu: Sfu,
    addr: SocketAddr,
    joins: usize,
}

impl Fixture {
    /// An SFU with the server's default configuration.
    pub fn new() -> Self {
        let addr: SocketAddr = "127.0.0.1:3478".parse().expect("addr");
        let cert = sfu_mock::server::generate_cert().expect("certificate");
        let mut config = SfuConfig::new(addr, 1, cert);
        // `CallCrypto::provider` leaks its provider by design (str0m wants a `&'static`): make
        // one per process, not one per fixture.
        static CRYPTO: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
        let crypto = CRYPTO.get_or_init(|| {
            CallCrypto::new(CryptoOptions::default())
                .expect("crypto config")
                .provider()
        });
        config.crypto = Some(crypto.clone());
        Self {
            sfu: Sfu::new(Instant::now(), config),
            addr,
            joins: 0,
        }
    }

    /// True once this fixture has taken [`JOINS_PER_SFU`] joins.
    pub fn worn_out(&self) -> bool {
        self.joins >= JOINS_PER_SFU
    }

    /// Handles one input; panics if the SFU breaks a promise.
    pub fn feed(&mut self, data: &[u8]) -> Outcome {
        let Some((&selector, body)) = data.split_first() else {
            return Outcome::Refused("empty input".to_owned());
        };
        if selector % 2 == 1 {
            return match parse_leave(body) {
                Ok(ssrc) => {
                    // The SFU has no such participant: a 404, never a panic.
                    let err = self.sfu.leave(CHAT, ssrc).expect_err("nobody joined");
                    assert!(matches!(err, SfuError::UnknownParticipant { .. }));
                    Outcome::Leave(ssrc)
                }
                Err(e) => {
                    assert!(!e.is_empty());
                    Outcome::Refused(e)
                }
            };
        }
        let parsed = JoinPayload::parse(body);
        let before = self.sfu.participants();
        match self.sfu.join(Instant::now(), CHAT, body) {
            Ok(json) => {
                self.joins += 1;
                let join = parsed.expect("the sfu accepted a payload the parser refuses");
                let response = JoinResponse::parse(json.as_bytes())
                    .unwrap_or_else(|e| panic!("the sfu's own answer must parse: {e}\n{json}"));
                assert!(
                    response
                        .transport
                        .candidates
                        .iter()
                        .any(|c| c.address() == self.addr),
                    "the answer must name the sfu's address"
                );
                assert_eq!(self.sfu.participants(), before + 1);
                self.sfu
                    .leave(CHAT, join.ssrc.0)
                    .expect("a participant that just joined can leave");
                assert_eq!(self.sfu.participants(), before);
                Outcome::Joined(join.ssrc.0)
            }
            Err(e) => {
                match &e {
                    SfuError::BadPayload(_) => assert!(parsed.is_err()),
                    SfuError::Setup(_) => assert!(parsed.is_ok()),
                    other => panic!("unexpected join error: {other}"),
                }
                assert_eq!(self.sfu.participants(), before);
                Outcome::Refused(e.to_string())
            }
        }
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}
