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

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{HINT, Script, pip_install, prepare_venv, repo};

/// The py-tgcalls release under test (PyPI serves a wheel for it).
const PY_TGCALLS: &str = "py-tgcalls==3.0.0";
/// py-tgcalls' own dependencies (its `Requires-Dist`, less ntgcalls).
const PY_TGCALLS_DEPS: [&str; 2] = ["aiohttp>=3.9.3", "deprecation"];
/// Longest the bot script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(420);

#[test]
fn py_tgcalls_plays_on_ringcast() {
    let python = prepare_venv(&PY_TGCALLS_DEPS);
    pip_install(&python, &["--no-deps", PY_TGCALLS]);
    common::install_wheel(&python, "python-wheel");

    let server = sfu_mock::server::Server::start(sfu_mock::server::ServerOptions::default())
        .expect("sfu-mock starts");
    let http = server.http_addr().expect("sfu-mock has a control address");
    let work = std::env::temp_dir().join(format!("ringcast-pytgcalls-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work directory");

    // Run from the work directory so the repository's python/ringcast (sources without the
    // native module) does not shadow the installed package.
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
    let status = script.wait(SCRIPT_LIMIT, "the bot script");
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
