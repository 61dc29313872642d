//! The SMTP codec (RFC 5321 with the ESMTP extensions of the MTA issue),
//! pure: command lines in, [`Command`] values out; [`Reply`] values out as
//! bytes; reply lines from a peer back into values; and the DATA reader
//! that undoes dot-stuffing and ends only at CRLF.CRLF.
//!
//! The SMTP server, the SMTP client channel and LMTP all speak through
//! this module; none of it touches a socket.

use std::fmt;

/// Longest command line accepted, without its CRLF. RFC 5321 §4.5.3.1.4
/// allows 512 and lets extensions raise it; DSN parameters make real
/// commands longer, so a little room is given.
pub const MAX_COMMAND_LINE: usize = 2048;
/// Longest path (`<…>`) accepted in MAIL or RCPT.
pub const MAX_PATH: usize = 512;
/// Longest ENVID or ORCPT value, after xtext decoding (RFC 3461 says 100
/// characters for ENVID and 500 for ORCPT).
pub const MAX_DSN_VALUE: usize = 500;
/// Longest reply line read from a peer, and most lines in one reply.
pub const MAX_REPLY_LINE: usize = 4096;
pub const MAX_REPLY_LINES: usize = 100;

/// One server reply: a code, an RFC 3463 enhanced status code and lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `x.y.z`, written at the start of each line when present.
    pub enhanced: Option<&'static str>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greeting, EHLO, 354).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply as sent on the wire: `250-…` lines, then `250 …`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        let last = self.lines.len().saturating_sub(1);
        let empty = [String::new()];
        let lines = if self.lines.is_empty() {
            &empty[..]
        } else {
            &self.lines[..]
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // A line break inside a reply line would forge a second reply.
            let line = line.replace(['\r', '\n'], " ");
            match self.enhanced {
                Some(e) => out.push_str(&format!("{}{sep}{e} {line}\r\n", self.code)),
                None => out.push_str(&format!("{}{sep}{line}\r\n", self.code)),
            }
        }
        out.into_bytes()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.lines.join(" / ");
        match self.enhanced {
            Some(e) => write!(f, "{} {e} {text}", self.code),
            None => write!(f, "{} {text}", self.code),
        }
    }
}

