//! The rewrite-rule engine (original.md §1.2): which channel an address
//! goes to, and how it reads afterwards. `imsimta test -rewrite` shows its
//! answers; the SMTP server and the job controller route with it.
//!
//! The domain is matched most specific first: `$*` rules, the whole
//! host, the host with its first label made `*`, then `.` plus the rest,
//! outwards label by label, then `.`. Domain literals go `[10.1.2.3]`,
//! `[10.1.2.]`, `[10.1.]`, `[10.]`, `[]`, then `.`. Among rules with the
//! same pattern the first whose conditions hold wins; a rule whose
//! conditions fail lets the search go on.

use crate::imtacnf::ImtaConfig;
use crate::mapping::Mappings;

/// Most passes through the rules for one address (`User%Domain`
/// templates rewrite again).
pub const MAX_PASSES: usize = 10;

/// Where in a message the address sits, for `$E $B $F $R`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    pub envelope: bool,
    /// Forward-pointing (To, Cc, envelope To) or backward (From, Sender,
    /// envelope From).
    pub forward: bool,
    /// The channel the message came in on, for `$M` and `$N`.
    pub source_channel: &'a str,
}

impl Default for Context<'_> {
    fn default() -> Self {
        Context {
            envelope: true,
            forward: true,
            source_channel: "tcp_local",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The destination channel's name.
    pub channel: String,
    /// The address after rewriting.
    pub address: String,
    /// The patterns of the rules applied, in order (for `test -rewrite`).
    pub trace: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("address {0:?} has no @domain")]
    NoDomain(String),
    #[error("no rewrite rule matches {0:?}")]
    NoRule(String),
    /// A `$?text` rule: the address is refused with that text.
    #[error("{0}")]
    Refused(String),
    #[error("rule {pattern}: tag {tag:?} names no channel")]
    UnknownTag { pattern: String, tag: String },
    #[error("rewriting {0:?} did not settle after {MAX_PASSES} passes")]
    Loop(String),
}

pub struct Rewriter<'a> {
    config: &'a ImtaConfig,
    mappings: &'a Mappings,
}

/// The patterns to try for a domain, most specific first (without the
/// `$*` rules, tried before all, and `.`, tried last).
pub fn candidates(domain: &str) -> Vec<(String, String, String)> {
    // (pattern, matched part $D, unmatched part $H or $L)
    let mut out = Vec::new();
    if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let parts: Vec<&str> = lit.split('.').collect();
        for keep in (1..=parts.len()).rev() {
            let head = parts[..keep].join(".");
            let pattern = if keep == parts.len() {
                format!("[{lit}]")
            } else {
                format!("[{head}.]")
            };
            out.push((pattern, domain.to_string(), parts[keep..].join(".")));
        }
        out.push(("[]".into(), domain.to_string(), lit.to_string()));
        return out;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for i in 0..labels.len() {
        if i == 0 {
            out.push((domain.to_string(), domain.to_string(), String::new()));
        }
        if labels.len() - i > 1 {
            let tail = labels[i + 1..].join(".");
            let unmatched = labels[..=i].join(".");
            out.push((format!("*.{tail}"), domain.to_string(), unmatched.clone()));
            out.push((format!(".{tail}"), tail, unmatched));
        }
    }
    out
}

impl<'a> Rewriter<'a> {
    pub fn new(config: &'a ImtaConfig, mappings: &'a Mappings) -> Self {
        Rewriter { config, mappings }
    }

    /// Routes one address.
    pub fn rewrite(&self, address: &str, ctx: &Context) -> Result<Rewritten, RewriteError> {
        let mut current = address.to_string();
        let mut trace = Vec::new();
        for _ in 0..MAX_PASSES {
            let (local, domain) = current
                .rsplit_once('@')
                .ok_or_else(|| RewriteError::NoDomain(current.clone()))?;
            let (pattern, output) = self.one_pass(local, &domain.to_ascii_lowercase(), ctx)?;
            trace.push(pattern.clone());
            match output.rsplit_once('@') {
                Some((addr, tag)) => {
                    let channel = self.config.channel_by_tag(tag).ok_or_else(|| {
                        RewriteError::UnknownTag {
                            pattern,
                            tag: tag.into(),
                        }
                    })?;
                    // `user%domain` is the address; `user` alone keeps the
                    // original domain.
                    let address = match addr.rsplit_once('%') {
                        Some((u, d)) => format!("{u}@{d}"),
                        None if addr.contains('@') => addr.to_string(),
                        None => format!("{addr}@{domain}"),
                    };
                    return Ok(Rewritten {
                        channel: channel.name.clone(),
                        address,
                        trace,
                    });
                }
                None => {
                    // `User%Domain`: rewrite the result again.
                    let (u, d) = output
                        .rsplit_once('%')
                        .ok_or_else(|| RewriteError::NoDomain(output.clone()))?;
                    current = format!("{u}@{d}");
                }
            }
        }
        Err(RewriteError::Loop(address.to_string()))
    }

