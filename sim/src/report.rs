//! What a run and a sweep report: outcomes, failures with their replay command, the one-line
//! description of a run and the JSON summary `ringcast sim` prints last.

use std::time::Duration;

use crate::scenario::Scenario;

/// What a call ended up as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Connected and verified streaming.
    pub verified: usize,
    /// Ended with the expected typed reason in time.
    pub ended_as_expected: usize,
    /// Met no acceptable outcome.
    pub failed: usize,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// The world's trace digest: equal for equal `(scenario, seed)`.
    pub digest: u64,
    /// Calls checked (rejoins included).
    pub calls: usize,
    /// What the calls ended up as.
    pub outcomes: Outcomes,
    /// One message per failed call (or per setup problem).
    pub failures: Vec<String>,
    /// The drawn parameters, for the log.
    pub params: String,
    /// Virtual time simulated.
    pub simulated: Duration,
    /// Wall time taken.
    pub wall: Duration,
    /// The readable trace, if [`crate::RunOptions::trace`] asked for it.
    pub trace: Vec<String>,
}

/// The command that replays one run.
pub fn replay_command(scenario: Scenario, seed: u64) -> String {
    format!("ringcast sim --scenario {scenario} --seed {seed} --seeds 1")
}

/// `d` in milliseconds, for messages.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A failed run in a [`SweepReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepFailure {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// The run's digest.
    pub digest: u64,
    /// The command that replays the run.
    pub replay: String,
    /// What went wrong, one line per call.
    pub messages: Vec<String>,
}

/// The result of a sweep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    /// Seeds swept.
    pub seeds: u64,
    /// Runs (seeds × scenarios).
    pub runs: usize,
    /// Calls checked across all runs.
    pub calls: usize,
    /// Outcomes across all runs.
    pub outcomes: Outcomes,
    /// Virtual time simulated across all runs.
    pub simulated: Duration,
    /// Wall time of the sweep.
    pub wall: Duration,
    /// Failed runs, by seed then scenario.
    pub failures: Vec<SweepFailure>,
}

impl SweepReport {
    /// Adds one run: its calls, outcomes and simulated time, and the run as a failure with
    /// its replay command if any of its calls failed. Leaves `seeds` and `wall` alone.
    pub fn add(&mut self, r: RunReport) {
        self.runs += 1;
        self.calls += r.calls;
        self.outcomes.verified += r.outcomes.verified;
        self.outcomes.ended_as_expected += r.outcomes.ended_as_expected;
        self.outcomes.failed += r.outcomes.failed;
        self.simulated += r.simulated;
        if !r.failures.is_empty() {
            self.failures.push(SweepFailure {
                seed: r.seed,
                scenario: r.scenario,
                digest: r.digest,
                replay: replay_command(r.scenario, r.seed),
                messages: r.failures,
            });
        }
    }

    /// The summary line `ringcast sim` prints last:
    /// `{"seeds": N, "calls": N, "failures": [{"seed": S, "scenario": "...", "replay": "..."}]}`
    /// (plus run counts, outcomes, times and each failure's digest and messages).
    pub fn to_json(&self) -> serde_json::Value {
        let failures: Vec<serde_json::Value> = self
            .failures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "seed": f.seed,
                    "scenario": f.scenario.name(),
                    "replay": f.replay,
                    "digest": format!("{:016x}", f.digest),
                    "messages": f.messages,
                })
            })
            .collect();
        serde_json::json!({
            "seeds": self.seeds,
            "calls": self.calls,
            "failures": failures,
            "runs": self.runs,
            "verified": self.outcomes.verified,
            "ended_as_expected": self.outcomes.ended_as_expected,
            "simulated_s": (self.simulated.as_secs_f64() * 10.0).round() / 10.0,
            "wall_s": (self.wall.as_secs_f64() * 10.0).round() / 10.0,
        })
    }
}

/// One line about a run: digest, outcomes, times and the drawn parameters.
pub fn describe(r: &RunReport) -> String {
    format!(
        "{} seed {}: digest {:016x}, {} calls ({} verified, {} ended as expected, {} failed), \
         {:.1} s simulated in {:.2} s; {}",
        r.scenario,
        r.seed,
        r.digest,
        r.calls,
        r.outcomes.verified,
        r.outcomes.ended_as_expected,
        r.outcomes.failed,
        r.simulated.as_secs_f64(),
        r.wall.as_secs_f64(),
        r.params
    )
}
