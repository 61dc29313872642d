//! Reading mail from other servers' folders for imsimport. Pure.
//!
//! - mbox (mboxrd/mboxo): messages start at lines beginning `From `;
//!   `>From ` quoting inside bodies is undone for mboxrd (`>>From ` →
//!   `>From `); the `From ` line's date becomes the internal date.
//! - Maildir: one file a message in `cur/` and `new/`; the `:2,` suffix
//!   carries flags (S seen, R answered, F flagged, T deleted, D draft);
//!   the file time becomes the internal date.

/// One message of an mbox: its bytes (without the `From ` line) and the
/// date that line gave, if it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxMessage {
    pub body: Vec<u8>,
    pub date: Option<i64>,
}

/// Splits an mbox into messages.
pub fn split_mbox(data: &[u8]) -> Vec<MboxMessage> {
    let mut out = Vec::new();
    let mut current: Option<(Vec<u8>, Option<i64>)> = None;
    for line in data.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"From ") {
            if let Some((body, date)) = current.take() {
                out.push(MboxMessage {
                    body: trim_separator(body),
                    date,
                });
            }
            current = Some((Vec::new(), from_line_date(line)));
            continue;
        }
        let Some((body, _)) = current.as_mut() else {
            continue;
        }; // text before the first From line
        let unquoted = match line.iter().position(|b| *b != b'>') {
            Some(n) if n > 0 && line[n..].starts_with(b"From ") => &line[1..],
            _ => line,
        };
        body.extend_from_slice(unquoted);
    }
    if let Some((body, date)) = current {
        out.push(MboxMessage {
            body: trim_separator(body),
            date,
        });
    }
    out
}

/// The blank line that separates mbox messages is not part of a message.
fn trim_separator(mut body: Vec<u8>) -> Vec<u8> {
    if body.ends_with(b"\n\n") {
        body.pop();
    } else if body.ends_with(b"\r\n\r\n") {
        body.truncate(body.len() - 2);
    }
    body
}

/// `From sender Tue Nov 30 20:28:29 2026` → seconds since the epoch (UTC).
fn from_line_date(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let words: Vec<&str> = text.split_whitespace().collect();
    // From, sender, weekday, month, day, time, year
    if words.len() < 7 {
        return None;
    }
    let tail = words[words.len() - 5..].join(" ");
    chrono::NaiveDateTime::parse_from_str(&tail, "%a %b %e %H:%M:%S %Y")
        .ok()
        .map(|d| d.and_utc().timestamp())
}

/// Flags from a Maildir file name (`1234.host:2,FS` → \Flagged, \Seen).
pub fn maildir_flags(file_name: &str) -> Vec<String> {
    let Some((_, info)) = file_name.rsplit_once(":2,") else {
        return Vec::new();
    };
    let mut flags = Vec::new();
    for c in info.chars() {
        let f = match c {
            'S' => "\\Seen",
            'R' => "\\Answered",
            'F' => "\\Flagged",
            'T' => "\\Deleted",
            'D' => "\\Draft",
            _ => continue,
        };
        flags.push(f.to_string());
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_split_and_unquote() {
        let mbox = b"From joe@example.com Mon Nov 30 20:28:29 2026\nSubject: one\n\n>From here on\nbody\n\n\
From ann@example.com Tue Dec  1 08:00:00 2026\nSubject: two\n\nsecond\n";
        let msgs = split_mbox(mbox);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].body, b"Subject: one\n\nFrom here on\nbody\n");
        assert_eq!(msgs[1].body, b"Subject: two\n\nsecond\n");
        assert_eq!(msgs[0].date, Some(1_796_070_509));
        assert!(msgs[1].date.is_some());
    }

    #[test]
    fn maildir_names() {
        assert_eq!(
            maildir_flags("1700000000.M1P2.host:2,FRS"),
            ["\\Flagged", "\\Answered", "\\Seen"]
        );
        assert!(maildir_flags("1700000000.M1P2.host").is_empty());
    }

    proptest::proptest! {
        #[test]
        fn split_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = split_mbox(&bytes);
        }
    }
}
