//! How the UDP thread waits: poll(2) on its socket and on an eventfd that the control side
//! writes after queueing a command, so a command (a join) is handled at once instead of after
//! the socket's receive timeout (up to 5 ms per join, one join after another, before).
//!
//! The socket stays blocking (sends block rather than drop when the kernel's buffer is full, as
//! before); the wait is level-triggered, and the receive loop reads with `MSG_DONTWAIT` until
//! the queue is empty. Per wake-up that is one `poll` where there used to be a `setsockopt`
//! (the receive timeout) and two `ioctl`s (blocking on and off): no cost added per datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::fd::OwnedFd;
use rustix::net::RecvFlags;

/// Wakes the UDP thread out of [`wait`]. Cheap to call from any thread; wake-ups that arrive
/// while the thread is busy merge into one.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Self { fd })
    }

    /// Makes the next (or current) [`wait`] return.
    pub(crate) fn wake(&self) {
        // EAGAIN means the counter is saturated: a wake-up is pending anyway.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Clears pending wake-ups.
    fn reset(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut count);
    }
}

/// What ended a [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Ready {
    /// The socket has datagrams to read.
    pub(crate) readable: bool,
    /// [`Waker::wake`] was called (its wake-ups are cleared).
    pub(crate) woken: bool,
}

/// Waits up to `timeout` until `socket` is readable or `waker` is woken.
pub(crate) fn wait(socket: &UdpSocket, waker: &Waker, timeout: Duration) -> io::Result<Ready> {
    let mut fds = [
        PollFd::new(socket, PollFlags::IN),
        PollFd::new(&waker.fd, PollFlags::IN),
    ];
    let timeout = Timespec::try_from(timeout).map_err(|_| io::ErrorKind::InvalidInput)?;
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(Ready::default()),
        Err(e) => return Err(e.into()),
    }
    let [socket_fd, waker_fd] = &fds;
    // An error condition on the socket (ICMP port unreachable) is read out by the next
    // receive, so it counts as readable.
    let readable = socket_fd
        .revents()
        .intersects(PollFlags::IN | PollFlags::ERR);
    let woken = waker_fd.revents().contains(PollFlags::IN);
    if woken {
        waker.reset();
    }
    Ok(Ready { readable, woken })
}

/// One datagram if one is queued (`None` when the queue is empty), without blocking the
/// blocking socket. Errors other than an empty queue (a pending ICMP error) are returned.
pub(crate) fn try_recv_from(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<Option<(usize, SocketAddr)>> {
    match rustix::net::recvfrom(socket, &mut *buf, RecvFlags::DONTWAIT) {
        Ok((_, n, Some(source))) => {
            let source = SocketAddr::try_from(source).map_err(io::Error::from)?;
            Ok(Some((n.min(buf.len()), source)))
        }
        Ok((_, _, None)) => Err(io::Error::other("datagram without a source address")),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The wake-up is what makes a join fast: without it the thread sleeps out its timeout.
    /// A woken wait returns at once whatever the timeout; a wake-up is consumed by one wait.
    #[test]
    fn a_wake_ends_the_wait_and_is_consumed() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let waker = Waker::new().unwrap();
        waker.wake();
        waker.wake();
        let ready = wait(&socket, &waker, Duration::from_secs(10)).unwrap();
        assert_eq!(
            ready,
            Ready {
                readable: false,
                woken: true
            }
        );
        let idle = wait(&socket, &waker, Duration::ZERO).unwrap();
        assert_eq!(idle, Ready::default(), "two wakes merged into one");
    }

    #[test]
    fn a_datagram_ends_the_wait_and_is_read_without_blocking() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let waker = Waker::new().unwrap();
        let mut buf = [0u8; 16];
        assert!(try_recv_from(&socket, &mut buf).unwrap().is_none());
        peer.send_to(b"hello", socket.local_addr().unwrap())
            .unwrap();
        let ready = wait(&socket, &waker, Duration::from_secs(10)).unwrap();
        assert!(ready.readable && !ready.woken);
        let (n, source) = try_recv_from(&socket, &mut buf).unwrap().unwrap();
        assert_eq!(
            (&buf[..n], source),
            (&b"hello"[..], peer.local_addr().unwrap())
        );
        assert!(try_recv_from(&socket, &mut buf).unwrap().is_none());
    }
}
