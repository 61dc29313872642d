//! The parsed structure cache: what IMAP needs of a message (ENVELOPE,
//! BODYSTRUCTURE, part offsets), computed once at append with
//! mail-parser. Pure: bytes in, structure out.

use epistle_ipc::store::{BodyPart, Envelope, EnvelopeAddress, MessageStructure};
use mail_parser::{
    Address, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

/// Largest message the structure is computed for; bigger ones get a
/// plain one-part structure (their bytes are still served whole).
pub const MAX_PARSED: usize = 256 << 20;

pub fn parse(raw: &[u8]) -> MessageStructure {
    let size = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    let parsed = (raw.len() <= MAX_PARSED)
        .then(|| MessageParser::default().parse(raw))
        .flatten();
    let mut structure = match parsed {
        Some(m) => structure_of(&m, raw, 0),
        None => opaque(size),
    };
    structure.email_id = email_id(raw);
    structure
}

/// "M" and 24 hex digits of the content's SHA-1: the same message has
/// the same EMAILID wherever it is copied or moved.
fn email_id(raw: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(raw);
    let mut id = String::with_capacity(25);
    id.push('M');
    for b in &digest[..12] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// text/plain over the whole file, for what cannot be parsed.
fn opaque(size: u32) -> MessageStructure {
    MessageStructure {
        size,
        header_size: 0,
        envelope: Envelope::default(),
        body: BodyPart {
            media_type: "text".into(),
            media_subtype: "plain".into(),
            encoding: "7bit".into(),
            offset_end: size,
            ..Default::default()
        },
        email_id: String::new(),
    }
}

fn structure_of(m: &Message<'_>, raw: &[u8], depth: usize) -> MessageStructure {
    let root = m.parts.first();
    let (start, body_start, end) = root.map_or((0, 0, raw.len() as u32), |p| {
        (p.offset_header, p.offset_body, p.offset_end)
    });
    MessageStructure {
        size: end.saturating_sub(start),
        header_size: body_start.saturating_sub(start),
        envelope: envelope(root, raw),
        body: match root {
            Some(p) => part(m, p, raw, depth),
            None => opaque(end).body,
        },
        email_id: String::new(),
    }
}

/// A header's value as written: unfolded, trimmed.
fn raw_value(p: &MessagePart<'_>, raw: &[u8], name: HeaderName<'_>) -> Option<String> {
    let h = p.headers.iter().find(|h| h.name == name)?;
    let bytes = raw.get(h.offset_start as usize..h.offset_end as usize)?;
    let text = String::from_utf8_lossy(bytes)
        .replace("\r\n", "")
        .replace('\n', "");
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn addresses(p: &MessagePart<'_>, name: HeaderName<'_>) -> Vec<EnvelopeAddress> {
    let Some(h) = p.headers.iter().find(|h| h.name == name) else {
        return Vec::new();
    };
    let one = |a: &mail_parser::Addr<'_>, group: Option<String>| {
        let (mailbox, host) = match a.address.as_deref().and_then(|x| x.rsplit_once('@')) {
            Some((l, d)) => (Some(l.to_string()), Some(d.to_string())),
            None => (a.address.as_deref().map(str::to_string), None),
        };
        EnvelopeAddress {
            name: a.name.as_deref().map(str::to_string),
            mailbox,
            host,
            group,
        }
    };
    match &h.value {
        HeaderValue::Address(Address::List(list)) => list.iter().map(|a| one(a, None)).collect(),
        HeaderValue::Address(Address::Group(groups)) => groups
            .iter()
            .flat_map(|g| {
                let name = g.name.as_deref().unwrap_or("").to_string();
                g.addresses.iter().map(move |a| one(a, Some(name.clone())))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn envelope(p: Option<&MessagePart<'_>>, raw: &[u8]) -> Envelope {
    let Some(p) = p else {
        return Envelope::default();
    };
    let from = addresses(p, HeaderName::From);
    let sender = match addresses(p, HeaderName::Sender) {
        s if s.is_empty() => from.clone(),
        s => s,
    };
    let reply_to = match addresses(p, HeaderName::ReplyTo) {
        r if r.is_empty() => from.clone(),
        r => r,
    };
    Envelope {
        date: raw_value(p, raw, HeaderName::Date),
        subject: raw_value(p, raw, HeaderName::Subject),
        from,
        sender,
        reply_to,
        to: addresses(p, HeaderName::To),
        cc: addresses(p, HeaderName::Cc),
        bcc: addresses(p, HeaderName::Bcc),
        in_reply_to: raw_value(p, raw, HeaderName::InReplyTo),
        message_id: raw_value(p, raw, HeaderName::MessageId),
    }
}

fn part(m: &Message<'_>, p: &MessagePart<'_>, raw: &[u8], depth: usize) -> BodyPart {
    let ct = p.content_type();
    let (media_type, media_subtype) = match ct {
        Some(c) => (
            c.c_type.to_ascii_lowercase(),
            c.c_subtype.as_deref().unwrap_or("").to_ascii_lowercase(),
        ),
        None => match &p.body {
            PartType::Multipart(_) => ("multipart".into(), "mixed".into()),
            PartType::Message(_) => ("message".into(), "rfc822".into()),
            _ => ("text".into(), "plain".into()),
        },
    };
    let media_subtype = if media_subtype.is_empty() {
        "plain".to_string()
    } else {
        media_subtype
    };
    let params = ct
        .and_then(|c| c.attributes.as_ref())
        .map(|a| {
            a.iter()
                .map(|x| (x.name.to_string(), x.value.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let body_bytes = raw
        .get(p.offset_body as usize..p.offset_end as usize)
        .unwrap_or(&[]);
    let mut out = BodyPart {
        media_type,
        media_subtype,
        params,
        id: p.content_id().map(str::to_string),
        description: p.content_description().map(str::to_string),
        encoding: p
            .content_transfer_encoding()
            .map_or("7bit".to_string(), str::to_ascii_lowercase),
        offset_header: p.offset_header,
        offset_body: p.offset_body,
        offset_end: p.offset_end,
        lines: 0,
        md5: raw_value(p, raw, HeaderName::Other("Content-MD5".into())),
        disposition: p.content_disposition().map(|d| {
            let params = d
                .attributes
                .as_ref()
                .map(|a| {
                    a.iter()
                        .map(|x| (x.name.to_string(), x.value.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (d.c_type.to_ascii_lowercase(), params)
        }),
        language: p
            .content_language()
            .as_text_list()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
        location: p.content_location().map(str::to_string),
        parts: Vec::new(),
        message: None,
    };
    match &p.body {
        PartType::Multipart(children) if depth < 64 => {
            out.parts = children
                .iter()
                .filter_map(|id| m.parts.get(*id as usize))
                .map(|c| part(m, c, raw, depth + 1))
                .collect();
        }
        PartType::Message(inner) if depth < 64 => {
            out.lines = count_lines(body_bytes);
            // mail-parser gives an enclosed message's offsets in the
            // outer message's terms already.
            out.message = Some(Box::new(structure_of(inner, raw, depth + 1)));
        }
        PartType::Text(_) | PartType::Html(_) => out.lines = count_lines(body_bytes),
        _ => {}
    }
    out
}

fn count_lines(b: &[u8]) -> u32 {
    let n = b.iter().filter(|c| **c == b'\n').count();
    let extra = usize::from(!b.is_empty() && !b.ends_with(b"\n"));
    u32::try_from(n + extra).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = "From: =?utf-8?q?J=C3=B6e?= <joe@example.com>\r\nTo: ann@example.org, Team: a@x.example, b@x.example;\r\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n and more\r\nDate: Mon, 30 Nov 2026 20:28:29 +0000\r\nMessage-ID: <1@example.com>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
hello\r\nworld\r\n--b1\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n\
JVBERi0=\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n";

    #[test]
    fn envelope_and_bodystructure() {
        let s = parse(MIXED.as_bytes());
        assert_eq!(s.size as usize, MIXED.len());
        let e = &s.envelope;
        assert_eq!(
            e.subject.as_deref(),
            Some("=?utf-8?q?Gr=C3=BC=C3=9Fe?= and more")
        );
        assert_eq!(e.from[0].name.as_deref(), Some("Jöe"));
        assert_eq!(
            (e.from[0].mailbox.as_deref(), e.from[0].host.as_deref()),
            (Some("joe"), Some("example.com"))
        );
        assert_eq!(e.sender, e.from, "Sender defaults to From");
        assert_eq!(e.to.len(), 3);
        assert_eq!(e.to[1].group.as_deref(), Some("Team"));
        assert_eq!(e.message_id.as_deref(), Some("<1@example.com>"));
        let b = &s.body;
        assert_eq!(
            (b.media_type.as_str(), b.media_subtype.as_str()),
            ("multipart", "mixed")
        );
        assert_eq!(b.parts.len(), 3);
        let text = &b.parts[0];
        assert_eq!((text.media_type.as_str(), text.lines), ("text", 2));
        assert_eq!(
            &MIXED[text.offset_body as usize..text.offset_end as usize],
            "hello\r\nworld"
        );
        let pdf = &b.parts[1];
        assert_eq!(pdf.encoding, "base64");
        assert_eq!(pdf.disposition.as_ref().unwrap().0, "attachment");
        let inner = b.parts[2].message.as_ref().unwrap();
        assert_eq!(inner.envelope.subject.as_deref(), Some("inner"));
        assert_eq!(
            &MIXED[inner.body.offset_body as usize..inner.body.offset_end as usize],
            "inner body"
        );
    }

    #[test]
    fn anything_gets_a_structure() {
        let s = parse(b"no header at all");
        assert_eq!(s.size, 16);
        let _ = parse(b"");
        let _ = parse(&[0xff, 0xfe, b'\n', b'\n']);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let s = parse(&bytes);
            proptest::prop_assert!(s.body.offset_end as usize <= bytes.len().max(s.size as usize));
        }
    }
}
