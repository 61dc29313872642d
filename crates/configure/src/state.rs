//! The answers to configure's questions, as asked interactively or read
//! from a saveState file, and the rules each answer must follow (the
//! guide's "Create the Initial Messaging Server Runtime Configuration").
//!
//! A saveState file is `KEY = value` lines in the configutil format. Lines
//! `param.<name> = value` are extra configutil settings applied after the
//! initial configuration (ports of a test instance, for example).

use std::path::PathBuf;

use epistle_config::conffile::{ConfDocument, quote};
use epistle_config::params::{self, valid_address, valid_domain};

/// The components the guide offers.
pub const COMPONENTS: &[(&str, &str)] = &[
    ("mta", "Message Transfer Agent"),
    ("store", "Message Store"),
    ("webmail", "Messenger Express"),
    ("mmp", "Messaging Multiplexor"),
];

pub const EMBEDDED: &str = "embedded";

/// Every answer configure needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub data_dir: PathBuf,
    pub hostname: String,
    pub components: Vec<String>,
    pub system_user: String,
    pub system_group: String,
    /// `embedded` or an ldap:// / ldaps:// URL.
    pub config_directory: String,
    pub config_binddn: String,
    pub config_password: String,
    pub ug_directory: String,
    pub ug_binddn: String,
    pub ug_password: String,
    pub ug_suffix: String,
    pub postmaster: String,
    pub admin_password: String,
    pub default_domain: String,
    pub org_dn: String,
    /// PEM files to use; empty: generate a self-signed pair.
    pub tls_cert: String,
    pub tls_key: String,
    pub overwrite: bool,
    /// Extra configutil settings (`param.NAME = VALUE`).
    pub params: Vec<(String, String)>,
}

/// The keys of a saveState file, in the order they are written.
pub const KEYS: &[&str] = &[
    "CONFIG_DATA_DIR",
    "HOSTNAME",
    "COMPONENTS",
    "SYSTEM_USER",
    "SYSTEM_GROUP",
    "CONFIG_DIRECTORY",
    "CONFIG_DIRECTORY_BINDDN",
    "CONFIG_DIRECTORY_PASSWORD",
    "UG_DIRECTORY",
    "UG_DIRECTORY_BINDDN",
    "UG_DIRECTORY_PASSWORD",
    "UG_SUFFIX",
    "POSTMASTER",
    "ADMIN_PASSWORD",
    "DEFAULT_DOMAIN",
    "ORG_DN",
    "TLS_CERT",
    "TLS_KEY",
    "OVERWRITE",
];

/// A problem with one answer, named by its saveState key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct AnswerError {
    pub key: &'static str,
    pub reason: String,
}

fn err(key: &'static str, reason: impl Into<String>) -> AnswerError {
    AnswerError {
        key,
        reason: reason.into(),
    }
}

impl Answers {
    /// Reads a saveState file; a malformed or unknown line is an error
    /// naming its line number.
    pub fn from_state(text: &str) -> Result<Answers, String> {
        let doc = ConfDocument::parse(text).map_err(|e| e.to_string())?;
        let mut a = Answers::defaults_for("", "", "");
        for (i, line) in doc.lines.iter().enumerate() {
            let epistle_config::conffile::Line::Entry { name, value } = line else {
                continue;
            };
            let lineno = i + 1;
            if let Some(p) = name.strip_prefix("param.") {
                a.params.push((p.to_string(), value.clone()));
                continue;
            }
            let v = value.clone();
            match name.to_ascii_uppercase().as_str() {
                "CONFIG_DATA_DIR" => a.data_dir = PathBuf::from(v),
                "HOSTNAME" => a.hostname = v,
                "COMPONENTS" => {
                    a.components = v
                        .split(',')
                        .map(|c| c.trim().to_ascii_lowercase())
                        .filter(|c| !c.is_empty())
                        .collect()
                }
                "SYSTEM_USER" => a.system_user = v,
                "SYSTEM_GROUP" => a.system_group = v,
                "CONFIG_DIRECTORY" => a.config_directory = v,
                "CONFIG_DIRECTORY_BINDDN" => a.config_binddn = v,
                "CONFIG_DIRECTORY_PASSWORD" => a.config_password = v,
                "UG_DIRECTORY" => a.ug_directory = v,
                "UG_DIRECTORY_BINDDN" => a.ug_binddn = v,
                "UG_DIRECTORY_PASSWORD" => a.ug_password = v,
                "UG_SUFFIX" => a.ug_suffix = v,
                "POSTMASTER" => a.postmaster = v,
                "ADMIN_PASSWORD" => a.admin_password = v,
                "DEFAULT_DOMAIN" => a.default_domain = v,
                "ORG_DN" => a.org_dn = v,
                "TLS_CERT" => a.tls_cert = v,
                "TLS_KEY" => a.tls_key = v,
                "OVERWRITE" => {
                    a.overwrite = params::parse_bool(&v)
                        .ok_or_else(|| format!("line {lineno}: OVERWRITE must be yes or no"))?
                }
                _ => {
                    return Err(format!(
                        "line {lineno}: unknown key {name:?} (known keys: {}, param.<configutil name>)",
                        KEYS.join(", ")
                    ));
                }
            }
        }
        if a.org_dn.is_empty() && !a.default_domain.is_empty() {
            a.org_dn = default_org_dn(&a.default_domain, &a.ug_suffix);
        }
        Ok(a)
    }

