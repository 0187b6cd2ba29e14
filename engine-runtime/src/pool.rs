//! The engine's socket pool, shared by every shard.
//!
//! Every shard sends and receives on every socket of the pool (each through its own `dup` of
//! the fd, registered in its own ring). Two things therefore have to be decided across shards,
//! and live here behind one mutex that only the control path and misrouted datagrams take,
//! both by the sans-IO [`Placement`] (the same code a shard's endpoint and the simulator run):
//!
//! - **Placement (the socket rule).** An SFU tells participants apart by 5-tuple, so two live
//!   calls that reach the same SFU address must not share a socket. [`SocketPool::place`]
//!   picks the first socket with no live call to any of the call's SFU addresses, or binds a
//!   new one. Telegram puts many chats on few SFU addresses, so this is the normal case.
//! - **Ownership of a datagram.** The kernel hands a datagram to whichever shard's receive is
//!   pending. The receiving shard routes it with its own endpoint first (no lock); only when the
//!   call lives on another shard does it ask the pool whose it is, by remote address or, for
//!   STUN before nomination, by ufrag, and forwards it there. For audio sending the receive
//!   direction is light (RTCP and STUN keepalives), so the lock is off the hot path.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard};

use ringcast_core::endpoint::{CallId, SocketId};
use ringcast_core::placement::Placement;

use crate::error::EngineError;

/// Requested SO_RCVBUF/SO_SNDBUF per socket. A pacer tick sends every due packet at once;
/// the kernel caps this at net.core.{r,w}mem_max (scripts/setup.sh raises them where it can).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A call as the pool knows it: the shard that owns it, and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Owner {
    pub(crate) shard: usize,
    pub(crate) call: CallId,
}

struct PooledSocket {
    /// The pool's own descriptor until the last shard takes it: every shard holds one
    /// descriptor of each socket and the pool none, so a socket costs one fd per shard.
    socket: Option<UdpSocket>,
    /// Shards that have their descriptor of this socket.
    handed: usize,
    addr: SocketAddr,
}

struct Inner {
    /// By [`SocketId`], in the order of `placement`'s ids.
    sockets: Vec<PooledSocket>,
    /// Which calls are on which socket, and the routing of their datagrams to their shard.
    placement: Placement<Owner>,
    /// The local address last routed toward an SFU address, for when no route probe can be
    /// made: with every ephemeral port taken the probe cannot bind, but a socket the pool
    /// already has may still be free for the call. Bounded by [`ROUTES_KEPT`].
    routes: HashMap<IpAddr, IpAddr>,
}

/// SFU addresses whose route [`Inner::routes`] remembers (cleared when full).
const ROUTES_KEPT: usize = 1024;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct SocketPool {
    /// The IP every socket binds, if the application chose one; `None` binds, per SFU
    /// address, the local address the kernel routes toward it.
    fixed_ip: Option<IpAddr>,
    shards: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn push(&mut self, socket: PooledSocket) -> SocketId {
        let id = self.placement.add_socket(socket.addr);
        self.sockets.push(socket);
        id
    }
}

