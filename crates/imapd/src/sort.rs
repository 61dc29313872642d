//! SORT and THREAD=ORDEREDSUBJECT (RFC 5256): the base subject, the sort
//! keys from the envelope, and the ordered-subject threads. Pure.

use std::cmp::Ordering;

use epistle_imap::search::{SortCriterion, SortKey};
use epistle_ipc::store::{Envelope, EnvelopeAddress};

/// What sorting needs of one message.
pub struct SortItem<'a> {
    pub seq: u32,
    pub number: u32,
    pub internal_date: i64,
    pub size: u64,
    pub envelope: &'a Envelope,
    /// The Date: header's time, or the internal date when it has none.
    pub sent: i64,
}

/// RFC 5256 §2.1: the subject without reply and forward markers,
/// `(fwd)` trailers, blobs before them and `[fwd: …]` wrappers, with
/// white space collapsed and case folded.
pub fn base_subject(subject: &str) -> String {
    let mut s: String = subject
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    loop {
        // (2) trailing "(fwd)".
        loop {
            let t = s.trim_end();
            match t.strip_suffix("(fwd)") {
                Some(rest) => s = rest.trim_end().to_string(),
                None => {
                    s = t.to_string();
                    break;
                }
            }
        }
        // (3) leading "re:", "fw:", "fwd:" (with blobs) and blobs.
        loop {
            let before = s.clone();
            s = strip_leader(&s);
            if s == before {
                break;
            }
        }
        // (4, 5) a "[fwd: …]" wrapper.
        if s.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim().to_string();
            continue;
        }
        return s;
    }
}

/// Whether a subject is a reply or forward (it has a leader to strip).
pub fn is_reply(subject: &str) -> bool {
    let s = subject.trim().to_lowercase();
    strip_leader(&s) != s || s.ends_with("(fwd)") || s.starts_with("[fwd:")
}

/// One `subj-leader` or `subj-blob` off the front, when what remains is
/// not empty.
fn strip_leader(s: &str) -> String {
    let t = s.trim_start();
    // A blob "[…]" may come before the marker.
    let (blob_rest, had_blob) = match t.strip_prefix('[') {
        Some(r) => match r.find(']') {
            Some(end) if !r[..end].contains('[') => (r[end + 1..].trim_start(), true),
            _ => (t, false),
        },
        None => (t, false),
    };
    for marker in ["re", "fwd", "fw"] {
        if let Some(rest) = blob_rest.strip_prefix(marker) {
            let rest = rest.trim_start();
            // An optional blob between the marker and the colon.
            let rest = match rest.strip_prefix('[') {
                Some(r) => match r.find(']') {
                    Some(end) => r[end + 1..].trim_start(),
                    None => rest,
                },
                None => rest,
            };
            if let Some(after) = rest.strip_prefix(':') {
                return after.trim_start().to_string();
            }
        }
    }
    // A blob alone is removed when something is left after it.
    if had_blob && !blob_rest.is_empty() {
        return blob_rest.to_string();
    }
    t.to_string()
}

fn first_mailbox(list: &[EnvelopeAddress]) -> String {
    list.iter()
        .find_map(|a| a.mailbox.clone())
        .unwrap_or_default()
        .to_lowercase()
}

fn display(list: &[EnvelopeAddress]) -> String {
    list.iter()
        .find(|a| a.mailbox.is_some())
        .map(|a| match &a.name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => format!(
                "{}@{}",
                a.mailbox.clone().unwrap_or_default(),
                a.host.clone().unwrap_or_default()
            ),
        })
        .unwrap_or_default()
        .to_lowercase()
}

fn compare(a: &SortItem<'_>, b: &SortItem<'_>, key: SortKey) -> Ordering {
    match key {
        SortKey::Arrival => a.internal_date.cmp(&b.internal_date),
        SortKey::Date => a.sent.cmp(&b.sent),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => base_subject(a.envelope.subject.as_deref().unwrap_or(""))
            .cmp(&base_subject(b.envelope.subject.as_deref().unwrap_or(""))),
        SortKey::From => first_mailbox(&a.envelope.from).cmp(&first_mailbox(&b.envelope.from)),
        SortKey::To => first_mailbox(&a.envelope.to).cmp(&first_mailbox(&b.envelope.to)),
        SortKey::Cc => first_mailbox(&a.envelope.cc).cmp(&first_mailbox(&b.envelope.cc)),
        SortKey::DisplayFrom => display(&a.envelope.from).cmp(&display(&b.envelope.from)),
        SortKey::DisplayTo => display(&a.envelope.to).cmp(&display(&b.envelope.to)),
    }
}