    /// The defaults offered in brackets, for a host, user and group.
    pub fn defaults_for(hostname: &str, user: &str, group: &str) -> Answers {
        let domain = hostname
            .split_once('.')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        Answers {
            data_dir: PathBuf::from(epistle_config::paths::DEFAULT_DATA_DIR),
            hostname: hostname.to_string(),
            components: vec!["mta".into(), "store".into(), "webmail".into()],
            system_user: user.to_string(),
            system_group: group.to_string(),
            config_directory: EMBEDDED.into(),
            config_binddn: "cn=Directory Manager".into(),
            config_password: String::new(),
            ug_directory: EMBEDDED.into(),
            ug_binddn: "cn=Directory Manager".into(),
            ug_password: String::new(),
            ug_suffix: "o=usergroup".into(),
            postmaster: String::new(),
            admin_password: String::new(),
            org_dn: if domain.is_empty() {
                String::new()
            } else {
                default_org_dn(&domain, "o=usergroup")
            },
            default_domain: domain,
            tls_cert: String::new(),
            tls_key: String::new(),
            overwrite: false,
            params: Vec::new(),
        }
    }

    pub fn has(&self, component: &str) -> bool {
        self.components.iter().any(|c| c == component)
    }

    /// Checks every answer; returns warnings, or the first error per key.
    pub fn validate(&self) -> Result<Vec<String>, Vec<AnswerError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        if !self.data_dir.is_absolute() {
            errors.push(err("CONFIG_DATA_DIR", "must be an absolute path"));
        }
        if let Err(e) = check_hostname(&self.hostname) {
            errors.push(e);
        }
        if let Err(e) = check_components(&self.components, &mut warnings) {
            errors.push(e);
        }
        for (key, v) in [
            ("SYSTEM_USER", &self.system_user),
            ("SYSTEM_GROUP", &self.system_group),
        ] {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errors.push(err(
                    if key == "SYSTEM_USER" {
                        "SYSTEM_USER"
                    } else {
                        "SYSTEM_GROUP"
                    },
                    format!("{v:?} is not a user or group name"),
                ));
            }
        }
        for (key, url, dn) in [
            (
                "CONFIG_DIRECTORY",
                &self.config_directory,
                &self.config_binddn,
            ),
            ("UG_DIRECTORY", &self.ug_directory, &self.ug_binddn),
        ] {
            if let Err(reason) = check_directory(url, dn) {
                errors.push(err(
                    if key == "UG_DIRECTORY" {
                        "UG_DIRECTORY"
                    } else {
                        "CONFIG_DIRECTORY"
                    },
                    reason,
                ));
            }
        }
        if let Err(e) = check_postmaster(&self.postmaster) {
            errors.push(e);
        }
        if self.admin_password.chars().count() < 8 {
            errors.push(err("ADMIN_PASSWORD", "must be at least 8 characters"));
        }
        if !self.default_domain.contains('.') || !valid_domain(&self.default_domain) {
            errors.push(err(
                "DEFAULT_DOMAIN",
                format!(
                    "{:?} is not a domain name such as example.com",
                    self.default_domain
                ),
            ));
        }
        if !is_dn(&self.ug_suffix) {
            errors.push(err(
                "UG_SUFFIX",
                format!("{:?} is not a DN such as o=usergroup", self.ug_suffix),
            ));
        }
        match check_org_dn(&self.org_dn, &self.ug_suffix) {
            Ok(Some(w)) => warnings.push(w),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            errors.push(err(
                "TLS_CERT",
                "give both TLS_CERT and TLS_KEY, or neither to generate them",
            ));
        }
        for (name, value) in &self.params {
            if let Err(e) = epistle_config::ConfigFiles::check(name, value) {
                errors.push(AnswerError {
                    key: "param",
                    reason: e.to_string(),
                });
            }
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(errors)
        }
    }

    /// The saveState text for these answers (passwords included: the file
    /// is written mode 0600, and a silent run needs them).
    pub fn to_state(&self, stamp: &str) -> String {
        let mut doc = ConfDocument::parse(&format!(
            "# Epistle configure state file, written {stamp}.\n\
             # Edit it, then configure another host with:\n\
             #   msg_svr_base/sbin/configure -nodisplay -noconsole -state /full/path/saveState\n\
             # It holds the administrator password: keep it private.\n"
        ))
        .expect("static header");
        let values = [
            self.data_dir.display().to_string(),
            self.hostname.clone(),
            self.components.join(","),
            self.system_user.clone(),
            self.system_group.clone(),
            self.config_directory.clone(),
            self.config_binddn.clone(),
            self.config_password.clone(),
            self.ug_directory.clone(),
            self.ug_binddn.clone(),
            self.ug_password.clone(),
            self.ug_suffix.clone(),
            self.postmaster.clone(),
            self.admin_password.clone(),
            self.default_domain.clone(),
            self.org_dn.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
            if self.overwrite {
                "yes".into()
            } else {
                "no".into()
            },
        ];
        for (k, v) in KEYS.iter().zip(values) {
            doc.set(k, Some(&v));
        }
        let mut out = doc.render();
        for (n, v) in &self.params {
            out.push_str(&format!("param.{n} = {}\n", quote(v)));
        }
        out
    }
}

