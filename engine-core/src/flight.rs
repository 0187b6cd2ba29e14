//! Resending our final DTLS flight when we are the DTLS server.
//!
//! In DTLS 1.2 the server sends the last flight of the handshake (ChangeCipherSpec and
//! Finished) and is done: str0m reports `Connected` at that moment. If the flight is lost,
//! only the client's retransmission timer brings it back (RFC 6347 §4.2.4: the server resends
//! its last flight when it sees the client's again), and that timer doubles each time. Under
//! heavy loss the simulator showed calls that sat `Connected` and streaming for tens of
//! seconds while the SFU could not decrypt a packet; and once a client gives up, for ever,
//! since the SFU still answers ICE consent checks (docs/simulation.md).
//!
//! [`FinalFlight`] closes that gap on our side: it keeps a copy of the last DTLS flight we
//! sent, and after connecting resends it on its own timer (0.5 s, doubling, capped at 2 s)
//! until the peer shows it has finished the handshake: anything that only a peer holding the
//! SRTP keys can send (SRTP we decrypted, or a receiver report that gave us a round-trip
//! time). A resend the peer did not need is a duplicate, which DTLS discards by its record
//! sequence numbers. It gives up [`FINAL_FLIGHT_GIVE_UP`] after connecting.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// First resend after connecting. Doubles on each resend.
pub const FINAL_FLIGHT_FIRST_RESEND: Duration = Duration::from_millis(500);

/// Cap of the resend interval.
pub const FINAL_FLIGHT_MAX_INTERVAL: Duration = Duration::from_secs(2);

/// How long after connecting resends go on without a sign from the peer.
pub const FINAL_FLIGHT_GIVE_UP: Duration = Duration::from_secs(30);

/// Datagrams kept of one flight (a server's final flight is one or two; the cap bounds
/// memory if a peer makes us send more).
pub const MAX_FLIGHT_DATAGRAMS: usize = 8;

/// The last DTLS flight a call sent and its resend schedule. See the [module docs](self).
#[derive(Debug, Default)]
pub struct FinalFlight {
    /// The datagrams of the flight being sent or last sent, with their 5-tuple.
    datagrams: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// True while our DTLS datagrams belong to the current flight (no DTLS heard since).
    open: bool,
    /// Next resend and the interval after it; `None` when not armed.
    next: Option<(Instant, Duration)>,
    /// Resends stop here.
    give_up_at: Option<Instant>,
    /// The peer proved it has the keys: nothing more to do, ever.
    confirmed: bool,
    /// Datagrams resent so far.
    resent: u64,
}

impl FinalFlight {
    /// Records a DTLS datagram we are sending.
    pub fn on_sent(&mut self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        if self.confirmed {
            return;
        }
        if !self.open {
            self.datagrams.clear();
            self.open = true;
        }
        if self.datagrams.len() < MAX_FLIGHT_DATAGRAMS {
            self.datagrams
                .push((source, destination, contents.to_vec()));
        }
    }

    /// A DTLS datagram from the peer was accepted: our next DTLS datagram starts a new flight.
    pub fn on_received(&mut self) {
        self.open = false;
    }

    /// The handshake completed on our side as DTLS server: arm the resend timer.
    pub fn on_connected(&mut self, now: Instant) {
        if self.confirmed || self.datagrams.is_empty() {
            return;
        }
        self.next = Some((now + FINAL_FLIGHT_FIRST_RESEND, FINAL_FLIGHT_FIRST_RESEND));
        self.give_up_at = Some(now + FINAL_FLIGHT_GIVE_UP);
    }

    /// The peer showed it holds the SRTP keys: stop and free the copy.
    pub fn on_confirmed(&mut self) {
        self.confirmed = true;
        self.next = None;
        self.datagrams = Vec::new();
    }

