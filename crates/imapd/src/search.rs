//! SEARCH evaluation over the selected mailbox: flags, numbers, sizes and
//! dates from the index; header and body text from the message files
//! (case-insensitive substring, as RFC 9051 asks), read only when a key
//! needs them.

use epistle_imap::response::date_start;
use epistle_imap::search::{Date, SearchKey};
use epistle_imap::sequence::SequenceSet;

use crate::flag_lists::has_flag;
use crate::selected::Msg;

/// What one message offers a search.
pub struct Candidate<'a> {
    pub seq: u32,
    pub msg: &'a Msg,
    pub flags: &'a [String],
    /// The whole message, when a key needs it.
    pub raw: Option<&'a [u8]>,
    /// Its Date: header, seconds since the epoch.
    pub sent: Option<i64>,
    /// Its RFC 8474 EMAILID.
    pub email_id: Option<&'a str>,
}

/// The mailbox's extent, for `*` and `$`.
pub struct Extent<'a> {
    pub largest_seq: u32,
    pub largest_uid: u32,
    /// The saved result (UIDs) for `$`.
    pub saved: &'a [u32],
}

/// Whether answering `key` needs the message files.
pub fn needs_content(key: &SearchKey) -> bool {
    match key {
        SearchKey::Header(..)
        | SearchKey::Body(_)
        | SearchKey::Text(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::EmailId(_) => true,
        SearchKey::Not(k) => needs_content(k),
        SearchKey::Or(a, b) => needs_content(a) || needs_content(b),
        SearchKey::And(all) => all.iter().any(needs_content),
        _ => false,
    }
}

/// Whether the key uses MODSEQ (the answer then names the highest).
pub fn uses_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::And(all) => all.iter().any(uses_modseq),
        _ => false,
    }
}

fn in_set(
    set: &SequenceSet,
    n: u32,
    largest: u32,
    saved: &[u32],
    by_uid_saved: Option<u32>,
) -> bool {
    match set {
        SequenceSet::Saved => by_uid_saved.is_some_and(|uid| saved.contains(&uid)),
        s => largest > 0 && s.contains(n, largest),
    }
}

fn day(t: i64) -> i64 {
    t.div_euclid(86_400)
}

fn day_of(d: &Date) -> i64 {
    date_start(d.0, d.1, d.2).div_euclid(86_400)
}

pub fn matches(key: &SearchKey, c: &Candidate<'_>, x: &Extent<'_>) -> bool {
    let m = c.msg;
    match key {
        SearchKey::All => true,
        SearchKey::Sequence(s) => in_set(s, c.seq, x.largest_seq, x.saved, Some(m.uid)),
        SearchKey::Uid(s) => in_set(s, m.uid, x.largest_uid, x.saved, Some(m.uid)),
        SearchKey::Flag(f) => has_flag(c.flags, f),
        SearchKey::NotFlag(f) => !has_flag(c.flags, f),
        // No session sees a message as recent (RFC 9051 dropped \Recent).
        SearchKey::New | SearchKey::Recent => false,
        SearchKey::Old => true,
        SearchKey::Larger(n) => m.size > *n,
        SearchKey::Smaller(n) => m.size < *n,
        SearchKey::ModSeq(n) => m.modseq >= *n,
        SearchKey::Before(d) => day(m.internal_date) < day_of(d),
        SearchKey::On(d) => day(m.internal_date) == day_of(d),
        SearchKey::Since(d) => day(m.internal_date) >= day_of(d),
        SearchKey::SentBefore(d) => c.sent.is_some_and(|t| day(t) < day_of(d)),
        SearchKey::SentOn(d) => c.sent.is_some_and(|t| day(t) == day_of(d)),
        SearchKey::SentSince(d) => c.sent.is_some_and(|t| day(t) >= day_of(d)),
        SearchKey::Header(field, text) => {
            c.raw.is_some_and(|raw| header_contains(raw, field, text))
        }
        SearchKey::Body(text) => c.raw.is_some_and(|raw| contains(body_of(raw), text)),
        SearchKey::Text(text) => c.raw.is_some_and(|raw| contains(raw, text)),
        SearchKey::EmailId(id) => c.email_id == Some(id.as_str()),
        SearchKey::ThreadId(_) => false,
        SearchKey::Not(k) => !matches(k, c, x),
        SearchKey::Or(a, b) => matches(a, c, x) || matches(b, c, x),
        SearchKey::And(all) => all.iter().all(|k| matches(k, c, x)),
    }
}

fn header_of(raw: &[u8]) -> &[u8] {
    match find(raw, b"\r\n\r\n") {
        Some(i) => &raw[..i + 2],
        None => raw,
    }
}

fn body_of(raw: &[u8]) -> &[u8] {
    match find(raw, b"\r\n\r\n") {
        Some(i) => &raw[i + 4..],
        None => &[],
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Case-insensitive (ASCII and, for UTF-8 text, simple lower-casing)
/// substring test. An empty text matches everything.
fn contains(hay: &[u8], text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let hay = String::from_utf8_lossy(hay).to_lowercase();
    hay.contains(&text.to_lowercase())
}

/// Whether a field's (unfolded) value contains `text`; with empty text,
/// whether the field is there at all.
fn header_contains(raw: &[u8], field: &str, text: &str) -> bool {
    let header = header_of(raw);
    let mut value: Option<Vec<u8>> = None;
    let mut found = false;
    let check = |v: &Option<Vec<u8>>| v.as_ref().is_some_and(|v| contains(v, text));
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if let Some(v) = value.as_mut() {
                v.extend_from_slice(line.trim_ascii_end());
            }
            continue;
        }
        found |= check(&value);
        value = None;
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]);
            if name.trim().eq_ignore_ascii_case(field) {
                value = Some(line[colon + 1..].trim_ascii().to_vec());
            }
        }
    }
    found || check(&value)
}

/// A Date: header's time, when it parses.
pub fn sent_date(date: Option<&str>) -> Option<i64> {
    let d = date?.trim();
    chrono::DateTime::parse_from_rfc2822(d)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_search() {
        let raw = b"From: Ann <ann@example.com>\r\nSubject: Hello\r\n World\r\n\r\nBody text\r\n";
        assert!(header_contains(raw, "subject", "hello world"));
        assert!(header_contains(raw, "FROM", "ANN@"));
        assert!(!header_contains(raw, "To", "ann"));
        assert!(header_contains(raw, "From", ""));
        assert!(contains(body_of(raw), "TEXT"));
        assert!(!contains(body_of(raw), "Hello"));
        assert_eq!(
            sent_date(Some("Tue, 1 Dec 2026 03:00:00 +0000")),
            Some(1_796_094_000)
        );
    }
}
