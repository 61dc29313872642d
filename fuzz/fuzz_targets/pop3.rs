#![no_main]
//! The POP3 codec: lines frame the same however the input is split;
//! parsing a line never panics; dot-stuffing fed in two pieces gives the
//! same answer as fed whole, and TOP always returns a prefix.
use epistle_pop3::{Command, DotStuffer, Line, LineFramer};
use libfuzzer_sys::fuzz_target;

fn lines(pieces: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
    let mut f = LineFramer::new(256);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for p in pieces {
        buf.extend_from_slice(p);
        loop {
            match f.next(&buf) {
                Line::Incomplete => break,
                Line::Complete(n) => out.push(Some(buf.drain(..n).collect())),
                Line::TooLong => {
                    out.push(None);
                    return out;
                }
            }
        }
    }
    out
}

fn stuffed(pieces: &[&[u8]]) -> Vec<u8> {
    let mut d = DotStuffer::new();
    let mut out = Vec::new();
    for p in pieces {
        d.feed(p, &mut out);
    }
    d.finish(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let (a, b) = data.split_at(split);
    let whole = lines(&[data]);
    assert_eq!(whole, lines(&[a, b]));
    for line in whole.iter().flatten() {
        let _ = Command::parse(line);
    }
    assert_eq!(stuffed(&[data]), stuffed(&[a, b]));
    let n = data.len() as u32 % 7;
    assert!(data.starts_with(epistle_pop3::top(data, n)));
});
