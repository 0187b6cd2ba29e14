//! The command line: parsed by clap into [`Cli`], then resolved into the [`Args`] a run uses
//! (`--quick` defaults, the machine's cores).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ringcast::SendPath;

/// How many streaming audio calls per core ringcast carries, against a tokio-task-per-call
/// design, webrtc-rs and the real ntgcalls 3.0.5 wheel, through sfu-mock on loopback (ntgcalls:
/// on a veth pair into a network namespace, with 20 ms of SFU latency).
///
/// A ramp adds calls step by step and stops at the first step with p99 pacer lateness >= 2 ms,
/// any loss or calls that do not connect; the highest good step divided by the engine's cores
/// is streams per core. `--soak` holds calls for a long run instead, with churn, and fails on
/// loss or RSS growth. Needs the `sfu-mock` binary next to this one.
#[derive(Debug, Clone, Parser)]
#[command(name = "load", version)]
struct Cli {
    /// A smoke run: steps 20,50 of 2 s each and one burst of 20 (an explicit --steps,
    /// --step-seconds or --bursts still wins).
    #[arg(long)]
    quick: bool,
    /// Where the JSON report goes.
    #[arg(long, value_name = "PATH", default_value = "load-report.json")]
    report: PathBuf,
    /// Also draw the ramp (p99 lateness and CPU per packet against calls) as an SVG here.
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
    /// Calls at each step of the ramp, comma-separated
    /// [default: 100,250,500,1000,1500,2000,2500,3000,4000,5000,6000,8000,10000].
    #[arg(long, value_name = "N,N,...", value_parser = parse_steps)]
    steps: Option<Counts>,
    /// How long each step is measured, in seconds [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
    step_seconds: Option<f64>,
    /// Engine shards (threads) [default: the machine's cores minus one, at least 1].
    #[arg(long, value_name = "N", value_parser = parse_at_least_one)]
    shards: Option<usize>,
    /// Ramp ringcast only, not the baselines.
    #[arg(long)]
    no_baseline: bool,
    /// How the engine sends.
    #[arg(long, value_enum, default_value_t = SendPathArg::Batch)]
    send_path: SendPathArg,
    /// Do not pin this process to the first `--shards` cores and sfu-mock to the others.
    #[arg(long)]
    no_pin: bool,
    /// Process loopback receives on sfu-mock's cores (RPS on `lo`, restored at exit; root),
    /// as a NIC would: without it the receiving side of every packet this process sends runs
    /// on its own core and is charged to it.
    #[arg(long)]
    steer_loopback: bool,
    /// Connect-burst sizes, comma-separated; an empty list measures no burst [default: 100,1000].
    #[arg(long, value_name = "N,N,...", value_parser = parse_bursts)]
    bursts: Option<Counts>,
    /// Which systems to ramp, comma-separated [default: all four; with --quick, all but
    /// ntgcalls].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SYSTEM,...")]
    systems: Option<Vec<SystemName>>,
    /// Calls at each step of the ntgcalls ramp, comma-separated (one ntgcalls process holds
    /// open files growing with N²: ~11,600 at 100 calls; connects slow down past ~100)
    /// [default: 10,20,40,60].
    #[arg(long, value_name = "N,N,...", value_parser = parse_steps)]
    ntgcalls_steps: Option<Counts>,
    /// Soak instead of ramp: hold `--soak-calls` streaming calls for this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
    soak: Option<f64>,
    /// Calls in the soak.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = parse_at_least_one)]
    soak_calls: usize,
    /// Percent of the soak's calls stopped and replaced at every sample (0-100).
    #[arg(long = "churn", value_name = "PERCENT", default_value_t = 2, value_parser = parse_percent)]
    churn_pct: usize,
    /// Seconds between the soak's samples (and churns) [default: the soak's length / 20,
    /// between 1 and 60].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    soak_interval: Option<f64>,
    /// Hold instead of ramp: connect this many calls with their sources paused and report
    /// RSS, live heap and descriptors per call (module `hold`).
    #[arg(long, value_name = "N", value_parser = parse_at_least_one)]
    hold: Option<usize>,
    /// sfu-mock processes (SFU addresses) the held calls are spread over.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_at_least_one)]
    hold_sfus: usize,
    /// Play benchmark instead of ramp (issue 13): N calls playing the same mp3 on demand,
    /// decoded once through the shared cache, then one ffmpeg and encoder per call (module
    /// `play`).
    #[arg(long)]
    play_bench: bool,
    /// The file the play benchmark plays [default: a 600 s 440 Hz mp3 made with ffmpeg].
    #[arg(long, value_name = "PATH")]
    play_file: Option<PathBuf>,
    /// Calls of the play benchmark, comma-separated; each N runs both designs.
    #[arg(long, value_name = "N,N,...", default_value = "500", value_parser = parse_steps)]
    play_calls: Counts,
    /// Seconds each design of the play benchmark is measured.
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0, value_parser = parse_seconds, allow_negative_numbers = true)]
    play_seconds: f64,
    /// Threads starting the play benchmark's tracks at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = parse_at_least_one)]
    play_threads: usize,
    /// Measure the kernel's own cost per datagram on this machine instead of ramping: UDP
    /// sends from many sockets to one, by `sendto` and by io_uring, with loopback's receive
    /// processing on the sending core and steered away (module `floor`).
    #[arg(long)]
    kernel_floor: bool,
    /// Sending sockets of `--kernel-floor` (each sends every 20 ms, like a call).
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = parse_at_least_one)]
    floor_sockets: usize,
    /// Datagrams each socket sends per `--kernel-floor` measurement.
    #[arg(long, value_name = "N", default_value_t = 150, value_parser = parse_at_least_one)]
    floor_frames: usize,
    /// Repetitions of each `--kernel-floor` measurement (interleaved).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = parse_at_least_one)]
    floor_runs: usize,
    /// Video benchmark instead of ramp (issue 14): N calls showing the same 720p30 video,
    /// one shared ffmpeg encoder, then one encoder per call (module `video`).
    #[arg(long)]
    video_bench: bool,
    /// Calls of the video benchmark, comma-separated; each N runs both designs.
    #[arg(long, value_name = "N,N,...", default_value = "100", value_parser = parse_steps)]
    video_calls: Counts,
    /// Seconds each design of the video benchmark is measured.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = parse_seconds, allow_negative_numbers = true)]
    video_seconds: f64,
}