    /// Finds the first rule that matches and whose conditions hold;
    /// returns its pattern and the expanded template.
    fn one_pass(
        &self,
        local: &str,
        domain: &str,
        ctx: &Context,
    ) -> Result<(String, String), RewriteError> {
        let mut tries: Vec<(String, String, String)> =
            vec![("$*".into(), domain.into(), String::new())];
        tries.extend(candidates(domain));
        tries.push((".".into(), domain.into(), domain.into()));
        for (pattern, matched, unmatched) in tries {
            for rule in self
                .config
                .rules
                .iter()
                .filter(|r| r.pattern.eq_ignore_ascii_case(&pattern))
            {
                let vars = Vars {
                    local,
                    matched: &matched,
                    unmatched: &unmatched,
                };
                match self.expand(&rule.template, &vars, ctx) {
                    Expansion::Done(out) => return Ok((pattern, out)),
                    Expansion::Refused(text) => return Err(RewriteError::Refused(text)),
                    Expansion::Fails => continue,
                }
            }
        }
        Err(RewriteError::NoRule(format!("{local}@{domain}")))
    }

    fn expand(&self, template: &str, v: &Vars, ctx: &Context) -> Expansion {
        let chars: Vec<char> = template.chars().collect();
        let mut out = String::new();
        let mut case: Option<bool> = None; // Some(true) upper, Some(false) lower
        let mut i = 0;
        let push = |out: &mut String, s: &str, case: Option<bool>| match case {
            Some(true) => out.push_str(&s.to_uppercase()),
            Some(false) => out.push_str(&s.to_lowercase()),
            None => out.push_str(s),
        };
        // A channel name after $M $N $Q $C runs to @, % or the next $.
        let name_at = |from: usize| -> (String, usize) {
            let end = (from..chars.len())
                .find(|&j| matches!(chars[j], '@' | '%' | '$'))
                .unwrap_or(chars.len());
            (chars[from..end].iter().collect(), end)
        };
        while i < chars.len() {
            let c = chars[i];
            if c != '$' {
                push(&mut out, &c.to_string(), case);
                i += 1;
                continue;
            }
            let mut j = i + 1;
            let digit = chars.get(j).filter(|d| d.is_ascii_digit()).map(|d| {
                j += 1;
                *d
            });
            let Some(&code) = chars.get(j) else {
                return Expansion::Fails;
            };
            j += 1;
            match (digit, code) {
                (None, 'U' | 'u') => push(&mut out, v.local, case),
                (Some('0'), 'U' | 'u') => {
                    push(&mut out, v.local.split('+').next().unwrap_or(""), case)
                }
                (Some('1'), 'U' | 'u') => push(
                    &mut out,
                    v.local.split_once('+').map_or("", |(_, s)| s),
                    case,
                ),
                (None, 'D' | 'd') => push(&mut out, v.matched, case),
                (None, 'H' | 'h' | 'L' | 'l') => push(&mut out, v.unmatched, case),
                (None, '$' | '%' | '@') => out.push(code),
                (None, '\\') => case = Some(false),
                (None, '^') => case = Some(true),
                (None, '_') => case = None,
                (None, 'E') if !ctx.envelope => return Expansion::Fails,
                (None, 'B') if ctx.envelope => return Expansion::Fails,
                (None, 'F') if !ctx.forward => return Expansion::Fails,
                (None, 'R') if ctx.forward => return Expansion::Fails,
                (None, 'E' | 'B' | 'F' | 'R') => {}
                (None, 'M' | 'N' | 'Q' | 'C') => {
                    let (name, end) = name_at(j);
                    j = end;
                    let is_source = name.eq_ignore_ascii_case(ctx.source_channel);
                    if (code == 'M' && !is_source) || (code == 'N' && is_source) {
                        return Expansion::Fails;
                    }
                    // $Q and $C are ignored while the destination is chosen.
                }
                (None, '?') => {
                    let text: String = chars[j..].iter().collect();
                    return Expansion::Refused(text);
                }
                (None, '{') => {
                    let Some(close) = (j..chars.len()).find(|&k| chars[k] == '}') else {
                        return Expansion::Fails;
                    };
                    let inner: String = chars[j..close].iter().collect();
                    let Some((table, arg)) = inner.split_once(',') else {
                        return Expansion::Fails;
                    };
                    let arg = match self.expand(arg, v, ctx) {
                        Expansion::Done(a) => a,
                        other => return other,
                    };
                    match self.mappings.lookup(table, &arg) {
                        Some(r) if !r.no() => push(&mut out, &r.output, case),
                        _ => return Expansion::Fails,
                    }
                    j = close + 1;
                }
                // Sequences of the original this engine does not do
                // (general database, LDAP URLs, shared libraries) make
                // the rule fail rather than route somewhere unintended.
                _ => return Expansion::Fails,
            }
            i = j;
        }
        Expansion::Done(out)
    }
}

