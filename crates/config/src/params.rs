//! The parameter registry: every configuration parameter that `configutil`
//! accepts and a daemon reads is declared here, once, with its type, default,
//! bounds and description. `configutil` validates against it, `configure`
//! writes `msg.conf.defaults` from it, and a test fails when code reads a
//! parameter that is not declared here.
//!
//! A `*` in a name stands for one dot-free segment chosen by the
//! administrator (`logfile.imap.loglevel` matches `logfile.*.loglevel`).

use std::fmt;

/// The type of a parameter's value, and so how a value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Free text.
    Text,
    /// `yes`/`no` (also accepted: `1`/`0`, `on`/`off`, `true`/`false`).
    Bool,
    /// A whole number within bounds.
    Int { min: i64, max: i64 },
    /// A TCP port, 1..=65535 (0 allowed where `allow_zero`, meaning "off").
    Port { allow_zero: bool },
    /// A number of bytes, with an optional K, M or G suffix.
    Size,
    /// One of a fixed set of words (compared case-insensitively).
    Choice(&'static [&'static str]),
    /// A host name or address; empty allowed.
    Host,
    /// An e-mail address `local@domain`.
    Address,
    /// An absolute or msg_svr_base-relative path.
    Path,
}

/// One declared parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Dotted name, possibly with `*` segments.
    pub name: &'static str,
    pub ty: ParamType,
    /// The shipped default, as it would be written in msg.conf.
    pub default: &'static str,
    /// Whether a running daemon picks up a change on `HUP` (`-m` shows it).
    pub refreshable: bool,
    /// What the parameter does, for `configutil -H` and msg.conf.defaults.
    pub description: &'static str,
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {name}: {reason}")]
pub struct InvalidValue {
    pub name: String,
    pub value: String,
    pub reason: String,
}

impl Param {
    /// Does `name` (a concrete parameter name) fall under this declaration?
    pub fn matches(&self, name: &str) -> bool {
        let mut want = self.name.split('.');
        let mut have = name.split('.');
        loop {
            match (want.next(), have.next()) {
                (None, None) => return true,
                (Some("*"), Some(seg)) if !seg.is_empty() => {}
                (Some(w), Some(h)) if w.eq_ignore_ascii_case(h) => {}
                _ => return false,
            }
        }
    }

    /// Checks `value` against the type; `Ok` carries the value as it will be
    /// stored (booleans and choices are kept as written, trimmed).
    pub fn validate(&self, name: &str, value: &str) -> Result<String, InvalidValue> {
        let v = value.trim();
        let bad = |reason: String| InvalidValue {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        };
        if v.chars().any(|c| c.is_control()) {
            return Err(bad("control characters are not allowed".into()));
        }
        match self.ty {
            ParamType::Text | ParamType::Path => {}
            ParamType::Bool => {
                parse_bool(v).ok_or_else(|| bad("expected yes or no (or 1/0, on/off)".into()))?;
            }
            ParamType::Int { min, max } => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| bad("expected a whole number".into()))?;
                if n < min || n > max {
                    return Err(bad(format!("must be between {min} and {max}")));
                }
            }
            ParamType::Port { allow_zero } => {
                let n: u32 = v
                    .parse()
                    .map_err(|_| bad("expected a port number".into()))?;
                let lo = if allow_zero { 0 } else { 1 };
                if n < lo || n > 65535 {
                    return Err(bad(format!("a port must be between {lo} and 65535")));
                }
            }
            ParamType::Size => {
                parse_size(v).ok_or_else(|| {
                    bad("expected a size in bytes, optionally with K, M or G".into())
                })?;
            }
            ParamType::Choice(words) => {
                if !words.iter().any(|w| w.eq_ignore_ascii_case(v)) {
                    return Err(bad(format!("must be one of: {}", words.join(", "))));
                }
            }
            ParamType::Host => {
                if !v.is_empty() && !v.split_whitespace().all(valid_host_token) {
                    return Err(bad("expected host names or addresses".into()));
                }
            }
            ParamType::Address => {
                if !v.is_empty() && !valid_address(v) {
                    return Err(bad("expected a full address such as pma@example.com".into()));
                }
            }
        }
        Ok(v.to_string())
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Text => f.write_str("text"),
            ParamType::Bool => f.write_str("boolean"),
            ParamType::Int { min, max } => write!(f, "integer {min}..{max}"),
            ParamType::Port { .. } => f.write_str("port"),
            ParamType::Size => f.write_str("size"),
            ParamType::Choice(w) => write!(f, "one of {}", w.join("|")),
            ParamType::Host => f.write_str("host"),
            ParamType::Address => f.write_str("address"),
            ParamType::Path => f.write_str("path"),
        }
    }
}

