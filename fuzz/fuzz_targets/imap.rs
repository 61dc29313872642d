#![no_main]
//! The IMAP codec: framing gives the same commands however the input is
//! split; parsing a framed command never panics; modified UTF-7 decoding
//! never panics and what it accepts encodes back the same.
use epistle_imap::{Command, Frame, Framer, Limits};
use libfuzzer_sys::fuzz_target;

fn frames(pieces: &[&[u8]]) -> Vec<Result<Vec<u8>, Frame>> {
    let limits = Limits {
        max_line: 1024,
        max_literal: 4096,
        max_literals: 8,
    };
    let mut f = Framer::new(limits);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for p in pieces {
        buf.extend_from_slice(p);
        loop {
            match f.next(&buf) {
                Frame::Incomplete => break,
                Frame::LiteralAnnounced { .. } => {}
                Frame::Complete(n) => {
                    out.push(Ok(buf[..n].to_vec()));
                    buf.drain(..n);
                    f.reset();
                }
                other => {
                    out.push(Err(other));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = frames(&[data]);
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    assert_eq!(whole, frames(&[&data[..split], &data[split..]]));
    for cmd in whole.iter().flatten() {
        let _ = Command::parse(cmd);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(name) = epistle_imap::utf7::decode(s) {
            assert_eq!(epistle_imap::utf7::encode(&name), s);
        }
    }
});