impl SocketPool {
    /// A pool for `shards` shards whose first socket is bound to `bind` (port 0 = any). With
    /// `None`, sockets are bound per SFU address on the local address the kernel routes
    /// toward it ([`route_toward`]); the first socket is then a loopback one (for an SFU on
    /// this host).
    pub(crate) fn new(bind: Option<SocketAddr>, shards: usize) -> io::Result<Self> {
        let mut inner = Inner {
            sockets: Vec::new(),
            placement: Placement::new(),
            routes: HashMap::new(),
        };
        inner.push(bind_socket(
            bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        )?);
        Ok(Self {
            fixed_ip: bind.map(|b| b.ip()),
            shards: shards.max(1),
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation is a single insert/remove: a panic elsewhere leaves it consistent.
        crate::sync::lock(&self.inner)
    }

    /// The IP 1:1 calls' own sockets bind: the chosen one, else the address of the default
    /// route (IPv4, else IPv6), else loopback on a host with no route out.
    pub(crate) fn ip(&self) -> IpAddr {
        self.fixed_ip.unwrap_or_else(default_route_ip)
    }

    /// Number of sockets.
    pub(crate) fn len(&self) -> usize {
        self.lock().sockets.len()
    }

    /// Socket `id` for a shard's ring, with its address: a `dup` for every shard but the
    /// last to ask, which gets the pool's own descriptor. Each shard asks once per socket.
    pub(crate) fn clone_socket(&self, id: usize) -> io::Result<(UdpSocket, SocketAddr)> {
        let shards = self.shards;
        let mut inner = self.lock();
        let s = inner
            .sockets
            .get_mut(id)
            .ok_or_else(|| io::Error::other("no such socket"))?;
        let socket = if s.handed + 1 >= shards {
            s.socket.take()
        } else {
            s.socket.as_ref().map(UdpSocket::try_clone).transpose()?
        };
        let socket = socket.ok_or_else(|| io::Error::other("socket already handed out"))?;
        s.handed += 1;
        Ok((socket, s.addr))
    }

    /// The socket rule across shards: a socket on which none of `remotes` is taken (binding
    /// a new one if needed), claimed for `call` with its `ufrag`.
    pub(crate) fn place(
        &self,
        call: Owner,
        remotes: &[SocketAddr],
        ufrag: &str,
    ) -> io::Result<SocketId> {
        // The local address toward the SFU: the chosen one, or the kernel's route (a route
        // lookup, no packet sent; outside the lock).
        let local = match self.fixed_ip {
            Some(ip) => Some(ip),
            None => match route_toward(remotes) {
                Ok(local) => {
                    if let (Some(ip), Some(remote)) = (local, remotes.first()) {
                        let mut inner = self.lock();
                        if inner.routes.len() >= ROUTES_KEPT {
                            inner.routes.clear();
                        }
                        inner.routes.insert(remote.ip(), ip);
                    }
                    local
                }
                // No free port for the probe: the route seen last toward this SFU, if any,
                // still finds a free socket of the pool; else there is no socket to be had.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    let known = remotes
                        .first()
                        .and_then(|r| self.lock().routes.get(&r.ip()).copied());
                    match known {
                        Some(ip) => Some(ip),
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            },
        };
        let mut inner = self.lock();
        if let Some(id) = inner.placement.place_on(call, remotes, ufrag, local) {
            return Ok(id);
        }
        let Some(ip) = local.filter(|ip| remotes.iter().any(|r| r.is_ipv4() == ip.is_ipv4()))
        else {
            // No SFU address these sockets can reach: another socket would not help, and the
            // call refuses the answer ("no usable udp candidate") when it connects.
            return Ok(SocketId(0));
        };
        let id = inner.push(bind_socket(SocketAddr::new(ip, 0))?);
        inner
            .placement
            .claim(call, id, remotes, ufrag)
            .map_err(io::Error::other)?;
        Ok(id)
    }

    /// Releases what [`SocketPool::place`] claimed for `call` (a no-op if nothing).
    pub(crate) fn release(&self, call: Owner) {
        self.lock().placement.release(call);
    }

    /// The shard that owns a datagram from `source` on `socket`, if any.
    pub(crate) fn owner(
        &self,
        socket: SocketId,
        source: &SocketAddr,
        contents: &[u8],
    ) -> Option<usize> {
        self.lock()
            .placement
            .route(socket, source, contents)
            .map(|o| o.shard)
    }
}

/// A socket the call needed could not be opened: for want of a free local port (`EADDRINUSE`
/// binding port 0, every port of `net.ipv4.ip_local_port_range` taken) this is
/// [`EngineError::NoFreeSocket`]; any other failure (the open-file limit, say) stays
/// [`EngineError::Io`].
pub(crate) fn socket_error(e: io::Error) -> EngineError {
    if e.kind() == io::ErrorKind::AddrInUse {
        EngineError::NoFreeSocket
    } else {
        EngineError::Io(e)
    }
}

/// The local address the kernel would send from toward the first of `remotes` it has a route
/// to: `connect(2)` on a UDP socket only looks the route up, nothing is sent. `Ok(None)` if
/// there is no route to any; an error if the probe socket cannot be made (the open-file limit,
/// say), which must not pass for "no route".
pub(crate) fn route_toward(remotes: &[SocketAddr]) -> io::Result<Option<IpAddr>> {
    for remote in remotes {
        let any: SocketAddr = if remote.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0_u16; 8], 0))
        };
        let probe = match UdpSocket::bind(any) {
            Ok(probe) => probe,
            // No IPv6 (or IPv4) on this host: try the other addresses.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => continue,
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => continue,
            Err(e) => return Err(e),
        };
        if probe.connect(remote).is_err() {
            continue;
        }
        let ip = probe.local_addr()?.ip();
        if !ip.is_unspecified() {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// The address of the default route: toward documentation addresses (RFC 5737, RFC 3849),
/// which only the default route covers; loopback when there is none.
fn default_route_ip() -> IpAddr {
    let out = [
        SocketAddr::from(([192, 0, 2, 1], 9)),
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9)),
    ];
    route_toward(&out)
        .ok()
        .flatten()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn bind_socket(addr: SocketAddr) -> io::Result<PooledSocket> {
    let socket = UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: the kernel caps the size; a smaller buffer only means more drops at bursts.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let addr = socket.local_addr()?;
    Ok(PooledSocket {
        socket: Some(socket),
        handed: 0,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_free_port_is_typed_and_other_bind_errors_stay_io() {
        assert!(matches!(
            socket_error(io::Error::from(io::ErrorKind::AddrInUse)),
            EngineError::NoFreeSocket
        ));
        let emfile = socket_error(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(
            matches!(&emfile, EngineError::Io(e) if e.raw_os_error() == Some(libc::EMFILE)),
            "{emfile:?}"
        );
    }
}
