#![no_main]
//! The SMTP codec: command and reply parsing never panic; the DATA reader
//! gives the same result however the input is split; and whatever the
//! client side dot-stuffs, the server side reads back whole, with no bare
//! line break and nothing left over.
use epistle_mta::smtp::{dot_stuff, parse_reply_line, Command, DataReader};
use libfuzzer_sys::fuzz_target;

fn read(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>, bool) {
    let mut reader = DataReader::new(1 << 16);
    let mut out = Vec::new();
    let mut before = 0;
    for chunk in chunks {
        let p = reader.feed(chunk, &mut out);
        if p.done {
            return (out, Some(before + p.consumed), reader.bare_line_break);
        }
        before += chunk.len();
    }
    (out, None, reader.bare_line_break)
}

/// The message with every line break made CRLF and a final one added.
fn crlf_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' || data[i] == b'\n' {
            i += if data[i..].starts_with(b"\r\n") { 2 } else { 1 };
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = Command::parse(data);
    let _ = parse_reply_line(data);

    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    assert_eq!(read(&[data]), read(&[&data[..split], &data[split..]]));

    let wire = dot_stuff(data);
    let (back, end, bare) = read(&[&wire]);
    assert_eq!(end, Some(wire.len()));
    assert!(!bare);
    if data.len() < 1 << 15 {
        assert_eq!(back, crlf_lines(data));
    }
});
