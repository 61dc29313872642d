//! The `OPTION=value` files of the MTA (original.md §3): dispatcher.cnf
//! and job_controller.cnf with `[SERVICE=…]`, `[POOL=…]`, `[CHANNEL=…]`
//! sections, option.dat and imta_tailor without. Pure.
//!
//! Options before the first section are global defaults; option names
//! compare without case; `!`, `#` and `;` start comment lines; a line
//! ending in `\` continues on the next (comment lines in between are
//! skipped, as option.dat allows); integers may be written `b%v` (value
//! `v` in base `b`, e.g. `16%FF`).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct OptionError {
    pub line: usize,
    pub reason: String,
}

/// Longest logical line (after continuations) accepted.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// `SERVICE`, `POOL`, `CHANNEL`… (upper case).
    pub kind: String,
    /// The name after `=`, as written (`SMTP`, `tcp_*`).
    pub name: String,
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptionFile {
    pub global: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

fn get<'a>(opts: &'a [(String, String)], name: &str) -> Option<&'a str> {
    opts.iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl OptionFile {
    pub fn parse(text: &str) -> Result<OptionFile, OptionError> {
        let mut file = OptionFile::default();
        let mut pending: Option<(usize, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            if t.starts_with(['!', '#', ';']) {
                continue;
            }
            let (start, mut logical) = match pending.take() {
                Some((l, s)) => (l, s),
                None => (line, String::new()),
            };
            if let Some(body) = t.strip_suffix('\\') {
                logical.push_str(body);
                if logical.len() > MAX_LINE {
                    return Err(OptionError {
                        line: start,
                        reason: format!("longer than {MAX_LINE} bytes"),
                    });
                }
                pending = Some((start, logical));
                continue;
            }
            logical.push_str(t);
            if logical.is_empty() {
                continue;
            }
            file.take_line(start, &logical)?;
        }
        if let Some((line, logical)) = pending {
            file.take_line(line, &logical)?;
        }
        Ok(file)
    }

    fn take_line(&mut self, line: usize, text: &str) -> Result<(), OptionError> {
        let err = |reason: String| OptionError { line, reason };
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| err("a section header must end with ]".into()))?;
            let (kind, name) = inner
                .split_once('=')
                .ok_or_else(|| err("expected [KIND=name]".into()))?;
            let (kind, name) = (kind.trim(), name.trim());
            if kind.is_empty()
                || name.is_empty()
                || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(err(format!("{inner:?} is not a section header")));
            }
            self.sections.push(Section {
                kind: kind.to_ascii_uppercase(),
                name: name.to_string(),
                options: Vec::new(),
            });
            return Ok(());
        }
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| err("expected OPTION=value".into()))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err(format!("{name:?} is not an option name")));
        }
        let entry = (name.to_ascii_uppercase(), value.trim().to_string());
        match self.sections.last_mut() {
            Some(s) => s.options.push(entry),
            None => self.global.push(entry),
        }
        Ok(())
    }

    /// A global option.
    pub fn global(&self, name: &str) -> Option<&str> {
        get(&self.global, name)
    }

    /// The section `[kind=name]` (names compare without case).
    pub fn section(&self, kind: &str, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.kind.eq_ignore_ascii_case(kind) && s.name.eq_ignore_ascii_case(name))
    }

    /// An option for one section, falling back to the global value.
    pub fn option(&self, kind: &str, name: &str, option: &str) -> Option<&str> {
        self.section(kind, name)
            .and_then(|s| get(&s.options, option))
            .or_else(|| self.global(option))
    }

    /// For job_controller.cnf: the first `[CHANNEL=…]` section whose name
    /// (with `*` wildcards, `tcp_*`) matches `channel`.
    pub fn channel_section(&self, channel: &str) -> Option<&Section> {
        self.sections
            .iter()
            .filter(|s| s.kind == "CHANNEL")
            .find(|s| glob(&s.name.to_ascii_lowercase(), &channel.to_ascii_lowercase()))
    }
}

fn glob(p: &str, s: &str) -> bool {
    match p.split_once('*') {
        None => p == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

/// An integer as these files write them: decimal, or `b%v` with base `b`
/// from 2 to 36.
pub fn int(v: &str) -> Option<i64> {
    let v = v.trim();
    match v.split_once('%') {
        Some((base, digits)) => {
            let base: u32 = base.trim().parse().ok().filter(|b| (2..=36).contains(b))?;
            let (neg, digits) = match digits.trim().strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, digits.trim()),
            };
            let n = i64::from_str_radix(digits, base).ok()?;
            Some(if neg { -n } else { n })
        }
        None => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISPATCHER: &str = "! dispatcher.cnf\nMIN_PROCS=0\nMAX_PROCS=5\nMAX_CONNS=20\n\n\
[SERVICE=SMTP]\nPORT=25\nIMAGE=/opt/epistle/lib/tcp_smtp_server\n\n[SERVICE=SMTP_SUBMIT]\nPORT=587\nMAX_CONNS=8\n";

    #[test]
    fn sections_and_globals() {
        let f = OptionFile::parse(DISPATCHER).unwrap();
        assert_eq!(f.sections.len(), 2);
        assert_eq!(f.option("SERVICE", "smtp", "port"), Some("25"));
        assert_eq!(
            f.option("SERVICE", "SMTP", "MAX_CONNS"),
            Some("20"),
            "falls back to the global"
        );
        assert_eq!(f.option("SERVICE", "SMTP_SUBMIT", "MAX_CONNS"), Some("8"));
        assert_eq!(f.global("max_procs"), Some("5"));
    }

    #[test]
    fn channels_with_wildcards() {
        let f = OptionFile::parse("tcp_port=27442\n[POOL=SMTP_POOL]\njob_limit=1\n[CHANNEL=ims-ms]\nmaster_command=lib/ims_master\n[CHANNEL=tcp_*]\nmaster_command=lib/tcp_smtp_client\n").unwrap();
        assert_eq!(f.channel_section("tcp_local").unwrap().name, "tcp_*");
        assert_eq!(f.channel_section("ims-ms").unwrap().name, "ims-ms");
        assert!(f.channel_section("l").is_none());
        assert_eq!(int(f.global("TCP_PORT").unwrap()), Some(27442));
    }

    #[test]
    fn continuations_comments_and_bases() {
        let f = OptionFile::parse("DELIVERY_OPTIONS=*mailbox=$M%$\\$2I$_+$2S@ims-ms-daemon,\\\n# a comment inside\n&members=*\nLOG_FILENAME=16%1F\n").unwrap();
        assert_eq!(
            f.global("DELIVERY_OPTIONS"),
            Some("*mailbox=$M%$\\$2I$_+$2S@ims-ms-daemon,&members=*")
        );
        assert_eq!(int(f.global("LOG_FILENAME").unwrap()), Some(31));
        assert_eq!(int("8%-17"), Some(-15));
        assert_eq!(int("40%1"), None);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            OptionFile::parse("A=1\nnot an option\n").unwrap_err().line,
            2
        );
        assert_eq!(OptionFile::parse("[SERVICE=SMTP\n").unwrap_err().line, 1);
        assert_eq!(OptionFile::parse("A=1\n[=x]\n").unwrap_err().line, 2);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}", v in "\\PC{0,12}") {
            if let Ok(f) = OptionFile::parse(&text) {
                let _ = f.channel_section("tcp_local");
            }
            let _ = int(&v);
        }
    }
}