struct Vars<'v> {
    local: &'v str,
    matched: &'v str,
    unmatched: &'v str,
}

enum Expansion {
    Done(String),
    Fails,
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factory() -> (ImtaConfig, Mappings) {
        let text = include_str!("../../../config/imta.cnf")
            .replace("@@HOSTNAME@@", "mail.example.com")
            .replace("@@DEFAULT_DOMAIN@@", "example.com");
        let config = ImtaConfig::parse("imta.cnf", &text, &mut |_| Err("none".into())).unwrap();
        (
            config,
            Mappings::parse("INTERNAL_IP\n\n  127.0.0.1 $Y\n  * $N\n").unwrap(),
        )
    }

    #[test]
    fn candidate_order() {
        let pats: Vec<String> = candidates("a.b.example.com")
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(
            pats,
            [
                "a.b.example.com",
                "*.b.example.com",
                ".b.example.com",
                "*.example.com",
                ".example.com",
                "*.com",
                ".com"
            ]
        );
        let pats: Vec<String> = candidates("[10.1.2.3]").into_iter().map(|c| c.0).collect();
        assert_eq!(pats, ["[10.1.2.3]", "[10.1.2.]", "[10.1.]", "[10.]", "[]"]);
    }

    #[test]
    fn the_factory_configuration_routes() {
        let (c, m) = factory();
        let r = Rewriter::new(&c, &m);
        let ctx = Context::default();
        let local = r.rewrite("Joe@Example.COM", &ctx).unwrap();
        assert_eq!(
            (local.channel.as_str(), local.address.as_str()),
            ("l", "Joe@example.com")
        );
        assert_eq!(
            r.rewrite("joe@mail.example.com", &ctx).unwrap().channel,
            "l"
        );
        let out = r.rewrite("bob@other.org", &ctx).unwrap();
        assert_eq!(
            (out.channel.as_str(), out.address.as_str()),
            ("tcp_local", "bob@other.org")
        );
        // `.example.com` is not example.com: a subdomain goes out.
        assert_eq!(
            r.rewrite("x@sub.example.com", &ctx).unwrap().channel,
            "tcp_local"
        );
        // Literals: internal addresses to the intranet, others out.
        let lit = r.rewrite("x@[127.0.0.1]", &ctx).unwrap();
        assert_eq!(
            (lit.channel.as_str(), lit.address.as_str()),
            ("tcp_intranet", "x@[127.0.0.1]")
        );
        assert_eq!(
            r.rewrite("x@[192.0.2.1]", &ctx).unwrap().channel,
            "tcp_local"
        );
        assert_eq!(
            r.rewrite("anything@bitbucket", &ctx).unwrap().channel,
            "bitbucket"
        );
        assert_eq!(
            r.rewrite("nodomain", &ctx),
            Err(RewriteError::NoDomain("nodomain".into()))
        );
    }

    fn with_rules(rules: &str) -> (ImtaConfig, Mappings) {
        let text = format!(
            "{rules}\n\nl\nmail.example.com\n\ntcp_local smtp\ntcp_local-daemon\n\nverify smtp\nverify-daemon\n"
        );
        let c = ImtaConfig::parse("imta.cnf", &text, &mut |_| Err("none".into())).unwrap();
        (
            c,
            Mappings::parse("RELAYS\n\n  good.example  gw.example$Y\n  bad.example  $N\n").unwrap(),
        )
    }

