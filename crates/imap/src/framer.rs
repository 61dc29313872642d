//! Cutting the client's byte stream into whole commands.
//!
//! A command is a line, unless the line ends in a literal announcement
//! (`{n}`, `{n+}` or, for BINARY, `~{n}`): then `n` bytes of literal data
//! follow and the command goes on with the next line. A synchronizing
//! literal (`{n}`) is sent only after the server's `+` continuation, so
//! the framer stops and reports it; a non-synchronizing one (`{n+}`,
//! LITERAL+ / LITERAL-) simply follows. Limits are checked before any
//! literal byte is read: a line longer than [`Limits::max_line`] or a
//! literal larger than [`Limits::max_literal`] is reported, never buffered.

/// What the framer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line (the text between literals), CRLF included.
    pub max_line: usize,
    /// Largest literal (APPENDLIMIT).
    pub max_literal: u64,
    /// Most literals in one command.
    pub max_literals: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line: 64 * 1024,
            max_literal: 50 * 1024 * 1024,
            max_literals: 64,
        }
    }
}

/// What the buffer holds so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole command: the first `len` bytes of the buffer.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// The client announced a synchronizing literal of `size` bytes and
    /// waits for a `+` continuation before sending it. Reported once;
    /// the next call goes on reading the literal. `line_end` is where the
    /// announcing line ends (to refuse the command instead, the caller
    /// drops that much).
    LiteralAnnounced { size: u64, line_end: usize },
    /// A line is longer than allowed: the command cannot be read. The
    /// connection should be answered BAD and closed, since where the
    /// next command starts is unknown.
    LineTooLong,
    /// A literal is larger than allowed. `line_end` is where the
    /// announcing line ends. For a synchronizing literal the client sends
    /// nothing more, so the command (the first `line_end` bytes) is
    /// answered NO/BAD and dropped and the session goes on; for a
    /// non-synchronizing one the data is on its way and the connection
    /// should be closed.
    LiteralTooLarge {
        size: u64,
        sync: bool,
        line_end: usize,
    },
    /// More literals than [`Limits::max_literals`] in one command.
    TooManyLiterals,
}

/// Scanning state for the command at the start of the buffer. After
/// `Complete(len)` (or after dropping a refused command) the caller
/// removes those bytes from its buffer and calls [`Framer::reset`].
#[derive(Debug, Clone, Default)]
pub struct Framer {
    limits: Limits,
    /// Where the current line starts.
    line_start: usize,
    /// Scanned up to here without finding the line's end.
    scanned: usize,
    /// Literal bytes still to come before the line goes on.
    literal_left: u64,
    literals: usize,
}

impl Framer {
    pub fn new(limits: Limits) -> Framer {
        Framer {
            limits,
            ..Framer::default()
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Starts on a new command at the start of the buffer.
    pub fn reset(&mut self) {
        *self = Framer::new(self.limits);
    }

    /// Looks at the buffer (which always starts with the current command)
    /// and says what it holds.
    pub fn next(&mut self, buf: &[u8]) -> Frame {
        loop {
            if self.literal_left > 0 {
                let have = (buf.len() - self.line_start) as u64;
                if have < self.literal_left {
                    return Frame::Incomplete;
                }
                self.line_start += self.literal_left as usize;
                self.scanned = self.line_start;
                self.literal_left = 0;
            }
            let Some(nl) = buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = buf.len();
                if buf.len() - self.line_start > self.limits.max_line {
                    return Frame::LineTooLong;
                }
                return Frame::Incomplete;
            };
            let end = self.scanned + nl + 1;
            if end - self.line_start > self.limits.max_line {
                return Frame::LineTooLong;
            }
            let Some((size, sync)) = literal_announcement(&buf[self.line_start..end]) else {
                return Frame::Complete(end);
            };
            self.literals += 1;
            if self.literals > self.limits.max_literals {
                return Frame::TooManyLiterals;
            }
            if size > self.limits.max_literal {
                return Frame::LiteralTooLarge {
                    size,
                    sync,
                    line_end: end,
                };
            }
            self.line_start = end;
            self.scanned = end;
            self.literal_left = size;
            if sync {
                return Frame::LiteralAnnounced {
                    size,
                    line_end: end,
                };
            }
        }
    }
}

/// The literal a line announces at its end: `{n}` (sync), `{n+}` (not),
/// with an optional `~` before the brace (literal8).
pub(crate) fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let (digits, sync) = match digits.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (digits, true),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((size, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_line: 100,
            max_literal: 1000,
            max_literals: 3,
        }
    }

    #[test]
    fn lines_and_literals() {
        let mut f = Framer::new(limits());
        assert_eq!(f.next(b"a NOOP"), Frame::Incomplete);
        assert_eq!(f.next(b"a NOOP\r\nb"), Frame::Complete(8));
        f.reset();
        let cmd = b"a LOGIN {3}\r\njoe {6+}\r\nsecret\r\n";
        assert_eq!(
            f.next(&cmd[..13]),
            Frame::LiteralAnnounced {
                size: 3,
                line_end: 13
            }
        );
        assert_eq!(f.next(&cmd[..14]), Frame::Incomplete);
        assert_eq!(f.next(cmd), Frame::Complete(cmd.len()));
        f.reset();
        assert_eq!(f.next(b"a APPEND x ~{0+}\r\n\r\n"), Frame::Complete(20));
    }

    #[test]
    fn limits_are_checked_before_reading() {
        let mut f = Framer::new(limits());
        assert_eq!(
            f.next(b"a APPEND x {5000}\r\n"),
            Frame::LiteralTooLarge {
                size: 5000,
                sync: true,
                line_end: 19
            }
        );
        f.reset();
        assert_eq!(f.next(&[b'x'; 101]), Frame::LineTooLong);
        f.reset();
        assert_eq!(
            f.next(b"a X {1+}\r\n1 {1+}\r\n2 {1+}\r\n3 {1+}\r\n4\r\n"),
            Frame::TooManyLiterals
        );
        f.reset();
        assert_eq!(
            f.next(b"a X {99999999999999999999}\r\n"),
            Frame::Complete(28)
        );
    }

    proptest::proptest! {
        /// However the input is split, the framer finds the same command.
        #[test]
        fn any_split_frames_the_same(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"a "[..], b"{3}\r\nabc", b"{2+}\r\nxy", b" ", b"\r\n", b"~{1}\r\nz",
                    b"\"q\"", b"{", b"}", b"\n",
                ]),
                0..20,
            ),
            cut in 0usize..200,
        ) {
            let input: Vec<u8> = parts.concat();
            let whole = run(&[&input]);
            let cut = cut.min(input.len());
            proptest::prop_assert_eq!(whole, run(&[&input[..cut], &input[cut..]]));
        }
    }

    /// Frames fed in pieces; every announced literal is acknowledged.
    fn run(pieces: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(limits());
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for p in pieces {
            buf.extend_from_slice(p);
            loop {
                match f.next(&buf) {
                    Frame::Incomplete => break,
                    Frame::LiteralAnnounced { .. } => continue,
                    Frame::Complete(n) => {
                        out.push(Frame::Complete(n));
                        buf.drain(..n);
                        f.reset();
                    }
                    other => {
                        out.push(other);
                        return out;
                    }
                }
            }
        }
        out
    }
}
