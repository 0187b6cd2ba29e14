//! Helpers shared by the sfu-mock integration tests.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // each test uses part

pub mod p2p;
