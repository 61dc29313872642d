//! LDAP search filters (RFC 4515): parsed, printed with correct escaping,
//! and evaluated against an entry (for the embedded directory). Every
//! value that comes from a user — a login name, an address — goes into a
//! filter through [`escape`] or [`Filter::eq`], never by pasting text.

use crate::entry::Entry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Equal(String, String),
    Approx(String, String),
    GreaterOrEqual(String, String),
    LessOrEqual(String, String),
    Present(String),
    Substring {
        attr: String,
        initial: Option<String>,
        any: Vec<String>,
        last: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at byte {at}: {reason}")]
pub struct FilterError {
    pub at: usize,
    pub reason: String,
}

/// Limits that keep a hostile or broken filter from costing much.
pub const MAX_FILTER: usize = 8192;
pub const MAX_DEPTH: usize = 32;

/// Escapes a value for a filter: `*`, `(`, `)`, `\` and NUL become `\XX`.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

impl Filter {
    /// `(attr=value)` with the value taken literally.
    pub fn eq(attr: &str, value: &str) -> Filter {
        Filter::Equal(attr.to_string(), value.to_string())
    }

    pub fn parse(s: &str) -> Result<Filter, FilterError> {
        if s.len() > MAX_FILTER {
            return Err(FilterError {
                at: 0,
                reason: format!("longer than {MAX_FILTER} bytes"),
            });
        }
        let s = s.trim();
        let owned;
        let s = if s.starts_with('(') {
            s
        } else {
            owned = format!("({s})");
            &owned
        };
        let mut p = Parser {
            s: s.as_bytes(),
            pos: 0,
        };
        let f = p.filter(0)?;
        if p.pos != p.s.len() {
            return Err(p.err("text after the filter"));
        }
        Ok(f)
    }

    /// Does the entry match? Values compare without regard to case, and
    /// numerically for `>=`/`<=` when both sides are numbers.
    pub fn matches(&self, e: &Entry) -> bool {
        let values = |a: &str| -> Vec<String> {
            if a.eq_ignore_ascii_case("dn") || a.eq_ignore_ascii_case("entryDN") {
                vec![e.dn.clone()]
            } else {
                e.get_all(a).to_vec()
            }
        };
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(e)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(e)),
            Filter::Not(f) => !f.matches(e),
            Filter::Present(a) => a.eq_ignore_ascii_case("objectClass") || e.has(a),
            Filter::Equal(a, v) | Filter::Approx(a, v) => values(a).iter().any(|x| eq_ci(x, v)),
            Filter::GreaterOrEqual(a, v) => values(a)
                .iter()
                .any(|x| order(x, v) != std::cmp::Ordering::Less),
            Filter::LessOrEqual(a, v) => values(a)
                .iter()
                .any(|x| order(x, v) != std::cmp::Ordering::Greater),
            Filter::Substring {
                attr,
                initial,
                any,
                last,
            } => values(attr).iter().any(|x| {
                let x = x.to_lowercase();
                let mut rest = x.as_str();
                if let Some(i) = initial {
                    match rest.strip_prefix(i.to_lowercase().as_str()) {
                        Some(r) => rest = r,
                        None => return false,
                    }
                }
                for a in any {
                    let a = a.to_lowercase();
                    match rest.find(&a) {
                        Some(at) => rest = &rest[at + a.len()..],
                        None => return false,
                    }
                }
                last.as_ref()
                    .is_none_or(|l| rest.ends_with(&l.to_lowercase()))
            }),
        }
    }
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || (!a.is_ascii() && a.to_lowercase() == b.to_lowercase())
}

