//! py-tgcalls 3.0.0 from PyPI, unmodified, on ringcast's `ntgcalls` module, against sfu-mock.
//!
//! The test (1) makes sure a virtual environment holds maturin, py-tgcalls 3.0.0 (installed with
//! `--no-deps`, so pip does not pull the real ntgcalls) and py-tgcalls' own dependencies,
//! (2) builds this crate's wheel with maturin into it, (3) starts sfu-mock in-process and
//! (4) runs `python/tests/pytgcalls_bot.py`: a bot on `PyTgCalls` whose only replaced part is
//! the MTProto layer (its test double joins and leaves sfu-mock through the control API). The
//! script checks a single chat (tone heard at the SFU, pause/resume/mute/unmute, played time,
//! stream end, leave), 100 chats at once, `record()` of a chat where a `ringcast.Engine` speaks
//! a tone (the file holds it), that a waiting engine call leaves the GIL free, a 1:1 call
//! between two `NTgCalls` through ntgcalls' 1:1 methods and one between two `PyTgCalls` (the
//! double carrying phone.requestCall/acceptCall/confirmCall and the signaling data): same
//! fingerprint and emojis, each records the other's tone; and misuse; it exits non-zero if any check fails.
//! This side then checks at the SFU that every participant the bot joined has left.
//!
//! The virtual environment is `target/python-venv` (`RINGCAST_PYTHON_VENV` overrides it);
//! `scripts/setup.sh --with-test-peers` prepares it, and the test completes it if needed (pip
//! from PyPI). Needs python3 with venv and ffmpeg (scripts/setup.sh installs them).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The py-tgcalls release under test (PyPI serves a wheel for it).
const PY_TGCALLS: &str = "py-tgcalls==3.0.0";
/// py-tgcalls' own dependencies (its `Requires-Dist`, less ntgcalls).
const PY_TGCALLS_DEPS: [&str; 2] = ["aiohttp>=3.9.3", "deprecation"];
/// The wheel builder.
const MATURIN: &str = "maturin>=1.9,<2";
/// Longest the bot script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(420);

const HINT: &str = "the py-tgcalls test needs python3 with venv and pip, ffmpeg, and PyPI: \
                    run scripts/setup.sh --with-test-peers";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

fn venv() -> PathBuf {
    std::env::var_os("RINGCAST_PYTHON_VENV")
        .map_or_else(|| repo().join("target").join("python-venv"), PathBuf::from)
}

/// Runs a command to completion; its output goes to the test's.
fn run(what: &str, command: &mut Command) {
    let status = command
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; {HINT}"));
    assert!(status.success(), "{what} failed ({status}); {HINT}");
}

/// `pip install --quiet ARGS` with the venv's `python`.
fn pip_install(python: &Path, args: &[&str]) {
    run(
        &format!("pip install {}", args.join(" ")),
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(args),
    );
}

/// The virtual environment with maturin, py-tgcalls (no deps) and its dependencies.
fn prepare_venv() -> PathBuf {
    let venv = venv();
    let python = venv.join("bin").join("python");
    if !python.exists() {
        run(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        );
    }
    let mut deps = vec![MATURIN];
    deps.extend(PY_TGCALLS_DEPS);
    pip_install(&python, &deps);
    pip_install(&python, &["--no-deps", PY_TGCALLS]);
    python
}

/// Builds the wheel (dev profile, sharing the workspace's target directory) and installs it.
fn install_wheel(python: &Path) {
    let out = target_dir().join("python-wheel");
    let _ = std::fs::remove_dir_all(&out);
    run(
        "maturin build",
        Command::new(python)
            .args([
                "-m",
                "maturin",
                "build",
                "--profile",
                "dev",
                "--interpreter",
            ])
            .arg(python)
            .arg("--manifest-path")
            .arg(repo().join("python").join("Cargo.toml"))
            .arg("--out")
            .arg(&out)
            .env("CARGO_TARGET_DIR", target_dir()),
    );
    let wheel = std::fs::read_dir(&out)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .unwrap_or_else(|| panic!("maturin left no wheel in {}", out.display()));
    let wheel = wheel.to_string_lossy();
    pip_install(python, &["--no-deps", "--force-reinstall", &wheel]);
}

/// Kills the bot script if the test ends early.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn py_tgcalls_plays_on_ringcast() {
    let python = prepare_venv();
    install_wheel(&python);

    let server = sfu_mock::server::Server::start(sfu_mock::server::ServerOptions::default())
        .expect("sfu-mock starts");
    let http = server.http_addr().expect("sfu-mock has a control address");
    let work = std::env::temp_dir().join(format!("ringcast-pytgcalls-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work directory");

    // Run from the work directory so the repository's python/ringcast (sources without the
    // native module) does not shadow the installed package.
    let started = Instant::now();
    let child = Command::new(&python)
        .arg(repo().join("python").join("tests").join("pytgcalls_bot.py"))
        .arg(&work)
        .current_dir(&work)
        .env("SFU_HTTP", http.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the bot script: {e}; {HINT}"));
    let mut script = Script(child);
    let status = loop {
        if let Some(status) = script.0.try_wait().expect("wait for the bot script") {
            break status;
        }
        assert!(
            started.elapsed() < SCRIPT_LIMIT,
            "the bot script ran longer than {SCRIPT_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut output = String::new();
    if let Some(mut out) = script.0.stdout.take() {
        let _ = out.read_to_string(&mut output);
    }
    println!("{output}");
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        status.success(),
        "the bot script failed ({status}):\n{output}"
    );
    assert!(
        output.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "no summary line in the bot's output"
    );

    // Every participant the bot joined has left the SFU (leave_call went through).
    let stats = server.stats().expect("sfu stats");
    let chats = stats["chats"].as_object().expect("chats in stats");
    let bot_chats: Vec<_> = chats
        .iter()
        .filter(|(id, _)| id.as_str() == "-1001" || id.starts_with("-20"))
        .collect();
    assert_eq!(
        bot_chats.len(),
        101,
        "the bot's chats at the sfu: {bot_chats:?}"
    );
    for (id, entries) in bot_chats {
        for p in entries.as_array().into_iter().flatten() {
            assert_eq!(p["left"], true, "chat {id}: participant still in: {p}");
        }
    }
}
