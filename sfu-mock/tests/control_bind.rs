//! The control API has no authentication, so it listens on loopback unless told otherwise:
//! the default options and the binary's default bind 127.0.0.1, and a non-loopback address is
//! refused without an explicit opt-in (library and binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use sfu_mock::server::{Server, ServerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_sfu-mock");

#[test]
fn the_default_control_address_is_loopback() {
    let options = ServerOptions::default();
    assert!(options.http.unwrap().ip().is_loopback());
    assert!(!options.allow_remote_control);
    let server = Server::start(options).unwrap();
    assert!(server.http_addr().unwrap().ip().is_loopback());
}

#[test]
fn a_non_loopback_control_address_needs_an_explicit_opt_in() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let err = Server::start(ServerOptions {
        http: Some(any),
        ..ServerOptions::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    // Opted in, it starts (0.0.0.0 is always bindable).
    let server = Server::start(ServerOptions {
        http: Some(any),
        allow_remote_control: true,
        ..ServerOptions::default()
    })
    .unwrap();
    assert!(server.http_addr().unwrap().ip().is_unspecified());
}

/// Runs the binary, returns its first stdout line (the bound addresses), then kills it.
fn first_line(args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    line
}

#[test]
fn the_binary_binds_loopback_by_default_and_refuses_otherwise() {
    let line = first_line(&[]);
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    let http: SocketAddr = v["http"].as_str().unwrap().parse().unwrap();
    assert!(http.ip().is_loopback(), "{line}");

    let out = Command::new(BIN)
        .args(["--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-remote-control"), "{stderr}");

    // Opted in: it starts on the address asked for.
    let line = first_line(&["--http", "0.0.0.0:0", "--allow-remote-control"]);
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    let http: SocketAddr = v["http"].as_str().unwrap().parse().unwrap();
    assert!(http.ip().is_unspecified(), "{line}");
}

#[test]
fn the_binary_answers_help_and_names_a_bad_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--udp",
        "--http",
        "--allow-remote-control",
        "--seed",
        "--header-only",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let out = Command::new(BIN).args(["--seed", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--seed"), "{stderr}");
}