pub fn default_org_dn(domain: &str, suffix: &str) -> String {
    format!("o={domain},{suffix}")
}

pub fn check_hostname(h: &str) -> Result<(), AnswerError> {
    if h.contains('.') && valid_domain(h) {
        return Ok(());
    }
    Err(err(
        "HOSTNAME",
        format!(
            "{h:?} is not a fully qualified host name. Make the fully qualified name the first \
             name on this host's line in /etc/hosts, with one line per address, for example\n  \
             192.0.2.10 mail.example.com mail loghost mailhost\nor give the name in HOSTNAME"
        ),
    ))
}

pub fn check_components(c: &[String], warnings: &mut Vec<String>) -> Result<(), AnswerError> {
    let key = "COMPONENTS";
    if c.is_empty() {
        return Err(err(key, "choose at least one of mta, store, webmail, mmp"));
    }
    if let Some(bad) = c.iter().find(|x| !COMPONENTS.iter().any(|(n, _)| n == x)) {
        return Err(err(
            key,
            format!("unknown component {bad:?}; choose from mta, store, webmail, mmp"),
        ));
    }
    let has = |n: &str| c.iter().any(|x| x == n);
    if has("store") && !has("mta") {
        return Err(err(key, "the Message Store needs the MTA: add mta"));
    }
    if has("webmail") && !(has("store") && has("mta")) {
        return Err(err(
            key,
            "Messenger Express needs the Message Store and the MTA: add store and mta",
        ));
    }
    if has("mmp") && has("store") {
        warnings.push(
            "the Multiplexor and the Message Store on one host both want ports 110, 143 and 993: \
             after configure, move one of them with configutil (for example \
             configutil -o service.imap.port -v 1143)"
                .into(),
        );
    }
    Ok(())
}

fn check_directory(url: &str, binddn: &str) -> Result<(), String> {
    if url.eq_ignore_ascii_case(EMBEDDED) {
        return Ok(());
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("ldap://")
        .or_else(|| lower.strip_prefix("ldaps://"))
        .ok_or_else(|| format!("{url:?} is neither \"embedded\" nor an ldap:// or ldaps:// URL"))?;
    let hostport = rest.trim_end_matches('/');
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, p)| {
        if p.parse::<u16>().is_ok() {
            h
        } else {
            hostport
        }
    });
    if host.is_empty()
        || !valid_domain(host.trim_matches(|c| c == '[' || c == ']'))
            && host.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!("{url:?} does not name a host"));
    }
    if !is_dn(binddn) {
        return Err(format!(
            "bind DN {binddn:?} is not a DN such as cn=Directory Manager"
        ));
    }
    Ok(())
}

