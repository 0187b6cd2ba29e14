//! The `ringcast` binary's arguments: `--help` works on the command and every subcommand, and
//! a bad value is refused with a message that names the flag.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn ringcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(args)
        .output()
        .expect("running ringcast")
}

#[test]
fn help_works_on_the_command_and_every_subcommand() {
    let out = ringcast(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["play", "demo", "p2p-demo", "sim"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    let expected: [(&str, &[&str]); 4] = [
        (
            "play",
            &["--join-url", "--tone", "--file", "--seconds", "--bind"],
        ),
        ("demo", &["--calls", "--chats", "--seconds", "--json"]),
        ("p2p-demo", &["--calls", "--json", "--timeout", "--shards"]),
        (
            "sim",
            &[
                "--seeds",
                "--scenario",
                "--seed",
                "--threads",
                "--verbose",
                "--trace",
            ],
        ),
    ];
    for (command, flags) in expected {
        let out = ringcast(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in flags {
            assert!(
                help.contains(flag),
                "{flag} missing from {command} --help:\n{help}"
            );
        }
    }
}

#[test]
fn a_bad_value_is_refused_naming_its_flag() {
    for (args, flag) in [
        (&["demo", "--calls", "x"][..], "--calls"),
        (&["demo", "--chats", "0"], "--chats"),
        (&["demo", "--seconds", "-1"], "--seconds"),
        (&["p2p-demo", "--timeout", "soon"], "--timeout"),
        (&["p2p-demo", "--timeout", "-5"], "--timeout"),
        (
            &[
                "play",
                "--join-url",
                "http://127.0.0.1:1/",
                "--tone",
                "la",
                "--seconds",
                "1",
            ],
            "--tone",
        ),
        (&["sim", "--seeds", "2", "--scenario", "nope"], "--scenario"),
        (&["sim"], "--seeds"),
    ] {
        let out = ringcast(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // No command at all is an error too, not a silent success.
    let out = ringcast(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
