//! Receives on a raw io_uring with explicit cancellation, so a shard can stop and go away.
//!
//! tokio-uring keeps a receive's buffer inside its runtime until the kernel completes it, and
//! a receive on an idle socket never completes: dropping the runtime with receives in flight
//! corrupted the heap (tokio-rs/tokio-uring#328, open), so a stopped shard used to park its
//! thread, its ring and its sockets forever. Here the shard owns the ring and every buffer:
//! [`UringReceiver`] keeps one `RECVMSG` in flight per socket, each in a slot of its own (the
//! `msghdr`, `iovec`, source address and buffer the kernel writes to), re-armed as its
//! completion is reaped. Removing a socket submits an `ASYNC_CANCEL` for its receive and frees
//! the slot when the receive's completion arrives; stopping cancels every receive and waits
//! (bounded) for all of them, so nothing the kernel may still write to is freed.
//!
//! The ring's descriptor becomes readable when completions are waiting: the shard's loop
//! waits on it (a tokio `AsyncFd`) beside its timer and command wake-up.
//!
//! Like [`crate::uring_send`], this module uses `unsafe` for what io_uring reads and writes
//! after `push` returns: a slot is boxed (it never moves) and freed only once the completion
//! of its receive has been reaped.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};
use ringcast_core::endpoint::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `user_data` of cancellation requests (their completions carry nothing to do).
const CANCEL: u64 = u64::MAX;

/// A socket's receive slot, as [`UringReceiver::add`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvId(u32);

/// One socket's receive: everything the kernel reads or writes until the completion.
struct Slot {
    socket: Socket,
    fd: RawFd,
    buf: Box<[u8]>,
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    msg: libc::msghdr,
    /// A receive is queued or in flight (its completion not reaped yet).
    armed: bool,
    /// Removed: not re-armed, freed when its completion arrives.
    cancelled: bool,
}

/// Counters of a [`UringReceiver`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecvCounters {
    /// Datagrams received.
    pub(crate) received: u64,
    /// Receives that failed (an ICMP error queued on the socket, say) or datagrams larger than
    /// the buffer (dropped).
    pub(crate) errors: u64,
}

/// The ring's descriptor, for the reactor.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A ring that receives on many sockets; see the module docs.
pub(crate) struct UringReceiver {
    /// The ring in the tokio reactor (readable while completions wait), once
    /// [`UringReceiver::register`]ed. Declared before `ring`, so it drops (and leaves the
    /// reactor) before the ring's descriptor closes.
    reactor: Option<AsyncFd<RingFd>>,
    ring: IoUring,
    /// By [`RecvId`]; each slot boxed so the kernel's pointers stay valid when this grows.
    slots: Vec<Option<Box<Slot>>>,
    free: Vec<u32>,
    buf_len: usize,
    /// Receives armed whose completion has not been reaped.
    armed: usize,
    /// Entries pushed since the last submit.
    queued: usize,
    /// Completions copied out of the ring before they are handled.
    done: Vec<(u64, i32)>,
    counters: RecvCounters,
}