/// `--send-path`: the engine's [`SendPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SendPathArg {
    /// Batched sends on a raw io_uring ring (the engine's default).
    Batch,
    /// One tokio-uring send per packet.
    TokioUring,
}

impl From<SendPathArg> for SendPath {
    fn from(arg: SendPathArg) -> Self {
        match arg {
            SendPathArg::Batch => Self::IoUringBatch,
            SendPathArg::TokioUring => Self::TokioUring,
        }
    }
}

/// A system the ramp can measure (`--systems`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SystemName {
    /// The ringcast engine.
    #[value(name = "ringcast")]
    Ringcast,
    /// The baseline: a tokio task, socket and timer per call.
    #[value(name = "tokio_per_call")]
    TokioPerCall,
    /// webrtc-rs, one `RTCPeerConnection` per call.
    #[value(name = "webrtc_rs")]
    WebrtcRs,
    /// The real ntgcalls 3.0.5 wheel (py-tgcalls' engine), driven from Python in a network
    /// namespace (needs root and `scripts/setup.sh --with-test-peers`).
    #[value(name = "ntgcalls")]
    Ntgcalls,
}

/// A comma-separated list of call counts (one clap value, unlike a multi-valued `Vec`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts(Vec<usize>);

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive whole number")),
    }
}

fn parse_steps(s: &str) -> Result<Counts, String> {
    s.split(',')
        .map(parse_count)
        .collect::<Result<_, _>>()
        .map(Counts)
}

/// Like steps, but empty items are skipped, so `--bursts ''` means no burst.
fn parse_bursts(s: &str) -> Result<Counts, String> {
    s.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(parse_count)
        .collect::<Result<_, _>>()
        .map(Counts)
}

fn parse_at_least_one(s: &str) -> Result<usize, String> {
    parse_count(s)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn parse_percent(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v <= 100 => Ok(v),
        _ => Err(format!("{s:?} is not a percentage (0-100)")),
    }
}

