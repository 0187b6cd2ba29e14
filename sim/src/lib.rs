//! ringcast-sim: the deterministic simulation sweep behind `ringcast sim`: many seeds, many
//! scenarios, dozens of calls each, and a verdict for every call.
//!
//! The simulator itself is `ringcast_core::sim::World` (virtual clock, seeded lossy network,
//! calls as sans-IO state machines); the SFU the calls join is `sfu_mock::Sfu`. This crate
//! scripts them and checks the outcome. It is not published and nothing in the `ringcast`
//! library depends on it: with sfu-mock (a dev-dependency of `ringcast`) it is what switches
//! on `ringcast-core`'s `sim` feature, so an application embedding `ringcast` never compiles
//! the simulator. The `ringcast` CLI reaches the sweep through here (`ringcast sim`).
//!
//! One *run* is one [`Scenario`] with one seed: a world of 24 to 32 calls in 4 to 8 chats on
//! one SFU, each chat playing its own tone, driven through the scenario's script. The seed
//! draws everything the scenario leaves open (loss rate, jitter, partition start and length,
//! which calls are cut off, path MTU, ...), then seeds the world itself, so the same
//! `(scenario, seed)` gives the same [`RunReport::digest`] wherever and whenever it runs.
//!
//! Every call gets an [`Expect`]ation from its scenario and must meet it at the end of the
//! run:
//!
//! - **stream**: the call is `Connected`; after the last disturbance, once the SFU hears
//!   every such call again (waited for, within a limit), the SFU received in the final 3 s at
//!   least 80 % of the frames the network's loss lets through, decoded them to the chat's tone
//!   (the SFU's own FFT analysis of the latest ~0.34 s: ±5 Hz on a clean network, ±40 Hz
//!   with loss, duplication or reordering), and, where the SFU forwards, audio from the chat
//!   reached the call again;
//! - **end**: the call ended with the given typed reason inside a time window, and the
//!   endpoint reaped it.
//!
//! Anything else (stuck `Connecting`, connected but silent, ended where it had to recover,
//! ended too early or too late, not reaped) is a failure with a message. A failing run prints
//! the one command that replays it ([`replay_command`]).
//!
//! Where things are:
//!
//! - `scenario`: the [`Scenario`]s, what each expects of a call ([`Expect`]) and the script
//!   each plays (see [`Scenario`] for what each one does);
//! - `net`: the network model each scenario draws from its seed, and how much it may smear
//!   the tone check;
//! - `run`: one run ([`run`]): the world, the calls it tracks, the wait for the SFU and the
//!   verdict;
//! - `tone`: the chats' tones, encoded once per process and looped;
//! - `sweep`: many runs on worker threads ([`sweep`]);
//! - `report`: what a run and a sweep report ([`RunReport`], [`SweepReport`] and its JSON).
//!
//! ```no_run
//! use ringcast_sim::{RunOptions, Scenario, describe, run};
//! let report = run(Scenario::PartitionShort, 7, &RunOptions::default());
//! println!("{}", describe(&report));
//! assert!(report.failures.is_empty());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod net;
mod report;
mod run;
mod scenario;
mod soak;
mod sweep;
mod tone;

pub use report::{Outcomes, RunReport, SweepFailure, SweepReport, describe, replay_command};
pub use run::{RunOptions, run};
pub use scenario::{EndKind, Expect, Scenario};
pub use soak::{Checkpoint, Counts, SoakOptions, SoakReport, StreamSeen, Watch, soak};
pub use sweep::{SweepOptions, sweep};
