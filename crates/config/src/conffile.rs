//! The `name = value` file format of msg.conf, local.conf and
//! msg.conf.defaults. Pure: text in, document out, and back again with the
//! administrator's comments and order kept.
//!
//! Values that are not a single plain word are written in double quotes,
//! with `\"` and `\\` escapes, as the original's configutil prints them.

/// One line of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A blank line or a `#` comment, kept verbatim.
    Other(String),
    Entry {
        name: String,
        value: String,
    },
}

/// A parsed file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfDocument {
    pub lines: Vec<Line>,
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct SyntaxError {
    pub line: usize,
    pub reason: String,
}

/// Longest line accepted; longer ones are refused rather than read partly.
pub const MAX_LINE: usize = 64 * 1024;

impl ConfDocument {
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.len() > MAX_LINE {
                return Err(SyntaxError {
                    line,
                    reason: format!("longer than {MAX_LINE} bytes"),
                });
            }
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
                lines.push(Line::Other(raw.to_string()));
                continue;
            }
            let (name, value) = parse_entry(t).map_err(|reason| SyntaxError { line, reason })?;
            lines.push(Line::Entry { name, value });
        }
        Ok(ConfDocument { lines })
    }

    /// The value of `name` (case-insensitive); the last one wins.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .last()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry { name, value } => Some((name.as_str(), value.as_str())),
            Line::Other(_) => None,
        })
    }

    /// Sets `name` in place of its first occurrence (dropping repeats), or
    /// appends it; `None` removes it.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let mut placed = false;
        self.lines.retain_mut(|l| match l {
            Line::Entry { name: n, value: v } if n.eq_ignore_ascii_case(name) => match value {
                Some(new) if !placed => {
                    placed = true;
                    *n = name.to_string();
                    *v = new.to_string();
                    true
                }
                _ => false,
            },
            _ => true,
        });
        if let (Some(new), false) = (value, placed) {
            self.lines.push(Line::Entry {
                name: name.to_string(),
                value: new.to_string(),
            });
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            match l {
                Line::Other(s) => out.push_str(s),
                Line::Entry { name, value } => {
                    out.push_str(name);
                    out.push_str(" = ");
                    out.push_str(&quote(value));
                }
            }
            out.push('\n');
        }
        out
    }
}

fn parse_entry(t: &str) -> Result<(String, String), String> {
    let (name, rest) = t
        .split_once('=')
        .ok_or_else(|| "expected name = value".to_string())?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-;".contains(c))
    {
        return Err(format!("{name:?} is not a parameter name"));
    }
    let rest = rest.trim();
    let value = if let Some(body) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.chars();
        loop {
            match chars.next() {
                None => return Err("unterminated quoted value".into()),
                Some('\\') => match chars.next() {
                    Some(c @ ('"' | '\\')) => out.push(c),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err("unterminated quoted value".into()),
                },
                Some('"') => break,
                Some(c) => out.push(c),
            }
        }
        if !chars.as_str().trim().is_empty() {
            return Err("text after the closing quote".into());
        }
        out
    } else {
        rest.to_string()
    };
    Ok((name.to_string(), value))
}

/// Writes a value as configutil prints it: bare when it is one plain word,
/// quoted otherwise.
pub fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '#' || c == '!');
    if plain {
        value.to_string()
    } else {
        let mut s = String::with_capacity(value.len() + 2);
        s.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_comments_and_order() {
        let text = "# site\nservice.imap.port = 1143\n\nservice.pop.banner = \"%h %p \\\"x\\\"\"\n";
        let doc = ConfDocument::parse(text).unwrap();
        assert_eq!(doc.get("service.pop.banner"), Some("%h %p \"x\""));
        assert_eq!(doc.render(), text);
    }

    #[test]
    fn set_replaces_and_removes() {
        let mut doc = ConfDocument::parse("a.b = 1\nc.d = 2\na.b = 3\n").unwrap();
        doc.set("a.b", Some("9"));
        assert_eq!(doc.render(), "a.b = 9\nc.d = 2\n");
        doc.set("c.d", None);
        doc.set("e.f", Some("x y"));
        assert_eq!(doc.render(), "a.b = 9\ne.f = \"x y\"\n");
    }

    #[test]
    fn errors_name_the_line() {
        let e = ConfDocument::parse("a.b = 1\nbroken line\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = ConfDocument::parse("a = \"open\n").unwrap_err();
        assert!(e.reason.contains("unterminated"));
    }

    proptest::proptest! {
        #[test]
        fn quoting_round_trips(value in "[^\\n\\r]{0,40}") {
            let value = value.trim().to_string();
            let mut doc = ConfDocument::default();
            doc.set("x.y", Some(&value));
            let back = ConfDocument::parse(&doc.render()).unwrap();
            proptest::prop_assert_eq!(back.get("x.y"), Some(value.as_str()));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = ConfDocument::parse(&text);
        }
    }
}
