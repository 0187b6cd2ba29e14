//! Batched sends on a raw io_uring: one `io_uring_enter` per pacer tick, no allocation per
//! packet.
//!
//! tokio-uring's `send_to` costs one future, one boxed operation and a waker per datagram
//! (about 4 allocations, measured in `docs/performance.md`), and its completions come back
//! through the runtime's reactor. The pacer does not need any of that: it knows every datagram
//! of a tick at once and only wants them on the wire. [`UringSender`] owns a second, private
//! ring per shard: each datagram takes a pre-allocated slot (its `msghdr`, `iovec` and
//! destination address live in the slot, so nothing is allocated), all of a tick's `SENDMSG`
//! entries are submitted with one system call, and completions are reaped without waiting (a
//! UDP send completes inline unless the socket buffer is full; then the slot stays taken until
//! the kernel finishes it). The socket file descriptors are registered with the ring, which
//! saves the kernel a file-table lookup per send.
//!
//! Every send is `MSG_DONTWAIT`: a socket whose send buffer is full (a slow link, a tiny
//! `SO_SNDBUF`) refuses the datagram with `EAGAIN` (or `ENOBUFS`) at once, and the datagram
//! is dropped and counted ([`SendCounters::dropped_full`]) instead of waiting in a slot for
//! the buffer to drain: a late audio packet is worth nothing, and waiting sends would pile up
//! until every slot is taken and the shard blocks.
//!
//! This module and [`crate::ffmpeg`] (setting up a child between fork and exec) are the only
//! ones of the runtime with `unsafe`. Here, io_uring reads the `msghdr` and the
//! buffer after `push` returns, so both must stay where they are until the completion arrives.
//! Slots live in a boxed slice that is never resized, and a slot is reused only after its
//! completion has been reaped.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{IoUring, opcode, types};

/// Destination address in the C layout `sendmsg` expects.
#[derive(Clone, Copy)]
enum CAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl CAddr {
    fn new(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => Self::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => Self::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }
}

/// One datagram in flight: everything the kernel reads until the completion.
struct Slot {
    buf: Vec<u8>,
    addr: CAddr,
    iov: libc::iovec,
    msg: libc::msghdr,
}

impl Slot {
    fn empty() -> Self {
        Self {
            buf: Vec::new(),
            addr: CAddr::new(SocketAddr::from(([0, 0, 0, 0], 0))),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
            msg: unsafe { std::mem::zeroed() },
        }
    }

    /// Fills the slot and points its `msghdr` at its own fields. Returns the buffer of the
    /// datagram the slot carried before (already sent), for reuse.
    fn fill(&mut self, destination: SocketAddr, buf: Vec<u8>) -> (*const libc::msghdr, Vec<u8>) {
        let previous = std::mem::replace(&mut self.buf, buf);
        self.addr = CAddr::new(destination);
        self.iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: self.buf.len(),
        };
        let (name, len) = match &mut self.addr {
            CAddr::V4(a) => (
                (a as *mut libc::sockaddr_in).cast::<libc::c_void>(),
                std::mem::size_of::<libc::sockaddr_in>(),
            ),
            CAddr::V6(a) => (
                (a as *mut libc::sockaddr_in6).cast::<libc::c_void>(),
                std::mem::size_of::<libc::sockaddr_in6>(),
            ),
        };
        self.msg.msg_name = name;
        self.msg.msg_namelen = len as libc::socklen_t;
        self.msg.msg_iov = &mut self.iov;
        self.msg.msg_iovlen = 1;
        (&self.msg, previous)
    }
}

/// Counters of a [`UringSender`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendCounters {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Datagrams the kernel refused (the errno is logged at debug level), other than for a
    /// full send buffer.
    pub errors: u64,
    /// Datagrams dropped because the socket's send buffer was full (`EAGAIN`, `ENOBUFS`).
    pub dropped_full: u64,
    /// `io_uring_enter` calls made to submit.
    pub submits: u64,
}

