//! The addresses in a message's address fields (RFC 5322 §3.6.2, §3.6.3,
//! §3.6.6: From:, Sender:, Reply-To:, To:, Cc:, Bcc:, their Resent-
//! forms, and the older Errors-To:, Return-Receipt-To: and
//! Disposition-Notification-To:), found where they stand and rewritten
//! there: a short-form address completed with a domain (the source
//! channel's `remotehost` / `defaulthost`), an address reversed to its
//! owner's own (REVERSE). Everything else in a field (display names,
//! comments, groups, folding) is kept byte for byte. With the `inner`
//! keyword, the headers of enclosed messages (message/rfc822 parts) are
//! treated the same. Pure.

use std::ops::Range;

use crate::header::{content_type, field_name, field_value, fields, split};

/// The fields whose values are address lists (lower case).
pub const ADDRESS_FIELDS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "errors-to",
    "return-receipt-to",
    "disposition-notification-to",
];

/// The address fields that point back to the sender (replies, notices
/// go there); the others name recipients.
pub const BACKWARD_FIELDS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
    "errors-to",
    "return-receipt-to",
    "disposition-notification-to",
];

/// Most addresses looked at in one message: a header of a million tiny
/// addresses is not walked to its end.
const MAX_ADDRESSES: usize = 10_000;
/// Enclosed messages and multiparts nested deeper than this are not
/// looked into.
const MAX_DEPTH: usize = 8;
/// An address longer than a line may be is left as it is.
const MAX_ADDRESS: usize = 998;
/// Only this much of a header section is looked at, and only this many
/// pieces of one field: what an oversized header costs is bounded.
const MAX_HEADER: usize = 1 << 20;
const MAX_TOKENS: usize = 50_000;

