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

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ringcast_core::endpoint::{CallId, SocketId};
use ringcast_core::placement::Placement;

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
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct SocketPool {
    ip: IpAddr,
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
    /// A pool for `shards` shards whose first socket is bound to `bind` (port 0 = any).
    pub(crate) fn new(bind: SocketAddr, shards: usize) -> io::Result<Self> {
        let mut inner = Inner {
            sockets: Vec::new(),
            placement: Placement::new(),
        };
        inner.push(bind_socket(bind)?);
        Ok(Self {
            ip: bind.ip(),
            shards: shards.max(1),
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation is a single insert/remove: a panic elsewhere leaves it consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The IP every socket binds (1:1 calls' own sockets too).
    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
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
        let mut inner = self.lock();
        if let Some(id) = inner.placement.place(call, remotes, ufrag) {
            return Ok(id);
        }
        if !remotes.iter().any(|r| r.is_ipv4() == self.ip.is_ipv4()) {
            // No SFU address these sockets can reach: another socket would not help, and the
            // call refuses the answer ("no usable udp candidate") when it connects.
            return Ok(SocketId(0));
        }
        let id = inner.push(bind_socket(SocketAddr::new(self.ip, 0))?);
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