    #[test]
    fn conditions_and_substitutions() {
        let (c, m) = with_rules(
            ".example.com  $U+$H%example.com@mail.example.com$E$F\n\
             .example.com  $U%$D@tcp_local-daemon\n\
             mail.example.com  $U%$D@mail.example.com\n\
             example.org   $U%mail.example.com$Nverify\n\
             example.org   $U%$D@verify-daemon\n\
             *.relay       $U%${RELAYS,$H}@tcp_local-daemon\n\
             *.relay       $?Relaying_through_$H_refused\n\
             lower.test    $\\$U%$D@tcp_local-daemon\n\
             sub.test      $0U-$1U%$D@tcp_local-daemon\n\
             .             $U%$D@tcp_local-daemon",
        );
        let r = Rewriter::new(&c, &m);
        let env_to = Context::default();
        let a = r.rewrite("joe@sales.example.com", &env_to).unwrap();
        assert_eq!(
            (a.channel.as_str(), a.address.as_str()),
            ("l", "joe+sales@example.com")
        );
        // Not forward-pointing: $F fails, the next rule of the pattern wins.
        let back = Context {
            forward: false,
            ..env_to
        };
        assert_eq!(
            r.rewrite("joe@sales.example.com", &back).unwrap().channel,
            "tcp_local"
        );
        // $N: from anywhere but verify, a second pass to the local host.
        let v = r.rewrite("x@example.org", &env_to).unwrap();
        assert_eq!(
            (v.channel.as_str(), v.address.as_str(), v.trace.len()),
            ("l", "x@mail.example.com", 2)
        );
        let from_verify = Context {
            source_channel: "verify",
            ..env_to
        };
        assert_eq!(
            r.rewrite("x@example.org", &from_verify).unwrap().channel,
            "verify"
        );
        // Mapping lookups, and $? refusals.
        assert_eq!(
            r.rewrite("u@good.example.relay", &env_to).unwrap().address,
            "u@gw.example"
        );
        assert_eq!(
            r.rewrite("u@bad.example.relay", &env_to),
            Err(RewriteError::Refused("Relaying_through_$H_refused".into()))
        );
        assert_eq!(
            r.rewrite("MiXed@lower.test", &env_to).unwrap().address,
            "mixed@lower.test"
        );
        assert_eq!(
            r.rewrite("joe+box@sub.test", &env_to).unwrap().address,
            "joe-box@sub.test"
        );
    }

    #[test]
    fn loops_and_bad_tags_are_reported() {
        let (c, m) = with_rules(
            "a.test  $U%b.test\nb.test  $U%a.test\nbad.test  $U%$D@nowhere\n.  $U%$D@tcp_local-daemon",
        );
        let r = Rewriter::new(&c, &m);
        assert!(matches!(
            r.rewrite("x@a.test", &Context::default()),
            Err(RewriteError::Loop(_))
        ));
        assert!(matches!(
            r.rewrite("x@bad.test", &Context::default()),
            Err(RewriteError::UnknownTag { .. })
        ));
    }

    #[test]
    fn never_panics() {
        let parts = [
            "$U",
            "$0U",
            "$1U",
            "$D",
            "$H",
            "$L",
            "$",
            "%",
            "@",
            "$?",
            "${RELAYS,",
            "}",
            "$N",
            "$Mverify",
            "$\\",
            "$^",
            "$9",
            "x",
            ".",
            "[",
            "]",
            "tcp_local-daemon",
        ];
        let domains = [
            "a.test",
            "[10.1.2.3]",
            "[]",
            "x..y",
            ".",
            "",
            "[1.",
            "é.test",
            "a.b.c.d.e",
        ];
        let mut seed = 0x853c_49e6_748f_ea9bu64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let template: String = (0..next() % 8)
                .map(|_| parts[(next() % parts.len() as u64) as usize])
                .collect();
            let rules = format!(".  {}", if template.is_empty() { "x" } else { &template });
            let (c, m) = with_rules(&rules);
            let r = Rewriter::new(&c, &m);
            for d in domains {
                let _ = r.rewrite(&format!("u+s@{d}"), &Context::default());
            }
        }
    }
}