pub fn check_postmaster(p: &str) -> Result<(), AnswerError> {
    if !valid_address(p) {
        return Err(err(
            "POSTMASTER",
            format!("{p:?} is not a full address such as pma@example.com"),
        ));
    }
    if p.to_ascii_lowercase().starts_with("postmaster") {
        return Err(err(
            "POSTMASTER",
            "the address must not begin with \"postmaster\" (postmaster@ is an alias the MTA keeps); \
             choose a mailbox an administrator reads, such as pma@example.com",
        ));
    }
    Ok(())
}

fn is_dn(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|rdn| {
            rdn.split_once('=')
                .is_some_and(|(a, v)| !a.trim().is_empty() && !v.trim().is_empty())
        })
}

fn normalize_dn(s: &str) -> String {
    s.split(',')
        .map(|r| r.trim().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

/// The organization DN must sit under the suffix; equal to it is allowed
/// with the guide's warning about hosted domains.
pub fn check_org_dn(org: &str, suffix: &str) -> Result<Option<String>, AnswerError> {
    if !is_dn(org) {
        return Err(err(
            "ORG_DN",
            format!("{org:?} is not a DN such as o=example.com,o=usergroup"),
        ));
    }
    let (o, s) = (normalize_dn(org), normalize_dn(suffix));
    if o == s {
        return Ok(Some(format!(
            "the organization DN equals the user/group suffix {suffix}: hosted domains added later \
             would be hard to migrate; a DN one level below it, such as o=example.com,{suffix}, avoids that"
        )));
    }
    if !o.ends_with(&format!(",{s}")) {
        return Err(err(
            "ORG_DN",
            format!("{org:?} is not under the user/group suffix {suffix}"),
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Answers {
        let mut a = Answers::defaults_for("mail.example.com", "mailsrv", "mail");
        a.postmaster = "pma@example.com".into();
        a.admin_password = "correct horse".into();
        a
    }

    #[test]
    fn defaults_plus_answers_validate() {
        let a = good();
        assert_eq!(a.org_dn, "o=example.com,o=usergroup");
        assert_eq!(a.validate().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn state_round_trips() {
        let mut a = good();
        a.params.push(("service.imap.port".into(), "1143".into()));
        let back = Answers::from_state(&a.to_state("now")).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn each_bad_answer_is_named() {
        type Change = fn(&mut Answers);
        let cases: &[(&str, Change)] = &[
            ("DEFAULT_DOMAIN", |a| a.default_domain = "bad domain".into()),
            ("POSTMASTER", |a| {
                a.postmaster = "postmaster@example.com".into()
            }),
            ("POSTMASTER", |a| a.postmaster = "pma".into()),
            ("HOSTNAME", |a| a.hostname = "vm".into()),
            ("COMPONENTS", |a| a.components = vec!["store".into()]),
            ("COMPONENTS", |a| {
                a.components = vec!["mta".into(), "webmail".into()]
            }),
            ("ORG_DN", |a| a.org_dn = "o=elsewhere".into()),
            ("UG_DIRECTORY", |a| a.ug_directory = "http://x".into()),
            ("ADMIN_PASSWORD", |a| a.admin_password = "short".into()),
        ];
        for (key, change) in cases {
            let mut a = good();
            change(&mut a);
            let errs = a.validate().unwrap_err();
            assert!(errs.iter().any(|e| e.key == *key), "{key}: {errs:?}");
        }
    }

    #[test]
    fn warnings_for_mmp_with_store_and_org_equal_suffix() {
        let mut a = good();
        a.components.push("mmp".into());
        a.org_dn = "o=usergroup".into();
        assert_eq!(a.validate().unwrap().len(), 2);
    }

    #[test]
    fn bad_state_lines_are_named() {
        let e = Answers::from_state("HOSTNAME = a.b.c\nthis is wrong\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = Answers::from_state("HOSTNAME = a.b.c\nCOLOR = blue\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("COLOR"), "{e}");
    }
}
