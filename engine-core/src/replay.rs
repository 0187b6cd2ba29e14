//! RTP replay detection from the clear-text header, so replays can be counted.
//!
//! str0m 0.25 already refuses replayed SRTP packets: its receive streams keep a 128-packet
//! window of extended sequence numbers (`rtp/seq_no_window.rs`) and drop a duplicate before
//! decrypting it. It drops them *silently*, though: `Rtc::handle_input` returns `Ok(())`, so a
//! caller cannot tell a replay from a good packet. [`ReplayWindow`] is the same check done on
//! the clear-text RTP header before the packet reaches str0m, so ringcast (and sfu-mock) can
//! refuse and count replays itself.
//!
//! Like str0m's window, [`ReplayWindow::accepts`] is a check only: record a packet with
//! [`ReplayWindow::update`] once it has been authenticated (for a call, when str0m emits the
//! decrypted packet), or a forged header with a far-ahead sequence number would block the
//! real stream. SRTCP is not covered: str0m 0.25 checks SRTCP integrity but keeps no SRTCP
//! index window, and it exposes no per-packet result a caller could use to update one safely.

/// Width of the window, as str0m's and RFC 3711 §3.3.2's suggested minimum of 64.
pub const REPLAY_WINDOW: u64 = 128;

/// Received extended sequence numbers of one SSRC: the highest, and a bitmap of the
/// [`REPLAY_WINDOW`] before it. No allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest extended sequence number recorded, if any.
    max: Option<u64>,
    /// Bit n: `max - n` was received.
    seen: u128,
}

impl ReplayWindow {
    /// An empty window (accepts everything).
    pub fn new() -> Self {
        Self::default()
    }

    /// Extends a 16-bit RTP sequence number to the 64-bit value nearest the highest one
    /// recorded (RFC 3550 A.1 without probation). The first packet lands one cycle above zero,
    /// so a late packet from before a wrap still extends to a smaller value.
    pub fn extend(&self, seq: u16) -> u64 {
        let Some(max) = self.max else {
            return u64::from(seq) + (1 << 16);
        };
        let cycle = max & !0xFFFF;
        [cycle.saturating_sub(1 << 16), cycle, cycle + (1 << 16)]
            .into_iter()
            .map(|c| c + u64::from(seq))
            .min_by_key(|v| v.abs_diff(max))
            .unwrap_or(max)
    }

    /// True if `ext` has not been recorded and is not older than the window.
    pub fn accepts(&self, ext: u64) -> bool {
        let Some(max) = self.max else {
            return true;
        };
        if ext > max {
            return true;
        }
        let age = max - ext;
        age < REPLAY_WINDOW && self.seen & (1u128 << age) == 0
    }

    /// Records `ext` as received, sliding the window forward if it is the new highest.
    pub fn update(&mut self, ext: u64) {
        match self.max {
            None => {
                self.max = Some(ext);
                self.seen = 1;
            }
            Some(max) if ext > max => {
                let shift = ext - max;
                self.seen = if shift >= REPLAY_WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.max = Some(ext);
            }
            Some(max) => {
                let age = max - ext;
                if age < REPLAY_WINDOW {
                    self.seen |= 1u128 << age;
                }
            }
        }
    }

    /// [`ReplayWindow::extend`], [`ReplayWindow::accepts`] and, if accepted,
    /// [`ReplayWindow::update`] in one step: for callers that have already authenticated the
    /// packet, or that only count headers. Returns whether it was new.
    pub fn check_and_update(&mut self, seq: u16) -> bool {
        let ext = self.extend(seq);
        let new = self.accepts(ext);
        if new {
            self.update(ext);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_packets_are_refused_reordering_is_not() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_update(65_534));
        assert!(w.check_and_update(0)); // wrapped
        assert!(w.check_and_update(65_535)); // late, from before the wrap, unseen
        assert!(!w.check_and_update(65_535));
        assert!(!w.check_and_update(0));
        assert!(!w.check_and_update(65_534));
        for s in 1..200u16 {
            assert!(w.check_and_update(s));
        }
        assert!(!w.check_and_update(50), "older than the window");
        assert!(w.check_and_update(300), "a gap ahead is fine");
        assert!(!w.check_and_update(300));
    }

    #[test]
    fn accepts_does_not_record() {
        let mut w = ReplayWindow::new();
        let e = w.extend(10);
        assert!(w.accepts(e));
        assert!(w.accepts(e));
        w.update(e);
        assert!(!w.accepts(e));
    }
}
