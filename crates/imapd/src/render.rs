//! The message-derived parts of FETCH: ENVELOPE and BODYSTRUCTURE from the
//! structure stored at append time, body sections cut out of the message
//! file by that structure's offsets, and BINARY's decoded content.

use epistle_imap::command::{Section, SectionText};
use epistle_imap::response;
use epistle_ipc::store::{BodyPart, Envelope, EnvelopeAddress, MessageStructure};

fn nstr(out: &mut Vec<u8>, s: Option<&str>, utf8: bool) {
    response::nstring(out, s.map(str::as_bytes), utf8);
}

/// RFC 9051 ENVELOPE.
pub fn envelope(out: &mut Vec<u8>, e: &Envelope, utf8: bool) {
    out.push(b'(');
    nstr(out, e.date.as_deref(), utf8);
    out.push(b' ');
    nstr(out, e.subject.as_deref(), utf8);
    // Sender and Reply-To default to From.
    let from = &e.from;
    let sender = if e.sender.is_empty() { from } else { &e.sender };
    let reply_to = if e.reply_to.is_empty() {
        from
    } else {
        &e.reply_to
    };
    for list in [from, sender, reply_to, &e.to, &e.cc, &e.bcc] {
        out.push(b' ');
        addresses(out, list, utf8);
    }
    out.push(b' ');
    nstr(out, e.in_reply_to.as_deref(), utf8);
    out.push(b' ');
    nstr(out, e.message_id.as_deref(), utf8);
    out.push(b')');
}

fn addresses(out: &mut Vec<u8>, list: &[EnvelopeAddress], utf8: bool) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    let mut group: Option<&str> = None;
    for a in list {
        if a.group.as_deref() != group {
            if group.is_some() {
                out.extend_from_slice(b"(NIL NIL NIL NIL)");
            }
            if let Some(g) = a.group.as_deref() {
                out.extend_from_slice(b"(NIL NIL ");
                response::string(out, g.as_bytes(), utf8);
                out.extend_from_slice(b" NIL)");
            }
            group = a.group.as_deref();
        }
        // A group with no members is written as its markers alone.
        if a.mailbox.is_none() && a.host.is_none() && a.group.is_some() {
            continue;
        }
        out.push(b'(');
        nstr(out, a.name.as_deref(), utf8);
        out.extend_from_slice(b" NIL ");
        nstr(out, a.mailbox.as_deref(), utf8);
        out.push(b' ');
        nstr(out, a.host.as_deref(), utf8);
        out.push(b')');
    }
    if group.is_some() {
        out.extend_from_slice(b"(NIL NIL NIL NIL)");
    }
    out.push(b')');
}

fn params(out: &mut Vec<u8>, p: &[(String, String)], utf8: bool) {
    if p.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in p.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        response::string(out, k.as_bytes(), utf8);
        out.push(b' ');
        response::string(out, v.as_bytes(), utf8);
    }
    out.push(b')');
}

/// BODYSTRUCTURE (`extensible`) or BODY.
pub fn body_structure(out: &mut Vec<u8>, p: &BodyPart, extensible: bool, utf8: bool) {
    out.push(b'(');
    if p.media_type == "multipart" {
        if p.parts.is_empty() {
            // A multipart without parts is shown as an empty text part.
            out.extend_from_slice(b"\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0");
        }
        for part in &p.parts {
            body_structure(out, part, extensible, utf8);
        }
        out.push(b' ');
        response::string(out, p.media_subtype.as_bytes(), utf8);
        if extensible {
            out.push(b' ');
            params(out, &p.params, utf8);
            extension(out, p, utf8);
        }
        out.push(b')');
        return;
    }
    response::string(out, p.media_type.as_bytes(), utf8);
    out.push(b' ');
    response::string(out, p.media_subtype.as_bytes(), utf8);
    out.push(b' ');
    params(out, &p.params, utf8);
    out.push(b' ');
    nstr(out, p.id.as_deref(), utf8);
    out.push(b' ');
    nstr(out, p.description.as_deref(), utf8);
    out.push(b' ');
    response::string(out, p.encoding.as_bytes(), utf8);
    out.extend_from_slice(format!(" {}", p.offset_end.saturating_sub(p.offset_body)).as_bytes());
    if p.media_type == "message" && p.media_subtype == "rfc822" {
        if let Some(m) = &p.message {
            out.push(b' ');
            envelope(out, &m.envelope, utf8);
            out.push(b' ');
            body_structure(out, &m.body, extensible, utf8);
        } else {
            out.extend_from_slice(b" NIL (\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)");
        }
        out.extend_from_slice(format!(" {}", p.lines).as_bytes());
    } else if p.media_type == "text" {
        out.extend_from_slice(format!(" {}", p.lines).as_bytes());
    }
    if extensible {
        out.push(b' ');
        nstr(out, p.md5.as_deref(), utf8);
        extension(out, p, utf8);
    }
    out.push(b')');
}

/// Disposition, language and location.
fn extension(out: &mut Vec<u8>, p: &BodyPart, utf8: bool) {
    out.push(b' ');
    match &p.disposition {
        Some((kind, ps)) => {
            out.push(b'(');
            response::string(out, kind.as_bytes(), utf8);
            out.push(b' ');
            params(out, ps, utf8);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    if p.language.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, l) in p.language.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            response::string(out, l.as_bytes(), utf8);
        }
        out.push(b')');
    }
    out.push(b' ');
    nstr(out, p.location.as_deref(), utf8);
}

