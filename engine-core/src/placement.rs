//! Socket placement: which shared socket a group call sends from, and which call a datagram on
//! a shared socket belongs to. Sans-IO: no socket is opened here, only ids and addresses.
//!
//! **The socket rule.** An SFU tells participants apart by 5-tuple, so two live calls that
//! reach the same SFU address must not share a local socket. [`Placement::find`] picks the
//! first socket where the call has at least one SFU address of the socket's family and none of
//! them is taken by another live call; when there is none, the owner of the sockets opens one,
//! registers it with [`Placement::add_socket`] and asks again. Telegram puts many chats on few
//! SFU addresses, so a new socket per call on the same SFU is the normal case.
//!
//! **Routing.** The rule is what makes routing by remote address unambiguous: a datagram on a
//! socket belongs to the call that claimed its source address there, or (STUN before the path
//! is known) to the call whose ufrag its USERNAME names ([`Demux`], one per socket).
//! [`Placement::release`] gives everything back when the call is reaped.
//!
//! Two owners run this same code: an [`Endpoint`](crate::endpoint::Endpoint) keyed by
//! [`CallId`](crate::endpoint::CallId) (the simulator's placement, and each runtime shard's
//! lock-free routing), and the runtime's socket pool, shared by every shard behind a mutex and
//! keyed by shard and call, which decides placement across shards and finds the shard a
//! misrouted datagram belongs to.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

use crate::demux::Demux;

/// A shared socket, by the order it was registered in ([`Placement::add_socket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub usize);

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// No socket has this id.
    #[error("no socket {}", .0.0)]
    NoSuchSocket(SocketId),
    /// Another live call on the socket already talks to this SFU address.
    #[error("sfu address {0} already has a live call on this socket")]
    AddressTaken(SocketAddr),
}

struct PlacedSocket<K> {
    addr: SocketAddr,
    demux: Demux<K>,
}

/// What a call holds: released as a whole on reap.
struct Claim {
    socket: SocketId,
    remotes: Vec<SocketAddr>,
    ufrag: String,
}

/// Shared sockets, the calls placed on them and their routing tables. `K` names a call (a
/// [`CallId`](crate::endpoint::CallId), or a shard and call). See the [module docs](self).
pub struct Placement<K> {
    sockets: Vec<PlacedSocket<K>>,
    claims: HashMap<K, Claim>,
}

impl<K> Default for Placement<K> {
    fn default() -> Self {
        Self {
            sockets: Vec::new(),
            claims: HashMap::new(),
        }
    }
}

impl<K> std::fmt::Debug for Placement<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("sockets", &self.sockets.len())
            .field("calls", &self.claims.len())
            .finish()
    }
}

/// True if a socket bound to `local` can reach `remote` (same address family).
fn same_family(local: &SocketAddr, remote: &SocketAddr) -> bool {
    local.is_ipv4() == remote.is_ipv4()
}

impl<K: Copy + Eq + Hash> Placement<K> {
    /// No sockets, no calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a socket bound to `addr`; ids are handed out in order from 0.
    pub fn add_socket(&mut self, addr: SocketAddr) -> SocketId {
        self.sockets.push(PlacedSocket {
            addr,
            demux: Demux::new(),
        });
        SocketId(self.sockets.len() - 1)
    }

