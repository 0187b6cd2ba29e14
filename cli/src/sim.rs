//! `ringcast sim`: the deterministic simulation sweep (crate `ringcast-sim`,
//! docs/simulation.md). Every failed run is reported with its replay command on stderr; the
//! last stdout line is the JSON summary; the exit status is non-zero if any call missed its
//! expectation.

use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use ringcast_sim::{
    RunOptions, RunReport, Scenario, SweepOptions, SweepReport, describe, replay_command, run,
    sweep,
};

use crate::at_least_one;

/// `ringcast sim` arguments.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// How many seeds; seeds run from --seed on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// The scenario to run, or all of them.
    #[arg(long, value_name = "NAME", default_value = "all", value_parser = scenarios())]
    scenario: Scenarios,
    /// Worker threads (the default is one per core).
    #[arg(long, value_name = "T", default_value_t = default_threads(), value_parser = at_least_one())]
    threads: usize,
    /// One line per run on stderr.
    #[arg(long)]
    verbose: bool,
    /// With a single run (one seed, one scenario): print its readable trace to stderr.
    #[arg(long)]
    trace: bool,
}

/// The scenarios `--scenario` names: one, or every one for `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scenarios(Vec<Scenario>);

/// Parses `--scenario`: `all` or a scenario's name, the names listed in `--help`.
fn scenarios() -> impl TypedValueParser<Value = Scenarios> {
    let names = std::iter::once("all").chain(Scenario::ALL.iter().map(|s| s.name()));
    PossibleValuesParser::new(names).map(|name| {
        Scenarios(match Scenario::from_name(&name) {
            Some(s) => vec![s],
            None => Scenario::ALL.to_vec(),
        })
    })
}

fn default_threads() -> usize {
    SweepOptions::default().threads
}

impl SimArgs {
    /// What to sweep.
    fn sweep_options(&self) -> SweepOptions {
        SweepOptions {
            seeds: self.seeds,
            first_seed: self.seed,
            scenarios: self.scenario.0.clone(),
            threads: self.threads,
        }
    }
}

/// Runs `ringcast sim`: sweeps, reports every failed run with its replay command on stderr,
/// prints the JSON summary as the last stdout line, and returns an error if any run failed.
pub(crate) fn sim(o: &SimArgs) -> Result<(), String> {
    let options = o.sweep_options();
    let single = options.seeds == 1 && options.scenarios.len() == 1;
    let report = if single && o.trace {
        // A replay with its trace: one run on this thread.
        let scenario = options
            .scenarios
            .first()
            .copied()
            .unwrap_or(Scenario::Lossy);
        let r = run(
            scenario,
            options.first_seed,
            &RunOptions {
                trace: true,
                force_expect: None,
            },
        );
        for line in &r.trace {
            eprintln!("{line}");
        }
        eprintln!("{}", describe(&r));
        let mut report = SweepReport {
            seeds: 1,
            wall: r.wall,
            ..SweepReport::default()
        };
        report.add(r);
        report
    } else {
        eprintln!(
            "ringcast sim: {} seeds from {} × {} scenarios on {} threads",
            options.seeds,
            options.first_seed,
            options.scenarios.len(),
            options.threads
        );
        let verbose = o.verbose || single;
        sweep(&options, &|r: &RunReport| {
            if verbose || !r.failures.is_empty() {
                eprintln!("{}", describe(r));
            }
            if !r.failures.is_empty() {
                for m in &r.failures {
                    eprintln!("  FAIL {m}");
                }
                eprintln!("  replay: {}", replay_command(r.scenario, r.seed));
            }
        })
    };
    eprintln!(
        "ringcast sim: {} runs, {} calls: {} verified, {} ended as expected, {} failed; \
         {:.0} s simulated in {:.1} s",
        report.runs,
        report.calls,
        report.outcomes.verified,
        report.outcomes.ended_as_expected,
        report.outcomes.failed,
        report.simulated.as_secs_f64(),
        report.wall.as_secs_f64()
    );
    println!("{}", report.to_json());
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} runs failed",
            report.failures.len(),
            report.runs
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;
    use ringcast_sim::Scenario;

    use crate::{Cli, Command};

    fn parse(line: &str) -> Result<super::SimArgs, clap::Error> {
        let args = ["ringcast", "sim"]
            .into_iter()
            .chain(line.split_whitespace());
        match Cli::try_parse_from(args)?.command {
            Command::Sim(o) => Ok(o),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn cli_arguments() {
        let o = parse("--seeds 50").unwrap().sweep_options();
        assert_eq!(o.seeds, 50);
        assert_eq!(o.first_seed, 1);
        assert_eq!(o.scenarios, Scenario::ALL.to_vec());
        assert!(o.threads >= 1);
        let o = parse("--scenario sfu-restart --seed 42 --seeds 1")
            .unwrap()
            .sweep_options();
        assert_eq!(o.scenarios, vec![Scenario::SfuRestart]);
        assert_eq!(o.first_seed, 42);
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
            let o = parse(&format!("--seeds 1 --scenario {s}")).unwrap();
            assert_eq!(o.sweep_options().scenarios, vec![s]);
        }
        let o = parse("--seeds 2 --scenario all --threads 3 --verbose --trace").unwrap();
        assert_eq!(o.sweep_options().threads, 3);
        assert!(o.verbose && o.trace);
        let err = parse("--scenario nope --seeds 1").unwrap_err().to_string();
        assert!(
            err.contains("--scenario") && err.contains("partition-long"),
            "{err}"
        );
        let err = parse("--seed 3").unwrap_err().to_string();
        assert!(err.contains("--seeds"), "--seeds is required: {err}");
        assert!(parse("--seeds").is_err());
        let err = parse("--seeds x").unwrap_err().to_string();
        assert!(err.contains("--seeds"), "{err}");
        assert!(parse("--seeds 0").is_err());
        assert!(parse("--seeds 1 --threads 0").is_err());
    }
}