/// The common refusals of the command parser.
fn syntax(text: &str) -> Reply {
    Reply::new(501, "5.5.4", text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// DSN NOTIFY: NEVER, or any of SUCCESS, FAILURE, DELAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub fn parse(value: &str) -> Option<Notify> {
        let mut n = Notify::default();
        for word in value.split(',') {
            match word.to_ascii_uppercase().as_str() {
                "NEVER" => n.never = true,
                "SUCCESS" => n.success = true,
                "FAILURE" => n.failure = true,
                "DELAY" => n.delay = true,
                _ => return None,
            }
        }
        // NEVER stands alone (RFC 3461 §4.1).
        if n.never && (n.success || n.failure || n.delay) {
            return None;
        }
        Some(n)
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.never {
            return f.write_str("NEVER");
        }
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect();
        f.write_str(&words.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID, xtext-decoded.
    pub envid: Option<String>,
    /// AUTH=, xtext-decoded (`<>` when the submitter is unknown).
    pub auth: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// ORCPT, xtext-decoded (`rfc822;user@example.com`).
    pub orcpt: Option<String>,
}

/// A mailbox from a path: `local@domain`, or `postmaster` alone in RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    /// Lower-cased; `None` only for the bare `postmaster` recipient.
    pub domain: Option<String>,
}

impl Mailbox {
    /// Whether the mailbox needs SMTPUTF8 (RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || self.domain.as_deref().is_some_and(|d| !d.is_ascii())
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(d) => write!(f, "{}@{d}", self.local),
            None => f.write_str(&self.local),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// `None` is the null reverse path `<>`.
    Mail {
        from: Option<Mailbox>,
        params: MailParams,
    },
    Rcpt {
        to: Mailbox,
        params: RcptParams,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help,
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    Etrn(String),
    /// LMTP's greeting (RFC 2033).
    Lhlo(String),
}

impl Command {
    /// Parses one command line (without CRLF). The error is the reply to
    /// send.
    pub fn parse(line: &[u8]) -> Result<Command, Reply> {
        if line.len() > MAX_COMMAND_LINE {
            return Err(Reply::new(500, "5.5.2", "Line too long"));
        }
        if line.contains(&0) || line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(Reply::new(500, "5.5.2", "NUL, CR or LF inside a command"));
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| Reply::new(500, "5.5.2", "Command is not UTF-8"))?;
        let (verb, rest) = match line.find(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, ""),
        };
        let verb = verb.to_ascii_uppercase();
        let arg = rest.trim();
        let no_args = |cmd: Command| {
            if arg.is_empty() {
                Ok(cmd)
            } else {
                Err(syntax("This command takes no arguments"))
            }
        };
        match verb.as_str() {
            "HELO" | "EHLO" | "LHLO" => {
                let domain = arg.split(' ').next().unwrap_or("");
                if domain.is_empty() {
                    return Err(syntax(&format!(
                        "{verb} requires a domain name or address literal"
                    )));
                }
                let d = domain.to_string();
                Ok(match verb.as_str() {
                    "HELO" => Command::Helo(d),
                    "EHLO" => Command::Ehlo(d),
                    _ => Command::Lhlo(d),
                })
            }
            "MAIL" => {
                let rest = strip_keyword(rest, "FROM:")
                    .ok_or_else(|| syntax("Syntax: MAIL FROM:<address>"))?;
                let (path, params) =
                    split_path(rest).map_err(|why| Reply::new(501, "5.1.7", why))?;
                let from = if path == "<>" {
                    None
                } else {
                    Some(parse_path(path, false).map_err(|why| Reply::new(501, "5.1.7", why))?)
                };
                Ok(Command::Mail {
                    from,
                    params: parse_mail_params(params)?,
                })
            }
            "RCPT" => {
                let rest = strip_keyword(rest, "TO:")
                    .ok_or_else(|| syntax("Syntax: RCPT TO:<address>"))?;
                let (path, params) =
                    split_path(rest).map_err(|why| Reply::new(501, "5.1.3", why))?;
                let to = parse_path(path, true).map_err(|why| Reply::new(501, "5.1.3", why))?;
                Ok(Command::Rcpt {
                    to,
                    params: parse_rcpt_params(params)?,
                })
            }
            "DATA" => no_args(Command::Data),
            "BDAT" => {
                let mut words = arg.split(' ').filter(|w| !w.is_empty());
                let size = words
                    .next()
                    .filter(|w| w.len() <= 19 && w.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| syntax("Syntax: BDAT size [LAST]"))?;
                let last = match words.next() {
                    None => false,
                    Some(w) if w.eq_ignore_ascii_case("LAST") => true,
                    Some(_) => return Err(syntax("Syntax: BDAT size [LAST]")),
                };
                if words.next().is_some() {
                    return Err(syntax("Syntax: BDAT size [LAST]"));
                }
                Ok(Command::Bdat { size, last })
            }
            "RSET" => no_args(Command::Rset),
            // NOOP, HELP and QUIT may carry a string that is ignored.
            "NOOP" => Ok(Command::Noop),
            "HELP" => Ok(Command::Help),
            "QUIT" => no_args(Command::Quit),
            "VRFY" if !arg.is_empty() => Ok(Command::Vrfy(arg.to_string())),
            "EXPN" if !arg.is_empty() => Ok(Command::Expn(arg.to_string())),
            "VRFY" | "EXPN" => Err(syntax(&format!("{verb} requires an argument"))),
            "STARTTLS" => no_args(Command::StartTls),
            "AUTH" => {
                let mut words = arg.split(' ').filter(|w| !w.is_empty());
                let mechanism = words
                    .next()
                    .ok_or_else(|| syntax("Syntax: AUTH mechanism [initial-response]"))?;
                let initial = words.next().map(str::to_string);
                if words.next().is_some() {
                    return Err(syntax("Syntax: AUTH mechanism [initial-response]"));
                }
                Ok(Command::Auth {
                    mechanism: mechanism.to_ascii_uppercase(),
                    initial,
                })
            }
            "ETRN" if !arg.is_empty() => Ok(Command::Etrn(arg.to_string())),
            "ETRN" => Err(syntax("Syntax: ETRN domain")),
            _ => Err(Reply::new(500, "5.5.1", "Command unrecognized")),
        }
    }
}

/// `FROM:` / `TO:` case-insensitively, then the path (a space after the
/// colon is tolerated, as most servers do).
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| rest[keyword.len()..].trim_start_matches(' '))
}

