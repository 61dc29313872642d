//! The dispatcher's link to its SMTP server processes: a `SOCK_SEQPACKET`
//! socket pair per worker, the worker's end on its standard input. Each
//! packet is one frame; a [`Handoff`] carries the accepted connection's
//! descriptor with it (`SCM_RIGHTS`), and the worker answers with a
//! [`WorkerReport`] when a connection ends, so the dispatcher knows each
//! worker's load.
//!
//! Packets keep their boundaries, so a frame and its descriptor always
//! arrive together and a short read cannot split a message.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use crate::frame;

/// Largest packet either side sends.
pub const MAX_PACKET: usize = 16 * 1024;

/// One accepted connection, handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The dispatcher.cnf service (`SMTP`, `SMTP_SUBMIT`).
    pub service: String,
    /// The service's `PARAMETER` text (`CHANNEL=tcp_submit`).
    pub parameter: String,
    /// Our address and the client's, as `ip:port`.
    pub local: String,
    pub peer: String,
    /// The port is a `TLS_PORT`: TLS starts before the greeting.
    pub tls: bool,
    /// What `PORT_ACCESS` answered (`EXTERNAL`, or empty).
    pub port_access: String,
}

/// Worker to dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerReport {
    /// The connection from `peer` (as in its [`Handoff`]) has ended.
    Closed { peer: String },
}

/// A new socket pair: `(dispatcher's end, worker's end)`. The worker's end
/// is not close-on-exec, since it becomes the worker's standard input.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    Ok((a, b))
}

/// One end of the pair, driven by tokio. (Tokio's datagram type serves
/// for readiness; every packet goes through `sendmsg`/`recvmsg` so that
/// descriptors travel and a closed peer reads as end of file.)
pub struct Link {
    sock: UnixDatagram,
}

impl Link {
    /// Takes an end (made non-blocking here). Must be called inside a
    /// tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Link> {
        let std = std::os::unix::net::UnixDatagram::from(fd);
        std.set_nonblocking(true)?;
        Ok(Link {
            sock: UnixDatagram::from_std(std)?,
        })
    }

    /// Sends one message, with a descriptor when given.
    pub async fn send<T: Serialize>(&self, msg: &T, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let bytes = frame::encode(msg).map_err(io::Error::other)?;
        if bytes.len() > MAX_PACKET {
            return Err(io::Error::other("handoff packet too large"));
        }
        let raw: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        let sock = self.sock.as_raw_fd();
        loop {
            self.sock.writable().await?;
            let result = self.sock.try_io(Interest::WRITABLE, || {
                let cmsgs: Vec<ControlMessage> = if raw.is_empty() {
                    Vec::new()
                } else {
                    vec![ControlMessage::ScmRights(&raw)]
                };
                sendmsg::<()>(
                    sock,
                    &[IoSlice::new(&bytes)],
                    &cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            match result {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives one message and the descriptor sent with it; `None` when
    /// the other end has closed.
    pub async fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_PACKET];
        let sock = self.sock.as_raw_fd();
        loop {
            self.sock.readable().await?;
            let result = self
                .sock
                .try_io(Interest::READABLE, || receive(sock, &mut buf));
            match result {
                Ok(None) => return Ok(None),
                Ok(Some((n, fd))) => {
                    let msg = match frame::decode::<T>(&buf[..n]) {
                        Ok(Some((msg, _))) => msg,
                        Ok(None) => return Err(io::Error::other("truncated handoff packet")),
                        Err(e) => return Err(io::Error::other(e)),
                    };
                    return Ok(Some((msg, fd)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One `recvmsg`: the packet's length and any descriptor with it. Extra
/// descriptors (a confused or hostile peer) are closed.
fn receive(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let n = msg.bytes;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(raw.into_iter().map(own));
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    let first = if fds.is_empty() {
        None
    } else {
        Some(fds.swap_remove(0))
    };
    Ok(Some((n, first)))
}

/// Takes ownership of a descriptor the kernel just installed for us.
#[allow(unsafe_code)]
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: the descriptor comes from an SCM_RIGHTS message received
    // this moment; the kernel created it in our table and nothing else
    // refers to it, so it has exactly one owner: this value.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn a_descriptor_travels_with_its_message() {
        let (a, b) = pair().unwrap();
        let (a, b) = (Link::new(a).unwrap(), Link::new(b).unwrap());
        let (mut left, right) = std::os::unix::net::UnixStream::pair().unwrap();
        let h = Handoff {
            service: "SMTP".into(),
            parameter: String::new(),
            local: "127.0.0.1:25".into(),
            peer: "127.0.0.2:4000".into(),
            tls: false,
            port_access: String::new(),
        };
        a.send(&h, Some(right.as_fd())).await.unwrap();
        drop(right);
        let (got, fd) = b.recv::<Handoff>().await.unwrap().unwrap();
        assert_eq!(got, h);
        let mut passed = std::os::unix::net::UnixStream::from(fd.unwrap());
        passed.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        left.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        let closed = WorkerReport::Closed {
            peer: h.peer.clone(),
        };
        b.send(&closed, None).await.unwrap();
        let (r, fd) = a.recv::<WorkerReport>().await.unwrap().unwrap();
        assert_eq!(r, closed);
        assert!(fd.is_none());
        drop(b);
        assert!(a.recv::<WorkerReport>().await.unwrap().is_none());
    }
}