/// A private io_uring that sends datagrams in batches; see the module docs.
pub struct UringSender {
    ring: IoUring,
    /// Never resized: the kernel holds pointers into it.
    slots: Box<[Slot]>,
    free: Vec<u32>,
    /// Registered file slots (index = socket id) or, past the table, plain descriptors.
    fds: Vec<RawFd>,
    registered: u32,
    queued: usize,
    counters: SendCounters,
}

impl std::fmt::Debug for UringSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSender")
            .field("slots", &self.slots.len())
            .field("in_flight", &self.in_flight())
            .field("sockets", &self.fds.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl UringSender {
    /// A ring with room for `slots` datagrams in flight (rounded up to a power of two).
    pub fn new(slots: usize) -> io::Result<Self> {
        let slots = slots.next_power_of_two().clamp(64, 32_768);
        let ring = IoUring::builder().build(slots as u32)?;
        // A sparse table for fixed files; the kernel caps it at RLIMIT_NOFILE, so try smaller
        // tables, and send by plain descriptor past whatever we got.
        let mut registered = 0;
        for size in [65_536u32, 16_384, 4_096, 1_024] {
            if ring.submitter().register_files_sparse(size).is_ok() {
                registered = size;
                break;
            }
        }
        Ok(Self {
            ring,
            slots: (0..slots).map(|_| Slot::empty()).collect(),
            free: (0..slots as u32).rev().collect(),
            fds: Vec::new(),
            registered,
            queued: 0,
            counters: SendCounters::default(),
        })
    }

    /// Adds the socket with id `fds.len()`: ids must be added in order.
    pub fn add_socket(&mut self, fd: RawFd) {
        let index = self.fds.len() as u32;
        if index < self.registered
            && self
                .ring
                .submitter()
                .register_files_update(index, &[fd])
                .is_err()
        {
            // Leave the slot empty; `push` falls back to the descriptor for this socket.
            tracing::debug!("io_uring: could not register socket {index}");
        }
        self.fds.push(fd);
    }

    /// Queues one datagram; it goes out at the next [`UringSender::submit`] (or sooner, when
    /// the submission queue fills up). Returns a buffer to reuse: the one of the datagram the
    /// slot sent before (or `buf` itself if it could not be queued).
    pub fn push(
        &mut self,
        socket: usize,
        destination: SocketAddr,
        buf: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let Some(&fd) = self.fds.get(socket) else {
            self.counters.errors += 1;
            return Some(buf);
        };
        let fixed = (socket as u32) < self.registered;
        self.push_to(fixed.then_some(socket as u32), fd, destination, buf)
    }

    /// Queues one datagram on a socket that is not in the id table (a 1:1 call's own
    /// socket), sent by plain descriptor. The descriptor must stay open until [`Self::submit`]
    /// has run (the kernel resolves it at submission).
    pub(crate) fn push_fd(
        &mut self,
        fd: RawFd,
        destination: SocketAddr,
        buf: Vec<u8>,
    ) -> Option<Vec<u8>> {
        self.push_to(None, fd, destination, buf)
    }

    fn push_to(
        &mut self,
        fixed: Option<u32>,
        fd: RawFd,
        destination: SocketAddr,
        buf: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                // Every slot is in flight: let the kernel finish some.
                self.submit_and_wait(1);
                match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.counters.errors += 1;
                        return Some(buf);
                    }
                }
            }
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            self.counters.errors += 1;
            return Some(buf);
        };
        let (msg, previous) = slot.fill(destination, buf);
        let flags = libc::MSG_DONTWAIT as u32;
        let entry = if let Some(index) = fixed {
            opcode::SendMsg::new(types::Fixed(index), msg)
                .flags(flags)
                .build()
        } else {
            opcode::SendMsg::new(types::Fd(fd), msg)
                .flags(flags)
                .build()
        };
        let entry = entry.user_data(u64::from(index));
        if self.ring.submission().is_full() {
            self.submit_and_wait(0);
        }
        // SAFETY: the msghdr, iovec, address and buffer the entry points to live in slot
        // `index`, which is not reused or moved until its completion is reaped (`reap`).
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Cannot happen after the is_full check; give the slot back all the same.
            slot_release(&mut self.slots, &mut self.free, index);
            self.counters.errors += 1;
            return Some(previous);
        }
        self.queued += 1;
        Some(previous)
    }

    /// Submits everything queued with one system call and reaps what has completed.
    pub fn submit(&mut self) {
        if self.queued > 0 {
            self.submit_and_wait(0);
        } else {
            self.reap();
        }
    }

    /// Datagrams queued or in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// What was sent, refused and dropped so far.
    pub fn counters(&self) -> SendCounters {
        self.counters
    }

    fn submit_and_wait(&mut self, want: usize) {
        self.counters.submits += 1;
        if let Err(e) = self.ring.submit_and_wait(want) {
            // EBUSY/EAGAIN: the completion queue is full; reaping below makes room.
            tracing::debug!("io_uring submit: {e}");
        }
        self.queued = self.ring.submission().len();
        self.reap();
    }

    fn reap(&mut self) {
        let (slots, free, counters) = (&mut self.slots, &mut self.free, &mut self.counters);
        for cqe in self.ring.completion() {
            let index = cqe.user_data() as u32;
            let result = cqe.result();
            if result == -libc::EAGAIN || result == -libc::ENOBUFS {
                counters.dropped_full += 1;
            } else if result < 0 {
                counters.errors += 1;
                tracing::debug!("send: {}", io::Error::from_raw_os_error(-result));
            } else {
                counters.sent += 1;
            }
            slot_release(slots, free, index);
        }
    }
}

