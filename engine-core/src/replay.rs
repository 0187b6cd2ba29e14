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
//! real stream.
//!
//! SRTCP: str0m 0.25 checks SRTCP integrity but keeps no SRTCP index window, and it exposes
//! no per-packet result a caller could use to update one safely (the index may only be
//! recorded once the packet authenticated, and only str0m holds the keys). Our patch to str0m
//! (`third_party/README.md`) adds the window there: per sender SSRC (16 at most), 128 indexes
//! wide, checked after authentication and before the RTCP is read, so a replay is dropped
//! unread; the call counts them from `DirectApi::srtcp_replayed`.
//!
//! STUN: [`RecentTransactions`] remembers the transaction ids of the last
//! [`STUN_REPLAY_MEMORY`] authenticated STUN messages a call received; the same id again is a
//! replay (ICE agents, str0m's and libwebrtc's, draw a new id for every check, retransmissions
//! included), refused before str0m answers it or it refreshes consent.

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

/// How many STUN transaction ids [`RecentTransactions`] remembers. An SFU checks a call every
/// few seconds, so this covers minutes of checks; an older capture replayed is not detected
/// (it refreshes consent at most once per replay, as a fresh check would).
pub const STUN_REPLAY_MEMORY: usize = 64;

/// The transaction ids of the last [`STUN_REPLAY_MEMORY`] authenticated STUN messages, in a
/// fixed ring (no allocation after creation; a lookup scans 768 bytes, and STUN arrives a few
/// times per second at most).
#[derive(Debug, Clone)]
pub struct RecentTransactions {
    ids: Box<[[u8; 12]; STUN_REPLAY_MEMORY]>,
    /// Slots filled so far (up to [`STUN_REPLAY_MEMORY`]).
    len: usize,
    /// Next slot to overwrite.
    next: usize,
}

impl Default for RecentTransactions {
    fn default() -> Self {
        Self {
            ids: Box::new([[0; 12]; STUN_REPLAY_MEMORY]),
            len: 0,
            next: 0,
        }
    }
}

impl RecentTransactions {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if `id` was recorded (and is still remembered).
    pub fn contains(&self, id: &[u8; 12]) -> bool {
        self.ids[..self.len].contains(id)
    }

    /// Records `id`, forgetting the oldest once full. Record only authenticated messages, or a
    /// forger could fill the memory.
    pub fn record(&mut self, id: [u8; 12]) {
        self.ids[self.next] = id;
        self.next = (self.next + 1) % STUN_REPLAY_MEMORY;
        self.len = (self.len + 1).min(STUN_REPLAY_MEMORY);
    }

    /// For a STUN message that passed authentication, with transaction id `id` (None: not
    /// STUN): true if it is a repeat (counted by the caller; a sign of nothing), else records
    /// it and returns false (a fresh message, a sign of life).
    pub fn is_repeat(&mut self, id: Option<[u8; 12]>) -> bool {
        let Some(id) = id else {
            return false;
        };
        if self.contains(&id) {
            return true;
        }
        self.record(id);
        false
    }

    /// The transaction id of a STUN message (bytes 8..20 of its header, RFC 5389 §6), if
    /// `contents` is long enough.
    pub fn id_of(contents: &[u8]) -> Option<[u8; 12]> {
        contents.get(8..20)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_are_remembered_until_pushed_out() {
        let mut r = RecentTransactions::new();
        let id = |n: usize| {
            let mut a = [0u8; 12];
            a[..8].copy_from_slice(&(n as u64).to_be_bytes());
            a
        };
        assert!(!r.contains(&id(0)), "an empty memory knows no zero id");
        for n in 0..STUN_REPLAY_MEMORY {
            r.record(id(n));
        }
        assert!((0..STUN_REPLAY_MEMORY).all(|n| r.contains(&id(n))));
        r.record(id(STUN_REPLAY_MEMORY));
        assert!(!r.contains(&id(0)), "the oldest is forgotten");
        assert!(r.contains(&id(1)) && r.contains(&id(STUN_REPLAY_MEMORY)));
    }

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
