//! Length-prefixed JSON frames.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{self, Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted: control messages are small; anything bigger is a
/// confused or hostile peer.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(
        &u32::try_from(body.len())
            .expect("bounded above")
            .to_be_bytes(),
    );
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body length a frame header announces, refused past the limit before
/// anything is allocated.
fn body_len(head: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME {
        Err(FrameError::TooLarge(len))
    } else {
        Ok(len)
    }
}

/// A peer that hangs up between frames has closed, not failed.
fn closed_on_eof(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Closed
    } else {
        FrameError::Io(e)
    }
}

/// Decodes the first frame in `buf`: `Ok(None)` when more bytes are needed,
/// else the message and how many bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = body_len(head.try_into().expect("4 bytes"))?;
    match buf.get(4..4 + len) {
        None => Ok(None),
        Some(body) => Ok(Some((serde_json::from_slice(body)?, 4 + len))),
    }
}

pub fn write_blocking<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

pub fn read_blocking<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).map_err(closed_on_eof)?;
    let mut body = vec![0u8; body_len(head)?];
    r.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

pub async fn write<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &T,
) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?).await?;
    w.flush().await?;
    Ok(())
}

pub async fn read<T: DeserializeOwned>(r: &mut (impl AsyncRead + Unpin)) -> Result<T, FrameError> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await.map_err(closed_on_eof)?;
    let mut body = vec![0u8; body_len(head)?];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Reads frames so that waiting for one can be cancelled: bytes go into
/// the reader's buffer as they arrive, so a `select!` that drops
/// [`FrameReader::next`] halfway through a frame loses nothing (a bare
/// [`read`] there would drop the part already read and lose its place in
/// the stream).
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next frame. Cancel-safe.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        loop {
            if let Some((msg, used)) = decode::<T>(&self.buf)? {
                self.buf.drain(..used);
                // Between frames nothing is held: thousands of idle
                // connections each keeping a read buffer add up.
                if self.buf.is_empty() {
                    self.buf = Vec::new();
                }
                return Ok(msg);
            }
            // Room for the rest of this frame (its length is checked
            // against the limit by `decode` above), or for a header.
            let missing = match self.buf.get(..4) {
                Some(head) => 4 + body_len(head.try_into().expect("4 bytes"))? - self.buf.len(),
                None => 4 - self.buf.len(),
            };
            self.buf.reserve(missing.min(64 * 1024));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(if self.buf.is_empty() {
                    FrameError::Closed
                } else {
                    FrameError::Io(io::ErrorKind::UnexpectedEof.into())
                });
            }
        }
    }
}

/// The sending side of a Unix stream that many tasks send frames on (the
/// store protocol's shared connections). A frame is queued whole and
/// written at once as far as the socket takes it; a flusher task writes
/// the rest when the socket has room. No sender waits, and none can be
/// cancelled halfway through a frame.
pub struct FrameSender {
    half: tokio::net::unix::OwnedWriteHalf,
    state: std::sync::Mutex<SendState>,
    room: tokio::sync::Notify,
}

#[derive(Default)]
struct SendState {
    /// Bytes the socket has not taken yet.
    pending: Vec<u8>,
    /// Closed, or the peer is gone: nothing more is sent.
    closed: bool,
}

/// The connection a frame was to go on is closed.
#[derive(Debug, thiserror::Error)]
#[error("the connection is closed")]
pub struct SendClosed;

impl FrameSender {
    /// Takes over `half`; its flusher runs until the sender is closed or
    /// the socket fails.
    pub fn new(half: tokio::net::unix::OwnedWriteHalf) -> std::sync::Arc<FrameSender> {
        let sender = std::sync::Arc::new(FrameSender {
            half,
            state: std::sync::Mutex::new(SendState::default()),
            room: tokio::sync::Notify::new(),
        });
        tokio::spawn(sender.clone().flush());
        sender
    }

    /// Queues a frame (from [`encode`]).
    pub fn send(&self, frame: &[u8]) -> Result<(), SendClosed> {
        self.send_within(frame, usize::MAX).map(|_| ())
    }

    /// Queues a frame unless `limit` bytes already wait for the peer (one
    /// that reads too slowly): `Ok(false)` when it was dropped.
    pub fn send_within(&self, frame: &[u8], limit: usize) -> Result<bool, SendClosed> {
        let mut st = self.lock();
        if st.closed {
            return Err(SendClosed);
        }
        if !st.pending.is_empty() {
            if st.pending.len() > limit {
                return Ok(false);
            }
            st.pending.extend_from_slice(frame);
            return Ok(true);
        }
        let written = match self.half.try_write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                st.closed = true;
                return Err(SendClosed);
            }
        };
        if written < frame.len() {
            st.pending.extend_from_slice(&frame[written..]);
            self.room.notify_one();
        }
        Ok(true)
    }

    /// Stops sending and shuts the stream for writing (the peer sees the
    /// end); what was not written yet is dropped.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.pending = Vec::new();
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(self.half.as_ref()),
            nix::sys::socket::Shutdown::Write,
        );
        self.room.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SendState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what waits whenever the socket has room.
    async fn flush(self: std::sync::Arc<Self>) {
        loop {
            self.room.notified().await;
            loop {
                {
                    let st = self.lock();
                    if st.closed {
                        return;
                    }
                    if st.pending.is_empty() {
                        break;
                    }
                }
                if self.half.writable().await.is_err() {
                    self.lock().closed = true;
                    return;
                }
                let mut st = self.lock();
                if st.closed {
                    return;
                }
                match self.half.try_write(&st.pending) {
                    Ok(n) => {
                        st.pending.drain(..n);
                        if st.pending.is_empty() && st.pending.capacity() > 64 * 1024 {
                            st.pending = Vec::new();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        st.closed = true;
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_anywhere_needs_more() {
        let f = encode(&vec!["start", "imap"]).unwrap();
        for cut in 0..f.len() {
            assert!(decode::<Vec<String>>(&f[..cut]).unwrap().is_none());
        }
        let (v, used) = decode::<Vec<String>>(&f).unwrap().unwrap();
        assert_eq!(
            (v, used),
            (vec!["start".to_string(), "imap".to_string()], f.len())
        );
    }

    #[test]
    fn oversized_length_is_refused_without_allocating() {
        let buf = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode::<String>(&buf),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_blocking::<String>(&mut &buf[..]),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_nothing() {
        let (mut w, r) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(r);
        let big: Vec<String> = (0..50).map(|n| format!("item {n}")).collect();
        let frame = encode(&big).unwrap();
        // Half a frame, then a read that is given up.
        w.write_all(&frame[..20]).await.unwrap();
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.next::<Vec<String>>(),
        )
        .await;
        assert!(gave_up.is_err());
        let rest = frame[20..].to_vec();
        tokio::spawn(async move {
            w.write_all(&rest).await.unwrap();
            w.write_all(&encode(&"second").unwrap()).await.unwrap();
        });
        assert_eq!(reader.next::<Vec<String>>().await.unwrap(), big);
        assert_eq!(reader.next::<String>().await.unwrap(), "second");
        assert!(matches!(
            reader.next::<String>().await,
            Err(FrameError::Closed)
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode::<crate::watcher::Request>(&bytes);
        }
    }
}
