//! Cutting a client's input into lines. POP3 commands are single lines
//! ended by CRLF; a bare LF is accepted as an end of line too, as common
//! servers do, since no command can carry a line break.

/// What the next bytes of input hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A whole line of `len` bytes including its end (CRLF or LF).
    Complete(usize),
    /// No line end yet; read more.
    Incomplete,
    /// More than the limit without a line end: the client is refused.
    TooLong,
}

/// Finds whole lines, remembering how far it has already looked so a
/// line arriving a byte at a time is scanned once.
#[derive(Debug, Clone)]
pub struct LineFramer {
    max_line: usize,
    scanned: usize,
}

impl LineFramer {
    /// `max_line` counts the line end. RFC 2449 limits commands to 255
    /// octets; SASL responses (RFC 5034) may be longer, so the limit is
    /// the caller's.
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            max_line,
            scanned: 0,
        }
    }

    /// Looks at the unconsumed input `buf` (which starts where the last
    /// complete line ended).
    pub fn next(&mut self, buf: &[u8]) -> Line {
        let from = self.scanned.min(buf.len());
        if let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
            let len = from + i + 1;
            self.scanned = 0;
            if len > self.max_line {
                return Line::TooLong;
            }
            return Line::Complete(len);
        }
        self.scanned = buf.len();
        if buf.len() >= self.max_line {
            return Line::TooLong;
        }
        Line::Incomplete
    }
}

/// The text of a line without its CRLF or LF.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(pieces: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, bool) {
        let mut f = LineFramer::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for p in pieces {
            buf.extend_from_slice(p);
            loop {
                match f.next(&buf) {
                    Line::Complete(n) => out.push(buf.drain(..n).collect()),
                    Line::Incomplete => break,
                    Line::TooLong => return (out, true),
                }
            }
        }
        (out, false)
    }

    #[test]
    fn crlf_and_lf() {
        let (l, long) = lines(&[b"USER a\r\nPA", b"SS b\nQUIT\r"], 255);
        assert!(!long);
        assert_eq!(l, vec![b"USER a\r\n".to_vec(), b"PASS b\n".to_vec()]);
        assert_eq!(strip_line_end(b"QUIT\r\n"), b"QUIT");
    }

    #[test]
    fn too_long() {
        assert!(lines(&[&[b'a'; 300]], 255).1);
        let mut long = vec![b'a'; 300];
        long.extend_from_slice(b"\r\n");
        assert!(lines(&[&long], 255).1);
        let mut fits = vec![b'a'; 253];
        fits.extend_from_slice(b"\r\n");
        assert_eq!(lines(&[&fits], 255), (vec![fits.clone()], false));
    }

    proptest! {
        /// Every input split at every byte frames the same.
        #[test]
        fn split_anywhere(data in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'A'), any::<u8>()], 0..200)) {
            let whole = lines(&[&data], 64);
            for i in 0..=data.len() {
                prop_assert_eq!(&lines(&[&data[..i], &data[i..]], 64), &whole);
            }
        }
    }
}