    /// True once the peer has shown it finished the handshake.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// When [`FinalFlight::poll_resend`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        self.next.map(|(at, _)| at)
    }

    /// Datagrams resent so far.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// If a resend is due at `now`, hands each datagram of the flight to `send` and schedules
    /// the next one.
    pub fn poll_resend(
        &mut self,
        now: Instant,
        mut send: impl FnMut(SocketAddr, SocketAddr, &[u8]),
    ) {
        let Some((at, interval)) = self.next else {
            return;
        };
        if now < at {
            return;
        }
        if self.give_up_at.is_some_and(|g| now >= g) {
            self.next = None;
            self.datagrams = Vec::new();
            return;
        }
        for (source, destination, contents) in &self.datagrams {
            send(*source, *destination, contents);
            self.resent += 1;
        }
        let interval_next = (interval * 2).min(FINAL_FLIGHT_MAX_INTERVAL);
        self.next = Some((now + interval, interval_next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn resends_at(f: &mut FinalFlight, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        f.poll_resend(now, |_, _, c| out.push(c.to_vec()));
        out
    }

    #[test]
    fn resends_the_last_flight_with_backoff_until_confirmed() {
        let t0 = Instant::now();
        let mut f = FinalFlight::default();
        f.on_sent(addr(1), addr(2), b"\x16flight1");
        f.on_received();
        f.on_sent(addr(1), addr(2), b"\x14ccs");
        f.on_sent(addr(1), addr(2), b"\x16finished");
        f.on_connected(t0);
        assert!(resends_at(&mut f, t0 + Duration::from_millis(499)).is_empty());
        let first = resends_at(&mut f, t0 + Duration::from_millis(500));
        assert_eq!(first, vec![b"\x14ccs".to_vec(), b"\x16finished".to_vec()]);
        // Next after 0.5 s more, then 1 s, then 2 s, 2 s...
        assert!(resends_at(&mut f, t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(
            resends_at(&mut f, t0 + Duration::from_millis(1000)).len(),
            2
        );
        assert_eq!(f.deadline(), Some(t0 + Duration::from_millis(2000)));
        assert_eq!(
            resends_at(&mut f, t0 + Duration::from_millis(2000)).len(),
            2
        );
        assert_eq!(f.deadline(), Some(t0 + Duration::from_millis(4000)));
        assert_eq!(
            resends_at(&mut f, t0 + Duration::from_millis(4000)).len(),
            2
        );
        assert_eq!(f.deadline(), Some(t0 + Duration::from_millis(6000)));
        assert_eq!(f.resent(), 8);
        f.on_confirmed();
        assert_eq!(f.deadline(), None);
        assert!(resends_at(&mut f, t0 + Duration::from_secs(7)).is_empty());
        f.on_sent(addr(1), addr(2), b"\x15alert");
        assert!(f.datagrams.is_empty(), "nothing is kept once confirmed");
    }

    #[test]
    fn gives_up_and_frees_the_copy() {
        let t0 = Instant::now();
        let mut f = FinalFlight::default();
        f.on_sent(addr(1), addr(2), b"\x16finished");
        f.on_connected(t0);
        let mut n = 0;
        let mut now = t0;
        while let Some(at) = f.deadline() {
            now = at;
            n += resends_at(&mut f, now).len();
        }
        assert!(now >= t0 + FINAL_FLIGHT_GIVE_UP);
        assert!(now < t0 + FINAL_FLIGHT_GIVE_UP + FINAL_FLIGHT_MAX_INTERVAL);
        // At 0.5, 1 and 2 s, then every 2 s from 4 s to 28 s.
        assert_eq!(n, 3 + 13);
        assert!(f.datagrams.is_empty());
    }

    #[test]
    fn bounded_copy_and_not_armed_without_a_flight() {
        let t0 = Instant::now();
        let mut f = FinalFlight::default();
        f.on_connected(t0);
        assert_eq!(f.deadline(), None);
        for _ in 0..100 {
            f.on_sent(addr(1), addr(2), &[0x17; 100]);
        }
        assert_eq!(f.datagrams.len(), MAX_FLIGHT_DATAGRAMS);
    }
}