/// The settings of one run, defaults resolved.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) quick: bool,
    pub(crate) report: PathBuf,
    pub(crate) plot: Option<PathBuf>,
    pub(crate) steps: Vec<usize>,
    pub(crate) step_seconds: f64,
    pub(crate) shards: usize,
    pub(crate) baseline: bool,
    pub(crate) send_path: SendPath,
    /// Pin this process to the first `shards` cores and sfu-mock to the others.
    pub(crate) pin: bool,
    /// Steer loopback receive processing to sfu-mock's cores (`--steer-loopback`).
    pub(crate) steer_loopback: bool,
    /// Connect-burst sizes (empty: no burst measurement).
    pub(crate) bursts: Vec<usize>,
    /// Cores of the machine, read before this process pins itself.
    pub(crate) cores: usize,
    /// Which systems to ramp (`--systems`); all four by default, all but ntgcalls with `--quick`.
    pub(crate) systems: Vec<SystemName>,
    /// Calls at each step of the ntgcalls ramp.
    pub(crate) ntgcalls_steps: Vec<usize>,
    /// Soak instead of ramp: run this long (seconds).
    pub(crate) soak: Option<f64>,
    /// Calls in the soak.
    pub(crate) soak_calls: usize,
    /// Percent of the soak's calls stopped and replaced at every sample.
    pub(crate) churn_pct: usize,
    /// Seconds between the soak's samples (None: a twentieth of the soak, 1 to 60 s).
    pub(crate) soak_interval: Option<f64>,
    /// Hold this many paused calls instead of ramping.
    pub(crate) hold: Option<usize>,
    /// sfu-mock processes the held calls are spread over.
    pub(crate) hold_sfus: usize,
    /// Run the play benchmark instead of ramping.
    pub(crate) play_bench: bool,
    /// The play benchmark's file (None: generate one).
    pub(crate) play_file: Option<PathBuf>,
    /// Calls of the play benchmark (each N runs both designs).
    pub(crate) play_calls: Vec<usize>,
    /// Seconds each design is measured.
    pub(crate) play_seconds: f64,
    /// Threads starting the tracks.
    pub(crate) play_threads: usize,
    /// Measure the kernel's cost per datagram instead of ramping (`--kernel-floor`).
    pub(crate) kernel_floor: bool,
    /// Sending sockets of the floor measurement.
    pub(crate) floor_sockets: usize,
    /// Datagrams per socket per floor measurement.
    pub(crate) floor_frames: usize,
    /// Repetitions of each floor measurement.
    pub(crate) floor_runs: usize,
    /// Run the video benchmark instead of ramping.
    pub(crate) video_bench: bool,
    /// Calls of the video benchmark (each N runs both designs).
    pub(crate) video_calls: Vec<usize>,
    /// Seconds each design of the video benchmark is measured.
    pub(crate) video_seconds: f64,
}

impl Args {
    /// Parses the command line; prints help or the error (naming the flag) and exits on
    /// `--help`, `--version` or a bad argument (status 2).
    pub(crate) fn parse() -> Self {
        Self::resolve(Cli::parse(), cores())
    }

    fn resolve(cli: Cli, cores: usize) -> Self {
        let (steps, step_seconds, bursts) = if cli.quick {
            (vec![20, 50], 2.0, vec![20])
        } else {
            (
                vec![
                    100, 250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10_000,
                ],
                5.0,
                vec![100, 1000],
            )
        };
        Self {
            quick: cli.quick,
            report: cli.report,
            plot: cli.plot,
            steps: cli.steps.map_or(steps, |c| c.0),
            step_seconds: cli.step_seconds.unwrap_or(step_seconds),
            // One core for the engine and the rest for sfu-mock, so "per core" means what it says.
            shards: cli.shards.unwrap_or(cores.saturating_sub(1).max(1)),
            baseline: !cli.no_baseline,
            send_path: cli.send_path.into(),
            pin: !cli.no_pin,
            steer_loopback: cli.steer_loopback,
            bursts: cli.bursts.map_or(bursts, |c| c.0),
            cores,
            // A quick run (CI) needs no root, network namespace or Python wheel.
            systems: cli.systems.unwrap_or_else(|| {
                SystemName::value_variants()
                    .iter()
                    .copied()
                    .filter(|s| !cli.quick || *s != SystemName::Ntgcalls)
                    .collect()
            }),
            ntgcalls_steps: cli
                .ntgcalls_steps
                .map_or_else(|| vec![10, 20, 40, 60], |c| c.0),
            soak: cli.soak,
            soak_calls: cli.soak_calls,
            churn_pct: cli.churn_pct,
            soak_interval: cli.soak_interval,
            hold: cli.hold,
            hold_sfus: cli.hold_sfus,
            play_bench: cli.play_bench,
            play_file: cli.play_file,
            play_calls: cli.play_calls.0,
            play_seconds: cli.play_seconds,
            play_threads: cli.play_threads,
            kernel_floor: cli.kernel_floor,
            floor_sockets: cli.floor_sockets,
            floor_frames: cli.floor_frames,
            floor_runs: cli.floor_runs,
            video_bench: cli.video_bench,
            video_calls: cli.video_calls.0,
            video_seconds: cli.video_seconds,
        }
    }

    /// True if `--systems` includes `system`.
    pub(crate) fn wants(&self, system: SystemName) -> bool {
        self.systems.contains(&system)
    }
}

