//! COMPRESS=DEFLATE (RFC 4978): after the command's OK both directions
//! are raw deflate. Reads inflate what the client sends; writes deflate
//! and, at every flush, end with a sync flush so the client can decode
//! each answer as it arrives.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use epistle_daemon::Io;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Compressed bytes read from the client at a time.
const CHUNK: usize = 4096;

pub struct Deflate {
    inner: Box<dyn Io>,
    inflate: Decompress,
    deflate: Compress,
    /// Compressed input not yet inflated.
    input: Vec<u8>,
    at: usize,
    /// Compressed output not yet written.
    output: Vec<u8>,
    /// Bytes taken by `poll_write` since the last sync flush.
    pending: bool,
}

impl Deflate {
    /// `already`: compressed bytes the client sent right after the
    /// command, read before the switch.
    pub fn new(inner: Box<dyn Io>, already: Vec<u8>) -> Deflate {
        Deflate {
            inner,
            inflate: Decompress::new(false),
            deflate: Compress::new(Compression::fast(), false),
            input: already,
            at: 0,
            output: Vec::new(),
            pending: false,
        }
    }

    /// Writes out what is compressed and waiting.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.output.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.output))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.output.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    fn compress(&mut self, data: &[u8], flush: FlushCompress) -> io::Result<()> {
        let mut consumed = 0;
        loop {
            self.output.reserve(data.len() - consumed + 64);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(&data[consumed..], &mut self.output, flush)
                .map_err(io::Error::other)?;
            consumed += (self.deflate.total_in() - before_in) as usize;
            // Done when all input is taken and, for a flush, there was
            // room to spare (so nothing more is waiting inside).
            if consumed == data.len() && self.output.capacity() > self.output.len() {
                return Ok(());
            }
        }
    }
}

impl AsyncRead for Deflate {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.at < this.input.len() {
                let out = buf.initialize_unfilled();
                let (in_before, out_before) = (this.inflate.total_in(), this.inflate.total_out());
                let status = this
                    .inflate
                    .decompress(&this.input[this.at..], out, FlushDecompress::Sync)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let consumed = (this.inflate.total_in() - in_before) as usize;
                this.at += consumed;
                let produced = (this.inflate.total_out() - out_before) as usize;
                if this.at == this.input.len() {
                    this.input.clear();
                    this.at = 0;
                }
                if produced > 0 {
                    buf.advance(produced);
                    return Poll::Ready(Ok(()));
                }
                if status == Status::StreamEnd {
                    return Poll::Ready(Ok(()));
                }
                // Progress without output (a block boundary): go on; no
                // progress at all: the rest needs more input.
                if consumed > 0 && this.at < this.input.len() {
                    continue;
                }
            }
            // Need more compressed input.
            let mut chunk = [0u8; CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.input.extend_from_slice(rb.filled());
        }
    }
}

impl AsyncWrite for Deflate {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Keep the backlog bounded: write out before taking more.
        if this.output.len() > 64 * 1024 {
            ready!(this.poll_drain(cx))?;
        }
        this.compress(data, FlushCompress::None)?;
        this.pending = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending {
            this.compress(&[], FlushCompress::Sync)?;
            this.pending = false;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