/// The numbers in SORT order; ties by message sequence number.
pub fn sort(items: &mut [SortItem<'_>], criteria: &[SortCriterion]) -> Vec<u32> {
    items.sort_by(|a, b| {
        for c in criteria {
            let o = compare(a, b, c.key);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.seq.cmp(&b.seq)
    });
    items.iter().map(|i| i.number).collect()
}

/// THREAD=ORDEREDSUBJECT: messages grouped by base subject, each group in
/// sent-date order with the first as the parent of the rest, groups in
/// the order of their first messages. Written as the THREAD response's
/// list, e.g. `(1 (2)(3))(4)`.
pub fn ordered_subject(items: &mut [SortItem<'_>]) -> String {
    items.sort_by(|a, b| {
        base_subject(a.envelope.subject.as_deref().unwrap_or(""))
            .cmp(&base_subject(b.envelope.subject.as_deref().unwrap_or("")))
            .then(a.sent.cmp(&b.sent))
            .then(a.seq.cmp(&b.seq))
    });
    let mut groups: Vec<Vec<&SortItem<'_>>> = Vec::new();
    let mut last: Option<String> = None;
    for it in items.iter() {
        let subject = base_subject(it.envelope.subject.as_deref().unwrap_or(""));
        if last.as_deref() != Some(subject.as_str()) {
            groups.push(Vec::new());
            last = Some(subject);
        }
        if let Some(g) = groups.last_mut() {
            g.push(it);
        }
    }
    groups.sort_by(|a, b| (a[0].sent, a[0].seq).cmp(&(b[0].sent, b[0].seq)));
    let mut out = String::new();
    for g in groups {
        out.push('(');
        out.push_str(&g[0].number.to_string());
        match g.len() {
            1 => {}
            2 => out.push_str(&format!(" {}", g[1].number)),
            _ => {
                out.push(' ');
                for child in &g[1..] {
                    out.push_str(&format!("({})", child.number));
                }
            }
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        for (raw, base) in [
            ("Re: hello", "hello"),
            ("RE: Re: Fwd:  Hello   World", "hello world"),
            ("[rust-lang] Re: [PATCH] fix (fwd)", "fix"),
            ("[Fwd: Re: lunch]", "lunch"),
            ("Fw[x]: notes (fwd) (fwd)", "notes"),
            ("[only a blob]", "[only a blob]"),
            ("", ""),
        ] {
            assert_eq!(base_subject(raw), base, "{raw:?}");
        }
    }

    fn env(subject: &str, from: &str) -> Envelope {
        Envelope {
            subject: Some(subject.into()),
            from: vec![EnvelopeAddress {
                mailbox: Some(from.into()),
                host: Some("example.com".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn sort_and_thread() {
        let e = [
            env("b", "zed"),
            env("Re: a", "amy"),
            env("a", "bob"),
            env("c", "amy"),
        ];
        fn items(e: &[Envelope; 4]) -> Vec<SortItem<'_>> {
            e.iter()
                .enumerate()
                .map(|(i, env)| SortItem {
                    seq: i as u32 + 1,
                    number: i as u32 + 1,
                    internal_date: 100 - i as i64,
                    size: 10 * (i as u64 + 1),
                    envelope: env,
                    sent: [5, 3, 1, 2][i],
                })
                .collect()
        }
        let by = |key, reverse| SortCriterion { key, reverse };
        assert_eq!(
            sort(&mut items(&e), &[by(SortKey::Subject, false)]),
            vec![2, 3, 1, 4]
        );
        assert_eq!(
            sort(
                &mut items(&e),
                &[by(SortKey::Subject, false), by(SortKey::Date, false)]
            ),
            vec![3, 2, 1, 4]
        );
        assert_eq!(
            sort(&mut items(&e), &[by(SortKey::From, false)]),
            vec![2, 4, 3, 1]
        );
        assert_eq!(
            sort(&mut items(&e), &[by(SortKey::Arrival, true)]),
            vec![1, 2, 3, 4]
        );
        assert_eq!(ordered_subject(&mut items(&e)), "(3 2)(4)(1)");
    }
}
