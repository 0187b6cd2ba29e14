//! The `ringcast` command line (crate `ringcast-cli`, not published): tools around the
//! `ringcast` library that need more than an embedder should compile (an SFU, an HTTP client,
//! a log subscriber, the simulator). Run it as `cargo run -p ringcast-cli --bin ringcast -- …`
//! or `target/<profile>/ringcast`; `ringcast --help` and `ringcast <command> --help` list
//! every flag.
//!
//! - `ringcast play --join-url URL (--tone HZ | --file F.ogg) --seconds S [--bind IP:PORT]`
//!   ([`play`]): joins a voice chat through any server speaking sfu-mock's control API,
//!   streams, prints a JSON summary.
//! - `ringcast demo [--calls N] [--chats M] [--seconds S] [--json]` ([`demo`]): starts an
//!   embedded sfu-mock, streams tones into it, shows live stats and what the SFU verified.
//! - `ringcast p2p-demo [--calls N] [--json] [--timeout S] [--shards K]` ([`p2p_demo`]): N
//!   1:1 calls between two engines in one process (key exchange, encrypted signaling relayed
//!   by the demo, tones both ways, each side decoding); last stdout line
//!   `{"calls": N, "keys_match": N, "emojis_match": N, "verified_both_ways": N}`.
//! - `ringcast sim --seeds N [--scenario NAME|all] [--seed S] [--threads T] [--verbose]
//!   [--trace]` ([`sim`]): the deterministic simulation sweep (crate `ringcast-sim`); the last
//!   stdout line is a JSON summary, the exit status non-zero if any call missed its
//!   expectation.
//!
//! Arguments are parsed with clap; a bad value exits with status 2 and a message naming the
//! flag, a failed run with status 1 and `ringcast: <what failed>` on stderr.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;

mod demo;
mod p2p_demo;
mod play;
mod sim;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Many WebRTC calls from one process: play into a voice chat, demos, and the simulation sweep.
#[derive(Debug, Parser)]
#[command(name = "ringcast", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join a voice chat through a server speaking sfu-mock's control API, stream a tone or an
    /// Ogg/Opus file, and print a JSON summary.
    Play(play::PlayArgs),
    /// Start an embedded sfu-mock, stream tones into it from N calls, show live stats and what
    /// the SFU verified.
    Demo(demo::DemoArgs),
    /// N 1:1 calls between two engines in one process: key exchange, relayed signaling, tones
    /// both ways, each side checking what it hears.
    P2pDemo(p2p_demo::P2pDemoArgs),
    /// The deterministic simulation sweep: seeds × scenarios, a verdict for every call, a JSON
    /// summary as the last stdout line (docs/simulation.md).
    Sim(sim::SimArgs),
}

/// Parses a count that must be at least 1.
fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

/// Parses a number of seconds: finite and not negative.
fn seconds(v: &str) -> Result<f64, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("{v:?} is not a number of seconds"))?;
    if s.is_finite() && s >= 0.0 {
        Ok(s)
    } else {
        Err(format!(
            "{v:?} is not a number of seconds (finite, 0 or more)"
        ))
    }
}

/// Parses a number of seconds into a [`Duration`].
fn duration_secs(v: &str) -> Result<Duration, String> {
    seconds(v)
        .and_then(|s| Duration::try_from_secs_f64(s).map_err(|e| format!("{v:?} seconds: {e}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Play(o) => play::play(o),
        Command::Demo(o) => demo::demo(o),
        Command::P2pDemo(o) => p2p_demo::run(o),
        Command::Sim(o) => sim::sim(o),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: {e}");
            ExitCode::FAILURE
        }
    }
}