/// The part a section's numbers name (RFC 9051 §6.4.5): in a multipart
/// the n-th child; in a message/rfc822 part, the parts of the enclosed
/// message; a single-part body is its own part 1.
pub fn find_part<'a>(m: &'a MessageStructure, path: &[u32]) -> Option<&'a BodyPart> {
    let mut cur: Option<&BodyPart> = None;
    for &n in path {
        let idx = n.checked_sub(1)? as usize;
        // The body whose children this number picks.
        let body = match cur {
            None => &m.body,
            Some(c) if c.media_type == "message" && c.media_subtype == "rfc822" => {
                &c.message.as_ref()?.body
            }
            Some(c) if c.media_type == "multipart" => c,
            Some(_) => return None,
        };
        cur = Some(if body.media_type == "multipart" {
            body.parts.get(idx)?
        } else if idx == 0 {
            body
        } else {
            return None;
        });
    }
    cur
}

fn slice(raw: &[u8], from: u32, to: u32) -> &[u8] {
    let (a, b) = (from as usize, to as usize);
    raw.get(a.min(raw.len())..b.min(raw.len()).max(a.min(raw.len())))
        .unwrap_or_default()
}

/// The bytes of a body section; `None` when the section does not exist.
pub fn section(raw: &[u8], m: &MessageStructure, s: &Section) -> Option<Vec<u8>> {
    // The header and text of the message, or of an enclosed message.
    let (header, text): (&[u8], &[u8]) = if s.part.is_empty() {
        let h = (m.header_size as usize).min(raw.len());
        (&raw[..h], &raw[h..])
    } else {
        let p = find_part(m, &s.part)?;
        match &s.text {
            None => return Some(slice(raw, p.offset_body, p.offset_end).to_vec()),
            Some(SectionText::Mime) => {
                return Some(slice(raw, p.offset_header, p.offset_body).to_vec());
            }
            Some(_) => {
                let inner = p.message.as_ref()?;
                let start = p.offset_body;
                let split = start.saturating_add(inner.header_size);
                (slice(raw, start, split), slice(raw, split, p.offset_end))
            }
        }
    };
    Some(match &s.text {
        None => raw.to_vec(),
        Some(SectionText::Header) => header.to_vec(),
        Some(SectionText::Text) => text.to_vec(),
        Some(SectionText::HeaderFields { not, fields }) => header_fields(header, fields, *not),
        Some(SectionText::Mime) => return None,
    })
}

/// The header lines (with their continuations) whose field name is in
/// `fields` (or, with `not`, is not), then the blank line.
pub fn header_fields(header: &[u8], fields: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name);
            let listed = fields.iter().any(|f| f.eq_ignore_ascii_case(name.trim()));
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A part's content with its transfer encoding undone (BINARY);
/// `None` for an encoding this server cannot undo.
pub fn decoded(raw: &[u8], p: &BodyPart) -> Option<Vec<u8>> {
    let body = slice(raw, p.offset_body, p.offset_end);
    match p.encoding.to_ascii_lowercase().as_str() {
        "7bit" | "8bit" | "binary" | "" => Some(body.to_vec()),
        "base64" => Some(base64(body)),
        "quoted-printable" => Some(quoted_printable(body)),
        _ => None,
    }
}

/// PREVIEW (RFC 8970): the start of the first text part, white space
/// collapsed, at most 200 characters; HTML tags left out. `None` when the
/// message has no text part this server can read.
pub fn preview(raw: &[u8], m: &MessageStructure) -> Option<String> {
    fn first_text(p: &BodyPart) -> Option<&BodyPart> {
        if p.media_type == "multipart" {
            // In an alternative, plain text is preferred.
            if p.media_subtype == "alternative"
                && let Some(plain) = p.parts.iter().find(|c| c.media_subtype == "plain")
            {
                return Some(plain);
            }
            return p.parts.iter().find_map(first_text);
        }
        (p.media_type == "text" && (p.media_subtype == "plain" || p.media_subtype == "html"))
            .then_some(p)
    }
    let part = first_text(&m.body)?;
    let bytes = decoded(raw, part)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = if part.media_subtype == "html" {
        strip_tags(&text)
    } else {
        text.into_owned()
    };
    Some(
        text.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(200)
            .collect(),
    )
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn base64(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in data {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn quoted_printable(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'=' {
            if data[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if data[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (
                data.get(i + 1).and_then(|&c| hex(c)),
                data.get(i + 2).and_then(|&c| hex(c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_field_selection() {
        let h = b"From: a@b\r\nSubject: one\r\n two\r\nTo: c@d\r\n\r\n";
        assert_eq!(
            header_fields(h, &["subject".into()], false),
            b"Subject: one\r\n two\r\n\r\n"
        );
        assert_eq!(
            header_fields(h, &["Subject".into()], true),
            b"From: a@b\r\nTo: c@d\r\n\r\n"
        );
    }

    #[test]
    fn decodings() {
        assert_eq!(base64(b"aGVs\r\nbG8="), b"hello");
        assert_eq!(
            quoted_printable(b"caf=C3=A9 =\r\nok=3D"),
            "café ok=".as_bytes()
        );
    }
}