fn order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.trim().parse::<i64>(), b.trim().parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filter::And(fs) => {
                f.write_str("(&")?;
                fs.iter().try_for_each(|x| write!(f, "{x}"))?;
                f.write_str(")")
            }
            Filter::Or(fs) => {
                f.write_str("(|")?;
                fs.iter().try_for_each(|x| write!(f, "{x}"))?;
                f.write_str(")")
            }
            Filter::Not(x) => write!(f, "(!{x})"),
            Filter::Equal(a, v) => write!(f, "({a}={})", escape(v)),
            Filter::Approx(a, v) => write!(f, "({a}~={})", escape(v)),
            Filter::GreaterOrEqual(a, v) => write!(f, "({a}>={})", escape(v)),
            Filter::LessOrEqual(a, v) => write!(f, "({a}<={})", escape(v)),
            Filter::Present(a) => write!(f, "({a}=*)"),
            Filter::Substring {
                attr,
                initial,
                any,
                last,
            } => {
                write!(f, "({attr}=")?;
                if let Some(i) = initial {
                    f.write_str(&escape(i))?;
                }
                f.write_str("*")?;
                for a in any {
                    write!(f, "{}*", escape(a))?;
                }
                if let Some(l) = last {
                    f.write_str(&escape(l))?;
                }
                f.write_str(")")
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &str) -> FilterError {
        FilterError {
            at: self.pos,
            reason: reason.to_string(),
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), FilterError> {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", b as char)))
        }
    }

    fn filter(&mut self, depth: usize) -> Result<Filter, FilterError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.expect(b'(')?;
        let f = match self.s.get(self.pos) {
            Some(b'&') => {
                self.pos += 1;
                Filter::And(self.list(depth)?)
            }
            Some(b'|') => {
                self.pos += 1;
                Filter::Or(self.list(depth)?)
            }
            Some(b'!') => {
                self.pos += 1;
                Filter::Not(Box::new(self.filter(depth + 1)?))
            }
            _ => self.item()?,
        };
        self.expect(b')')?;
        Ok(f)
    }

    fn list(&mut self, depth: usize) -> Result<Vec<Filter>, FilterError> {
        let mut out = Vec::new();
        while self.s.get(self.pos) == Some(&b'(') {
            out.push(self.filter(depth + 1)?);
        }
        if out.is_empty() {
            return Err(self.err("empty list"));
        }
        Ok(out)
    }

    fn item(&mut self) -> Result<Filter, FilterError> {
        let start = self.pos;
        while self
            .s
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.' || *b == b';')
        {
            self.pos += 1;
        }
        let attr = std::str::from_utf8(&self.s[start..self.pos])
            .expect("ascii")
            .to_string();
        if attr.is_empty() {
            return Err(self.err("expected an attribute name"));
        }
        let op = match (self.s.get(self.pos), self.s.get(self.pos + 1)) {
            (Some(b'~'), Some(b'=')) => "~=",
            (Some(b'>'), Some(b'=')) => ">=",
            (Some(b'<'), Some(b'=')) => "<=",
            (Some(b'='), _) => "=",
            (Some(b':'), _) => return Err(self.err("extensible matching is not supported")),
            _ => return Err(self.err("expected =, ~=, >= or <=")),
        };
        self.pos += op.len();
        // The raw value runs to the closing parenthesis.
        let vstart = self.pos;
        while self
            .s
            .get(self.pos)
            .is_some_and(|b| *b != b')' && *b != b'(')
        {
            self.pos += 1;
        }
        let raw = &self.s[vstart..self.pos];
        if op != "=" {
            let v = self.unescape(raw, vstart)?;
            return Ok(match op {
                "~=" => Filter::Approx(attr, v),
                ">=" => Filter::GreaterOrEqual(attr, v),
                _ => Filter::LessOrEqual(attr, v),
            });
        }
        if raw == b"*" {
            return Ok(Filter::Present(attr));
        }
        if !raw.contains(&b'*') {
            return Ok(Filter::Equal(attr, self.unescape(raw, vstart)?));
        }
        let pieces: Vec<&[u8]> = raw.split(|b| *b == b'*').collect();
        let n = pieces.len();
        let mut any = Vec::new();
        for p in &pieces[1..n - 1] {
            if p.is_empty() {
                return Err(self.err("empty substring between '*'"));
            }
            any.push(self.unescape(p, vstart)?);
        }
        let opt = |p: &[u8], me: &Self| -> Result<Option<String>, FilterError> {
            if p.is_empty() {
                Ok(None)
            } else {
                me.unescape(p, vstart).map(Some)
            }
        };
        Ok(Filter::Substring {
            attr,
            initial: opt(pieces[0], self)?,
            any,
            last: opt(pieces[n - 1], self)?,
        })
    }

    fn unescape(&self, raw: &[u8], at: usize) -> Result<String, FilterError> {
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' {
                let hex = raw.get(i + 1..i + 3).ok_or_else(|| FilterError {
                    at: at + i,
                    reason: "bad escape".into(),
                })?;
                let hex = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.ok_or_else(|| FilterError {
                    at: at + i,
                    reason: "bad escape".into(),
                })?);
                i += 3;
            } else {
                out.push(raw[i]);
                i += 1;
            }
        }
        String::from_utf8(out).map_err(|_| FilterError {
            at,
            reason: "value is not UTF-8".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joe() -> Entry {
        let mut e = Entry::new("uid=joe,ou=People,o=example.com,o=usergroup");
        e.add("objectClass", "inetOrgPerson");
        e.add("objectClass", "inetMailUser");
        e.add("uid", "joe");
        e.add("mail", "Joe@Example.com");
        e.add("mailQuota", "1000");
        e
    }

    #[test]
    fn evaluation() {
        let e = joe();
        for (f, want) in [
            ("(uid=joe)", true),
            ("(UID=JOE)", true),
            ("(&(objectClass=inetMailUser)(mail=joe@example.com))", true),
            ("(|(uid=ann)(mail=nobody@x))", false),
            ("(!(uid=ann))", true),
            ("(mail=joe*)", true),
            ("(mail=*@example.com)", true),
            ("(mail=j*@*.com)", true),
            ("(mail=*ann*)", false),
            ("(mailQuota>=999)", true),
            ("(mailQuota<=999)", false),
            ("(cn=*)", false),
            ("uid=joe", true),
        ] {
            assert_eq!(Filter::parse(f).unwrap().matches(&e), want, "{f}");
        }
    }

    #[test]
    fn injection_is_inert() {
        // A login name crafted to widen the search matches nothing.
        for hostile in ["*)(uid=*", "*", "joe)(|(uid=*", "\\2a", "joe\0"] {
            let f = Filter::And(vec![
                Filter::eq("objectClass", "inetMailUser"),
                Filter::eq("uid", hostile),
            ]);
            let text = f.to_string();
            let back = Filter::parse(&text).unwrap();
            assert_eq!(back, f, "{text}");
            assert!(!back.matches(&joe()), "{hostile} matched");
        }
        assert_eq!(escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in [
            "(uid=joe",
            "(&)",
            "((uid=x))",
            "(uid=x))",
            "(=x)",
            "(uid:dn:=x)",
            "(uid=a\\z1)",
            "(uid=a**b)",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        let deep = "(!".repeat(40) + "(a=b)" + &")".repeat(40);
        assert!(Filter::parse(&deep).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = Filter::parse(&s);
        }

        #[test]
        fn any_value_round_trips(v in "\\PC{0,30}") {
            let f = Filter::eq("uid", &v);
            proptest::prop_assert_eq!(Filter::parse(&f.to_string()).unwrap(), f);
        }
    }
}
