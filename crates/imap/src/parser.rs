//! The grammar's small pieces (RFC 9051 §9) over a whole framed command:
//! atoms, strings (quoted and literal), numbers, lists, dates. Every
//! function either consumes what it recognises or fails; nesting is
//! bounded by [`MAX_DEPTH`].

use crate::command::ParseError;
use crate::framer::literal_announcement;

/// Deepest parenthesised nesting accepted (search keys, lists).
pub const MAX_DEPTH: usize = 32;

pub(crate) type Result<T> = std::result::Result<T, ParseError>;

pub(crate) struct Cursor<'a> {
    s: &'a [u8],
    pub(crate) i: usize,
    pub(crate) depth: usize,
}

fn bad(what: impl Into<String>) -> ParseError {
    ParseError::Bad(what.into())
}

/// ATOM-CHAR: any CHAR except atom-specials.
pub(crate) fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b)
}

/// ASTRING-CHAR: ATOM-CHAR or `]`.
fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// list-char: ATOM-CHAR, list-wildcards or `]`.
fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Cursor<'a> {
        Cursor { s, i: 0, depth: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.s[self.i..]
    }

    /// The input from `start` on.
    pub(crate) fn rest_from(&self, start: usize) -> &'a [u8] {
        &self.s[start..]
    }

    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn expect(&mut self, b: u8) -> Result<()> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(bad(format!("expected {:?}", b as char)))
        }
    }

    /// Exactly one space.
    pub(crate) fn sp(&mut self) -> Result<()> {
        self.expect(b' ')
    }

    /// Whether a case-insensitive word comes next (not consumed).
    pub(crate) fn at_word(&self, w: &str) -> bool {
        let r = self.rest();
        r.len() >= w.len() && r[..w.len()].eq_ignore_ascii_case(w.as_bytes())
    }

    /// Consumes a case-insensitive word when it comes next.
    pub(crate) fn eat_word(&mut self, w: &str) -> bool {
        if self.at_word(w) {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    /// The end of the command: CRLF (a bare LF is taken too) and nothing
    /// after it.
    pub(crate) fn end(&mut self) -> Result<()> {
        self.eat(b'\r');
        if self.eat(b'\n') && self.i == self.s.len() {
            Ok(())
        } else {
            Err(bad("unexpected text at the end of the command"))
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// An atom, as text.
    pub(crate) fn atom(&mut self) -> Result<&'a str> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err(bad("expected an atom"));
        }
        Ok(std::str::from_utf8(a).unwrap_or_default())
    }

    /// The tag: astring characters except `+`.
    pub(crate) fn tag(&mut self) -> Result<&'a str> {
        let t = self.take_while(|b| is_astring_char(b) && b != b'+');
        if t.is_empty() {
            return Err(bad("expected a tag"));
        }
        Ok(std::str::from_utf8(t).unwrap_or_default())
    }

    /// A sequence set (`1:4,7,9:*` or `$`).
    pub(crate) fn sequence_set(&mut self) -> Result<crate::sequence::SequenceSet> {
        let t = self.take_while(|b| b.is_ascii_digit() || b":,*$".contains(&b));
        crate::sequence::SequenceSet::parse(std::str::from_utf8(t).unwrap_or_default())
            .ok_or_else(|| bad("bad sequence set"))
    }

    pub(crate) fn number(&mut self) -> Result<u32> {
        let d = self.take_while(|b| b.is_ascii_digit());
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("expected a number"))
    }

    pub(crate) fn nz_number(&mut self) -> Result<u32> {
        match self.number()? {
            0 => Err(bad("expected a number above zero")),
            n => Ok(n),
        }
    }

    /// A 63-bit number (mod-sequences).
    pub(crate) fn number64(&mut self) -> Result<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|n| *n <= i64::MAX as u64)
            .ok_or_else(|| bad("expected a number"))
    }

    /// A literal's data (`{n}CRLF…`, `{n+}CRLF…`; with `binary`, `~{n}`).
    fn literal(&mut self, binary: bool) -> Result<&'a [u8]> {
        let tilde = self.eat(b'~');
        if tilde && !binary {
            return Err(bad("a binary literal is not allowed here"));
        }
        let nl = self.rest().iter().position(|&b| b == b'\n');
        let Some(nl) = nl else {
            return Err(bad("bad literal"));
        };
        let line = &self.rest()[..nl + 1];
        let Some((size, _)) = literal_announcement(line) else {
            return Err(bad("bad literal"));
        };
        // The announcement must be exactly `{digits[+]}` here.
        if !line.starts_with(b"{") {
            return Err(bad("bad literal"));
        }
        self.i += nl + 1;
        let size = usize::try_from(size).map_err(|_| bad("literal too large"))?;
        if self.rest().len() < size {
            return Err(bad("literal cut short"));
        }
        let data = &self.rest()[..size];
        if !tilde && data.contains(&0) {
            return Err(bad("NUL in a literal"));
        }
        self.i += size;
        Ok(data)
    }

    /// A quoted string or a literal, as bytes.
    pub(crate) fn string_bytes(&mut self) -> Result<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => Ok(self.literal(false)?.to_vec()),
            _ => Err(bad("expected a string")),
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r' | b'\n' | 0) => return Err(bad("unterminated quoted string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return Err(bad("bad escape in a quoted string")),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// A string, as UTF-8 text.
    pub(crate) fn string(&mut self) -> Result<String> {
        utf8(self.string_bytes()?)
    }

    /// `astring`: an atom (with `]`) or a string.
    pub(crate) fn astring(&mut self) -> Result<String> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    return Err(bad("expected an atom or a string"));
                }
                Ok(String::from_utf8_lossy(a).into_owned())
            }
        }
    }

    /// `nstring`: NIL or a string.
    pub(crate) fn nstring(&mut self) -> Result<Option<String>> {
        if self.eat_word("NIL") {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A LIST pattern: list-chars or a string.
    pub(crate) fn list_mailbox(&mut self) -> Result<String> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    return Err(bad("expected a mailbox pattern"));
                }
                Ok(String::from_utf8_lossy(a).into_owned())
            }
        }
    }

    /// The message data of APPEND: a literal, or (BINARY) a literal8.
    pub(crate) fn append_data(&mut self) -> Result<(Vec<u8>, bool)> {
        let binary = self.peek() == Some(b'~');
        Ok((self.literal(true)?.to_vec(), binary))
    }

    /// A parenthesised list of `item`s, possibly empty.
    pub(crate) fn paren_list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.expect(b'(')?;
        self.nest()?;
        let mut out = Vec::new();
        if !self.eat(b')') {
            loop {
                if out.len() >= 1000 {
                    return Err(bad("too many list items"));
                }
                out.push(item(self)?);
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        self.depth -= 1;
        Ok(out)
    }

    pub(crate) fn nest(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(bad("nested too deeply"));
        }
        Ok(())
    }

    /// A flag: `\Word` or a keyword atom.
    pub(crate) fn flag(&mut self) -> Result<String> {
        let backslash = self.eat(b'\\');
        let a = self.atom()?;
        if a.len() > 255 {
            return Err(bad("flag too long"));
        }
        if backslash {
            Ok(format!("\\{a}"))
        } else {
            Ok(a.to_string())
        }
    }

    /// `(flag flag …)`.
    pub(crate) fn flag_list(&mut self) -> Result<Vec<String>> {
        self.paren_list(Cursor::flag)
    }

    /// `date`: `d-Mon-yyyy`, bare or quoted; as (year, month, day).
    pub(crate) fn date(&mut self) -> Result<(i32, u32, u32)> {
        let quoted = self.eat(b'"');
        let text = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-');
        if quoted {
            self.expect(b'"')?;
        }
        parse_date(std::str::from_utf8(text).unwrap_or_default()).ok_or_else(|| bad("bad date"))
    }

    /// `date-time`: `"dd-Mon-yyyy hh:mm:ss +zzzz"`, as seconds since the
    /// epoch.
    pub(crate) fn date_time(&mut self) -> Result<i64> {
        let s = self.quoted()?;
        parse_date_time(std::str::from_utf8(&s).unwrap_or_default())
            .ok_or_else(|| bad("bad date-time"))
    }
}