impl std::fmt::Debug for UringReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReceiver")
            .field("sockets", &(self.slots.len() - self.free.len()))
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl UringReceiver {
    /// A ring whose receives take datagrams of up to `buf_len` bytes.
    pub(crate) fn new(buf_len: usize) -> io::Result<Self> {
        // The submission queue bounds the entries per system call (more are submitted as it
        // fills); the completion queue holds a burst of completions, one per socket at most
        // (and the kernel keeps overflowing ones rather than drop them).
        let ring = IoUring::builder().setup_cqsize(16_384).build(1024)?;
        Ok(Self {
            reactor: None,
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            buf_len,
            armed: 0,
            queued: 0,
            done: Vec::new(),
            counters: RecvCounters::default(),
        })
    }

    /// Puts the ring in the current tokio reactor, for [`UringReceiver::readable`]. Must be
    /// called inside a runtime.
    pub(crate) fn register(&mut self) -> io::Result<()> {
        // SAFETY: the descriptor is the ring's, which `self` owns; `reactor` drops before
        // `ring` (field order), so it stays open for the AsyncFd's whole life.
        let fd = unsafe {
            AsyncFd::register_with_interest(RingFd(self.ring.as_raw_fd()), Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        self.reactor = Some(fd);
        Ok(())
    }

    /// Waits until completions may be waiting (returns at once if some arrived since the
    /// last wait). Never returns if the ring is not registered.
    pub(crate) async fn readable(&self) {
        match &self.reactor {
            Some(fd) => match fd.readable().await {
                // Cleared before the completions are reaped: one that arrives after the
                // reap sets it again.
                Ok(mut guard) => guard.clear_ready(),
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Starts receiving on `fd`, whose datagrams are reported as arriving on `socket`. The
    /// descriptor may be closed at any time after [`UringReceiver::remove`] (the kernel holds
    /// the socket until the cancelled receive completes).
    pub(crate) fn add(&mut self, socket: Socket, fd: RawFd) -> RecvId {
        let slot = Box::new(Slot {
            socket,
            fd,
            buf: vec![0; self.buf_len].into_boxed_slice(),
            // SAFETY: plain C structs for which all-zero is a valid value.
            addr: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: as above.
            msg: unsafe { std::mem::zeroed() },
            armed: false,
            cancelled: false,
        });
        let index = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.slots.get_mut(i as usize) {
                    *s = Some(slot);
                }
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.arm(index);
        RecvId(index)
    }

    /// Stops receiving on a socket: its receive is cancelled and its slot freed when the
    /// cancellation completes (at a later [`UringReceiver::reap`]).
    pub(crate) fn remove(&mut self, id: RecvId) {
        let Some(Some(slot)) = self.slots.get_mut(id.0 as usize) else {
            return;
        };
        if slot.cancelled {
            return;
        }
        slot.cancelled = true;
        if slot.armed {
            let entry = opcode::AsyncCancel::new(u64::from(id.0))
                .build()
                .user_data(CANCEL);
            self.push(&entry);
        } else {
            self.free_slot(id.0);
        }
    }

    /// Queues a receive in slot `index`.
    fn arm(&mut self, index: u32) {
        let Some(Some(slot)) = self.slots.get_mut(index as usize) else {
            return;
        };
        slot.iov = libc::iovec {
            iov_base: slot.buf.as_mut_ptr().cast(),
            iov_len: slot.buf.len(),
        };
        slot.msg.msg_name = (&raw mut slot.addr).cast();
        slot.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        slot.msg.msg_iov = &raw mut slot.iov;
        slot.msg.msg_iovlen = 1;
        slot.msg.msg_control = std::ptr::null_mut();
        slot.msg.msg_controllen = 0;
        slot.msg.msg_flags = 0;
        let entry = opcode::RecvMsg::new(types::Fd(slot.fd), &raw mut slot.msg)
            .build()
            .user_data(u64::from(index));
        slot.armed = true;
        self.armed += 1;
        self.push(&entry);
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) {
        loop {
            // SAFETY: a receive entry points into a boxed slot that stays allocated until its
            // completion is reaped (`reap`, `shutdown`, or leaked by `Drop`); a cancellation
            // entry points to nothing.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.queued += 1;
                return;
            }
            // The submission queue is full: hand it to the kernel and retry.
            self.submit();
        }
    }

    /// Submits what was queued (one system call). A receive on a socket with a datagram
    /// waiting completes during the call.
    pub(crate) fn submit(&mut self) {
        if self.queued == 0 {
            return;
        }
        if let Err(e) = self.ring.submit() {
            // EBUSY: completions overflowed; the next reap makes room and the entries stay
            // queued for the next submit.
            tracing::debug!("io_uring receive submit: {e}");
        }
        self.queued = self.ring.submission().len();
    }

    /// Completions waiting to be reaped?
    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Hands every received datagram to `f` (socket, source, contents) and re-arms its
    /// socket's receive, until no completion is left or `budget` datagrams were handled.
    /// Returns the number handled.
    pub(crate) fn reap(
        &mut self,
        budget: usize,
        mut f: impl FnMut(Socket, SocketAddr, &[u8]),
    ) -> usize {
        // Receives armed since the last turn (new sockets) go to the kernel first.
        self.submit();
        let mut handled = 0;
        loop {
            self.done.clear();
            self.done.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result())),
            );
            if self.done.is_empty() {
                break;
            }
            let done = std::mem::take(&mut self.done);
            for &(user_data, result) in &done {
                if user_data == CANCEL {
                    continue;
                }
                let index = user_data as u32;
                let Some(Some(slot)) = self.slots.get_mut(index as usize) else {
                    continue;
                };
                slot.armed = false;
                self.armed = self.armed.saturating_sub(1);
                if slot.cancelled {
                    self.free_slot(index);
                    continue;
                }
                if result >= 0 {
                    let truncated = slot.msg.msg_flags & libc::MSG_TRUNC != 0;
                    match (truncated, source(&slot.addr)) {
                        (false, Some(from)) => {
                            let n = (result as usize).min(slot.buf.len());
                            self.counters.received += 1;
                            handled += 1;
                            f(slot.socket, from, slot.buf.get(..n).unwrap_or(&[]));
                        }
                        _ => self.counters.errors += 1,
                    }
                } else {
                    // ICMP errors (port unreachable) surface here on Linux; not fatal.
                    self.counters.errors += 1;
                    tracing::trace!("recv: {}", io::Error::from_raw_os_error(-result));
                }
                self.arm(index);
            }
            self.done = done;
            // Re-armed receives on sockets with datagrams waiting complete during the submit.
            self.submit();
            if handled >= budget {
                break;
            }
        }
        handled
    }

    #[cfg(test)]
    pub(crate) fn counters(&self) -> RecvCounters {
        self.counters
    }

    fn free_slot(&mut self, index: u32) {
        if let Some(s) = self.slots.get_mut(index as usize)
            && s.take().is_some()
        {
            self.free.push(index);
        }
    }

    /// Cancels every receive and waits, at most `limit`, for their completions. Returns
    /// whether none is left in flight.
    pub(crate) fn shutdown(&mut self, limit: Duration) -> bool {
        let live: Vec<RecvId> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| RecvId(i as u32))
            .collect();
        for id in live {
            self.remove(id);
        }
        let end = Instant::now() + limit;
        loop {
            self.submit();
            self.reap(usize::MAX, |_, _, _| {});
            if self.armed == 0 {
                return true;
            }
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                return false;
            };
            let wait = left.min(Duration::from_millis(50));
            let ts = types::Timespec::new()
                .sec(wait.as_secs())
                .nsec(wait.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&ts);
            // ETIME when the wait runs out; the loop checks the deadline.
            let _ = self.ring.submitter().submit_with_args(1, &args);
        }
    }
}