/// Splits `<path> params` at the closing `>` that is not inside quotes.
fn split_path(rest: &str) -> Result<(&str, &str), &'static str> {
    if !rest.starts_with('<') {
        return Err("The address must be enclosed in <>");
    }
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let (path, params) = rest.split_at(i + 1);
                if path.len() > MAX_PATH {
                    return Err("Address too long");
                }
                if !params.is_empty() && !params.starts_with(' ') {
                    return Err("Junk after the address");
                }
                return Ok((path, params.trim()));
            }
            _ => {}
        }
    }
    Err("Unterminated address")
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// Parses `<[@route,@route:]local@domain>`; the route is dropped as RFC
/// 5321 §4.1.1.3 allows.
fn parse_path(path: &str, rcpt: bool) -> Result<Mailbox, &'static str> {
    let inner = path
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .ok_or("The address must be enclosed in <>")?;
    let inner = if inner.starts_with('@') {
        inner
            .split_once(':')
            .map(|(_, rest)| rest)
            .ok_or("Bad source route")?
    } else {
        inner
    };
    if inner.is_empty() {
        return Err("Empty address");
    }
    if rcpt && inner.eq_ignore_ascii_case("postmaster") {
        return Ok(Mailbox {
            local: "postmaster".into(),
            domain: None,
        });
    }
    let (local, domain) = if let Some(quoted) = inner.strip_prefix('"') {
        let mut escaped = false;
        let mut end = None;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                c if c.is_ascii_control() => return Err("Control character in the address"),
                _ => {}
            }
        }
        let end = end.ok_or("Unterminated quoted local part")?;
        let rest = &quoted[end + 1..];
        let domain = rest.strip_prefix('@').ok_or("The address needs @domain")?;
        (&inner[..end + 2], domain)
    } else {
        let (local, domain) = inner.rsplit_once('@').ok_or("The address needs @domain")?;
        if local.is_empty() || !local.chars().all(|c| is_atext(c) || c == '.') {
            return Err("Bad character in the local part");
        }
        (local, domain)
    };
    if !valid_domain(domain) {
        return Err("Bad domain in the address");
    }
    Ok(Mailbox {
        local: local.to_string(),
        domain: Some(domain.to_lowercase()),
    })
}

/// A domain name (letters, digits, hyphens, UTF-8; dot-separated labels)
/// or an address literal `[192.0.2.1]` / `[IPv6:…]`.
pub fn valid_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > 255 {
        return false;
    }
    if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return match lit.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("IPv6:") => {
                lit[5..].parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => lit.parse::<std::net::Ipv4Addr>().is_ok(),
        };
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
    })
}

/// Decodes RFC 3461 xtext (`+HH` for anything outside `!`..`~` and `+`,
/// `=`).
pub fn xtext_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = value.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'=' => return None,
            b @ 33..=126 => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes RFC 3461 xtext.
pub fn xtext_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

fn unknown_param(key: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Parameter {key} not recognized"))
}

fn params(text: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    text.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (w.to_ascii_uppercase(), None),
        })
}

fn dsn_value(key: &str, value: Option<&str>) -> Result<String, Reply> {
    let decoded = value
        .and_then(xtext_decode)
        .ok_or_else(|| syntax(&format!("Bad {key} value")))?;
    if decoded.is_empty()
        || decoded.len() > MAX_DSN_VALUE
        || decoded.contains(|c: char| c.is_control())
    {
        return Err(syntax(&format!("Bad {key} value")));
    }
    Ok(decoded)
}

fn parse_mail_params(text: &str) -> Result<MailParams, Reply> {
    let mut p = MailParams::default();
    for (key, value) in params(text) {
        let dup = || syntax(&format!("{key} given twice"));
        match (key.as_str(), value) {
            ("SIZE", Some(v)) if p.size.is_none() => {
                p.size = Some(v.parse().map_err(|_| syntax("Bad SIZE value"))?);
            }
            ("BODY", Some(v)) if p.body.is_none() => {
                p.body = Some(match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(syntax("Bad BODY value")),
                });
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(v)) if p.ret.is_none() => {
                p.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(syntax("Bad RET value")),
                });
            }
            ("ENVID", v) if p.envid.is_none() => p.envid = Some(dsn_value("ENVID", v)?),
            ("AUTH", v) if p.auth.is_none() => p.auth = Some(dsn_value("AUTH", v)?),
            ("SIZE" | "BODY" | "RET" | "ENVID" | "AUTH", Some(_)) => return Err(dup()),
            _ => return Err(unknown_param(&key)),
        }
    }
    Ok(p)
}

