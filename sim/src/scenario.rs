//! The scenarios: what each one does to the network or the SFU, what it expects of every
//! call ([`Expect`]), and the script that plays it on a [`Run`].

use std::fmt;
use std::time::Duration;

use ringcast_core::CallState;
use ringcast_core::EndReason;
use ringcast_core::call::{DEFAULT_CONNECT_TIMEOUT, IceTimings};
use ringcast_core::sim::SimCallId;

use crate::net::draw_ms;
use crate::report::{RunReport, ms};
use crate::run::{Run, sfu_for};

/// Slack on "ended by" deadlines: one-way latency, jitter and timer granularity.
pub(crate) const END_SLACK: Duration = Duration::from_millis(500);
/// Longest a clean network may take to connect every call.
const CLEAN_CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Below this path MTU (UDP payload bytes) a call left at str0m's default MTU cannot finish
/// the DTLS handshake: its server flight (certificate, key exchange, certificate request) is
/// one datagram of 635-637 bytes with the simulator's P-256 certificate (measured, see
/// docs/simulation.md). The band up to [`MTU_DEFAULT_SURE`] may go either way: certificates
/// and ECDSA signatures vary in length by a few bytes.
const MTU_DEFAULT_FAILS_BELOW: usize = 630;
/// At or above this path MTU a call at str0m's default MTU must connect.
const MTU_DEFAULT_SURE: usize = 650;

/// A scripted disturbance. Names are those `--scenario` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Loss drawn from 0-30 % (both directions, every datagram) plus a little jitter, from
    /// the start. Calls must stream; at high loss a call may instead end with
    /// `ConnectTimeout` within the connect timeout (its handshake flights kept getting lost).
    Lossy,
    /// Jitter of 20-80 ms on 20 ms packet spacing (so most packets overtake one another) and
    /// up to 3 % loss. Every call must stream.
    Reorder,
    /// 5-50 % of datagrams delivered twice, up to 3 % loss, a little jitter. Every call must
    /// stream (duplicate SRTP is dropped by the replay window, not counted twice).
    Duplicate,
    /// Base latency 20-150 ms each way plus 0-250 ms of jitter, up to 3 % loss. Every call
    /// must stream.
    Jitter,
    /// Once every call is up, a third to all of them lose their path entirely for 0.5-6 s,
    /// less than the consent timeout (`IceTimings::failed_after`, 10 s) minus a keepalive
    /// interval. Every call must stream after the heal, without anyone doing anything.
    PartitionShort,
    /// Once every call is up, a third to all of them lose their path for longer than the
    /// consent timeout; it heals 0.5-2 s after it. Every cut call must end with
    /// `IceDisconnected` between `failed_after - keepalive` and `failed_after` (+ slack)
    /// after the cut, be reaped, and stay ended after the heal; the others must stream.
    PartitionLong,
    /// Once every call is up, the SFU restarts and loses every participant: datagrams from
    /// the calls reach a fresh SFU (same address, new ICE credentials and certificate) that
    /// knows none of them and answers nothing, which is what a Telegram client sees. Every
    /// call must end with `IceDisconnected` within the consent timeout of the restart and be
    /// reaped. The application then joins again: every new call must stream.
    SfuRestart,
    /// The path drops datagrams above an MTU drawn from 576-1000 bytes (UDP payload). Half
    /// the calls, and the SFU, are told the path MTU (`CallConfig::mtu`): str0m and dimpl
    /// then fragment the DTLS handshake to fit, and those calls must stream. The other half
    /// keep str0m's default (1150): they must stream when their handshake fits and otherwise
    /// end with `ConnectTimeout` within the connect timeout.
    Mtu,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Self; 8] = [
        Self::Lossy,
        Self::Reorder,
        Self::Duplicate,
        Self::Jitter,
        Self::PartitionShort,
        Self::PartitionLong,
        Self::SfuRestart,
        Self::Mtu,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lossy => "lossy",
            Self::Reorder => "reorder",
            Self::Duplicate => "duplicate",
            Self::Jitter => "jitter",
            Self::PartitionShort => "partition-short",
            Self::PartitionLong => "partition-long",
            Self::SfuRestart => "sfu-restart",
            Self::Mtu => "mtu",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub(crate) fn index(self) -> u64 {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0) as u64
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The end reasons a scenario may expect, without their payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// [`EndReason::ConnectTimeout`].
    ConnectTimeout,
    /// [`EndReason::IceDisconnected`].
    IceDisconnected,
}

