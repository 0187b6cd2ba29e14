//! `sfu-mock [--udp ADDR] [--http ADDR]`: runs the Telegram-like SFU until killed.
//!
//! Prints one JSON line with the bound addresses, e.g.
//! `{"udp":"127.0.0.1:40000","http":"127.0.0.1:40001"}`, then serves the control API
//! (see `sfu_mock::server`). `--no-forward` and `--no-analyse` turn off forwarding and audio
//! analysis; `--header-only` counts RTP from its clear-text header without decrypting (load
//! runs with thousands of calls). `sfu-mock --help` lists every flag.
//!
//! The control API has no authentication, so it listens on 127.0.0.1 by default and a
//! non-loopback `--http` address is refused (exit status 2) unless `--allow-remote-control`
//! is also given; then a warning goes to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use sfu_mock::server::{Server, ServerOptions};

/// A Telegram-like SFU for tests, demos and load runs: one UDP port for every participant,
/// and a loopback HTTP control API (join, leave, stats). Prints its bound addresses as one
/// JSON line, then serves until killed.
#[derive(Debug, Parser)]
#[command(name = "sfu-mock", version)]
struct Args {
    /// UDP address for media (port 0: any free port). Must be a concrete IP.
    #[arg(long, value_name = "ADDR", default_value_t = ServerOptions::default().udp)]
    udp: SocketAddr,
    /// HTTP control API address (port 0: any free port) [default: 127.0.0.1:0]. Must be
    /// loopback unless --allow-remote-control.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Serve the unauthenticated control API on a non-loopback --http address.
    #[arg(long)]
    allow_remote_control: bool,
    /// Seed for the SFU's ICE credentials.
    #[arg(long, value_name = "N", default_value_t = ServerOptions::default().seed)]
    seed: u64,
    /// Do not forward audio to the other participants of a chat.
    #[arg(long)]
    no_forward: bool,
    /// Do not decode and analyse received audio.
    #[arg(long)]
    no_analyse: bool,
    /// Count RTP from its clear-text header without decrypting (implies --no-forward and
    /// --no-analyse).
    #[arg(long)]
    header_only: bool,
    /// Delay every datagram the SFU sends by this many milliseconds, as a real network would
    /// (loopback answers in microseconds).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// Up to this many milliseconds more per datagram, at random (datagrams may reorder).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    jitter_ms: u64,
}

impl Args {
    /// The server options these arguments ask for, or why they are refused.
    fn options(&self) -> Result<ServerOptions, String> {
        let defaults = ServerOptions::default();
        let options = ServerOptions {
            udp: self.udp,
            http: self.http.or(defaults.http),
            allow_remote_control: self.allow_remote_control,
            seed: self.seed,
            analyse_audio: defaults.analyse_audio && !self.no_analyse && !self.header_only,
            forward_audio: defaults.forward_audio && !self.no_forward && !self.header_only,
            header_only: self.header_only,
            latency: std::time::Duration::from_millis(self.latency_ms),
            jitter: std::time::Duration::from_millis(self.jitter_ms),
            ..defaults
        };
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let options = match args.options() {
        Ok(o) => o,
        // Exits with status 2, as for any other bad argument.
        Err(e) => Args::command().error(ErrorKind::ArgumentConflict, e).exit(),
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