fn parse_rcpt_params(text: &str) -> Result<RcptParams, Reply> {
    let mut p = RcptParams::default();
    for (key, value) in params(text) {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) if p.notify.is_none() => {
                p.notify = Some(Notify::parse(v).ok_or_else(|| syntax("Bad NOTIFY value"))?);
            }
            ("ORCPT", v) if p.orcpt.is_none() => {
                let orcpt = dsn_value("ORCPT", v)?;
                // addr-type ";" address (RFC 3461 §4.2).
                if !orcpt
                    .split_once(';')
                    .is_some_and(|(t, a)| !t.is_empty() && !a.is_empty())
                {
                    return Err(syntax("Bad ORCPT value"));
                }
                p.orcpt = Some(orcpt);
            }
            ("NOTIFY" | "ORCPT", Some(_)) => return Err(syntax(&format!("{key} given twice"))),
            _ => return Err(unknown_param(&key)),
        }
    }
    Ok(p)
}

/// One line of a peer's reply: the code, whether more lines follow and
/// the text.
pub fn parse_reply_line(line: &[u8]) -> Option<(u16, bool, String)> {
    if line.len() > MAX_REPLY_LINE || line.len() < 3 {
        return None;
    }
    let code = std::str::from_utf8(&line[..3]).ok()?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(b'2'..=b'5').contains(&line[0]) {
        return None;
    }
    let more = match line.get(3) {
        None | Some(b' ') => false,
        Some(b'-') => true,
        Some(_) => return None,
    };
    let text = String::from_utf8_lossy(line.get(4..).unwrap_or(b"")).into_owned();
    Some((code.parse().ok()?, more, text))
}

/// Collects a multi-line reply from a peer, line by line.
#[derive(Debug, Default)]
pub struct ReplyReader {
    code: Option<u16>,
    lines: Vec<String>,
}

/// A reply from a peer: the code and its lines (enhanced codes left in
/// the text, as diagnostics quote them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl fmt::Display for PeerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" "))
    }
}

