//! `message/partial` (RFC 2046 §5.2.2): recognising a part, and putting
//! the whole message back together from all of them (§5.2.2.1), for
//! channels with the `defragment` keyword. Pure.

use crate::header::{content_type, field_name, fields, split};

/// Most parts one message may be split into.
pub const MAX_PARTS: u32 = 1000;

/// What a part's `Content-Type: message/partial` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub id: String,
    /// 1-based.
    pub number: u32,
    /// Given on the last part at least.
    pub total: Option<u32>,
}

/// The fields a reassembled message takes from the enclosed message
/// rather than from the first part's own header.
fn from_inner(name: &str) -> bool {
    name.starts_with("content-")
        || matches!(
            name,
            "subject" | "message-id" | "encrypted" | "mime-version"
        )
}

/// The part a message is, when its top-level type is `message/partial`
/// with a usable id and number.
pub fn part_of(message: &[u8]) -> Option<Part> {
    let value = crate::header::field_value(message, "Content-Type")?;
    let (kind, params) = content_type(&value);
    if kind != "message/partial" {
        return None;
    }
    let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let id = param("id").filter(|id| !id.is_empty() && id.len() <= 998)?;
    let number: u32 = param("number")?.parse().ok()?;
    let total: Option<u32> = match param("total") {
        Some(t) => Some(t.parse().ok()?),
        None => None,
    };
    if number == 0
        || number > MAX_PARTS
        || total.is_some_and(|t| t == 0 || t > MAX_PARTS || number > t)
    {
        return None;
    }
    Some(Part {
        id: id.to_string(),
        number,
        total,
    })
}

/// Whether `parts` (each part's number) make a whole message: a total
/// given, and every number from 1 to it present.
pub fn complete(parts: &[Part]) -> bool {
    let Some(total) = parts.iter().find_map(|p| p.total) else {
        return false;
    };
    (1..=total).all(|n| parts.iter().any(|p| p.number == n))
}

/// The whole message from its parts in order (`parts[0]` is part 1):
/// the first part's header without its Content-*, Subject, Message-ID,
/// Encrypted and MIME-Version fields, then those fields of the enclosed
/// message, then the enclosed body, which runs on through the bodies of
/// the later parts (RFC 2046 §5.2.2.1).
pub fn reassemble(parts: &[&[u8]]) -> Vec<u8> {
    let Some((first, later)) = parts.split_first() else {
        return Vec::new();
    };
    let (outer, first_body) = split(first);
    let mut enclosed: Vec<u8> = first_body.to_vec();
    for p in later {
        enclosed.extend_from_slice(split(p).1);
    }
    let (inner, inner_body) = split(&enclosed);
    let mut out = Vec::with_capacity(enclosed.len() + outer.len());
    for f in fields(outer) {
        if !from_inner(&field_name(f)) {
            out.extend_from_slice(f);
        }
    }
    for f in fields(inner) {
        if from_inner(&field_name(f)) {
            out.extend_from_slice(f);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(inner_body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PART1: &[u8] = b"Received: by relay\r\nFrom: Ann <ann@example.com>\r\nTo: joe@example.com\r\nSubject: Part 1 of 2\r\nMessage-ID: <p1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: message/partial;\r\n id=\"ABC@host.example\"; number=1; total=2\r\n\r\nMessage-ID: <whole@example.com>\r\nSubject: The report\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nX-Inner: dropped\r\n\r\nfirst half, ";
    const PART2: &[u8] = b"Received: by relay2\r\nFrom: Ann <ann@example.com>\r\nSubject: Part 2 of 2\r\nContent-Type: Message/Partial; number=2; total=2; id=\"ABC@host.example\"\r\n\r\nsecond half\r\n";

    #[test]
    fn parts_are_recognised_by_their_content_type() {
        assert_eq!(
            part_of(PART1),
            Some(Part {
                id: "ABC@host.example".into(),
                number: 1,
                total: Some(2)
            })
        );
        assert_eq!(part_of(PART2).unwrap().number, 2);
        for bad in [
            &b"Content-Type: text/plain\r\n\r\nx"[..],
            b"Content-Type: message/partial; number=1\r\n\r\n",
            b"Content-Type: message/partial; id=x; number=0\r\n\r\n",
            b"Content-Type: message/partial; id=x; number=3; total=2\r\n\r\n",
            b"Content-Type: message/partial; id=x; number=one\r\n\r\n",
            b"Subject: no type\r\n\r\n",
        ] {
            assert_eq!(part_of(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn complete_needs_a_total_and_every_number() {
        let p = |n, t| Part {
            id: "x".into(),
            number: n,
            total: t,
        };
        assert!(!complete(&[p(1, None), p(2, None)]));
        assert!(!complete(&[p(1, None), p(3, Some(3))]));
        assert!(complete(&[p(2, Some(2)), p(1, None)]));
    }

    #[test]
    fn reassembly_follows_rfc_2046() {
        let whole = reassemble(&[PART1, PART2]);
        assert_eq!(
            String::from_utf8_lossy(&whole),
            "Received: by relay\r\nFrom: Ann <ann@example.com>\r\nTo: joe@example.com\r\nMessage-ID: <whole@example.com>\r\nSubject: The report\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nfirst half, second half\r\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_input_is_handled(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = part_of(&data);
            let whole = reassemble(&[&data, &data]);
            proptest::prop_assert!(whole.len() <= 2 * data.len() + 2);
        }
    }
}
