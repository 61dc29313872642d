//! The mappings file (`config/mappings`): named tables of `pattern
//! template` entries that the MTA consults for access control
//! (`PORT_ACCESS`, `ORIG_SEND_ACCESS`, `INTERNAL_IP`…) and rewriting
//! (original.md §2). Pure: text in, tables out, probe strings in, results
//! out.
//!
//! Patterns match case-insensitively: `*` any run (saved), `%` one
//! character (saved), `$A* $B* $D* $H* $X* $O* $S* $T*` and `$[set]*` runs
//! of a class (`%` for one), `$(a.b.c.d/n)` an IPv4 address in a prefix,
//! `$n*` the same text as wildcard n, `$_` makes the next wildcard lazy and
//! `$@` leaves it unsaved; `$*`, `$%`, `$ `, `$$` are literal. Templates
//! give `$n` (wildcard n), `$|TABLE;string|` (another table), literals
//! (`$ ` a space, `$$` a dollar), and flags: `$Y` yes, `$N` no, `$E` end,
//! `$C` go on with the next entry, `$L` as `$C` plus one more pass from the
//! top, `$R` restart from the top, `$:x`/`$;x` apply the entry only when
//! the caller's flag x is set/clear, and other letters (and `$<`, `$>`)
//! kept as flags for the caller (`$B` bitbucket, `$H` hold, `$D` delay…:
//! [`crate::access`] reads them).

use std::collections::BTreeMap;

/// Limits from the original (6.3): pattern 256, template 1024 characters.
pub const MAX_PATTERN: usize = 256;
pub const MAX_TEMPLATE: usize = 1024;
/// Restarts allowed before a looping table is cut short.
const MAX_RESTARTS: usize = 10;
/// Matching steps before a pathological pattern is given up on.
const MAX_STEPS: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mappings line {line}: {reason}")]
pub struct MappingError {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    Alpha,
    Binary,
    Decimal,
    Hex,
    Octal,
    Symbol,
    Space,
    Set(Vec<(char, char)>),
}