impl ReplyReader {
    /// Feeds one line (without CRLF); a whole reply comes back after its
    /// last line. A malformed line, a code that changes mid-reply or too
    /// many lines is an error (the connection is not worth keeping).
    pub fn feed(&mut self, line: &[u8]) -> Result<Option<PeerReply>, String> {
        let (code, more, text) = parse_reply_line(line).ok_or_else(|| {
            format!(
                "malformed reply line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )
        })?;
        if self.code.is_some_and(|c| c != code) {
            return Err("reply code changed inside a multi-line reply".into());
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err("reply has too many lines".into());
        }
        self.code = Some(code);
        self.lines.push(text);
        if more {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(PeerReply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// After CRLF (or at the start): a dot here is stuffing or the end.
    LineStart,
    /// After a dot at the start of a line.
    Dot,
    /// After `CRLF.CR`.
    DotCr,
    Mid,
    /// After a CR that has not yet met its LF.
    Cr,
}

/// Reads the text after DATA: undoes dot-stuffing and ends at CRLF.CRLF
/// and nothing else, so `LF.LF`, `LF.CRLF` or `CR.CR` stay inside the
/// message and cannot start a second one (SMTP smuggling). Bare CR and LF
/// are kept and counted, for the session to refuse when its policy says so.
#[derive(Debug, Clone)]
pub struct DataReader {
    state: DataState,
    /// Bytes of message seen (whether or not kept).
    pub size: u64,
    /// Whether any CR or LF not part of a CRLF pair was seen.
    pub bare_line_break: bool,
    /// Whether a NUL byte was seen.
    pub nul: bool,
    limit: u64,
}

/// What [`DataReader::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataProgress {
    /// Input bytes used; what follows the end belongs to the next command.
    pub consumed: usize,
    pub done: bool,
}

impl DataReader {
    /// `limit` is the most message bytes kept; past it, the text is read
    /// to its end and dropped so the session can answer 552 in sync.
    pub fn new(limit: u64) -> DataReader {
        DataReader {
            state: DataState::LineStart,
            size: 0,
            bare_line_break: false,
            nul: false,
            limit,
        }
    }

    pub fn over_limit(&self) -> bool {
        self.size > self.limit
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        for &b in bytes {
            self.size += 1;
            if self.size <= self.limit {
                out.push(b);
            }
        }
    }

    /// Feeds received bytes; message bytes are appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataProgress {
        use DataState::*;
        for (i, &b) in input.iter().enumerate() {
            if b == 0 {
                self.nul = true;
            }
            self.state = match (self.state, b) {
                (LineStart, b'.') => Dot,
                (Dot, b'\r') => DotCr,
                (DotCr, b'\n') => {
                    self.state = LineStart;
                    return DataProgress {
                        consumed: i + 1,
                        done: true,
                    };
                }
                // `CRLF.CR` then not LF: the dot was stuffing, the CR is bare.
                (DotCr, _) => {
                    self.bare_line_break = true;
                    self.emit(out, b"\r");
                    self.after_mid(b, out)
                }
                (LineStart | Dot | Mid, _) => self.after_mid(b, out),
                (Cr, b'\n') => {
                    self.emit(out, b"\r\n");
                    LineStart
                }
                (Cr, _) => {
                    self.bare_line_break = true;
                    self.emit(out, b"\r");
                    self.after_mid(b, out)
                }
            };
        }
        DataProgress {
            consumed: input.len(),
            done: false,
        }
    }

    /// An ordinary byte in the middle of a line.
    fn after_mid(&mut self, b: u8, out: &mut Vec<u8>) -> DataState {
        match b {
            b'\r' => DataState::Cr,
            b'\n' => {
                // A bare LF does not start a line: a dot after it is text.
                self.bare_line_break = true;
                self.emit(out, b"\n");
                DataState::Mid
            }
            _ => {
                self.emit(out, &[b]);
                DataState::Mid
            }
        }
    }
}

/// Dot-stuffs a message for sending after DATA and appends the end
/// marker. Bare CR and LF become CRLF, so a receiver that is lenient about
/// line ends cannot see an end of data inside the message; a message not
/// ending in a line break gets one.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut line_start = true;
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += if message[i..].starts_with(b"\r\n") {
                    2
                } else {
                    1
                };
                line_start = true;
                continue;
            }
            b'.' if line_start => out.extend_from_slice(b".."),
            b => out.push(b),
        }
        line_start = false;
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbox(s: &str) -> Mailbox {
        let (l, d) = s.rsplit_once('@').unwrap();
        Mailbox {
            local: l.into(),
            domain: Some(d.into()),
        }
    }

    #[test]
    fn commands() {
        assert_eq!(
            Command::parse(b"ehlo client.example.com"),
            Ok(Command::Ehlo("client.example.com".into()))
        );
        assert_eq!(
            Command::parse(b"HELO [127.0.0.2]"),
            Ok(Command::Helo("[127.0.0.2]".into()))
        );
        assert_eq!(Command::parse(b"EHLO").unwrap_err().code, 501);
        assert_eq!(
            Command::parse(
                b"MAIL FROM:<Joe@Example.COM> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1"
            ),
            Ok(Command::Mail {
                from: Some(mbox("Joe@example.com")),
                params: MailParams {
                    size: Some(1000),
                    body: Some(Body::EightBitMime),
                    ret: Some(Ret::Hdrs),
                    envid: Some("QQ+1".into()),
                    ..Default::default()
                }
            })
        );
        assert_eq!(
            Command::parse(b"mail from: <>"),
            Ok(Command::Mail {
                from: None,
                params: MailParams::default()
            })
        );
        assert_eq!(
            Command::parse(b"RCPT TO:<@relay.example:bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org"),
            Ok(Command::Rcpt {
                to: mbox("bob@example.org"),
                params: RcptParams {
                    notify: Some(Notify { success: true, failure: true, ..Default::default() }),
                    orcpt: Some("rfc822;bob@example.org".into())
                }
            })
        );
        assert_eq!(
            Command::parse(b"RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt {
                to: Mailbox {
                    local: "postmaster".into(),
                    domain: None
                },
                params: RcptParams::default()
            })
        );
        assert_eq!(
            Command::parse(b"RCPT TO:<\"a > b\"@example.org>"),
            Ok(Command::Rcpt {
                to: mbox("\"a > b\"@example.org"),
                params: RcptParams::default()
            })
        );
        assert_eq!(
            Command::parse(b"BDAT 1000 LAST"),
            Ok(Command::Bdat {
                size: 1000,
                last: true
            })
        );
        assert_eq!(
            Command::parse(b"BDAT 0"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
        assert_eq!(
            Command::parse(b"AUTH plain AGJvYgBzZWNyZXQ="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGJvYgBzZWNyZXQ=".into())
            })
        );
        assert_eq!(Command::parse(b"NOOP anything"), Ok(Command::Noop));
        assert_eq!(Command::parse(b"STARTTLS"), Ok(Command::StartTls));
        assert_eq!(
            Command::parse(b"LHLO store.example"),
            Ok(Command::Lhlo("store.example".into()))
        );
    }

    #[test]
    fn refusals_carry_the_right_codes() {
        let code = |line: &[u8]| Command::parse(line).unwrap_err();
        assert_eq!(code(b"FROB").code, 500);
        assert_eq!(code(b"MAIL FROM:joe@example.com").enhanced, Some("5.1.7"));
        assert_eq!(code(b"RCPT TO:<bob>").enhanced, Some("5.1.3"));
        assert_eq!(code(b"RCPT TO:<bob@exa mple.org>").code, 501);
        assert_eq!(code(b"RCPT TO:<bob@-bad.org>").code, 501);
        assert_eq!(code(b"MAIL FROM:<a@b.c> FROB=1").code, 555);
        assert_eq!(code(b"MAIL FROM:<a@b.c> SIZE=1 SIZE=2").code, 501);
        assert_eq!(code(b"MAIL FROM:<a@b.c> SIZE=x").code, 501);
        assert_eq!(code(b"RCPT TO:<a@b.c> NOTIFY=NEVER,SUCCESS").code, 501);
        assert_eq!(code(b"RCPT TO:<a@b.c> ORCPT=nosemicolon").code, 501);
        assert_eq!(code(b"MAIL FROM:<a@b.c> ENVID=bad+zz").code, 501);
        assert_eq!(code(b"DATA now").code, 501);
        assert_eq!(code(b"BDAT 99999999999999999999999").code, 501);
        assert_eq!(code(b"QUIT\0").code, 500);
        assert_eq!(code(&vec![b'A'; MAX_COMMAND_LINE + 1]).code, 500);
        let long = format!("RCPT TO:<{}@example.org>", "a".repeat(MAX_PATH));
        assert_eq!(code(long.as_bytes()).code, 501);
    }

    #[test]
    fn utf8_addresses_are_seen() {
        let Ok(Command::Rcpt { to, .. }) = Command::parse("RCPT TO:<José@exämple.org>".as_bytes())
        else {
            panic!()
        };
        assert!(to.is_utf8());
        let Ok(Command::Mail { params, .. }) = Command::parse(b"MAIL FROM:<a@b.c> SMTPUTF8") else {
            panic!()
        };
        assert!(params.smtputf8);
    }

    #[test]
    fn replies_encode_and_read_back() {
        let r = Reply::plain(
            250,
            vec![
                "mail.example.com".into(),
                "PIPELINING".into(),
                "SIZE 1000".into(),
            ],
        );
        assert_eq!(
            r.encode(),
            b"250-mail.example.com\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
        );
        assert_eq!(
            Reply::new(550, "5.1.1", "No such user\r\n250 ok").encode(),
            b"550 5.1.1 No such user  250 ok\r\n"
        );
        let mut reader = ReplyReader::default();
        let wire = r.encode();
        let mut got = None;
        for line in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            got = reader.feed(line.strip_suffix(b"\r").unwrap()).unwrap();
        }
        assert_eq!(
            got,
            Some(PeerReply {
                code: 250,
                lines: vec![
                    "mail.example.com".into(),
                    "PIPELINING".into(),
                    "SIZE 1000".into()
                ]
            })
        );
        assert!(ReplyReader::default().feed(b"250-a").unwrap().is_none());
        let mut mixed = ReplyReader::default();
        mixed.feed(b"250-a").unwrap();
        assert!(mixed.feed(b"550 b").is_err());
        assert!(ReplyReader::default().feed(b"hello").is_err());
        assert_eq!(
            ReplyReader::default().feed(b"220").unwrap().unwrap().code,
            220
        );
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb+3Dc"), Some("a+b=c".into()));
        assert_eq!(xtext_decode("a+2b"), None);
        assert_eq!(xtext_decode("a=b"), None);
        assert_eq!(xtext_encode("rfc822;a+b=c d"), "rfc822;a+2Bb+3Dc+20d");
        assert_eq!(
            xtext_decode(&xtext_encode("Zürich+1")),
            Some("Zürich+1".into())
        );
    }

    fn read_data(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>, DataReader) {
        let mut reader = DataReader::new(1 << 20);
        let mut out = Vec::new();
        for (n, chunk) in chunks.iter().enumerate() {
            let p = reader.feed(chunk, &mut out);
            if p.done {
                let before: usize = chunks[..n].iter().map(|c| c.len()).sum();
                return (out, Some(before + p.consumed), reader);
            }
        }
        (out, None, reader)
    }

    #[test]
    fn data_ends_only_at_crlf_dot_crlf() {
        let (msg, end, r) = read_data(&[b"Subject: x\r\n\r\n..dotted\r\n.\r\nQUIT\r\n"]);
        assert_eq!(msg, b"Subject: x\r\n\r\n.dotted\r\n");
        assert_eq!(end, Some(27));
        assert!(!r.bare_line_break);
        // Split at every awkward place.
        let (msg, end, _) = read_data(&[b"a\r", b"\n", b".", b"\r", b"\n"]);
        assert_eq!((msg.as_slice(), end), (&b"a\r\n"[..], Some(6)));
        // The smuggling shapes stay inside the message.
        for smuggle in [
            &b"a\n.\nMAIL FROM:<x@y.z>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y.z>\r\n",
            b"a\r\n.\nMAIL\r\n",
            b"a\r.\r\nMAIL\r\n",
        ] {
            let mut input = smuggle.to_vec();
            input.extend_from_slice(b"\r\n.\r\n");
            let (msg, end, r) = read_data(&[&input]);
            assert_eq!(
                end,
                Some(input.len()),
                "{:?}",
                String::from_utf8_lossy(smuggle)
            );
            assert!(r.bare_line_break);
            assert!(msg.windows(4).any(|w| w == b"MAIL"));
        }
        // The end marker right at the start: an empty message.
        assert_eq!(read_data(&[b".\r\n"]).1, Some(3));
        // A dot line with text is stuffing, not an end.
        assert_eq!(read_data(&[b".x\r\n.\r\n"]).0, b"x\r\n");
        assert_eq!(read_data(&[b"a\r\n.\rb\r\n.\r\n"]).0, b"a\r\n\rb\r\n");
    }

    #[test]
    fn data_over_the_limit_is_read_to_its_end() {
        let mut reader = DataReader::new(4);
        let mut out = Vec::new();
        let p = reader.feed(b"123456789\r\n.\r\n", &mut out);
        assert!(p.done);
        assert!(reader.over_limit());
        assert_eq!(out, b"1234");
    }

    #[test]
    fn dot_stuffing_round_trips() {
        for msg in [&b"a\r\n.b\r\n..\r\n"[..], b".", b"x", b"", b"line\r\n.\r\n"] {
            let wire = dot_stuff(msg);
            let (back, end, r) = read_data(&[&wire]);
            assert_eq!(end, Some(wire.len()));
            assert!(!r.bare_line_break);
            let mut expect = msg.to_vec();
            if !msg.is_empty() && !msg.ends_with(b"\r\n") {
                expect.extend_from_slice(b"\r\n");
            }
            assert_eq!(back, expect);
        }
        // Bare line breaks go out as CRLF, stuffed like any line start.
        assert_eq!(dot_stuff(b"a\n.\nb\r.\r"), b"a\r\n..\r\nb\r\n..\r\n.\r\n");
    }

    #[test]
    fn parsers_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet: &[u8] =
            b"<>@:;=+,. \"\\\r\n\0MAILFROMRCPTTOBDATSIZENOTIFYORCPT0123456789xyz\xc3\xa9";
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 60) as usize;
            let line: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
                .collect();
            let _ = Command::parse(&line);
            let _ = parse_reply_line(&line);
            let mut out = Vec::new();
            let _ = DataReader::new(16).feed(&line, &mut out);
        }
    }
}
