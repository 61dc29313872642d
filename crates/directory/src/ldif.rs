//! LDIF (RFC 2849) content records: the embedded directory's file format,
//! and what `ldapadd` takes to move the same data into a real directory.
//! Pure: text in, entries out, and back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::entry::Entry;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LdifError {
    pub line: usize,
    pub reason: String,
}

/// Largest value accepted (a JPEG photo fits; a runaway file does not).
pub const MAX_VALUE: usize = 1 << 20;

/// Reads content records. Every problem names its line; nothing is
/// returned when any record is bad.
pub fn parse(text: &str) -> Result<Vec<Entry>, LdifError> {
    // Unfold continuation lines first, remembering where each began.
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(cont) = raw.strip_prefix(' ') {
            match lines.last_mut() {
                Some((_, prev)) if !prev.is_empty() => prev.push_str(cont),
                _ => {
                    return Err(LdifError {
                        line: i + 1,
                        reason: "continuation line without a line to continue".into(),
                    });
                }
            }
        } else {
            lines.push((i + 1, raw.to_string()));
        }
    }
    let mut entries = Vec::new();
    let mut current: Option<Entry> = None;
    let mut first_record = true;
    for (line, text) in lines {
        if text.starts_with('#') {
            continue;
        }
        if text.is_empty() {
            if let Some(e) = current.take() {
                entries.push(e);
            }
            continue;
        }
        let err = |reason: &str| LdifError {
            line,
            reason: reason.to_string(),
        };
        let (name, value) = parse_line(&text).map_err(|r| err(&r))?;
        if first_record && current.is_none() && name.eq_ignore_ascii_case("version") {
            if value.trim() != "1" {
                return Err(err("only LDIF version 1 is understood"));
            }
            first_record = false;
            continue;
        }
        first_record = false;
        match current.as_mut() {
            None => {
                if !name.eq_ignore_ascii_case("dn") {
                    return Err(err("a record must begin with dn:"));
                }
                crate::dn::Dn::parse(&value).map_err(|e| err(&e.to_string()))?;
                current = Some(Entry::new(value));
            }
            Some(e) => {
                if name.eq_ignore_ascii_case("dn") {
                    return Err(err(
                        "dn: inside a record (a blank line must separate records)",
                    ));
                }
                if name.eq_ignore_ascii_case("changetype") {
                    return Err(err(
                        "change records are not accepted here; give plain entries",
                    ));
                }
                e.add(&name, value);
            }
        }
    }
    if let Some(e) = current.take() {
        entries.push(e);
    }
    Ok(entries)
}

fn parse_line(text: &str) -> Result<(String, String), String> {
    let (name, rest) = text.split_once(':').ok_or("expected attribute: value")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.')
    {
        return Err(format!("{name:?} is not an attribute name"));
    }
    let value = if let Some(b64) = rest.strip_prefix(':') {
        let bytes = STANDARD
            .decode(b64.trim())
            .map_err(|_| "bad base64 value".to_string())?;
        String::from_utf8(bytes).map_err(|_| "base64 value is not UTF-8 text".to_string())?
    } else if rest.starts_with('<') {
        return Err("URL values (attr:< url) are not supported".into());
    } else {
        rest.strip_prefix(' ')
            .unwrap_or(rest)
            .trim_start_matches(' ')
            .to_string()
    };
    if value.len() > MAX_VALUE {
        return Err(format!("value longer than {MAX_VALUE} bytes"));
    }
    Ok((name.to_string(), value))
}

/// Writes entries as LDIF, base64 where RFC 2849 requires it and lines
/// folded at 76 columns.
pub fn write(entries: &[Entry]) -> String {
    let mut out = String::from("version: 1\n");
    for e in entries {
        out.push('\n');
        push_line(&mut out, "dn", &e.dn);
        for (name, values) in e.attributes() {
            for v in values {
                push_line(&mut out, name, v);
            }
        }
    }
    out
}

fn safe(v: &str) -> bool {
    let b = v.as_bytes();
    b.iter()
        .all(|c| (0x01..=0x7f).contains(c) && *c != b'\n' && *c != b'\r')
        && !matches!(b.first(), Some(b' ' | b':' | b'<'))
        && b.last() != Some(&b' ')
}

fn push_line(out: &mut String, name: &str, value: &str) {
    let line = if safe(value) {
        format!("{name}: {value}")
    } else {
        format!("{name}:: {}", STANDARD.encode(value))
    };
    // Fold at 76 bytes; continuation lines start with one space. Only
    // ASCII reaches here (non-ASCII values are base64), so byte slicing is
    // safe.
    let mut rest = line.as_str();
    let mut first = true;
    while !rest.is_empty() {
        let width = if first { 76 } else { 75 };
        let cut = rest.len().min(width);
        if !first {
            out.push(' ');
        }
        out.push_str(&rest[..cut]);
        out.push('\n');
        rest = &rest[cut..];
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_folded_base64_and_comments() {
        let text = "version: 1\n# a comment\ndn: uid=joe,o=example.com\nobjectClass: inetOrgPerson\ncn: Joe\n  Bloggs\ndescription:: w6lsw6h2ZQ==\n\ndn: o=example.com\no: example.com\n";
        let es = parse(text).unwrap();
        assert_eq!(es.len(), 2);
        assert_eq!(es[0].get("cn"), Some("Joe Bloggs"));
        assert_eq!(es[0].get("description"), Some("élève"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("dn: o=x\no: x\n\ncn: orphan\n").unwrap_err();
        assert_eq!(e.line, 4);
        let e = parse("dn: o=x\nthis is not ldif\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("dn: o=x\nchangetype: add\n").unwrap_err();
        assert!(e.reason.contains("change records"));
        assert!(parse("dn: =broken\n").is_err());
    }

    #[test]
    fn round_trip() {
        let mut e = Entry::new("cn=Zoë Smith,o=example.com");
        e.add("cn", "Zoë Smith");
        e.add("description", " leading space");
        e.add(
            "mailSieveRuleSource",
            format!("require \"fileinto\";\n{}", "x".repeat(200)),
        );
        let text = write(std::slice::from_ref(&e));
        assert!(text.lines().all(|l| l.len() <= 76), "{text}");
        assert_eq!(parse(&text).unwrap(), vec![e]);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn written_values_read_back(v in "\\PC{0,120}") {
            let mut e = Entry::new("o=x");
            e.add("description", v.clone());
            let back = parse(&write(&[e])).unwrap();
            let got = back[0].get("description").map(str::to_string);
            proptest::prop_assert_eq!(got, if v.is_empty() { Some(String::new()) } else { Some(v) });
        }
    }
}