impl Class {
    fn has(&self, c: char) -> bool {
        match self {
            Class::Alpha => c.is_ascii_alphabetic(),
            Class::Binary => c == '0' || c == '1',
            Class::Decimal => c.is_ascii_digit(),
            Class::Hex => c.is_ascii_hexdigit(),
            Class::Octal => ('0'..='7').contains(&c),
            Class::Symbol => c.is_ascii_alphanumeric() || c == '_' || c == '$',
            Class::Space => c == ' ' || c == '\t' || c == '\u{b}',
            Class::Set(ranges) => {
                let l = c.to_ascii_lowercase();
                ranges
                    .iter()
                    .any(|(a, b)| (*a..=*b).contains(&c) || (*a..=*b).contains(&l))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(char),
    /// A wildcard: any character (`None`) or a class; one or many.
    Wild {
        class: Option<Class>,
        many: bool,
        lazy: bool,
        save: bool,
    },
    Ip {
        net: u32,
        bits: u8,
        save: bool,
    },
    BackRef(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingEntry {
    pub pattern: String,
    pub template: String,
    pub line: usize,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MappingTable {
    pub name: String,
    pub entries: Vec<MappingEntry>,
}

/// Every table of a mappings file, by upper-case name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mappings {
    tables: BTreeMap<String, MappingTable>,
}

/// What a table says about a probe string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingResult {
    /// The output with flags taken out (a reply text, a new address…).
    pub output: String,
    /// Flag letters set, upper-case (`Y`, `N`, `T`…).
    pub flags: Vec<char>,
}

impl MappingResult {
    pub fn has(&self, flag: char) -> bool {
        self.flags.contains(&flag.to_ascii_uppercase())
    }
    /// `$Y` without `$N`.
    pub fn yes(&self) -> bool {
        self.has('Y') && !self.has('N')
    }
    /// `$N` or `$F` (reject).
    pub fn no(&self) -> bool {
        self.has('N') || self.has('F')
    }
}

impl Mappings {
    /// Reads a mappings file. A table name starts in column 1 with a
    /// letter; its entries are indented; `!` in column 1 is a comment;
    /// blank lines are allowed anywhere (editions differ on them).
    pub fn parse(text: &str) -> Result<Mappings, MappingError> {
        let mut tables: BTreeMap<String, MappingTable> = BTreeMap::new();
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: String| MappingError { line, reason };
            if raw.trim().is_empty() || raw.starts_with('!') {
                continue;
            }
            if !raw.starts_with([' ', '\t']) {
                let name = raw.trim();
                if !name.starts_with(|c: char| c.is_ascii_alphabetic())
                    || name.chars().any(|c| c.is_whitespace())
                {
                    return Err(err(format!(
                        "{name:?} is not a table name (a letter first, no spaces)"
                    )));
                }
                let key = name.to_ascii_uppercase();
                if tables.contains_key(&key) {
                    return Err(err(format!("table {name} appears twice")));
                }
                tables.insert(
                    key.clone(),
                    MappingTable {
                        name: name.to_string(),
                        entries: Vec::new(),
                    },
                );
                current = Some(key);
                continue;
            }
            let Some(table) = current.as_ref() else {
                return Err(err("an entry before any table name".into()));
            };
            let (pattern, template) = split_entry(raw.trim())
                .ok_or_else(|| err("expected pattern and template".into()))?;
            if pattern.chars().count() > MAX_PATTERN {
                return Err(err(format!("pattern longer than {MAX_PATTERN} characters")));
            }
            if template.chars().count() > MAX_TEMPLATE {
                return Err(err(format!(
                    "template longer than {MAX_TEMPLATE} characters"
                )));
            }
            let tokens = compile(&pattern).map_err(err)?;
            tables
                .get_mut(table)
                .expect("current table exists")
                .entries
                .push(MappingEntry {
                    pattern,
                    template,
                    line,
                    tokens,
                });
        }
        Ok(Mappings { tables })
    }

    pub fn table(&self, name: &str) -> Option<&MappingTable> {
        self.tables.get(&name.to_ascii_uppercase())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tables.values().map(|t| t.name.as_str())
    }

    /// Looks `input` up in table `name`; `None` when no entry matched
    /// (or the table does not exist).
    pub fn lookup(&self, name: &str, input: &str) -> Option<MappingResult> {
        self.lookup_depth(name, input, &[], 0)
    }

    /// As [`lookup`](Self::lookup), with the caller's flags set for the
    /// templates' `$:x` (entry applies only if x is set) and `$;x` (only
    /// if it is clear) tests.
    pub fn lookup_flagged(&self, name: &str, input: &str, set: &[char]) -> Option<MappingResult> {
        self.lookup_depth(name, input, set, 0)
    }

    fn lookup_depth(
        &self,
        name: &str,
        input: &str,
        set: &[char],
        depth: usize,
    ) -> Option<MappingResult> {
        if depth > 8 {
            return None; // tables calling each other in a circle
        }
        let table = self.table(name)?;
        let mut input = input.to_string();
        let mut last: Option<MappingResult> = None;
        let mut restarts = 0;
        let mut prev_len = usize::MAX;
        let mut one_more_pass = false;
        let mut i = 0;
        loop {
            if i >= table.entries.len() {
                if one_more_pass {
                    one_more_pass = false;
                    i = 0;
                    continue;
                }
                return last;
            }
            let e = &table.entries[i];
            i += 1;
            let Some(captures) = matches(&e.tokens, &input) else {
                continue;
            };
            // A template that fails (a nested lookup without an answer) makes
            // its entry not apply; `$C`/`$L`/`$R` written before the failing
            // part only say how to go on, which is the same here: on.
            let Some(r) = self.expand(&e.template, &captures, set, depth) else {
                continue;
            };
            // The last of `$E $C $L $R` decides (`$E` is the default).
            let flow = r
                .flags
                .iter()
                .rev()
                .copied()
                .find(|f| "CRLE".contains(*f))
                .unwrap_or('E');
            let (cont, restart, again) = (flow == 'C', flow == 'R', flow == 'L');
            let flags: Vec<char> = r
                .flags
                .iter()
                .copied()
                .filter(|f| !"CRLE".contains(*f))
                .collect();
            let result = MappingResult {
                output: r.output,
                flags,
            };
            if !(cont || restart || again) {
                return Some(result);
            }
            // The loop guard of the original: a restart whose string is not
            // shorter than the last one counts; more than ten end it.
            if result.output.len() >= prev_len {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Some(result);
                }
            } else {
                restarts = 0;
            }
            prev_len = result.output.len();
            input = result.output.clone();
            last = Some(result);
            if restart {
                i = 0;
            } else if again {
                one_more_pass = true;
            }
        }
    }

    /// A template with its captures; `None` when a part of it fails: a
    /// nested `$|TABLE;string|` that finds nothing or answers `$N`, or a
    /// lookup kind this MTA does not have (general database, LDAP URL,
    /// shared library).
    fn expand(
        &self,
        template: &str,
        captures: &[String],
        set: &[char],
        depth: usize,
    ) -> Option<MappingResult> {
        let chars: Vec<char> = template.chars().collect();
        let mut out = String::new();
        let mut flags = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c != '$' {
                out.push(c);
                i += 1;
                continue;
            }
            let Some(&n) = chars.get(i + 1) else {
                out.push('$');
                break;
            };
            i += 2;
            match n {
                d if d.is_ascii_digit() => {
                    let mut num = d.to_digit(10).unwrap_or(0) as usize;
                    while let Some(x) = chars.get(i).and_then(|c| c.to_digit(10)) {
                        num = num.saturating_mul(10).saturating_add(x as usize);
                        i += 1;
                    }
                    out.push_str(captures.get(num).map_or("", String::as_str));
                }
                '|' => {
                    let end = chars[i..].iter().position(|c| *c == '|')?;
                    let call: String = chars[i..i + end].iter().collect();
                    i += end + 1;
                    let (table, arg) = call.split_once(';')?;
                    let arg = self.expand(arg, captures, set, depth)?.output;
                    let r = self.lookup_depth(table.trim(), &arg, set, depth + 1)?;
                    if r.no() {
                        return None;
                    }
                    out.push_str(&r.output);
                }
                '{' | '[' | ']' | '}' | '?' | '(' => return None,
                // `$:x` / `$;x`: the entry applies only if flag x is set /
                // clear.
                ':' | ';' => {
                    let flag = chars.get(i)?.to_ascii_uppercase();
                    i += 1;
                    if (n == ':') != set.contains(&flag) {
                        return None;
                    }
                }
                l if l.is_ascii_alphabetic() => flags.push(l.to_ascii_uppercase()),
                // The access tables' log-on-match and log-on-reject.
                '<' | '>' => flags.push(n),
                other => out.push(other), // $$ $  $* $% and the like
            }
        }
        Some(MappingResult { output: out, flags })
    }
}

/// Splits `pattern template` at the first whitespace not quoted by `$`.
fn split_entry(s: &str) -> Option<(String, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '$' => i += 2,
            c if c.is_whitespace() => {
                let pattern: String = chars[..i].iter().collect();
                let template: String = chars[i..].iter().collect::<String>().trim().to_string();
                return (!pattern.is_empty()).then_some((pattern, template));
            }
            _ => i += 1,
        }
    }
    // A pattern alone maps to the empty string.
    (!s.is_empty()).then(|| (s.to_string(), String::new()))
}

