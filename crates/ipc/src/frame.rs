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

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode::<crate::watcher::Request>(&bytes);
        }
    }
}