impl Drop for UringReceiver {
    fn drop(&mut self) {
        if self.armed > 0 && !self.shutdown(Duration::from_secs(1)) {
            // The kernel may still write into the slots of receives it has not completed:
            // leak them rather than free memory it holds pointers to (closing the ring
            // below then cancels those receives).
            tracing::warn!(
                "io_uring receive: {} receives did not complete their cancellation; leaking their buffers",
                self.armed
            );
            for slot in self.slots.drain(..).flatten() {
                if slot.armed {
                    std::mem::forget(slot);
                }
            }
        }
    }
}

/// The source address the kernel wrote into a receive's `sockaddr_storage`.
fn source(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is big and
            // aligned enough for.
            let a = unsafe { &*(std::ptr::from_ref(addr).cast::<libc::sockaddr_in>()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(std::ptr::from_ref(addr).cast::<libc::sockaddr_in6>()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ringcast_core::endpoint::SocketId;
    use std::net::UdpSocket;

    fn collect(rx: &mut UringReceiver, want: usize) -> Vec<(Socket, SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(2);
        while got.len() < want && Instant::now() < end {
            rx.submit();
            rx.reap(usize::MAX, |s, from, bytes| {
                got.push((s, from, bytes.to_vec()));
            });
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn receives_on_many_sockets_and_rearms() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("[::1]:0")
            .or_else(|_| UdpSocket::bind("127.0.0.1:0"))
            .unwrap();
        let tx4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let txb = UdpSocket::bind(SocketAddr::new(b.local_addr().unwrap().ip(), 0)).unwrap();
        let mut rx = UringReceiver::new(2048).unwrap();
        rx.add(Socket::Shared(SocketId(0)), a.as_raw_fd());
        rx.add(Socket::Shared(SocketId(1)), b.as_raw_fd());
        rx.submit();
        for i in 0..10u8 {
            tx4.send_to(&[i; 3], a.local_addr().unwrap()).unwrap();
            txb.send_to(&[i; 5], b.local_addr().unwrap()).unwrap();
        }
        let got = collect(&mut rx, 20);
        assert_eq!(got.len(), 20);
        let on_a: Vec<_> = got
            .iter()
            .filter(|g| g.0 == Socket::Shared(SocketId(0)))
            .collect();
        assert_eq!(on_a.len(), 10);
        assert!(on_a.iter().all(|g| g.1 == tx4.local_addr().unwrap()));
        // In order, per socket.
        for (i, g) in on_a.iter().enumerate() {
            assert_eq!(g.2, vec![i as u8; 3]);
        }
        assert!(
            got.iter()
                .filter(|g| g.0 == Socket::Shared(SocketId(1)))
                .all(|g| g.1 == txb.local_addr().unwrap() && g.2.len() == 5)
        );
        assert_eq!(rx.counters().received, 20);
    }

    #[test]
    fn a_removed_socket_is_cancelled_and_the_ring_stops_clean() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rx = UringReceiver::new(2048).unwrap();
        let id_a = rx.add(Socket::Shared(SocketId(0)), a.as_raw_fd());
        rx.add(Socket::Shared(SocketId(1)), b.as_raw_fd());
        rx.submit();
        rx.remove(id_a);
        // The descriptor may close at once: the ring holds the socket until the cancel.
        drop(a);
        rx.submit();
        let end = Instant::now() + Duration::from_secs(2);
        while rx.armed > 1 && Instant::now() < end {
            rx.reap(usize::MAX, |_, _, _| {});
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(rx.armed, 1, "the removed socket's receive was cancelled");
        // Its slot is reused by the next socket.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let id_c = rx.add(Socket::Shared(SocketId(2)), c.as_raw_fd());
        assert_eq!(id_c, id_a);
        tx.send_to(b"hi", c.local_addr().unwrap()).unwrap();
        let got = collect(&mut rx, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, Socket::Shared(SocketId(2)));
        // Stopping cancels the receives still pending and waits for them.
        assert!(rx.shutdown(Duration::from_secs(1)));
        assert_eq!(rx.armed, 0);
    }
}