/// Reads the original's boolean spellings.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "1" | "on" | "true" => Some(true),
        "no" | "n" | "0" | "off" | "false" => Some(false),
        _ => None,
    }
}

/// Reads `1024`, `64K`, `2M`, `1G` as bytes.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1u64 << 10),
        'm' | 'M' => (&v[..v.len() - 1], 1 << 20),
        'g' | 'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn valid_host_token(t: &str) -> bool {
    t.len() <= 255
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
}

/// A domain name: dot-separated labels of letters, digits and hyphens.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A full address `local@domain` with a dotted domain.
pub fn valid_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && !local
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '@')
                && domain.contains('.')
                && valid_domain(domain)
        }
        None => false,
    }
}

const LOG_LEVELS: &[&str] = &[
    "Nolog",
    "Critical",
    "Error",
    "Warning",
    "Notice",
    "Information",
    "Debug",
];

macro_rules! p {
    ($name:expr, $ty:expr, $default:expr, $refresh:expr, $desc:expr) => {
        Param {
            name: $name,
            ty: $ty,
            default: $default,
            refreshable: $refresh,
            description: $desc,
        }
    };
}

use ParamType::*;

/// Every declared parameter, grouped by prefix.
#[rustfmt::skip]
pub static PARAMS: &[Param] = &[
    // --- host identity (configure) ---
    p!("local.hostname", Host, "", false,
       "Fully qualified name of this host, set by configure; used in greetings and generated certificates."),
    p!("local.defdomain", Host, "", false,
       "Default e-mail domain chosen at configure time."),
    p!("local.postmaster", Address, "", true,
       "Postmaster address chosen at configure time; errors and notices go there."),
    p!("local.orgdn", Text, "", false,
       "Organization DN under the user/group suffix that holds the default domain's users."),
    p!("local.serveruid", Text, "mailsrv", false,
       "System user the daemons run as after binding their ports when started as root."),
    p!("local.servergid", Text, "mail", false,
       "System group the daemons run as after binding their ports when started as root."),
    p!("local.components", Text, "mta,store,webmail", false,
       "Components chosen at configure time (mta, store, webmail, mmp), comma separated."),
    // --- directories (configure steps 7 and 8) ---
    p!("local.directory.backend", Choice(&["embedded", "ldap"]), "embedded", false,
       "Where users and groups live: the embedded LDIF directory under data/, or an LDAP server."),
    p!("local.ldaphost", Host, "", false,
       "Configuration directory LDAP host(s); empty with the embedded directory."),
    p!("local.ldapport", Port { allow_zero: false }, "389", false,
       "Configuration directory LDAP port."),
    p!("local.ldapusessl", Bool, "no", false,
       "Use LDAPS to reach the configuration directory."),
    p!("local.ldapsiedn", Text, "", false,
       "Bind DN for the configuration directory."),
    p!("local.ldapsiecred", Text, "", false,
       "Bind password for the configuration directory."),
    p!("local.ugldaphost", Host, "", false,
       "User/group directory LDAP host(s); a space-separated list is tried in order (failover)."),
    p!("local.ugldapport", Port { allow_zero: false }, "389", false,
       "User/group directory LDAP port."),
    p!("local.ugldapusessl", Bool, "no", false,
       "Use LDAPS to reach the user/group directory."),
    p!("local.ugldapbasedn", Text, "o=usergroup", false,
       "User/group directory suffix (top of the organization tree)."),
    p!("local.ugldapbinddn", Text, "cn=Directory Manager", false,
       "Bind DN for user/group lookups."),
    p!("local.ugldapbindcred", Text, "", false,
       "Bind password for user/group lookups (Table 5-2)."),
    p!("local.enduseradmindn", Text, "", false,
       "DN of the end user administrator created by configure."),
    p!("local.enduseradmincred", Text, "", false,
       "Password of the end user administrator (Table 5-2)."),
    p!("local.service.pab.enable", Bool, "no", false,
       "Enable the personal address book service."),
    p!("local.service.pab.ldapbinddn", Text, "", false,
       "Bind DN for personal address book searches."),
    p!("local.service.pab.ldappasswd", Text, "", false,
       "Password for the personal address book bind DN (Table 5-2)."),
    p!("local.ugldapstarttls", Bool, "no", false,
       "Use StartTLS on the plain LDAP port of the user/group directory."),
    p!("local.ldapcheckcert", Bool, "yes", false,
       "Check the LDAP server's certificate against the system's trusted authorities."),
    p!("local.schemaversion", Choice(&["1", "1.5", "2"]), "2", false,
       "Directory schema: 1 (DC tree), 1.5 (schema 2 objects with a DC tree) or 2 (one tree, search templates)."),
    p!("local.directory.file", Path, "data/directory/directory.ldif", false,
       "The embedded directory's LDIF file; reloaded when it changes."),
    p!("local.ugldap.domainsearchtemplate", Text,
       "(&(|(objectClass=sunManagedOrganization)(objectClass=inetDomain)(objectClass=mailDomain))(|(sunPreferredDomain=%V)(associatedDomain=%V)))", true,
       "Schema 2: the filter that finds a domain's organization (%V is the domain, escaped)."),
    p!("local.ugldap.usersearchtemplate", Text, "(&(objectClass=inetOrgPerson)(uid=%U))", true,
       "The filter that finds a user by login when the domain has no inetDomainSearchFilter (%U user id, %V domain, %o login)."),
    p!("local.ugldap.timeout", Int { min: 1, max: 300 }, "10", true,
       "Seconds an LDAP connection or operation may take before the directory counts as unavailable."),
    p!("local.ugldap.poolsize", Int { min: 1, max: 64 }, "4", false,
       "LDAP connections each process keeps open to the user/group directory."),
    p!("local.ugldap.cachettl", Int { min: 0, max: 86400 }, "60", true,
       "Seconds a directory answer is reused without asking the directory again (0: no cache)."),
    p!("local.ugldap.cachesize", Int { min: 0, max: 10_000_000 }, "100000", true,
       "Most directory answers a process keeps in its cache."),
    p!("local.ugldap.authcachettl", Int { min: 0, max: 86400 }, "900", true,
       "Seconds a successful password check is remembered (as a keyed digest, never the password), so the same login again skips the slow hash (0: always check)."),
    p!("local.ugldap.bindauth", Bool, "no", true,
       "Check passwords by binding to LDAP as the user instead of comparing userPassword."),
    p!("store.partition.primary.path", Path, "data/store/partition/primary", false,
       "Directory of the primary partition, where mailboxes live unless a user is placed elsewhere."),
    p!("store.partition.*.path", Path, "", false,
       "Directory of another partition (store.partition.NAME.path); users are placed on one with mboxutil."),
    p!("local.store.synclevel", Choice(&["messages", "all"]), "messages", false,
       "What stored makes durable before answering: messages (every message, mailbox and copy; flag changes and expunges within a second) or all (every change)."),
    p!("store.defaultpartition", Text, "primary", false,
       "The partition new users go to."),
    p!("store.quotaenforcement", Bool, "yes", true,
       "Refuse deliveries and appends that would take a user over mailQuota or mailMsgQuota."),
    p!("store.quotawarn", Int { min: 0, max: 100 }, "90", true,
       "Percent of a quota at which the user gets one warning message (100 turns warnings off)."),
    p!("store.expirestart", Int { min: 0, max: 23 }, "23", true,
       "Hour of the day (local time) at which stored applies the aging rules of config/store.expirerule."),
    p!("store.quotagraceperiod", Int { min: 0, max: 87600 }, "120", true,
       "Hours an over-quota account's mail stays queued before it is returned to its senders."),
    p!("store.defaultmailboxquota", Text, "-1", true,
       "Mailbox quota in bytes (K, M, G suffixes) for users without mailQuota; -1 means unlimited."),
    p!("store.defaultmessagequota", Text, "-1", true,
       "Message-count quota for users without mailMsgQuota; -1 means unlimited."),
    p!("service.dcroot", Text, "o=internet", false,
       "Root of the DC tree (schema 1 and 1.5); the organization tree root for schema 2."),
    p!("service.defaultdomain", Host, "", true,
       "Domain appended to logins that have none."),
    p!("service.loginseparator", Text, "@", true,
       "Characters that separate the user id from the domain in a login name."),
    // --- TLS ---
    p!("local.ssl.certfile", Path, "config/server-cert.pem", false,
       "PEM certificate chain the servers present for TLS."),
    p!("local.ssl.keyfile", Path, "config/server-key.pem", false,
       "PEM private key for local.ssl.certfile."),
    // --- what start-msg starts ---
    p!("local.store.enable", Bool, "yes", false,
       "Start the message store server (stored) with start-msg."),
    p!("local.imta.enable", Bool, "yes", false,
       "Start the MTA (dispatcher and job controller) with start-msg."),
    p!("local.mmp.enable", Bool, "no", false,
       "Start the Messaging Multiplexor with start-msg."),
    p!("service.listenaddr", Host, "", false,
       "Address the servers listen on; empty means all addresses."),
    p!("service.imap.enable", Bool, "yes", false,
       "Start the IMAP server with start-msg."),
    p!("service.imap.port", Port { allow_zero: true }, "143", false,
       "IMAP port (STARTTLS available); 0 turns the plain port off."),
    p!("service.imap.sslport", Port { allow_zero: true }, "993", false,
       "IMAP over TLS port."),
    p!("service.imap.enablesslport", Bool, "yes", false,
       "Listen on the IMAP over TLS port."),
    p!("service.imap.banner", Text, "%h %p service (%P %V)", true,
       "IMAP greeting: %h host, %p protocol, %P product, %V version."),
    p!("service.imap.idletimeout", Int { min: 30, max: 1440 }, "30", true,
       "Minutes an authenticated IMAP session may stay silent (RFC 9051: at least 30)."),
    p!("service.imap.maxsessions", Int { min: 1, max: 1_000_000 }, "10000", false,
       "Most IMAP sessions open at once; more connections are refused with BYE."),
    p!("service.imap.allowplaintext", Bool, "no", true,
       "Allow LOGIN and AUTHENTICATE PLAIN without TLS from any client (always allowed from loopback)."),
    p!("service.imap.appendlimit", Size, "52428800", true,
       "Largest message APPEND accepts (bytes), announced as APPENDLIMIT."),
    p!("service.pop.enable", Bool, "yes", false,
       "Start the POP server with start-msg."),
    p!("service.pop.port", Port { allow_zero: true }, "110", false,
       "POP3 port (STLS available); 0 turns the plain port off."),
    p!("service.pop.sslport", Port { allow_zero: true }, "995", false,
       "POP3 over TLS port."),
    p!("service.pop.enablesslport", Bool, "yes", false,
       "Listen on the POP3 over TLS port."),
    p!("service.pop.banner", Text, "%h %p service (%P %V)", true,
       "POP greeting: %h host, %p protocol, %P product, %V version."),
    p!("service.pop.idletimeout", Int { min: 10, max: 1440 }, "10", true,
       "Minutes a POP session may stay silent (RFC 1939: at least 10)."),
    p!("service.pop.maxsessions", Int { min: 1, max: 1_000_000 }, "10000", false,
       "Most POP sessions open at once; more connections are refused."),
    p!("service.pop.allowplaintext", Bool, "no", true,
       "Allow USER/PASS and AUTH PLAIN without TLS from any client (always allowed from loopback)."),
    p!("service.pop.apop", Bool, "no", true,
       "Offer APOP (a timestamp in the greeting); it works only for users whose directory entry holds a clear-text password."),
    p!("service.http.enable", Bool, "yes", false,
       "Start Messenger Express (webmail) with start-msg."),
    p!("service.http.port", Port { allow_zero: true }, "80", false,
       "Messenger Express HTTP port; 0 turns it off."),
    p!("service.http.sslport", Port { allow_zero: true }, "443", false,
       "Messenger Express HTTPS port."),
    p!("service.http.enablesslport", Bool, "yes", false,
       "Listen on the HTTPS port."),
    // --- watcher ---
    p!("local.watcher.enable", Bool, "yes", false,
       "Let the watcher probe the services (msprobe) and log failures."),
    p!("local.watcher.port", Port { allow_zero: true }, "49994", false,
       "Loopback TCP port where the watcher answers status queries; 0 turns it off."),
    p!("local.autorestart", Bool, "yes", true,
       "Restart a service that dies or stops answering its probe."),
    p!("local.autorestart.timeout", Int { min: 1, max: 86400 }, "600", true,
       "Seconds: a service that fails twice within this time is not restarted again."),
    p!("local.watcher.starttimeout", Int { min: 1, max: 3600 }, "60", true,
       "Seconds a starting service has to report that it accepts connections."),
    p!("local.watcher.stoptimeout", Int { min: 1, max: 3600 }, "30", true,
       "Seconds a stopping service has to exit after TERM before it is killed."),
    p!("local.probe.interval", Int { min: 1, max: 86400 }, "60", true,
       "Seconds between two protocol probes (msprobe) of each running service."),
    p!("local.probe.*.timeout", Int { min: 1, max: 3600 }, "30", true,
       "Seconds a service may take to answer its probe before it is restarted."),
    p!("local.probe.*.warningthreshold", Int { min: 1, max: 3600 }, "10", true,
       "Seconds after which a slow probe answer is logged as a warning."),
    // --- logging ---
    p!("logfile.*.loglevel", Choice(LOG_LEVELS), "Notice", true,
       "Least severe level written to the service's log."),
    p!("logfile.*.logdir", Path, "", false,
       "Directory of the service's log; empty means log/<service>."),
    p!("logfile.*.maxlogfilesize", Size, "2097152", true,
       "A log file is rolled over when it would grow past this many bytes."),
    p!("logfile.*.rollovertime", Int {
            min: 0, max: 31_536_000
        }, "86400", true,
       "Seconds after which the current log file is rolled over (0: never by age)."),
    p!("logfile.*.maxlogfiles", Int {
            min: 1, max: 10_000
        }, "10", true,
       "Rolled-over log files kept per service; older ones are removed."),
    p!("logfile.*.maxlogsize", Size, "20971520", true,
       "Total bytes of a service's rolled-over logs; the oldest are removed past it."),
    p!("logfile.*.expirytime", Int {
            min: 0, max: 315_360_000
        }, "604800", true,
       "Seconds a rolled-over log file is kept (0: no age limit)."),
];