impl EndKind {
    pub(crate) fn matches(self, r: &EndReason) -> bool {
        matches!(
            (self, r),
            (Self::ConnectTimeout, EndReason::ConnectTimeout)
                | (Self::IceDisconnected, EndReason::IceDisconnected)
        )
    }
}

/// What one call must have done by the end of its run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// Be connected and verified streaming since `since` (virtual time from the epoch; the
    /// end of the last disturbance that touched it).
    Stream {
        /// Frames count from here (or from the call's connection plus a settle time, if later).
        since: Duration,
    },
    /// Have ended with `reason` between `not_before` and `by` (virtual time from the epoch),
    /// and been reaped.
    End {
        /// The reason.
        reason: EndKind,
        /// Earliest acceptable end.
        not_before: Duration,
        /// Latest acceptable end.
        by: Duration,
    },
    /// Either [`Expect::Stream`] since `since`, or [`Expect::End`] with `reason` by `by`.
    StreamOr {
        /// As for [`Expect::Stream`].
        since: Duration,
        /// As for [`Expect::End`].
        reason: EndKind,
        /// As for [`Expect::End`].
        by: Duration,
    },
}

/// Plays `scenario`'s script on `run`: adds a call for every entry of `chats` (its chat id),
/// disturbs the world as the scenario says (drawing what it leaves open from `rng`), sets every
/// call's expectation and ends with the verify phase. `world_seed` seeds a restarted SFU;
/// `path_mtu` is the MTU the network was drawn with. Adds what it drew to `report.params`.
pub(crate) fn play(
    scenario: Scenario,
    run: &mut Run,
    chats: &[i64],
    path_mtu: Option<usize>,
    world_seed: u64,
    rng: &mut fastrand::Rng,
    report: &mut RunReport,
) -> Result<(), String> {
    let n_calls = chats.len();
    let ice = IceTimings::default();
    let connect_by = DEFAULT_CONNECT_TIMEOUT + END_SLACK;
    let stream = Expect::Stream {
        since: Duration::ZERO,
    };
    match scenario {
        Scenario::Lossy | Scenario::Reorder | Scenario::Duplicate | Scenario::Jitter => {
            let expect = if scenario == Scenario::Lossy {
                Expect::StreamOr {
                    since: Duration::ZERO,
                    reason: EndKind::ConnectTimeout,
                    by: connect_by,
                }
            } else {
                stream
            };
            run.add_calls(chats, expect);
            run.run_until_connected(0, DEFAULT_CONNECT_TIMEOUT + END_SLACK);
            let waited = run.verify_phase();
            report.params += &format!("; sfu heard every call {:.0} ms after", ms(waited));
        }
        Scenario::PartitionShort | Scenario::PartitionLong | Scenario::SfuRestart => {
            run.add_calls(chats, stream);
            if !run.run_until_connected(0, CLEAN_CONNECT_LIMIT) {
                run.failures
                    .push("setup: not every call connected on a clean network".to_owned());
            }
            run.world.run_for(draw_ms(rng, 200, 1500));
            let cut_at = run.world.elapsed();
            let mut victims: Vec<usize> = (0..run.tracked.len()).collect();
            rng.shuffle(&mut victims);
            victims.truncate(rng.usize(n_calls.div_ceil(3)..=n_calls));
            victims.sort_unstable();
            match scenario {
                Scenario::PartitionShort => {
                    let down = draw_ms(rng, 500, 6000);
                    report.params += &format!(
                        "; {} calls cut at {:.0} ms for {:.0} ms",
                        victims.len(),
                        ms(cut_at),
                        ms(down)
                    );
                    run.cut(&victims);
                    run.world.run_for(down);
                    run.world.heal();
                    let all: Vec<usize> = (0..run.tracked.len()).collect();
                    run.mark_since(&all);
                    let waited = run.verify_phase();
                    report.params += &format!(
                        "; sfu heard every call again {:.0} ms after the heal",
                        ms(waited)
                    );
                }
                Scenario::PartitionLong => {
                    let heal_after = ice.failed_after + draw_ms(rng, 500, 2000);
                    report.params += &format!(
                        "; {} calls cut at {:.0} ms, healed {:.0} ms later",
                        victims.len(),
                        ms(cut_at),
                        ms(heal_after)
                    );
                    for &i in &victims {
                        if let Some(t) = run.tracked.get_mut(i) {
                            t.expect = Expect::End {
                                reason: EndKind::IceDisconnected,
                                not_before: cut_at + ice.failed_after.saturating_sub(ice.keepalive),
                                by: cut_at + ice.failed_after + END_SLACK,
                            };
                        }
                    }
                    run.cut(&victims);
                    run.world.run_for(heal_after);
                    run.world.heal();
                    run.verify_phase();
                }
                _ => {
                    let restart_seed = world_seed ^ 0xDEAD_BEEF;
                    let fresh = sfu_for(restart_seed, run.world.now(), None, run.forwarding)?;
                    report.params += &format!(
                        "; sfu restarts at {:.0} ms, then every call rejoins",
                        ms(cut_at)
                    );
                    let by = cut_at + ice.failed_after + END_SLACK;
                    for t in &mut run.tracked {
                        t.expect = Expect::End {
                            reason: EndKind::IceDisconnected,
                            not_before: cut_at + ice.failed_after.saturating_sub(ice.keepalive),
                            by,
                        };
                    }
                    drop(run.world.replace_sfu(fresh));
                    let old = run.tracked.len();
                    let ids: Vec<SimCallId> = run.tracked.iter().map(|t| t.id).collect();
                    run.world.run_until(ice.failed_after + END_SLACK, |w| {
                        ids.iter().all(|id| {
                            w.call(*id)
                                .is_some_and(|c| matches!(c.state, CallState::Ended(_)))
                        })
                    });
                    // The application joins again, as a Telegram client does after a failure.
                    let rejoin_at = run.world.elapsed();
                    run.add_calls(chats, Expect::Stream { since: rejoin_at });
                    run.run_until_connected(old, CLEAN_CONNECT_LIMIT);
                    run.verify_phase();
                }
            }
        }
        Scenario::Mtu => {
            let mtu = path_mtu.unwrap_or(576);
            let default_expect = if mtu >= MTU_DEFAULT_SURE {
                stream
            } else if mtu < MTU_DEFAULT_FAILS_BELOW {
                Expect::End {
                    reason: EndKind::ConnectTimeout,
                    not_before: DEFAULT_CONNECT_TIMEOUT,
                    by: connect_by,
                }
            } else {
                Expect::StreamOr {
                    since: Duration::ZERO,
                    reason: EndKind::ConnectTimeout,
                    by: connect_by,
                }
            };
            report.params += &format!("; path mtu {mtu}");
            let (told, untold): (Vec<usize>, Vec<usize>) =
                (0..chats.len()).partition(|i| i % 2 == 0);
            run.world.set_call_mtu(Some(mtu));
            let told_chats: Vec<i64> = told.iter().filter_map(|i| chats.get(*i).copied()).collect();
            run.add_calls(&told_chats, stream);
            run.world.set_call_mtu(None);
            let untold_chats: Vec<i64> = untold
                .iter()
                .filter_map(|i| chats.get(*i).copied())
                .collect();
            run.add_calls(&untold_chats, default_expect);
            run.run_until_connected(0, DEFAULT_CONNECT_TIMEOUT + END_SLACK);
            run.verify_phase();
        }
    }
    Ok(())
}