/// The message with each address of its address fields passed through
/// `rewrite` (given the field's name in lower case and the address; it
/// answers `None` to leave one as it is), and with `inner` those of
/// enclosed messages too; `None` when nothing changed, the usual case, so
/// nothing is copied.
pub fn rewrite_addresses(
    message: &[u8],
    inner: bool,
    rewrite: &mut dyn FnMut(&str, &str) -> Option<String>,
) -> Option<Vec<u8>> {
    let mut headers: Vec<Range<usize>> = Vec::new();
    headers.push(0..header_end(message, 0..message.len()));
    if inner {
        enclosed_headers(message, 0..message.len(), 0, &mut headers);
    }
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut budget = MAX_ADDRESSES;
    for header in headers {
        for (field, at, address) in addresses(message, header) {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let Some(new) = rewrite(field, &address) else {
                continue;
            };
            let fits = new.len() <= MAX_ADDRESS && !new.chars().any(|c| c.is_control());
            if fits && new != address {
                edits.push((at, new));
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(at, _)| at.start);
    let mut out = Vec::with_capacity(message.len() + 64 * edits.len());
    let mut copied = 0;
    for (at, new) in edits {
        if at.start < copied {
            continue; // overlapping: cannot happen, but never corrupt
        }
        out.extend_from_slice(&message[copied..at.start]);
        out.extend_from_slice(new.as_bytes());
        copied = at.end;
    }
    out.extend_from_slice(&message[copied..]);
    Some(out)
}

/// Completes a short-form address (one without a domain) with `domain`.
pub fn qualify(address: &str, domain: &str) -> Option<String> {
    (!address.is_empty() && !address.contains('@') && !domain.is_empty())
        .then(|| format!("{address}@{domain}"))
}

/// Where the header section of the entity in `range` ends (at most
/// [`MAX_HEADER`] on).
fn header_end(message: &[u8], range: Range<usize>) -> usize {
    let entity = &message[range.clone()];
    range.start + split(entity).0.len().min(MAX_HEADER)
}

/// The addresses of the address fields in `header` (a range of
/// `message`), each with where it stands in `message`.
fn addresses(message: &[u8], header: Range<usize>) -> Vec<(&'static str, Range<usize>, String)> {
    let section = &message[header.clone()];
    let mut out = Vec::new();
    for field in fields(section) {
        let name = field_name(field);
        let Some(name) = ADDRESS_FIELDS.iter().copied().find(|f| *f == name) else {
            continue;
        };
        let start = header.start + (field.as_ptr() as usize - section.as_ptr() as usize);
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = &field[colon + 1..];
        let value_start = start + colon + 1;
        for span in address_spans(value) {
            let Ok(text) = std::str::from_utf8(&value[span.clone()]) else {
                continue;
            };
            if text.len() > MAX_ADDRESS {
                continue;
            }
            let at = value_start + span.start..value_start + span.end;
            out.push((name, at, text.to_string()));
        }
    }
    out
}

/// A piece of an address field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A run of atom characters, dots and `@` (`joe@example.com`).
    Word(Range<usize>),
    /// `"…"`, quotes included.
    Quoted(Range<usize>),
    /// What is between `<` and `>`.
    Angle(Range<usize>),
    Comma,
    Colon,
    Semicolon,
    /// A comment or white space: what makes two words not one address.
    Gap,
}

fn tokens(v: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() && out.len() < MAX_TOKENS {
        match v[i] {
            b' ' | b'\t' | b'\r' | b'\n' => {
                if out.last() != Some(&Token::Gap) {
                    out.push(Token::Gap);
                }
                i += 1;
            }
            b'(' => {
                let mut depth = 0usize;
                while i < v.len() {
                    match v[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if out.last() != Some(&Token::Gap) {
                    out.push(Token::Gap);
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < v.len() && v[i] != b'"' {
                    if v[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(v.len());
                out.push(Token::Quoted(start..i));
            }
            b'<' => {
                let start = i + 1;
                let end = v[start..]
                    .iter()
                    .position(|&b| b == b'>')
                    .map_or(v.len(), |p| start + p);
                out.push(Token::Angle(start..end));
                i = (end + 1).min(v.len());
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            b':' => {
                out.push(Token::Colon);
                i += 1;
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            b')' | b'>' => i += 1, // stray: ignored
            _ => {
                let start = i;
                while i < v.len()
                    && !matches!(
                        v[i],
                        b' ' | b'\t'
                            | b'\r'
                            | b'\n'
                            | b'('
                            | b')'
                            | b'"'
                            | b'<'
                            | b'>'
                            | b','
                            | b':'
                            | b';'
                    )
                {
                    i += 1;
                }
                out.push(Token::Word(start..i));
            }
        }
    }
    out
}

/// Where the addresses of an address list stand in `v`: the inside of
/// each `<…>` (not an empty one or a source route), or a mailbox written
/// bare as one unbroken run (`joe@example.com`, `"j s"@example.com`, a
/// short-form `joe`). A display name without an address, or words apart,
/// is nothing to rewrite.
fn address_spans(v: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut mailbox: Vec<Token> = Vec::new();
    let finish = |mailbox: &mut Vec<Token>, out: &mut Vec<Range<usize>>| {
        if let Some(inner) = mailbox.iter().find_map(|t| match t {
            Token::Angle(r) => Some(r.clone()),
            _ => None,
        }) {
            let text = &v[inner.clone()];
            let lead = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let trail = text
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            let span = inner.start + lead..inner.end.saturating_sub(trail).max(inner.start + lead);
            if !span.is_empty() && v[span.start] != b'@' {
                out.push(span);
            }
        } else {
            // Trim gaps at both ends; what is left must be one run.
            let parts: Vec<&Token> = {
                let first = mailbox.iter().position(|t| *t != Token::Gap);
                let last = mailbox.iter().rposition(|t| *t != Token::Gap);
                match (first, last) {
                    (Some(a), Some(b)) => mailbox[a..=b].iter().collect(),
                    _ => Vec::new(),
                }
            };
            let ranges: Option<Vec<Range<usize>>> = parts
                .iter()
                .map(|t| match t {
                    Token::Word(r) | Token::Quoted(r) => Some(r.clone()),
                    _ => None,
                })
                .collect();
            if let Some(ranges) = ranges.filter(|r| !r.is_empty()) {
                let joined = ranges.windows(2).all(|w| w[0].end == w[1].start);
                if joined {
                    out.push(ranges[0].start..ranges[ranges.len() - 1].end);
                }
            }
        }
        mailbox.clear();
    };
    for t in tokens(v) {
        match t {
            Token::Comma | Token::Semicolon => finish(&mut mailbox, &mut out),
            // A group's name: not an address.
            Token::Colon => mailbox.clear(),
            t => mailbox.push(t),
        }
    }
    finish(&mut mailbox, &mut out);
    out
}

/// The headers of the messages enclosed in the entity at `range`: the
/// body of a message/rfc822 (or message/global) entity, and of such
/// parts of multiparts, at any depth up to [`MAX_DEPTH`]. An enclosed
/// message sent base64 or quoted-printable is not text to rewrite.
fn enclosed_headers(
    message: &[u8],
    range: Range<usize>,
    depth: usize,
    out: &mut Vec<Range<usize>>,
) {
    if depth >= MAX_DEPTH {
        return;
    }
    let entity = &message[range.clone()];
    let (header, _) = split(entity);
    let body_start = {
        let rest = &entity[header.len()..];
        let blank = if rest.starts_with(b"\r\n") {
            2
        } else {
            usize::from(rest.starts_with(b"\n"))
        };
        range.start + header.len() + blank
    };
    let kind = field_value(header, "Content-Type").map(|v| content_type(&v));
    let encoded = field_value(header, "Content-Transfer-Encoding").is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "base64" | "quoted-printable"
        )
    });
    let Some((kind, params)) = kind else { return };
    if (kind == "message/rfc822" || kind == "message/global") && !encoded {
        let inner = body_start..range.end;
        out.push(inner.start..header_end(message, inner.clone()));
        enclosed_headers(message, inner, depth + 1, out);
    } else if kind.starts_with("multipart/") {
        let Some(boundary) = params.iter().find(|(k, _)| k == "boundary").map(|(_, b)| b) else {
            return;
        };
        for part in parts(message, body_start..range.end, boundary.as_bytes()) {
            enclosed_headers(message, part, depth + 1, out);
        }
    }
}

/// The parts of a multipart body at `range`, between its `--boundary`
/// lines (RFC 2046 §5.1.1); the line break before a delimiter belongs to
/// it.
fn parts(message: &[u8], range: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    if boundary.is_empty() {
        return out;
    }
    let mut open: Option<usize> = None;
    let mut at = range.start;
    for line in message[range.clone()].split_inclusive(|&b| b == b'\n') {
        let start = at;
        at += line.len();
        let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        else {
            continue;
        };
        let closing = rest.starts_with(b"--");
        let rest = if closing { &rest[2..] } else { rest };
        if !rest.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if let Some(begin) = open.take() {
            let mut end = start;
            if message[..end].ends_with(b"\r\n") {
                end -= 2;
            } else if message[..end].ends_with(b"\n") {
                end -= 1;
            }
            out.push(begin..end.max(begin));
        }
        if closing {
            break;
        }
        open = Some(at);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(v: &str) -> Vec<&str> {
        address_spans(v.as_bytes())
            .into_iter()
            .map(|r| &v[r])
            .collect()
    }

    #[test]
    fn finds_the_addresses_of_a_list_and_nothing_else() {
        assert_eq!(spans(" joe"), ["joe"]);
        assert_eq!(
            spans(" Joe Bloggs <joe> (work), ann@example.org"),
            ["joe", "ann@example.org"]
        );
        assert_eq!(spans(" \"Bloggs, Joe\" <joe@x.example>"), ["joe@x.example"]);
        assert_eq!(spans(" \"j s\"@example.com"), ["\"j s\"@example.com"]);
        assert_eq!(spans(" joe (Joe Bloggs)"), ["joe"]);
        assert_eq!(spans(" team: ann, bob;, eve"), ["ann", "bob", "eve"]);
        assert_eq!(spans(" undisclosed-recipients:;"), Vec::<&str>::new());
        assert_eq!(spans(" <>"), Vec::<&str>::new());
        assert_eq!(spans(" <@relay.example:joe@x.example>"), Vec::<&str>::new());
        assert_eq!(spans(" Joe Bloggs"), Vec::<&str>::new(), "words apart");
        assert_eq!(spans(" < joe >"), ["joe"]);
        assert_eq!(spans("\r\n\tjoe,\r\n ann"), ["joe", "ann"]);
        assert_eq!(spans(" (a (nested) comment) joe"), ["joe"]);
        assert_eq!(spans(" <joe"), ["joe"], "unclosed angle");
        assert_eq!(spans(" \"unclosed"), ["\"unclosed"]);
    }

    #[test]
    fn short_forms_are_completed_in_place_and_the_rest_kept() {
        let m = b"From: Joe Bloggs <joe>\r\nTo: ann@example.org,\r\n bob (Bob)\r\nSubject: joe\r\nX-To: eve\r\n\r\nTo: body\r\n";
        let out = rewrite_addresses(m, false, &mut |_, a| qualify(a, "example.com")).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: Joe Bloggs <joe@example.com>\r\nTo: ann@example.org,\r\n bob@example.com (Bob)\r\nSubject: joe\r\nX-To: eve\r\n\r\nTo: body\r\n"
        );
        let whole = b"From: joe@example.com\r\n\r\n";
        assert_eq!(
            rewrite_addresses(whole, false, &mut |_, a| qualify(a, "x")),
            None
        );
    }

    #[test]
    fn an_enormous_header_is_looked_at_only_in_part() {
        let m = format!("To: {}\r\n\r\nbody\r\n", "a,".repeat(1_500_000));
        let out = rewrite_addresses(m.as_bytes(), true, &mut |_, a| qualify(a, "x")).unwrap();
        let done = out.windows(3).filter(|w| w == b"a@x").count();
        assert!(done > 0 && done <= MAX_ADDRESSES, "{done}");
        assert_eq!(out.len(), m.len() + 2 * done);
    }

    #[test]
    fn an_answer_with_a_line_break_is_not_written() {
        let m = b"To: joe\r\n\r\n";
        let out = rewrite_addresses(m, false, &mut |_, _| Some("x\r\nBcc: evil@x".into()));
        assert_eq!(out, None);
    }

    #[test]
    fn inner_reaches_enclosed_messages_at_any_depth_but_not_encoded_ones() {
        let m = concat!(
            "From: joe\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n",
            "preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nTo: not a header\r\n",
            "--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: ann\r\n",
            "Content-Type: message/rfc822\r\n\r\nFrom: bob\r\n\r\ndeep\r\n",
            "--b1\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nFrom: eve\r\n",
            "--b1--\r\nFrom: epilogue\r\n"
        );
        let q = |a: &str| qualify(a, "d.example");
        let outer =
            String::from_utf8(rewrite_addresses(m.as_bytes(), false, &mut |_, a| q(a)).unwrap())
                .unwrap();
        assert!(
            outer.contains("From: joe@d.example") && outer.contains("From: ann\r\n"),
            "{outer}"
        );
        let all =
            String::from_utf8(rewrite_addresses(m.as_bytes(), true, &mut |_, a| q(a)).unwrap())
                .unwrap();
        for want in [
            "From: joe@d.example",
            "From: ann@d.example",
            "From: bob@d.example",
            "From: eve\r\n",
            "To: not a header",
            "From: epilogue",
        ] {
            assert!(all.contains(want), "{want}: {all}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_header_is_walked_without_panic_and_only_addresses_change(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
        ) {
            // `!` marks what a rewrite adds, so it is kept out of the input.
            let mut m = b"To: ".to_vec();
            m.extend(text.iter().map(|&b| if b == b'!' { b'?' } else { b }));
            proptest::prop_assert!(rewrite_addresses(&m, true, &mut |_, _| None).is_none());
            if let Some(out) = rewrite_addresses(&m, true, &mut |_, a| Some(format!("{a}!"))) {
                let unmarked: Vec<u8> = out.iter().copied().filter(|&b| b != b'!').collect();
                proptest::prop_assert_eq!(unmarked, m);
            }
        }
    }
}