/// Frees a slot whose completion was reaped: drops its buffer and makes it available again.
/// Frees a slot whose completion arrived. Its buffer stays until the slot's next
/// [`UringSender::push`] hands it back for reuse.
fn slot_release(slots: &mut [Slot], free: &mut Vec<u32>, index: u32) {
    if slots.get(index as usize).is_some() {
        free.push(index);
    }
}

impl Drop for UringSender {
    fn drop(&mut self) {
        // The kernel may still read slots of sends in flight: wait for them before the
        // slots are freed (bounded: a UDP send completes or fails promptly).
        for _ in 0..100 {
            if self.in_flight() == 0 {
                break;
            }
            self.submit_and_wait(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn sends_a_batch_and_reuses_slots() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let tx_a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx_b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sender = UringSender::new(64).unwrap();
        sender.add_socket(tx_a.as_raw_fd());
        sender.add_socket(tx_b.as_raw_fd());
        let dest = rx.local_addr().unwrap();
        // Three batches of 50 through 64 slots: slots must be reaped and reused.
        let mut seen = std::collections::HashMap::new();
        for batch in 0..3u8 {
            for i in 0..50u8 {
                sender.push(usize::from(i % 2), dest, vec![batch, i, 7, 7]);
            }
            sender.submit();
            let mut buf = [0u8; 16];
            for _ in 0..50 {
                let (n, from) = rx.recv_from(&mut buf).unwrap();
                assert_eq!(n, 4);
                assert_eq!(&buf[2..4], &[7, 7]);
                *seen.entry(from).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.get(&tx_a.local_addr().unwrap()), Some(&75));
        assert_eq!(seen.get(&tx_b.local_addr().unwrap()), Some(&75));
        sender.submit();
        let c = sender.counters();
        assert_eq!(c.sent, 150);
        assert_eq!(c.errors, 0);
        assert!(c.submits <= 6, "one submit per batch, got {}", c.submits);
        assert_eq!(sender.in_flight(), 0);
    }

    #[test]
    fn unknown_socket_and_refused_sends_are_counted() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sender = UringSender::new(64).unwrap();
        sender.add_socket(tx.as_raw_fd());
        // No such socket id.
        sender.push(5, "127.0.0.1:9".parse().unwrap(), vec![1]);
        // An IPv6 destination from an IPv4 socket: the kernel refuses it.
        sender.push(0, "[::1]:9".parse().unwrap(), vec![1]);
        sender.submit();
        let c = sender.counters();
        assert_eq!(c.errors, 2);
        assert_eq!(c.sent, 0);
    }
}
