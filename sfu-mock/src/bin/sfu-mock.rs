//! `sfu-mock --udp ADDR --http ADDR`: runs the Telegram-like SFU until killed.
//!
//! Prints one JSON line with the bound addresses, e.g.
//! `{"udp":"127.0.0.1:40000","http":"127.0.0.1:40001"}`, then serves the control API
//! (see `sfu_mock::server`). `--no-forward` and `--no-analyse` turn off forwarding and audio
//! analysis; `--header-only` counts RTP from its clear-text header without decrypting (load
//! runs with thousands of calls).
//!
//! The control API has no authentication, so it listens on 127.0.0.1 by default and a
//! non-loopback `--http` address is refused (exit status 2) unless `--allow-remote-control`
//! is also given; then a warning goes to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use sfu_mock::server::{Server, ServerOptions};

const USAGE: &str = "usage: sfu-mock [--udp ADDR] [--http ADDR [--allow-remote-control]] [--seed N] [--no-forward] [--no-analyse] [--header-only]";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sfu-mock: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::start(options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sfu-mock: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = serde_json::json!({
        "udp": server.udp_addr().to_string(),
        "http": server.http_addr().map(|a| a.to_string()),
    });
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    drop(out);
    loop {
        std::thread::park();
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<ServerOptions, String> {
    let mut options = ServerOptions::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--udp" => options.udp = parse_addr(args.next(), "--udp")?,
            "--http" => options.http = Some(parse_addr(args.next(), "--http")?),
            "--seed" => {
                options.seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seed needs an integer")?;
            }
            "--allow-remote-control" => options.allow_remote_control = true,
            "--no-forward" => options.forward_audio = false,
            "--no-analyse" => options.analyse_audio = false,
            "--header-only" => {
                options.header_only = true;
                options.analyse_audio = false;
                options.forward_audio = false;
            }
            "-h" | "--help" => return Err("help".to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(http) = options.http
        && !http.ip().is_loopback()
    {
        if !options.allow_remote_control {
            return Err(format!(
                "--http {http} is not a loopback address and the control api has no \
                 authentication; add --allow-remote-control to serve it there anyway"
            ));
        }
        eprintln!("sfu-mock: warning: unauthenticated control api on non-loopback {http}");
    }
    Ok(options)
}

fn parse_addr(value: Option<String>, flag: &str) -> Result<SocketAddr, String> {
    let v = value.ok_or_else(|| format!("{flag} needs an address"))?;
    v.parse()
        .map_err(|e| format!("{flag} {v:?} is not an address: {e}"))
}
