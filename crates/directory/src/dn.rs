//! Distinguished names (RFC 4514), as far as a mail directory needs them:
//! split into RDNs, compared without regard to case or spacing, tested for
//! being under a base, and values escaped when a DN is built.

/// A DN that has been checked and normalized for comparison.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dn {
    /// The RDNs in normalized form (`attr=value`, lower case), leaf first.
    rdns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DN {dn:?}: {reason}")]
pub struct DnError {
    pub dn: String,
    pub reason: String,
}

/// Longest DN accepted.
pub const MAX_DN: usize = 4096;

impl Dn {
    pub fn parse(s: &str) -> Result<Dn, DnError> {
        let bad = |reason: &str| DnError {
            dn: s.chars().take(200).collect(),
            reason: reason.into(),
        };
        if s.len() > MAX_DN {
            return Err(bad("too long"));
        }
        if s.trim().is_empty() {
            return Ok(Dn { rdns: Vec::new() }); // the root DSE
        }
        let mut rdns = Vec::new();
        for raw in split_unescaped(s, ',') {
            let mut parts = Vec::new();
            for ava in split_unescaped(&raw, '+') {
                let (attr, value) = ava.split_once('=').ok_or_else(|| bad("an RDN lacks '='"))?;
                let attr = attr.trim();
                if attr.is_empty()
                    || !attr
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    return Err(bad("bad attribute type"));
                }
                let value = unescape(trim_spaces(value)).ok_or_else(|| bad("bad escape"))?;
                if value.is_empty() {
                    return Err(bad("empty value"));
                }
                parts.push(format!(
                    "{}={}",
                    attr.to_ascii_lowercase(),
                    escape_value(&value.to_lowercase())
                ));
            }
            parts.sort();
            rdns.push(parts.join("+"));
        }
        Ok(Dn { rdns })
    }

    /// The normalized string form (for keys and comparisons).
    pub fn normalized(&self) -> String {
        self.rdns.join(",")
    }

    pub fn is_root(&self) -> bool {
        self.rdns.is_empty()
    }

    /// Is `self` equal to `base` or below it?
    pub fn is_under(&self, base: &Dn) -> bool {
        self.rdns.len() >= base.rdns.len()
            && self.rdns[self.rdns.len() - base.rdns.len()..] == base.rdns[..]
    }

    /// Is `self` exactly one level below `base`?
    pub fn is_child_of(&self, base: &Dn) -> bool {
        self.rdns.len() == base.rdns.len() + 1 && self.is_under(base)
    }

    pub fn parent(&self) -> Option<Dn> {
        (!self.rdns.is_empty()).then(|| Dn {
            rdns: self.rdns[1..].to_vec(),
        })
    }

    pub fn depth(&self) -> usize {
        self.rdns.len()
    }
}

/// Drops the spaces around a value that RFC 4514 calls insignificant,
/// keeping an escaped trailing space.
fn trim_spaces(v: &str) -> &str {
    let mut v = v.trim_start_matches(' ');
    while v.ends_with(' ') && !v.ends_with("\\ ") {
        v = &v[..v.len() - 1];
    }
    v
}

/// Splits at `sep` where it is not escaped by a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.last_mut().expect("non-empty").push(c);
            escaped = false;
        } else if c == '\\' {
            out.last_mut().expect("non-empty").push(c);
            escaped = true;
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("non-empty").push(c);
        }
    }
    out
}

/// Undoes `\,` and `\2C` style escapes.
fn unescape(v: &str) -> Option<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let next = *bytes.get(i + 1)?;
            if next.is_ascii_hexdigit() && bytes.get(i + 2).is_some_and(|b| b.is_ascii_hexdigit()) {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(next);
                i += 2;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes an attribute value for use in a DN (RFC 4514 section 2.4).
pub fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
        } else {
            if special {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_ignores_case_and_spaces() {
        let a = Dn::parse("uid=Joe, ou=People,O=example.com,o=usergroup").unwrap();
        let b = Dn::parse("UID=joe,ou=people,o=Example.com, o=UserGroup").unwrap();
        assert_eq!(a, b);
        let base = Dn::parse("o=usergroup").unwrap();
        assert!(a.is_under(&base));
        assert!(!base.is_under(&a));
        assert!(
            Dn::parse("ou=People,o=example.com,o=usergroup")
                .unwrap()
                .is_child_of(&Dn::parse("o=example.com,o=usergroup").unwrap())
        );
    }

    #[test]
    fn escapes_round_trip() {
        let v = "Smith, John + co";
        let dn = Dn::parse(&format!("cn={},o=x", escape_value(v))).unwrap();
        assert_eq!(dn.depth(), 2);
        assert!(Dn::parse("cn=a\\2Cb,o=x").unwrap() == Dn::parse("cn=a\\,b,o=x").unwrap());
    }

    #[test]
    fn malformed_dns_are_refused() {
        for bad in ["uid", "=x", "uid=,o=x", "u id=x", "uid=x\\"] {
            assert!(Dn::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = Dn::parse(&s);
        }

        #[test]
        fn escaped_values_parse_back(v in "[^\\x00]{1,30}") {
            let dn = Dn::parse(&format!("cn={}", escape_value(&v)));
            proptest::prop_assert!(dn.is_ok(), "{:?}", dn);
        }
    }
}
