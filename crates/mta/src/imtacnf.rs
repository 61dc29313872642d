//! `imta.cnf`: rewrite rules, then channel blocks (original.md §1.1–1.4).
//!
//! The rewrite rules run to the first blank line, one `pattern template`
//! a line. Channel blocks follow, one blank line apart: the channel name
//! and its keywords (which may wrap onto further lines), an optional
//! official-host line, and the tag line. `!` in column 1 starts a comment
//! and `<file` includes a file. `defaults` blocks set keywords for the
//! blocks after them, `nodefaults` clears them. Parsing is pure: includes
//! come through a reader function, and every error names file and line so
//! `imsimta cnbuild` can say where to look.

use std::fmt;

/// Deepest include nesting, most files included in all, and most lines
/// read in all.
pub const MAX_INCLUDE_DEPTH: usize = 8;
pub const MAX_INCLUDES: usize = 256;
pub const MAX_LINES: usize = 200_000;

/// Where a rule or channel came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ImtaError {
    pub origin: Origin,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteRule {
    pub pattern: String,
    pub template: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyword {
    /// Lower-cased.
    pub name: String,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    /// The `defaults` in force, then the channel's own: later wins.
    pub keywords: Vec<Keyword>,
    /// The tag (`tcp_local-daemon`): `…@tag` in a rewrite routes here.
    pub tag: String,
    /// The middle line, or the word after the tag.
    pub official_host: Option<String>,
    pub origin: Origin,
}

impl Channel {
    /// The last keyword of the given names (a family such as `mx` /
    /// `nomx`, where the later one wins).
    pub fn last_of(&self, names: &[&str]) -> Option<&Keyword> {
        self.keywords
            .iter()
            .rev()
            .find(|k| names.contains(&k.name.as_str()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.last_of(&[name]).is_some()
    }

    /// The single argument of a keyword such as `maxjobs 7`.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.last_of(&[name])
            .and_then(|k| k.args.first())
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImtaConfig {
    pub rules: Vec<RewriteRule>,
    pub channels: Vec<Channel>,
}

impl ImtaConfig {
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The channel a rewrite's `@tag` routes to.
    pub fn channel_by_tag(&self, tag: &str) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.tag.eq_ignore_ascii_case(tag))
    }
}

/// How many arguments a keyword takes; `None` for an unknown keyword.
fn arity(keyword: &str) -> Option<Arity> {
    use Arity::*;
    Some(match keyword {
        "daemon"
        | "port"
        | "interfaceaddress"
        | "subdirs"
        | "maxjobs"
        | "filesperjob"
        | "threaddepth"
        | "pool"
        | "after"
        | "saslswitchchannel"
        | "tlsswitchchannel"
        | "fileinto"
        | "transactionlimit"
        | "defaulthost"
        | "disconnectbadcommandlimit"
        | "expandlimit"
        | "expandchannel"
        | "holdlimit"
        | "urgentblocklimit"
        | "normalblocklimit"
        | "nonurgentblocklimit"
        | "blocklimit"
        | "linelimit"
        | "recipientlimit"
        | "sourcespamfilter"
        | "destinationspamfilter"
        | "addrsperfile"
        | "maxprocchars"
        | "alternatechannel" => One,
        "backoff" | "urgentbackoff" | "normalbackoff" | "nonurgentbackoff" => Many(1, 16),
        "notices" | "urgentnotices" | "normalnotices" | "nonurgentnotices" => Many(1, 5),
        "smtp"
        | "smtp_crlf"
        | "smtp_cr"
        | "smtp_crorlf"
        | "smtp_lf"
        | "lmtp"
        | "submit"
        | "mx"
        | "nomx"
        | "defaultmx"
        | "randommx"
        | "nonrandommx"
        | "single_sys"
        | "single"
        | "multiple"
        | "immnonurgent"
        | "bidirectional"
        | "master"
        | "slave"
        | "warnpost"
        | "copywarnpost"
        | "errwarnpost"
        | "nowarnpost"
        | "sendpost"
        | "copysendpost"
        | "errsendpost"
        | "nosendpost"
        | "postheadonly"
        | "deferred"
        | "nodeferred"
        | "switchchannel"
        | "allowswitchchannel"
        | "noswitchchannel"
        | "userswitchchannel"
        | "nosasl"
        | "maysaslserver"
        | "mustsaslserver"
        | "maytlsserver"
        | "musttlsserver"
        | "maytlsclient"
        | "musttlsclient"
        | "maytls"
        | "musttls"
        | "notls"
        | "notlsserver"
        | "notlsclient"
        | "identnone"
        | "identnonenumeric"
        | "identnonelimited"
        | "identnonesymbolic"
        | "identtcp"
        | "identtcpnumeric"
        | "identtcplimited"
        | "identtcpsymbolic"
        | "forwardcheckdelete"
        | "forwardchecktag"
        | "forwardchecknone"
        | "remotehost"
        | "noremotehost"
        | "nodefaulthost"
        | "inner"
        | "noinner"
        | "noreverse"
        | "reverse"
        | "defragment"
        | "nodefragment"
        | "holdexquota"
        | "noexquota"
        | "exquota"
        | "rules"
        | "norules"
        | "routelocal"
        | "dequeue_removeroute"
        | "nodsn"
        | "dsn"
        | "logging"
        | "nologging"
        | "loopcheck"
        | "noloopcheck"
        | "sevenbit"
        | "eightbit"
        | "eightnegotiate"
        | "eightstrict"
        | "holdtransfer" => Zero,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
enum Arity {
    Zero,
    One,
    Many(usize, usize),
}

/// A line with where it came from, after includes are expanded.
struct Line {
    text: String,
    origin: Origin,
}

fn err(origin: &Origin, message: impl Into<String>) -> ImtaError {
    ImtaError {
        origin: origin.clone(),
        message: message.into(),
    }
}

/// Expands `<file` includes and drops `!` comment lines, keeping blank
/// lines (they are the structure).
fn expand(
    file: &str,
    text: &str,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
    depth: usize,
    includes: &mut usize,
    out: &mut Vec<Line>,
) -> Result<(), ImtaError> {
    for (n, raw) in text.lines().enumerate() {
        let origin = Origin {
            file: file.to_string(),
            line: n + 1,
        };
        if out.len() >= MAX_LINES {
            return Err(err(&origin, format!("more than {MAX_LINES} lines")));
        }
        if raw.starts_with('!') {
            continue;
        }
        if let Some(name) = raw.strip_prefix('<') {
            let name = name.trim();
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(err(
                    &origin,
                    format!("includes nested deeper than {MAX_INCLUDE_DEPTH}"),
                ));
            }
            *includes += 1;
            if *includes > MAX_INCLUDES {
                return Err(err(
                    &origin,
                    format!("more than {MAX_INCLUDES} files included"),
                ));
            }
            let included =
                read(name).map_err(|why| err(&origin, format!("cannot include {name}: {why}")))?;
            expand(name, &included, read, depth + 1, includes, out)?;
            continue;
        }
        out.push(Line {
            text: raw.trim_end().to_string(),
            origin,
        });
    }
    Ok(())
}

impl ImtaConfig {
    /// Parses imta.cnf; `read` fetches an included file by the name given.
    pub fn parse(
        file: &str,
        text: &str,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<ImtaConfig, ImtaError> {
        let mut lines = Vec::new();
        expand(file, text, read, 0, &mut 0, &mut lines)?;
        let mut config = ImtaConfig::default();
        let mut rest = lines.iter().peekable();
        // The first blank line ends the rules (even at the very top).
        while let Some(line) = rest.next_if(|l| !l.text.trim().is_empty()) {
            let mut fields = line.text.split_whitespace();
            let (Some(pattern), Some(template)) = (fields.next(), fields.next()) else {
                return Err(err(
                    &line.origin,
                    "a rewrite rule needs a pattern and a template",
                ));
            };
            if fields.next().is_some() {
                return Err(err(
                    &line.origin,
                    "a rewrite rule is two words; the rules end at the first blank line",
                ));
            }
            config.rules.push(RewriteRule {
                pattern: pattern.to_string(),
                template: template.to_string(),
                origin: line.origin.clone(),
            });
        }
        let mut defaults: Vec<Keyword> = Vec::new();
        let mut block: Vec<&Line> = Vec::new();
        for line in rest.chain(std::iter::once(&Line {
            text: String::new(),
            origin: Origin {
                file: file.into(),
                line: 0,
            },
        })) {
            if !line.text.trim().is_empty() {
                block.push(line);
                continue;
            }
            if block.is_empty() {
                continue;
            }
            let head = block[0];
            let mut words = head.text.split_whitespace();
            let name = words.next().unwrap_or_default().to_string();
            match name.to_ascii_lowercase().as_str() {
                "defaults" => defaults.extend(keywords(&block, true)?),
                "nodefaults" => defaults.clear(),
                _ => config.channels.push(channel(&block, &defaults, &config)?),
            }
            block.clear();
        }
        Ok(config)
    }
}

/// The keywords of a block's channel lines (the first word of the first
/// line is the channel name and is skipped).
fn keywords(lines: &[&Line], skip_name: bool) -> Result<Vec<Keyword>, ImtaError> {
    let mut out = Vec::new();
    let mut words: Vec<(&str, &Origin)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let skip = usize::from(i == 0 && skip_name);
        words.extend(
            line.text
                .split_whitespace()
                .skip(skip)
                .map(|w| (w, &line.origin)),
        );
    }
    let mut i = 0;
    while i < words.len() {
        let (word, origin) = words[i];
        let name = word.to_ascii_lowercase();
        let arity =
            arity(&name).ok_or_else(|| err(origin, format!("unknown channel keyword {word}")))?;
        i += 1;
        let (min, max) = match arity {
            Arity::Zero => (0, 0),
            Arity::One => (1, 1),
            Arity::Many(min, max) => (min, max),
        };
        let mut args = Vec::new();
        while args.len() < max && i < words.len() && (args.len() < min || is_list_value(words[i].0))
        {
            args.push(words[i].0.trim_matches('"').to_string());
            i += 1;
        }
        if args.len() < min {
            return Err(err(origin, format!("keyword {word} needs a value")));
        }
        for a in &args {
            check_value(&name, a).map_err(|why| err(origin, format!("keyword {word}: {why}")))?;
        }
        out.push(Keyword { name, args });
    }
    Ok(out)
}

/// Refuses a value the keyword cannot use, so that `imsimta cnbuild`
/// names the line instead of the running MTA quietly ignoring it.
fn check_value(keyword: &str, value: &str) -> Result<(), String> {
    match keyword {
        "port"
        | "subdirs"
        | "maxjobs"
        | "filesperjob"
        | "threaddepth"
        | "transactionlimit"
        | "expandlimit"
        | "holdlimit"
        | "urgentblocklimit"
        | "normalblocklimit"
        | "nonurgentblocklimit"
        | "blocklimit"
        | "linelimit"
        | "recipientlimit"
        | "addrsperfile"
        | "maxprocchars"
        | "notices"
        | "urgentnotices"
        | "normalnotices"
        | "nonurgentnotices" => value
            .parse::<u64>()
            .map(drop)
            .map_err(|_| format!("{value:?} is not a whole number")),
        "after" | "backoff" | "urgentbackoff" | "normalbackoff" | "nonurgentbackoff" => {
            crate::retry::parse_duration(value)
                .map(drop)
                .ok_or_else(|| {
                    format!("{value:?} is not an ISO 8601 duration such as \"PT10M\" or \"P1D\"")
                })
        }
        "interfaceaddress" => value
            .parse::<std::net::IpAddr>()
            .map(drop)
            .map_err(|_| format!("{value:?} is not an IP address")),
        _ => Ok(()),
    }
}

/// Whether a word after a many-valued keyword (`backoff`, `notices`) is
/// one of its values rather than the next keyword: numbers and quoted
/// durations are values.
fn is_list_value(word: &str) -> bool {
    word.starts_with('"') || word.bytes().all(|b| b.is_ascii_digit())
}

fn channel(
    block: &[&Line],
    defaults: &[Keyword],
    config: &ImtaConfig,
) -> Result<Channel, ImtaError> {
    let head = block[0];
    let name = head
        .text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if block.len() < 2 {
        return Err(err(
            &head.origin,
            format!("channel {name} has no tag line after its keywords"),
        ));
    }
    if config.channel(&name).is_some() {
        return Err(err(
            &head.origin,
            format!("channel {name} is defined twice"),
        ));
    }
    if config.channels.is_empty() && !name.eq_ignore_ascii_case("l") {
        return Err(err(
            &head.origin,
            "the first channel must be the local channel l",
        ));
    }
    let tag_line = block[block.len() - 1];
    let mut body = &block[..block.len() - 1];
    let mut official_host = None;
    // A single word that is not a keyword, just before the tag, is the
    // official host name.
    if body.len() >= 2 {
        let middle = body[body.len() - 1];
        let words: Vec<&str> = middle.text.split_whitespace().collect();
        if words.len() == 1 && arity(&words[0].to_ascii_lowercase()).is_none() {
            official_host = Some(words[0].to_string());
            body = &body[..body.len() - 1];
        }
    }
    let mut own = keywords(body, true)?;
    let mut tag_words = tag_line.text.split_whitespace();
    let tag = tag_words.next().unwrap_or_default().to_string();
    if let Some(host) = tag_words.next() {
        official_host.get_or_insert_with(|| host.to_string());
    }
    if tag_words.next().is_some() {
        return Err(err(
            &tag_line.origin,
            "the tag line is the tag and at most an official host name",
        ));
    }
    if config.channel_by_tag(&tag).is_some() {
        return Err(err(
            &tag_line.origin,
            format!("tag {tag} is used by two channels"),
        ));
    }
    let mut keywords = defaults.to_vec();
    keywords.append(&mut own);
    Ok(Channel {
        name,
        keywords,
        tag,
        official_host,
        origin: head.origin.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
! rewrite rules
mail.example.com  $U%$D@mail.example.com
.example.com      $U%$D@tcp_intranet-daemon
<internet.rules
.                 $U%$D@tcp_local-daemon

defaults notices 1 2 4 7 copywarnpost
  maxjobs 7

l subdirs 20
mail.example.com

ims-ms defragment subdirs 20 notices 1 7 14 21 28 backoff \"pt5m\" \"pt10m\" \"pt30m\"
  pool IMS_POOL fileinto $u+$s@ims-ms-daemon
ims-ms-daemon

tcp_local smtp mx single_sys remotehost inner switchchannel maxjobs 9 pool SMTP_POOL
  maytlsserver maysaslserver saslswitchchannel tcp_auth
relay.example.com
tcp-daemon

nodefaults

bitbucket
bitbucket-daemon
";

    fn parse(text: &str) -> Result<ImtaConfig, ImtaError> {
        ImtaConfig::parse("imta.cnf", text, &mut |name| match name {
            "internet.rules" => {
                Ok(".com  $U%$D@tcp_local-daemon\n! comment\n.org  $U%$D@tcp_local-daemon".into())
            }
            "loop" => Ok("<loop".into()),
            "wide" => Ok("<leaf\n".repeat(MAX_INCLUDES + 1)),
            "leaf" => Ok(String::new()),
            _ => Err("no such file".into()),
        })
    }

    #[test]
    fn rules_and_channels() {
        let c = parse(SAMPLE).unwrap();
        let patterns: Vec<&str> = c.rules.iter().map(|r| r.pattern.as_str()).collect();
        assert_eq!(
            patterns,
            ["mail.example.com", ".example.com", ".com", ".org", "."]
        );
        assert_eq!(
            c.rules[2].origin,
            Origin {
                file: "internet.rules".into(),
                line: 1
            }
        );
        assert_eq!(c.rules[4].origin.line, 5);
        let names: Vec<&str> = c.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["l", "ims-ms", "tcp_local", "bitbucket"]);

        let l = c.channel("l").unwrap();
        assert_eq!(l.tag, "mail.example.com");
        assert_eq!(l.arg("maxjobs"), Some("7"));
        assert_eq!(l.last_of(&["notices"]).unwrap().args, ["1", "2", "4", "7"]);

        let ms = c.channel_by_tag("IMS-MS-DAEMON").unwrap();
        assert_eq!(ms.name, "ims-ms");
        assert_eq!(
            ms.last_of(&["notices"]).unwrap().args,
            ["1", "7", "14", "21", "28"]
        );
        assert_eq!(
            ms.last_of(&["backoff"]).unwrap().args,
            ["pt5m", "pt10m", "pt30m"]
        );
        assert_eq!(ms.arg("pool"), Some("IMS_POOL"));
        assert_eq!(ms.arg("fileinto"), Some("$u+$s@ims-ms-daemon"));
        assert_eq!(ms.official_host, None);

        let tcp = c.channel("tcp_local").unwrap();
        assert_eq!(
            tcp.arg("maxjobs"),
            Some("9"),
            "the channel's own keyword wins over defaults"
        );
        assert_eq!(tcp.arg("saslswitchchannel"), Some("tcp_auth"));
        assert!(tcp.has("maytlsserver") && tcp.has("copywarnpost"));
        assert_eq!(tcp.official_host.as_deref(), Some("relay.example.com"));
        assert_eq!(tcp.tag, "tcp-daemon");

        let bb = c.channel("bitbucket").unwrap();
        assert!(bb.keywords.is_empty(), "nodefaults cleared the defaults");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("a b c\n\nl\nlocalhost\n").unwrap_err();
        assert_eq!(e.origin.line, 1);
        let e = parse("a b\n\nl frobnicate\nlocalhost\n").unwrap_err();
        assert_eq!(
            (e.origin.line, e.message.as_str()),
            (3, "unknown channel keyword frobnicate")
        );
        let e = parse("a b\n\nl maxjobs\nlocalhost\n").unwrap_err();
        assert!(e.message.contains("maxjobs needs a value"));
        let e = parse("a b\n\ntcp_local smtp\ntcp-daemon\n").unwrap_err();
        assert!(e.message.contains("local channel l"));
        let e = parse("a b\n\nl\nlocalhost\n\nx smtp\nlocalhost\n").unwrap_err();
        assert_eq!(
            (e.origin.line, e.message.contains("two channels")),
            (7, true)
        );
        let e = parse("a b\n\nl\nlocalhost\n\nl smtp\nother\n").unwrap_err();
        assert!(e.message.contains("defined twice"));
        let e = parse("<missing\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "imta.cnf:1: cannot include missing: no such file"
        );
        let e = parse("<loop\n").unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let e = parse("<wide\n").unwrap_err();
        assert!(e.message.contains("files included"), "{e}");
        let e = parse("a b\n\nl smtp\n").unwrap_err();
        assert!(e.message.contains("no tag line"));
    }

    #[test]
    fn the_shipped_template_parses() {
        let text = include_str!("../../../config/imta.cnf");
        let c = parse(
            &text
                .replace("@@HOSTNAME@@", "mail.example.com")
                .replace("@@DEFAULT_DOMAIN@@", "example.com"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.channels[0].tag, "mail.example.com");
        // Every rule routes to a channel that exists.
        for rule in &c.rules {
            let tag = rule.template.rsplit('@').next().unwrap();
            assert!(
                c.channel_by_tag(tag).is_some(),
                "{}: no channel has tag {tag}",
                rule.origin
            );
        }
        let ms = c.channel("ims-ms").unwrap();
        assert_eq!(ms.last_of(&["backoff"]).unwrap().args.len(), 6);
        assert_eq!(
            ms.arg("maxjobs"),
            Some("2"),
            "its own maxjobs beats the default"
        );
        assert_eq!(
            (ms.arg("filesperjob"), ms.arg("threaddepth")),
            (Some("100"), Some("1")),
            "store delivery: threads in few programs"
        );
        assert!(c.channel("tcp_submit").unwrap().has("mustsaslserver"));
        assert!(c.channel("tcp_local").unwrap().has("maysaslserver"));
    }

    #[test]
    fn never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let words = [
            "l",
            "tcp_local",
            "smtp",
            "maxjobs",
            "7",
            "\"pt5m\"",
            "backoff",
            "notices",
            "<x",
            "!",
            "$U%$D@l",
            ".",
            "\n",
            "\n\n",
            " ",
            "defaults",
            "nodefaults",
        ];
        for _ in 0..5000 {
            let mut text = String::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(words[(seed % words.len() as u64) as usize]);
                text.push(if seed & 0x100 == 0 { ' ' } else { '\n' });
            }
            let _ = parse(&text);
        }
    }
}
