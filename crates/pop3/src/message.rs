//! Multi-line answers (RFC 1939 §3): every line ends in CRLF, a line that
//! begins with "." gets another in front, and a line holding only "."
//! ends the answer. A message stored with bare LFs is sent with CRLFs,
//! and one without a final line end gets one, so the terminator always
//! stands on its own line.

/// Appends `data` as the body of a multi-line answer, terminator included.
pub fn multiline(data: &[u8], out: &mut Vec<u8>) {
    let mut d = DotStuffer::new();
    d.feed(data, out);
    d.finish(out);
}

/// Dot-stuffs a message fed in pieces (a large message is sent from its
/// file a block at a time): the output is the same however the input is
/// cut.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last piece ended in CR: its LF may start the next piece.
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }

    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        // An empty piece says nothing about a pending CR's LF.
        if data.is_empty() {
            return;
        }
        out.reserve(data.len() + data.len() / 64 + 2);
        let mut i = 0;
        if self.pending_cr {
            self.pending_cr = false;
            if data.first() == Some(&b'\n') {
                i = 1;
            }
            self.line_end(out);
        }
        while i < data.len() {
            // Copy a run of ordinary bytes at once.
            let run_end = data[i..]
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .map_or(data.len(), |p| i + p);
            if run_end > i {
                if self.at_line_start && data[i] == b'.' {
                    out.push(b'.');
                }
                out.extend_from_slice(&data[i..run_end]);
                self.at_line_start = false;
                i = run_end;
                continue;
            }
            // A line end: CRLF, a bare LF, or a bare CR (sent as CRLF, so
            // that no client sees a line end the server did not count).
            if data[i] == b'\r' {
                match data.get(i + 1) {
                    None => {
                        self.pending_cr = true;
                        return;
                    }
                    Some(b'\n') => i += 2,
                    Some(_) => i += 1,
                }
            } else {
                i += 1;
            }
            self.line_end(out);
        }
    }

    fn line_end(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.at_line_start = true;
    }

    /// Ends the answer: the last line's CRLF if it had none, then ".".
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.line_end(out);
        }
        if !self.at_line_start {
            self.line_end(out);
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// What TOP sends of a message: the header, the blank line after it and
/// the first `lines` lines of the body.
pub fn top(message: &[u8], lines: u32) -> &[u8] {
    let body = body_start(message);
    let mut end = body;
    for _ in 0..lines {
        match message[end..].iter().position(|&b| b == b'\n') {
            Some(p) => end += p + 1,
            None => return message,
        }
    }
    &message[..end]
}

/// Where the body begins: after the first empty line (CRLF CRLF or LF LF);
/// the whole message when it has no body.
fn body_start(message: &[u8]) -> usize {
    let mut i = 0;
    // An empty first line: no header at all.
    if message.starts_with(b"\r\n") {
        return 2;
    }
    if message.starts_with(b"\n") {
        return 1;
    }
    while let Some(p) = message[i..].iter().position(|&b| b == b'\n') {
        let next = i + p + 1;
        if message[next..].starts_with(b"\r\n") {
            return next + 2;
        }
        if message[next..].starts_with(b"\n") {
            return next + 1;
        }
        i = next;
    }
    message.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ml(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        multiline(data, &mut out);
        out
    }

    /// What a client does: strip the terminator, undo the stuffing.
    fn unstuff(answer: &[u8]) -> Vec<u8> {
        let body = answer.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn stuffing() {
        assert_eq!(
            ml(b"a\r\n.b\r\n..\r\n.\r\n"),
            b"a\r\n..b\r\n...\r\n..\r\n.\r\n"
        );
        assert_eq!(ml(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(ml(b"lf\n.dot\n"), b"lf\r\n..dot\r\n.\r\n");
        assert_eq!(ml(b""), b".\r\n");
        assert_eq!(ml(b"bare\rcr"), b"bare\r\ncr\r\n.\r\n");
    }

    #[test]
    fn an_empty_piece_between_cr_and_lf() {
        let mut out = Vec::new();
        let mut d = DotStuffer::new();
        for piece in [&b"a\r"[..], b"", b"\n"] {
            d.feed(piece, &mut out);
        }
        d.finish(&mut out);
        assert_eq!(out, b"a\r\n.\r\n");
    }

    #[test]
    fn top_lines() {
        let m = b"Subject: x\r\nFrom: y\r\n\r\none\r\ntwo\r\nthree";
        assert_eq!(top(m, 0), b"Subject: x\r\nFrom: y\r\n\r\n");
        assert_eq!(top(m, 2), b"Subject: x\r\nFrom: y\r\n\r\none\r\ntwo\r\n");
        assert_eq!(top(m, 3), m);
        assert_eq!(top(m, 100), m);
        assert_eq!(
            top(b"Subject: only header\r\n", 5),
            b"Subject: only header\r\n"
        );
        assert_eq!(top(b"\r\nbody\r\n", 0), b"\r\n");
        assert_eq!(top(b"A: b\n\nbody\n", 0), b"A: b\n\n");
    }

    proptest! {
        /// The client gets back the message (with CRLF line ends), and no
        /// line of the answer is a lone "." before the end.
        #[test]
        fn round_trip(data in proptest::collection::vec(
            prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'x')], 0..200)) {
            let answer = ml(&data);
            let lines: Vec<&[u8]> = answer.split_inclusive(|&b| b == b'\n').collect();
            for l in &lines[..lines.len() - 1] {
                prop_assert_ne!(*l, &b".\r\n"[..]);
                prop_assert!(l.ends_with(b"\r\n"));
            }
            let mut expect = Vec::new();
            let mut i = 0;
            while i < data.len() {
                if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
                    expect.extend_from_slice(b"\r\n");
                    i += 2;
                } else if data[i] == b'\r' || data[i] == b'\n' {
                    expect.extend_from_slice(b"\r\n");
                    i += 1;
                } else {
                    expect.push(data[i]);
                    i += 1;
                }
            }
            if !expect.is_empty() && !expect.ends_with(b"\r\n") {
                expect.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(unstuff(&answer), expect);
        }

        /// Fed in pieces, the same answer as fed whole.
        #[test]
        fn pieces(data in proptest::collection::vec(
            prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'x')], 0..100),
            cuts in proptest::collection::vec(0usize..100, 0..5)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut out = Vec::new();
            let mut d = DotStuffer::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                d.feed(&data[at..c], &mut out);
                at = c;
            }
            d.finish(&mut out);
            prop_assert_eq!(out, ml(&data));
        }

        #[test]
        fn top_is_a_prefix(data in proptest::collection::vec(any::<u8>(), 0..300), n in 0u32..10) {
            let t = top(&data, n);
            prop_assert!(data.starts_with(t));
            prop_assert!(top(&data, n + 1).len() >= t.len());
        }
    }
}