fn compile(p: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let (mut lazy, mut save) = (false, true);
    let wild = |class: Option<Class>, many: bool, lazy: &mut bool, save: &mut bool| {
        let t = Token::Wild {
            class,
            many,
            lazy: *lazy,
            save: *save,
        };
        *lazy = false;
        *save = true;
        t
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' => {
                out.push(wild(None, true, &mut lazy, &mut save));
                i += 1;
            }
            '%' => {
                out.push(wild(None, false, &mut lazy, &mut save));
                i += 1;
            }
            '$' => {
                let n = *chars.get(i + 1).ok_or("a pattern ends with $")?;
                i += 2;
                let class = match n {
                    'A' | 'a' => Some(Class::Alpha),
                    'B' | 'b' => Some(Class::Binary),
                    'D' | 'd' => Some(Class::Decimal),
                    'H' | 'h' | 'X' | 'x' => Some(Class::Hex),
                    'O' | 'o' => Some(Class::Octal),
                    'S' | 's' => Some(Class::Symbol),
                    'T' | 't' => Some(Class::Space),
                    _ => None,
                };
                if let Some(class) = class {
                    let many = match chars.get(i) {
                        Some('*') => true,
                        Some('%') => false,
                        _ => return Err(format!("${n} must be followed by * or %")),
                    };
                    i += 1;
                    out.push(wild(Some(class), many, &mut lazy, &mut save));
                    continue;
                }
                match n {
                    '*' | '%' | ' ' | '\t' | '$' => out.push(Token::Lit(n)),
                    '_' => lazy = true,
                    '@' => save = false,
                    '^' => save = true,
                    '[' => {
                        let mut ranges = Vec::new();
                        loop {
                            let Some(&c) = chars.get(i) else {
                                return Err("unterminated $[ set".into());
                            };
                            i += 1;
                            if c == ']' {
                                break;
                            }
                            let c = if c == '\\' {
                                let q = *chars.get(i).ok_or("unterminated $[ set")?;
                                i += 1;
                                q
                            } else {
                                c
                            };
                            if chars.get(i) == Some(&'-')
                                && chars.get(i + 1).is_some_and(|x| *x != ']')
                            {
                                let hi = chars[i + 1];
                                i += 2;
                                ranges.push((c.min(hi), c.max(hi)));
                            } else {
                                ranges.push((c, c));
                            }
                        }
                        let many = match chars.get(i) {
                            Some('*') => true,
                            Some('%') => false,
                            _ => return Err("a $[set] must be followed by * or %".into()),
                        };
                        i += 1;
                        out.push(wild(Some(Class::Set(ranges)), many, &mut lazy, &mut save));
                    }
                    '(' => {
                        let end = chars[i..]
                            .iter()
                            .position(|c| *c == ')')
                            .ok_or("unterminated $( IP prefix")?;
                        let spec: String = chars[i..i + end].iter().collect();
                        i += end + 1;
                        let (net, bits) = spec.split_once('/').unwrap_or((spec.as_str(), "32"));
                        let net: std::net::Ipv4Addr = net
                            .trim()
                            .parse()
                            .map_err(|_| format!("{spec:?} is not an IPv4 prefix"))?;
                        let bits: u8 = bits
                            .trim()
                            .parse()
                            .ok()
                            .filter(|b| *b <= 32)
                            .ok_or(format!("{spec:?} has a bad prefix length"))?;
                        out.push(Token::Ip {
                            net: u32::from(net),
                            bits,
                            save,
                        });
                        save = true;
                    }
                    d if d.is_ascii_digit() => {
                        let mut num = d.to_digit(10).unwrap_or(0) as usize;
                        while let Some(x) = chars.get(i).and_then(|c| c.to_digit(10)) {
                            num = num.saturating_mul(10).saturating_add(x as usize);
                            i += 1;
                        }
                        if num > MAX_PATTERN {
                            return Err(format!("${num}* refers to a wildcard that cannot exist"));
                        }
                        if chars.get(i) != Some(&'*') {
                            return Err(format!("${num} in a pattern must be followed by *"));
                        }
                        i += 1;
                        out.push(Token::BackRef(num));
                    }
                    other => return Err(format!("${other} is not understood in a pattern")),
                }
            }
            _ => {
                out.push(Token::Lit(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn eq_ci(a: char, b: char) -> bool {
    a == b || a.to_lowercase().eq(b.to_lowercase())
}

/// Matches one mapping pattern against a string, as `imsimta test
/// -match` shows it: the wildcards' captures ($0, $1, …) when it matches.
/// A bad pattern is an error.
pub fn match_pattern(pattern: &str, input: &str) -> Result<Option<Vec<String>>, String> {
    Ok(matches(&compile(pattern)?, input))
}

/// Matches the whole input; the captured wildcards when it does.
fn matches(tokens: &[Token], input: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = input.chars().collect();
    let mut caps: Vec<String> = Vec::new();
    let mut steps = 0;
    go(tokens, &chars, &mut caps, &mut steps).then_some(caps)
}

fn go(tokens: &[Token], s: &[char], caps: &mut Vec<String>, steps: &mut usize) -> bool {
    *steps += 1;
    if *steps > MAX_STEPS {
        return false;
    }
    let Some((t, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match t {
        Token::Lit(c) => s.first().is_some_and(|x| eq_ci(*x, *c)) && go(rest, &s[1..], caps, steps),
        Token::BackRef(n) => {
            let Some(want) = caps.get(*n).cloned() else {
                return false;
            };
            let w: Vec<char> = want.chars().collect();
            s.len() >= w.len()
                && s[..w.len()].iter().zip(&w).all(|(a, b)| eq_ci(*a, *b))
                && go(rest, &s[w.len()..], caps, steps)
        }
        Token::Ip { net, bits, save } => {
            // The longest run of IPv4 characters that parses.
            let run = s
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == '.')
                .count();
            for len in (7..=run.min(15)).rev() {
                let text: String = s[..len].iter().collect();
                if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
                    let mask = if *bits == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(*bits))
                    };
                    if u32::from(ip) & mask == net & mask {
                        let mark = caps.len();
                        if *save {
                            caps.push(text);
                        }
                        if go(rest, &s[len..], caps, steps) {
                            return true;
                        }
                        caps.truncate(mark);
                    }
                }
            }
            false
        }
        Token::Wild {
            class,
            many,
            lazy,
            save,
        } => {
            let fits = |c: char| class.as_ref().is_none_or(|k| k.has(c));
            let max = if *many {
                s.iter().take_while(|c| fits(**c)).count()
            } else {
                usize::from(s.first().is_some_and(|c| fits(*c)))
            };
            let min = usize::from(!*many);
            if max < min {
                return false;
            }
            let mark = caps.len();
            let try_len = |len: usize, caps: &mut Vec<String>, steps: &mut usize| {
                if *save {
                    caps.push(s[..len].iter().collect());
                }
                if go(rest, &s[len..], caps, steps) {
                    return true;
                }
                caps.truncate(mark);
                false
            };
            if *lazy {
                (min..=max).any(|len| try_len(len, caps, steps))
            } else {
                (min..=max).rev().any(|len| try_len(len, caps, steps))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The guide's INTERNAL_IP example, and the relay-blocking wiring.
    const FILE: &str = "! site mappings\nINTERNAL_IP\n\n  $(192.45.67.80/28)  $Y\n  127.0.0.1  $Y\n  *  $N\n\n\
PORT_ACCESS\n\n  *|*|*|*|*  $C$|INTERNAL_IP;$3|$Y$E\n  *  $YEXTERNAL\n\n\
ORIG_SEND_ACCESS\n\n  tcp_local|*|tcp_local|*  $NRelaying$ not$ allowed\n\n\
X-TEST\n  $D*.$A%  digits=$0$ letter=$1\n  $[a-c]*x  set=$0\n  $_*@*  first=$0\n  *=$0*  same=$0\n  loop  $Rloop\n";

    #[test]
    fn the_guides_tables() {
        let m = Mappings::parse(FILE).unwrap();
        assert!(m.lookup("INTERNAL_IP", "192.45.67.85").unwrap().yes());
        assert!(m.lookup("INTERNAL_IP", "192.45.67.96").unwrap().no());
        assert!(m.lookup("internal_ip", "127.0.0.1").unwrap().yes());
        let inside = m
            .lookup("PORT_ACCESS", "TCP|10.0.0.1|25|192.45.67.81|40000")
            .unwrap();
        assert!(inside.yes() && inside.output.is_empty(), "{inside:?}");
        let outside = m
            .lookup("PORT_ACCESS", "TCP|10.0.0.1|25|203.0.113.5|40000")
            .unwrap();
        assert_eq!(outside.output, "EXTERNAL");
        let relay = m
            .lookup(
                "ORIG_SEND_ACCESS",
                "tcp_local|a@example.net|tcp_local|b@example.org",
            )
            .unwrap();
        assert!(relay.no());
        assert_eq!(relay.output, "Relaying not allowed");
        assert!(
            m.lookup("ORIG_SEND_ACCESS", "tcp_intranet|a@x|tcp_local|b@y")
                .is_none()
        );
    }

    #[test]
    fn patterns_and_templates() {
        let m = Mappings::parse(FILE).unwrap();
        assert_eq!(
            m.lookup("X-TEST", "2026.Q").unwrap().output,
            "digits=2026 letter=Q"
        );
        assert_eq!(m.lookup("X-TEST", "ABCx").unwrap().output, "set=ABC");
        assert_eq!(m.lookup("X-TEST", "a@b@c").unwrap().output, "first=a");
        assert_eq!(m.lookup("X-TEST", "ab=ab").unwrap().output, "same=ab");
        assert!(m.lookup("X-TEST", "ab=cd").is_none());
        // A table that restarts forever is cut short.
        assert_eq!(m.lookup("X-TEST", "loop").unwrap().output, "loop");
        assert!(m.lookup("NO-SUCH-TABLE", "x").is_none());
    }

    #[test]
    fn the_shipped_template_works() {
        let text =
            include_str!("../../../config/mappings").replace("@@HOST_NETWORK@@", "192.0.2.10/24");
        let m = Mappings::parse(&text).unwrap();
        assert!(
            m.lookup("INTERNAL_IP", "192.0.2.200").unwrap().yes(),
            "the host's /24 is internal"
        );
        assert!(m.lookup("INTERNAL_IP", "::1").unwrap().yes());
        assert!(m.lookup("INTERNAL_IP", "198.51.100.7").unwrap().no());
    }

    #[test]
    fn single_patterns_match_with_captures() {
        assert_eq!(
            match_pattern("*@*.example.com", "joe@mail.example.com"),
            Ok(Some(vec!["joe".into(), "mail".into()]))
        );
        assert_eq!(
            match_pattern("$(10.0.0.0/8)", "10.1.2.3").map(|m| m.is_some()),
            Ok(true)
        );
        assert_eq!(match_pattern("a*", "b"), Ok(None));
        assert!(match_pattern("$(10.0.0.0/99)", "10.1.2.3").is_err());
    }

    #[test]
    fn errors_name_the_line() {
        assert!(
            Mappings::parse("T\n  $88888888888888888888888888*  x\n").is_err(),
            "found by fuzzing"
        );
        assert_eq!(Mappings::parse("T\n  $Q  x\n").unwrap_err().line, 2);
        assert_eq!(Mappings::parse("  a b\n").unwrap_err().line, 1);
        assert_eq!(Mappings::parse("T\n  a b\nT\n").unwrap_err().line, 3);
        assert!(Mappings::parse("T\n  $(300.1.1.1/8)  $Y\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(pattern in "[*%a-c$@_()0-9./\\[\\]-]{0,12}", template in "[$|a-cYNCRL0-9;]{0,12}", input in "[a-c@.0-9]{0,20}") {
            if let Ok(m) = Mappings::parse(&format!("T\n  {pattern}  {template}\n")) {
                let _ = m.lookup("T", &input);
            }
        }
    }
}