/// The declaration covering `name`: an exact declaration wins over a pattern.
pub fn lookup(name: &str) -> Option<&'static Param> {
    PARAMS
        .iter()
        .find(|p| !p.name.contains('*') && p.name.eq_ignore_ascii_case(name))
        .or_else(|| {
            PARAMS
                .iter()
                .find(|p| p.name.contains('*') && p.matches(name))
        })
}

/// Declared names close to `name`, for "did you mean" messages.
pub fn suggestions(name: &str) -> Vec<&'static str> {
    let last = name.rsplit('.').next().unwrap_or(name);
    PARAMS
        .iter()
        .filter(|p| !p.name.contains('*'))
        .filter(|p| p.name.rsplit('.').next() == Some(last) || edit_distance(p.name, name) <= 2)
        .map(|p| p.name)
        .take(5)
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_documented_and_its_default_valid() {
        for p in PARAMS {
            assert!(p.description.len() > 10, "{} lacks a description", p.name);
            let concrete = p.name.replace('*', "x");
            if !p.default.is_empty() {
                p.validate(&concrete, p.default)
                    .unwrap_or_else(|e| panic!("default of {}: {e}", p.name));
            }
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = PARAMS.iter().map(|p| p.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn patterns_match_one_segment() {
        let p = lookup("logfile.imap.loglevel").unwrap();
        assert_eq!(p.name, "logfile.*.loglevel");
        assert!(lookup("logfile.imap.extra.loglevel").is_none());
        assert!(lookup("logfile..loglevel").is_none());
        assert_eq!(
            lookup("SERVICE.IMAP.PORT").unwrap().name,
            "service.imap.port"
        );
    }

    #[test]
    fn typed_values_are_checked() {
        let port = lookup("service.imap.port").unwrap();
        assert!(port.validate("service.imap.port", "70000").is_err());
        assert!(port.validate("service.imap.port", "abc").is_err());
        assert_eq!(
            port.validate("service.imap.port", " 1143 ").unwrap(),
            "1143"
        );
        let b = lookup("local.autorestart").unwrap();
        assert!(b.validate("local.autorestart", "maybe").is_err());
        assert!(b.validate("local.autorestart", "On").is_ok());
        let lvl = lookup("logfile.imap.loglevel").unwrap();
        assert!(lvl.validate("logfile.imap.loglevel", "debug").is_ok());
        assert!(lvl.validate("logfile.imap.loglevel", "verbose").is_err());
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }

    #[test]
    fn addresses_and_domains() {
        assert!(valid_address("pma@siroe.com"));
        assert!(!valid_address("pma@localhost"));
        assert!(!valid_address("@siroe.com"));
        assert!(!valid_address("pma"));
        assert!(valid_domain("example.com"));
        assert!(!valid_domain("exa mple.com"));
        assert!(!valid_domain("-bad.com"));
    }

    proptest::proptest! {
        #[test]
        fn validate_never_panics(name in "[a-z.*]{0,30}", value in "\\PC{0,40}") {
            if let Some(p) = lookup(&name) {
                let _ = p.validate(&name, &value);
            }
            let _ = parse_size(&value);
            let _ = valid_address(&value);
        }
    }
}
