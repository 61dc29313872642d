//! Writing the server's side: strings as atoms, quoted strings or
//! literals as their content requires, flag lists, mailbox names (modified
//! UTF-7 unless UTF8=ACCEPT is enabled) and INTERNALDATE values. Every
//! function appends to a byte buffer; the session owns the buffer and the
//! socket.

use crate::parser::{MONTHS, days_from_civil, is_atom_char};

/// Longest string sent quoted; longer ones go as literals.
const MAX_QUOTED: usize = 1000;

/// A character a tag may hold (ASTRING-CHAR but `+`).
pub fn is_tag_char(b: u8) -> bool {
    (is_atom_char(b) || b == b']') && b != b'+'
}

/// A string: quoted when it can be (`utf8`: 8-bit text may be quoted,
/// as IMAP4rev2 and UTF8=ACCEPT allow), else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8], utf8: bool) {
    let quotable = s.len() <= MAX_QUOTED
        && s.iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && (utf8 || b < 0x80))
        && (!utf8 || std::str::from_utf8(s).is_ok());
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// `{n}CRLF` and the bytes.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// NIL or a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>, utf8: bool) {
    match s {
        Some(s) => string(out, s, utf8),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// An atom when the text is one (and not NIL), else a string.
pub fn astring(out: &mut Vec<u8>, s: &str, utf8: bool) {
    if !s.is_empty() && !s.eq_ignore_ascii_case("NIL") && s.bytes().all(is_atom_char) {
        out.extend_from_slice(s.as_bytes());
    } else {
        string(out, s.as_bytes(), utf8);
    }
}

/// A mailbox name as the client expects it.
pub fn mailbox(out: &mut Vec<u8>, name: &str, utf8: bool) {
    if utf8 {
        astring(out, name, true);
    } else {
        astring(out, &crate::utf7::encode(name), false);
    }
}

/// `(\Seen $Junk)`.
pub fn flags(out: &mut Vec<u8>, flags: &[String]) {
    out.push(b'(');
    for (i, f) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(f.as_bytes());
    }
    out.push(b')');
}

/// An INTERNALDATE: `"17-Jul-1996 02:44:25 -0700"` for seconds since the
/// epoch shown at `offset` seconds east of UTC.
pub fn date_time(t: i64, offset: i32) -> String {
    let local = t + i64::from(offset);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.unsigned_abs();
    format!(
        "\"{d:02}-{}-{y:04} {:02}:{:02}:{:02} {sign}{:02}{:02}\"",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        off / 3600,
        off % 3600 / 60
    )
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Seconds since the epoch of a civil date at midnight UTC (SEARCH dates).
pub fn date_start(y: i32, m: u32, d: u32) -> i64 {
    days_from_civil(y, m, d) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_choose_their_form() {
        let mut o = Vec::new();
        string(&mut o, b"a \"b\"", false);
        o.push(b' ');
        string(&mut o, b"two\r\nlines", false);
        o.push(b' ');
        string(&mut o, "héllo".as_bytes(), false);
        o.push(b' ');
        string(&mut o, "héllo".as_bytes(), true);
        o.push(b' ');
        astring(&mut o, "INBOX", false);
        o.push(b' ');
        astring(&mut o, "nil", false);
        o.push(b' ');
        mailbox(&mut o, "Entwürfe", false);
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "\"a \\\"b\\\"\" {10}\r\ntwo\r\nlines {6}\r\nhéllo \"héllo\" INBOX \"nil\" Entw&APw-rfe"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            date_time(837_596_665, -7 * 3600),
            "\"17-Jul-1996 02:44:25 -0700\""
        );
        assert_eq!(date_time(0, 0), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(
            date_time(951_782_400, 5400),
            "\"29-Feb-2000 01:30:00 +0130\""
        );
        for days in [-1000, 0, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y as i32, m, d), days);
        }
    }
}