/// Cores of the machine (or of this process's affinity mask).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied()))
            .map(|cli| Args::resolve(cli, 4))
    }

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.steps.len(), 13);
        assert_eq!((a.step_seconds, a.shards, a.cores), (5.0, 3, 4));
        assert_eq!(a.bursts, [100, 1000]);
        assert_eq!(a.report, PathBuf::from("load-report.json"));
        assert_eq!((a.soak, a.soak_calls, a.churn_pct), (None, 500, 2));
        assert!(a.baseline && a.pin && !a.quick);
        assert_eq!(a.send_path, SendPath::IoUringBatch);
        assert!(a.wants(SystemName::WebrtcRs) && a.wants(SystemName::TokioPerCall));
        assert!(a.wants(SystemName::Ntgcalls));
        assert_eq!(a.ntgcalls_steps, [10, 20, 40, 60]);
    }

    #[test]
    fn the_ci_and_docs_command_lines_parse() {
        let q = parse(&["--quick", "--report", "q.json", "--plot", "q.svg"]).unwrap();
        assert!(
            q.wants(SystemName::TokioPerCall) && !q.wants(SystemName::Ntgcalls),
            "CI's quick run needs no ntgcalls"
        );
        assert_eq!(
            (q.steps, q.step_seconds, q.bursts),
            (vec![20, 50], 2.0, vec![20])
        );
        assert_eq!(q.plot, Some(PathBuf::from("q.svg")));
        let n = parse(&[
            "--quick",
            "--systems",
            "ntgcalls",
            "--ntgcalls-steps",
            "2,4",
        ])
        .unwrap();
        assert_eq!(n.systems, [SystemName::Ntgcalls], "explicitly selected");
        assert_eq!(n.ntgcalls_steps, [2, 4]);
        let s = parse(&["--soak", "30", "--soak-calls", "200", "--report", "z.json"]).unwrap();
        assert_eq!(
            (s.soak, s.soak_calls, s.soak_interval),
            (Some(30.0), 200, None)
        );
        let i = parse(&["--soak", "3600", "--soak-interval", "15"]).unwrap();
        assert_eq!(i.soak_interval, Some(15.0));
        let h = parse(&["--hold", "10000", "--hold-sfus", "4"]).unwrap();
        assert_eq!((h.hold, h.hold_sfus), (Some(10_000), 4));
        assert_eq!(parse(&[]).unwrap().hold, None);
        let p = parse(&[
            "--play-bench",
            "--play-calls",
            "500,100",
            "--play-seconds",
            "3",
        ])
        .unwrap();
        assert!(p.play_bench && p.play_file.is_none());
        assert_eq!((p.play_calls, p.play_seconds), (vec![500, 100], 3.0));
        let d = parse(&["--play-bench"]).unwrap();
        assert_eq!(
            (d.play_calls, d.play_seconds, d.play_threads),
            (vec![500], 20.0, 8)
        );
        let r = parse(&[
            "--steps",
            "500,1000, 2000",
            "--step-seconds",
            "4",
            "--bursts",
            "",
        ]);
        let r = r.unwrap();
        assert_eq!((r.steps, r.step_seconds), (vec![500, 1000, 2000], 4.0));
        assert!(r.bursts.is_empty());
        let t = parse(&[
            "--send-path",
            "tokio-uring",
            "--systems",
            "ringcast,webrtc_rs",
        ])
        .unwrap();
        assert_eq!(t.send_path, SendPath::TokioUring);
        assert_eq!(t.systems, [SystemName::Ringcast, SystemName::WebrtcRs]);
        let quick_steps = parse(&["--steps", "7", "--quick"]).unwrap();
        assert_eq!(
            quick_steps.steps,
            [7],
            "an explicit --steps wins over --quick"
        );
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, flag) in [
            (&["--steps", "10,x"][..], "--steps"),
            (&["--step-seconds", "-1"][..], "--step-seconds"),
            (&["--soak", "0"][..], "--soak"),
            (&["--soak-interval", "0"][..], "--soak-interval"),
            (&["--churn", "101"][..], "--churn"),
            (&["--send-path", "carrier-pigeon"][..], "--send-path"),
            (&["--systems", "ringcast,nope"][..], "--systems"),
            (&["--shards", "0"][..], "--shards"),
            (&["--ntgcalls-steps", "0"][..], "--ntgcalls-steps"),
            (&["--hold", "0"][..], "--hold"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
        assert_eq!(
            parse(&["--frobnicate"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            parse(&["--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
    }
}