    /// The address of a registered socket.
    pub fn socket_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        self.sockets.get(socket.0).map(|s| s.addr)
    }

    /// Number of registered sockets.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// True if no socket is registered.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The socket `call` is placed on, if any.
    pub fn socket_of(&self, call: K) -> Option<SocketId> {
        self.claims.get(&call).map(|c| c.socket)
    }

    /// Whether `call` may talk to `remotes` from `socket`: none of them (of the socket's
    /// address family) belongs to another call there.
    ///
    /// # Errors
    /// [`PlacementError::NoSuchSocket`]; [`PlacementError::AddressTaken`] with the first
    /// contested address.
    pub fn check(
        &self,
        call: K,
        socket: SocketId,
        remotes: &[SocketAddr],
    ) -> Result<(), PlacementError> {
        let s = self
            .sockets
            .get(socket.0)
            .ok_or(PlacementError::NoSuchSocket(socket))?;
        match remotes
            .iter()
            .filter(|r| same_family(&s.addr, r))
            .find(|r| s.demux.is_taken(r, call))
        {
            Some(r) => Err(PlacementError::AddressTaken(*r)),
            None => Ok(()),
        }
    }

    /// The socket rule: the first socket on which `call` has at least one of `remotes` (of the
    /// socket's family) and none of them is taken by another call. `None`: open a socket,
    /// [`add_socket`](Self::add_socket) it and ask again.
    pub fn find(&self, call: K, remotes: &[SocketAddr]) -> Option<SocketId> {
        self.find_on(call, remotes, None)
    }

    /// [`find`](Self::find) among the sockets bound to `local` only (any if `None`).
    pub fn find_on(
        &self,
        call: K,
        remotes: &[SocketAddr],
        local: Option<IpAddr>,
    ) -> Option<SocketId> {
        (0..self.sockets.len()).map(SocketId).find(|&id| {
            self.sockets.get(id.0).is_some_and(|s| {
                remotes.iter().any(|r| same_family(&s.addr, r))
                    && local.is_none_or(|ip| s.addr.ip() == ip)
            }) && self.check(call, id, remotes).is_ok()
        })
    }

    /// Places `call` on `socket`: datagrams there from `remotes` (of the socket's family), and
    /// STUN whose USERNAME starts with `ufrag`, route to it. Replaces what `call` held before.
    ///
    /// # Errors
    /// As [`check`](Self::check); nothing changes then.
    pub fn claim(
        &mut self,
        call: K,
        socket: SocketId,
        remotes: &[SocketAddr],
        ufrag: &str,
    ) -> Result<(), PlacementError> {
        self.check(call, socket, remotes)?;
        self.release(call);
        let Some(s) = self.sockets.get_mut(socket.0) else {
            return Err(PlacementError::NoSuchSocket(socket));
        };
        let mut claimed = Vec::with_capacity(remotes.len());
        for r in remotes.iter().filter(|r| same_family(&s.addr, r)) {
            // Cannot fail: `check` found every one free of other calls.
            if s.demux.register_remote(*r, call).is_ok() && !claimed.contains(r) {
                claimed.push(*r);
            }
        }
        s.demux.register_ufrag(ufrag, call);
        self.claims.insert(
            call,
            Claim {
                socket,
                remotes: claimed,
                ufrag: ufrag.to_owned(),
            },
        );
        Ok(())
    }

    /// [`find`](Self::find) and [`claim`](Self::claim) in one: the socket `call` is now placed
    /// on, or `None` if no registered socket fits.
    pub fn place(&mut self, call: K, remotes: &[SocketAddr], ufrag: &str) -> Option<SocketId> {
        self.place_on(call, remotes, ufrag, None)
    }

    /// [`place`](Self::place) among the sockets bound to `local` only (any socket if `None`):
    /// the address the host routes toward the SFU, when sockets are bound on several.
    pub fn place_on(
        &mut self,
        call: K,
        remotes: &[SocketAddr],
        ufrag: &str,
        local: Option<IpAddr>,
    ) -> Option<SocketId> {
        let socket = self.find_on(call, remotes, local)?;
        self.claim(call, socket, remotes, ufrag).ok()?;
        Some(socket)
    }

    /// Gives back everything `call` claimed (on reap, or when connecting failed); returns the
    /// socket it was on. A call that claimed nothing is a no-op.
    pub fn release(&mut self, call: K) -> Option<SocketId> {
        let claim = self.claims.remove(&call)?;
        if let Some(s) = self.sockets.get_mut(claim.socket.0) {
            for r in &claim.remotes {
                s.demux.remove_remote(r, call);
            }
            s.demux.remove_ufrag(&claim.ufrag, call);
        }
        Some(claim.socket)
    }

    /// The call a datagram from `source` on `socket` belongs to: by source address, else (for
    /// STUN) by the ufrag in its USERNAME.
    pub fn route(&self, socket: SocketId, source: &SocketAddr, contents: &[u8]) -> Option<K> {
        self.sockets.get(socket.0)?.demux.route(source, contents)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A STUN binding request whose USERNAME is `username`.
    fn stun(username: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut buf = vec![0x00, 0x01];
        buf.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        buf.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        buf.extend_from_slice(&[7; 12]);
        buf.extend_from_slice(&attr);
        buf
    }

    const SFU: &str = "203.0.113.10:32001";
    const SFU2: &str = "203.0.113.10:32009";

    #[test]
    fn no_socket_means_ask_for_one() {
        let p = Placement::<u32>::new();
        assert!(p.is_empty());
        assert_eq!(p.find(1, &[addr(SFU)]), None);
    }

    #[test]
    fn two_calls_to_one_sfu_address_never_share_a_socket() {
        let mut p = Placement::new();
        let s0 = p.add_socket(addr("192.0.2.1:40000"));
        assert_eq!(p.place(1, &[addr(SFU)], "uf1"), Some(s0));
        // Same SFU address: socket 0 is taken, there is no other yet.
        assert_eq!(p.place(2, &[addr(SFU)], "uf2"), None);
        assert_eq!(p.socket_of(2), None);
        let s1 = p.add_socket(addr("192.0.2.1:40001"));
        assert_eq!(p.place(2, &[addr(SFU)], "uf2"), Some(s1));
        // Another SFU address shares socket 0 with call 1.
        assert_eq!(p.place(3, &[addr(SFU2)], "uf3"), Some(s0));
        // A call is never in its own way: re-placing call 1 finds its own socket.
        assert_eq!(p.find(1, &[addr(SFU)]), Some(s0));
        assert_eq!(
            p.check(3, s0, &[addr(SFU)]),
            Err(PlacementError::AddressTaken(addr(SFU)))
        );
        assert_eq!(
            p.claim(3, SocketId(9), &[addr(SFU)], "uf3"),
            Err(PlacementError::NoSuchSocket(SocketId(9)))
        );
        // A refused claim changed nothing.
        assert_eq!(p.socket_of(3), Some(s0));
    }

    #[test]
    fn a_socket_fits_only_calls_with_an_address_of_its_family() {
        let mut p = Placement::new();
        let v4 = p.add_socket(addr("192.0.2.1:40000"));
        let v6 = p.add_socket(addr("[2001:db8::1]:40000"));
        let both = [addr(SFU), addr("[2001:db8::10]:32001")];
        assert_eq!(p.place(1, &both, "uf1"), Some(v4));
        // The IPv4 address is taken on the IPv4 socket: the IPv6 socket reaches the SFU.
        assert_eq!(p.place(2, &both, "uf2"), Some(v6));
        // Only IPv6 addresses of the SFU: the IPv4 socket cannot reach them.
        assert_eq!(p.find(3, &[addr("[2001:db8::20]:1")]), Some(v6));
        assert_eq!(p.find(3, &[]), None);
        // What a call claimed is what routes: only addresses of the socket's family.
        assert_eq!(p.route(v4, &addr(SFU), &[0x80; 20]), Some(1));
        assert_eq!(p.route(v6, &both[1], &[0x80; 20]), Some(2));
        assert_eq!(p.route(v4, &both[1], &[0x80; 20]), None);
    }

    #[test]
    fn routes_by_address_then_ufrag_on_the_claimed_socket_only() {
        let mut p = Placement::new();
        let s0 = p.add_socket(addr("192.0.2.1:40000"));
        let s1 = p.add_socket(addr("192.0.2.1:40001"));
        p.claim(7, s1, &[addr(SFU)], "ufseven").unwrap();
        let stranger = addr("198.51.100.7:5000");
        assert_eq!(p.route(s1, &addr(SFU), &[0x80; 20]), Some(7));
        assert_eq!(p.route(s1, &stranger, &[0x80; 20]), None);
        assert_eq!(p.route(s1, &stranger, &stun("ufseven:x")), Some(7));
        assert_eq!(p.route(s1, &stranger, &stun("other:x")), None);
        // Socket 0 knows neither the address nor the ufrag.
        assert_eq!(p.route(s0, &addr(SFU), &stun("ufseven:x")), None);
        assert_eq!(p.route(SocketId(5), &addr(SFU), &[0x80; 20]), None);
    }

    #[test]
    fn release_frees_the_address_and_the_ufrag() {
        let mut p = Placement::new();
        let s0 = p.add_socket(addr("192.0.2.1:40000"));
        assert_eq!(p.place(1, &[addr(SFU)], "uf1"), Some(s0));
        assert_eq!(p.place(2, &[addr(SFU)], "uf2"), None);
        assert_eq!(p.release(1), Some(s0));
        assert_eq!(p.release(1), None, "a second release is a no-op");
        assert_eq!(p.route(s0, &addr(SFU), &stun("uf1:x")), None);
        assert_eq!(p.place(2, &[addr(SFU)], "uf2"), Some(s0));
        assert_eq!(p.route(s0, &addr(SFU), &[0x80; 20]), Some(2));
    }

    #[test]
    fn a_new_claim_replaces_the_old_one() {
        let mut p = Placement::new();
        let s0 = p.add_socket(addr("192.0.2.1:40000"));
        let s1 = p.add_socket(addr("192.0.2.1:40001"));
        p.claim(1, s0, &[addr(SFU)], "uf1").unwrap();
        p.claim(1, s1, &[addr(SFU2)], "uf1b").unwrap();
        assert_eq!(p.socket_of(1), Some(s1));
        assert_eq!(p.route(s0, &addr(SFU), &stun("uf1:x")), None);
        assert_eq!(p.place(2, &[addr(SFU)], "uf2"), Some(s0));
    }

    #[test]
    fn keys_can_carry_an_owner() {
        // The runtime's pool keys calls by shard and call: two shards' calls to one SFU
        // address take two sockets, and routing answers with the owning shard.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        struct Owner {
            shard: usize,
            call: i64,
        }
        let mut p = Placement::new();
        p.add_socket(addr("192.0.2.1:40000"));
        let a = Owner { shard: 0, call: 1 };
        let b = Owner { shard: 1, call: 2 };
        assert_eq!(p.place(a, &[addr(SFU)], "ua"), Some(SocketId(0)));
        assert_eq!(p.place(b, &[addr(SFU)], "ub"), None);
        p.add_socket(addr("192.0.2.1:40001"));
        assert_eq!(p.place(b, &[addr(SFU)], "ub"), Some(SocketId(1)));
        let owner = p
            .route(SocketId(1), &addr(SFU), &[0x80; 20])
            .map(|o| o.shard);
        assert_eq!(owner, Some(1));
    }
}