pub(crate) fn utf8(b: Vec<u8>) -> Result<String> {
    String::from_utf8(b).map_err(|_| bad("text is not UTF-8"))
}

pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn parse_date(s: &str) -> Option<(i32, u32, u32)> {
    let mut it = s.split('-');
    let day: u32 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    let year: i32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&day) || !(1..=9999).contains(&year) {
        return None;
    }
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    Some((year, month, day))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let (y, m, d) = parse_date(date)?;
    let t: Vec<u32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, se] = t[..] else { return None };
    if h > 23 || mi > 59 || se > 60 || zone.len() != 5 {
        return None;
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    let offset = sign * (zh * 3600 + zm * 60);
    Some(
        days_from_civil(y, m, d) * 86_400
            + i64::from(h) * 3600
            + i64::from(mi) * 60
            + i64::from(se)
            - offset,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1-Feb-2024"), Some((2024, 2, 1)));
        assert_eq!(parse_date("31-dec-1999"), Some((1999, 12, 31)));
        assert_eq!(parse_date("32-Jan-2000"), None);
        assert_eq!(
            parse_date_time("17-Jul-1996 02:44:25 -0700"),
            Some(837_596_665)
        );
        assert_eq!(parse_date_time(" 1-Jan-1970 00:00:00 +0000"), Some(0));
        assert_eq!(parse_date_time("1-Jan-1970 00:00:00 0000"), None);
    }

    #[test]
    fn strings() {
        let mut c = Cursor::new(b"\"a \\\"b\\\\\" {3}\r\nxyz atom]x NIL");
        assert_eq!(c.astring().unwrap(), "a \"b\\");
        c.sp().unwrap();
        assert_eq!(c.astring().unwrap(), "xyz");
        c.sp().unwrap();
        assert_eq!(c.astring().unwrap(), "atom]x");
        c.sp().unwrap();
        assert_eq!(c.nstring().unwrap(), None);
        assert!(Cursor::new(b"\"a\\b\"").astring().is_err());
        assert!(Cursor::new(b"{5}\r\nab").astring().is_err());
        assert!(Cursor::new(b"~{2}\r\nab").string_bytes().is_err());
    }
}
