//! What the Python tests share: the virtual environment (`target/python-venv`, or
//! `RINGCAST_PYTHON_VENV`), pip installs into it, building this crate's wheel with maturin and
//! installing it, and a child process killed on drop.
#![allow(dead_code)] // each test uses part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The wheel builder.
pub(crate) const MATURIN: &str = "maturin>=1.9,<2";

/// What to run when something is missing.
pub(crate) const HINT: &str = "the Python tests need python3 with venv and pip, ffmpeg, and PyPI: \
                        run scripts/setup.sh --with-test-peers";

/// The repository's root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// The cargo target directory (`CARGO_TARGET_DIR` or the repository's `target`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

/// The virtual environment's directory.
pub(crate) fn venv() -> PathBuf {
    std::env::var_os("RINGCAST_PYTHON_VENV")
        .map_or_else(|| repo().join("target").join("python-venv"), PathBuf::from)
}

/// Runs a command to completion; its output goes to the test's.
pub(crate) fn run(what: &str, command: &mut Command) {
    let status = command
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; {HINT}"));
    assert!(status.success(), "{what} failed ({status}); {HINT}");
}

/// `pip install --quiet ARGS` with the venv's `python`.
pub(crate) fn pip_install(python: &Path, args: &[&str]) {
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

/// The venv's python, creating the venv if needed, with maturin and `packages` installed
/// (`pip install` is quick when they already are).
pub(crate) fn prepare_venv(packages: &[&str]) -> PathBuf {
    let venv = venv();
    let python = venv.join("bin").join("python");
    if !python.exists() {
        run(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        );
    }
    let mut deps = vec![MATURIN];
    deps.extend(packages);
    pip_install(&python, &deps);
    python
}

/// Builds the wheel (dev profile, sharing the workspace's target directory) into
/// `target/<out>` and installs it.
pub(crate) fn install_wheel(python: &Path, out: &str) {
    let out = target_dir().join(out);
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

/// A child process, killed (and reaped) on drop.
pub(crate) struct Script(pub(crate) Child);

impl Script {
    /// Waits for the process to exit, panicking when it runs longer than `limit`.
    pub(crate) fn wait(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for the script") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "{what} ran longer than {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
