//! The lookups every service needs, written once over [`Backend`]: domains
//! (schema 1 DC tree or schema 2 search), users by login and by address,
//! groups and their expansion, and authentication. Both backends answer
//! the same LDAP searches, so they give the same answers.

use std::collections::HashSet;

use epistle_config::Config;

use crate::cache::Cache;
use crate::dn::{Dn, escape_value};
use crate::entry::Entry;
use crate::filter::{Filter, escape};
use crate::model::{Domain, Group, Recipient, Status, User};
use crate::verified::VerifiedLogins;
use crate::{Backend, DirError, Scope, password};

/// Which shape the directory tree has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Schema 1: domains are nodes of a DC tree under `service.dcroot`,
    /// pointing with `inetDomainBaseDN` at their users.
    One,
    /// Schema 2 objects, still found through a DC tree.
    OnePointFive,
    /// Schema 2 native: one tree; domains found by search.
    Two,
}

/// The settings lookups follow, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub schema: Schema,
    /// The DC tree root (schema 1, 1.5) or the organization tree root (2).
    pub dcroot: String,
    pub default_domain: String,
    /// Characters that separate a user id from a domain in a login.
    pub login_separators: String,
    pub default_disk_quota: String,
    pub default_message_quota: String,
    /// Check passwords by binding as the user (LDAP only).
    pub bind_auth: bool,
    /// Schema 2 domain search (`%V`).
    pub domain_template: String,
    /// User search for domains without inetDomainSearchFilter.
    pub user_template: String,
}

/// A search template with `%U` (user id), `%V` (domain) and `%o` (the
/// whole login) replaced by escaped values, parsed.
pub fn fill_template(
    template: &str,
    uid: &str,
    domain: &str,
    login: &str,
) -> Result<Filter, DirError> {
    let text = template
        .replace("%U", &escape(uid))
        .replace("%V", &escape(domain))
        .replace("%o", &escape(login));
    Filter::parse(&text)
        .map_err(|e| DirError::Data(format!("search template {template:?} is not a filter: {e}")))
}

impl Settings {
    /// Settings for a schema and its root, the rest as shipped (tools and
    /// tests that have no configuration files).
    pub fn for_schema(schema: Schema, dcroot: &str, default_domain: &str) -> Settings {
        let version = match schema {
            Schema::One => "1",
            Schema::OnePointFive => "1.5",
            Schema::Two => "2",
        };
        Settings::from_config(
            &Config::defaults()
                .with("local.schemaversion", version)
                .with("service.dcroot", dcroot)
                .with("service.defaultdomain", default_domain),
        )
    }

    pub fn from_config(cfg: &Config) -> Settings {
        let schema = match cfg.get("local.schemaversion") {
            "1" => Schema::One,
            "1.5" => Schema::OnePointFive,
            _ => Schema::Two,
        };
        let dcroot = match (schema, cfg.is_set("service.dcroot")) {
            (Schema::Two, false) => cfg.get("local.ugldapbasedn").to_string(),
            _ => cfg.get("service.dcroot").to_string(),
        };
        let default_domain = match cfg.get("service.defaultdomain") {
            "" => cfg.get("local.defdomain").to_string(),
            d => d.to_string(),
        };
        Settings {
            schema,
            dcroot,
            default_domain,
            login_separators: cfg.get("service.loginseparator").to_string(),
            default_disk_quota: cfg.get("store.defaultmailboxquota").to_string(),
            default_message_quota: cfg.get("store.defaultmessagequota").to_string(),
            bind_auth: cfg.get_bool("local.ugldap.bindauth"),
            domain_template: cfg.get("local.ugldap.domainsearchtemplate").to_string(),
            user_template: cfg.get("local.ugldap.usersearchtemplate").to_string(),
        }
    }
}

/// Why a login was refused: distinct reasons for the log, one answer for
/// the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    NoSuchUser,
    BadPassword,
    /// The account (or its domain) is not active.
    NotActive(Status),
}

impl Denied {
    pub fn reason(&self) -> String {
        match self {
            Denied::NoSuchUser => "no such user".into(),
            Denied::BadPassword => "authentication failed".into(),
            Denied::NotActive(s) => format!("account {}", s.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Ok(Box<User>),
    Denied(Denied),
}

/// Nested groups deeper than this are cut (and logged by the caller).
pub const MAX_GROUP_DEPTH: usize = 16;
/// Most members one expansion returns.
pub const MAX_MEMBERS: usize = 100_000;

/// The one Directory interface.
pub struct Directory {
    backend: Backend,
    settings: Settings,
    cache: Cache,
    verified: VerifiedLogins,
}

impl Directory {
    pub fn new(backend: Backend, settings: Settings, cache: Cache) -> Directory {
        Directory {
            backend,
            settings,
            cache,
            verified: VerifiedLogins::disabled(),
        }
    }

    /// The directory remembering successful logins (off by default).
    pub fn with_verified_logins(mut self, verified: VerifiedLogins) -> Directory {
        self.verified = verified;
        self
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn quota_defaults(&self) -> (&str, &str) {
        (
            &self.settings.default_disk_quota,
            &self.settings.default_message_quota,
        )
    }

    /// A hosted domain by name (or alias); `None` when not hosted here.
    pub async fn domain(&self, name: &str) -> Result<Option<Domain>, DirError> {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if !epistle_config::params::valid_domain(&name) {
            return Ok(None);
        }
        if let Some(hit) = self.cache.get_domain(&name) {
            return Ok(hit);
        }
        let found = match self.settings.schema {
            Schema::One | Schema::OnePointFive => self.domain_from_dc_tree(&name).await?,
            Schema::Two => self.domain_by_search(&name).await?,
        };
        self.cache.put_domain(&name, found.clone());
        Ok(found)
    }

    async fn domain_from_dc_tree(&self, name: &str) -> Result<Option<Domain>, DirError> {
        let dn = dc_dn(name, &self.settings.dcroot);
        let node = self
            .backend
            .search(&dn, Scope::Base, &Filter::Present("objectClass".into()))
            .await?;
        let Some(node) = node.into_iter().next() else {
            return Ok(None);
        };
        if !(node.has_class("inetDomain")
            || node.has_class("mailDomain")
            || node.has_class("inetDomainAlias"))
        {
            return Ok(None);
        }
        let canonical = node
            .get("inetCanonicalDomainName")
            .unwrap_or(name)
            .to_ascii_lowercase();
        let base_dn = match node.get("inetDomainBaseDN") {
            Some(b) => b.to_string(),
            None => {
                // An alias node points at its canonical node.
                let Some(target) = node.get("aliasedObjectName") else {
                    return Err(DirError::Data(format!("{dn} has no inetDomainBaseDN")));
                };
                let real = self
                    .backend
                    .search(target, Scope::Base, &Filter::Present("objectClass".into()))
                    .await?;
                match real.first().and_then(|r| r.get("inetDomainBaseDN")) {
                    Some(b) => b.to_string(),
                    None => {
                        return Err(DirError::Data(format!("{target} has no inetDomainBaseDN")));
                    }
                }
            }
        };
        Ok(Some(domain_from(name, canonical, base_dn, node)))
    }

    async fn domain_by_search(&self, name: &str) -> Result<Option<Domain>, DirError> {
        let f = fill_template(&self.settings.domain_template, "", name, "")?;
        let mut hits = self
            .backend
            .search(&self.settings.dcroot, Scope::Sub, &f)
            .await?;
        match hits.len() {
            0 => Ok(None),
            1 => {
                let node = hits.remove(0);
                let canonical = node
                    .get("sunPreferredDomain")
                    .or_else(|| node.get("associatedDomain"))
                    .unwrap_or(name)
                    .to_ascii_lowercase();
                let base = node.dn.clone();
                Ok(Some(domain_from(name, canonical, base, node)))
            }
            n => Err(DirError::Data(format!(
                "domain {name} is claimed by {n} organizations"
            ))),
        }
    }

    /// Splits a login into user id and domain (`service.loginseparator`,
    /// `service.defaultdomain`).
    pub fn split_login<'a>(&'a self, login: &'a str) -> (&'a str, &'a str) {
        match login.rfind(|c| self.settings.login_separators.contains(c)) {
            Some(at) if at > 0 && at + 1 < login.len() => (&login[..at], &login[at + 1..]),
            _ => (login, self.settings.default_domain.as_str()),
        }
    }

    /// The login that names a user's mailboxes in the store: the bare
    /// `uid` in the default domain, `uid@domain` elsewhere, so that
    /// [`Directory::user_by_login`] finds the user again from it.
    pub fn store_owner(&self, user: &User) -> String {
        if user
            .domain
            .eq_ignore_ascii_case(&self.settings.default_domain)
        {
            user.uid.clone()
        } else {
            format!("{}@{}", user.uid, user.domain)
        }
    }

    /// A user by login name (`uid`, `uid@domain`).
    pub async fn user_by_login(&self, login: &str) -> Result<Option<User>, DirError> {
        let login = login.trim();
        if login.is_empty() || login.len() > 512 || login.chars().any(|c| c.is_control()) {
            return Ok(None);
        }
        if let Some(hit) = self.cache.get_user(login) {
            return Ok(hit);
        }
        let (uid, domain_name) = self.split_login(login);
        let Some(domain) = self.domain(domain_name).await? else {
            self.cache.put_user(login, None);
            return Ok(None);
        };
        let template = domain
            .search_filter
            .as_deref()
            .unwrap_or(&self.settings.user_template);
        let filter = fill_template(template, uid, &domain.canonical, login)
            .map_err(|e| DirError::Data(format!("domain {}: {e}", domain.name)))?;
        let mut hits = self
            .backend
            .search(&domain.base_dn, Scope::Sub, &filter)
            .await?;
        let user = match hits.len() {
            0 => None,
            1 => Some(User::from_entry(
                hits.remove(0),
                &domain,
                self.quota_defaults(),
            )),
            n => {
                return Err(DirError::Data(format!(
                    "login {login} matches {n} entries in {}",
                    domain.name
                )));
            }
        };
        self.cache.put_user(login, user.clone());
        Ok(user)
    }

    /// What an address reaches: a user or a group, found by `mail`,
    /// `mailAlternateAddress` or `mailEquivalentAddress`, or the domain's
    /// catch-all (`mailAlternateAddress: @domain`). `None` when the domain
    /// is hosted but nobody has the address, or the domain is not hosted.
    pub async fn recipient(&self, address: &str) -> Result<Option<Recipient>, DirError> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let Some((local, domain_name)) = address.rsplit_once('@') else {
            return Ok(None);
        };
        if local.is_empty()
            || address.len() > 320
            || address.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Ok(None);
        }
        let key = address.to_ascii_lowercase();
        if let Some(hit) = self.cache.get_recipient(&key) {
            return Ok(hit);
        }
        let Some(domain) = self.domain(domain_name).await? else {
            self.cache.put_recipient(&key, None);
            return Ok(None);
        };
        let mut candidates = vec![format!("{local}@{}", domain.name)];
        if domain.canonical != domain.name {
            candidates.push(format!("{local}@{}", domain.canonical));
        }
        let mut found = None;
        for a in &candidates {
            if let Some(r) = self.find_address(&domain, a).await? {
                found = Some(r);
                break;
            }
        }
        if found.is_none() {
            for d in [&domain.name, &domain.canonical] {
                if let Some(r) = self.find_address(&domain, &format!("@{d}")).await? {
                    found = Some(r);
                    break;
                }
            }
        }
        self.cache.put_recipient(&key, found.clone());
        Ok(found)
    }

    async fn find_address(
        &self,
        domain: &Domain,
        address: &str,
    ) -> Result<Option<Recipient>, DirError> {
        let f = Filter::Or(vec![
            Filter::eq("mail", address),
            Filter::eq("mailAlternateAddress", address),
            Filter::eq("mailEquivalentAddress", address),
        ]);
        let mut hits = self.backend.search(&domain.base_dn, Scope::Sub, &f).await?;
        match hits.len() {
            0 => Ok(None),
            1 => Ok(Some(self.classify(hits.remove(0), domain))),
            n => Err(DirError::Data(format!(
                "address {address} belongs to {n} entries"
            ))),
        }
    }

    fn classify(&self, e: Entry, domain: &Domain) -> Recipient {
        if is_group(&e) {
            Recipient::Group(Box::new(Group::from_entry(e, domain)))
        } else {
            Recipient::User(Box::new(User::from_entry(e, domain, self.quota_defaults())))
        }
    }

    /// The addresses a group's mail goes to: `mgrpRFC822MailMember`, the
    /// `mail` of each `uniqueMember` and of each entry a `memberURL` or
    /// `mgrpDeliverTo` URL finds (`mailto:` ones as they are), nested
    /// groups expanded, loops and repeats cut.
    pub async fn expand(&self, group: &Group) -> Result<Vec<String>, DirError> {
        let mut out = Vec::new();
        let mut seen_addr = HashSet::new();
        let mut seen_dn = HashSet::new();
        if let Ok(dn) = Dn::parse(&group.dn) {
            seen_dn.insert(dn.normalized());
        }
        let mut work: Vec<(Entry, usize)> = vec![(group.entry.clone(), 0)];
        while let Some((g, depth)) = work.pop() {
            if depth > MAX_GROUP_DEPTH {
                return Err(DirError::Data(format!(
                    "groups nested more than {MAX_GROUP_DEPTH} deep under {}",
                    group.dn
                )));
            }
            for a in g.get_all("mgrpRFC822MailMember") {
                push_addr(&mut out, &mut seen_addr, a);
            }
            let mut members: Vec<Entry> = Vec::new();
            for dn in g.get_all("uniqueMember") {
                members.extend(
                    self.backend
                        .search(dn, Scope::Base, &Filter::Present("objectClass".into()))
                        .await?,
                );
            }
            // mgrpDeliverTo: mailto: addresses, or LDAP URLs like memberURL.
            let mut urls: Vec<&String> = g.get_all("memberURL").iter().collect();
            for target in g.get_all("mgrpDeliverTo") {
                match target.strip_prefix("mailto:") {
                    Some(addr) => push_addr(&mut out, &mut seen_addr, addr),
                    None => urls.push(target),
                }
            }
            for url in urls {
                let Some((base, scope, filter)) = parse_ldap_url(url) else {
                    return Err(DirError::Data(format!(
                        "memberURL of {} is not an LDAP URL: {url}",
                        g.dn
                    )));
                };
                members.extend(self.backend.search(&base, scope, &filter).await?);
            }
            for m in members {
                let Ok(dn) = Dn::parse(&m.dn) else { continue };
                if !seen_dn.insert(dn.normalized()) {
                    continue; // a loop, or reached twice
                }
                if is_group(&m) {
                    work.push((m, depth + 1));
                } else if let Some(mail) = m.get("mail") {
                    push_addr(&mut out, &mut seen_addr, mail);
                }
            }
            if out.len() > MAX_MEMBERS {
                return Err(DirError::Data(format!(
                    "{} expands to more than {MAX_MEMBERS} members",
                    group.dn
                )));
            }
        }
        Ok(out)
    }

    /// Checks a login and password. An unreachable directory is an error
    /// (a temporary failure for the client), never a "no".
    pub async fn authenticate(&self, login: &str, given: &str) -> Result<Auth, DirError> {
        if given.is_empty() || given.len() > password::MAX_PASSWORD {
            return Ok(Auth::Denied(Denied::BadPassword));
        }
        let Some(user) = self.user_by_login(login).await? else {
            // As long as a wrong password takes: the time of the answer
            // must not tell which logins exist.
            verify_off_runtime(vec![decoy_hash().to_string()], given.to_string()).await;
            return Ok(Auth::Denied(Denied::NoSuchUser));
        };
        let good = if self.settings.bind_auth {
            self.backend.check_bind(&user.dn, given).await?
        } else {
            let stored = self.current_passwords(&user).await?;
            if self.verified.contains(&stored, given) {
                true
            } else {
                let good = verify_off_runtime(stored.clone(), given.to_string()).await;
                if good {
                    self.verified.remember(&stored, given);
                }
                good
            }
        };
        Ok(admit(user, good))
    }

    /// Checks a POP3 APOP answer (RFC 1939 §7). It can succeed only for
    /// users whose directory entry holds the password in clear text, since
    /// the digest is computed from the secret itself; with bind
    /// authentication the directory never shows a password, so never.
    pub async fn authenticate_apop(
        &self,
        login: &str,
        timestamp: &str,
        digest: &str,
    ) -> Result<Auth, DirError> {
        let Some(user) = self.user_by_login(login).await? else {
            return Ok(Auth::Denied(Denied::NoSuchUser));
        };
        let good = !self.settings.bind_auth
            && self
                .current_passwords(&user)
                .await?
                .iter()
                .any(|p| password::verify_apop(p, timestamp, digest));
        Ok(admit(user, good))
    }

    /// The user's `userPassword` values as the directory holds them now:
    /// the cached entry may be older than a password change.
    async fn current_passwords(&self, user: &User) -> Result<Vec<String>, DirError> {
        let fresh = self
            .backend
            .search(
                &user.dn,
                Scope::Base,
                &Filter::Present("objectClass".into()),
            )
            .await?;
        Ok(fresh
            .first()
            .map(|e| e.get_all("userPassword").to_vec())
            .unwrap_or_default())
    }

    /// Forgets cached answers (after a provisioning change).
    pub fn invalidate(&self) {
        self.cache.clear();
    }
}

/// A hash of no one's password, made with the cost of new passwords,
/// checked for logins that name no user.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| password::hash("decoy password of no account").unwrap_or_default())
}

/// The answer to a login whose secret was `good`: an account that is not
/// active is refused only after a right password, so a wrong guess learns
/// nothing about it.
fn admit(user: User, good: bool) -> Auth {
    if !good {
        return Auth::Denied(Denied::BadPassword);
    }
    if !user.status.login_allowed() {
        return Auth::Denied(Denied::NotActive(user.status));
    }
    Auth::Ok(Box::new(user))
}

/// Checks a password against stored hashes away from the async workers:
/// a memory-hard hash (argon2id: 19 MiB, tens of milliseconds) would
/// stall every session on the worker, and run on many threads at once it
/// would leave each thread's allocator holding its memory. A few at a
/// time, on the blocking pool.
async fn verify_off_runtime(stored: Vec<String>, given: String) -> bool {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(n.clamp(1, 4))
    });
    let Ok(_slot) = slots.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || stored.iter().any(|p| password::verify(p, &given)))
        .await
        .unwrap_or(false)
}

fn push_addr(out: &mut Vec<String>, seen: &mut HashSet<String>, a: &str) {
    let a = a.trim();
    if !a.is_empty() && seen.insert(a.to_ascii_lowercase()) {
        out.push(a.to_string());
    }
}

fn is_group(e: &Entry) -> bool {
    e.has_class("inetMailGroup")
        || e.has_class("groupOfUniqueNames")
        || e.has_class("groupOfURLs")
        || e.has_class("groupOfNames")
}

fn domain_from(name: &str, canonical: String, base_dn: String, node: Entry) -> Domain {
    let status = Status::parse(node.get("inetDomainStatus"))
        .worst(Status::parse(node.get("mailDomainStatus")));
    Domain {
        name: name.to_string(),
        canonical,
        base_dn,
        status,
        search_filter: node.get("inetDomainSearchFilter").map(str::to_string),
        entry: node,
    }
}

/// `example.com` under `o=internet` → `dc=example,dc=com,o=internet`.
pub fn dc_dn(domain: &str, root: &str) -> String {
    let dcs: Vec<String> = domain
        .split('.')
        .map(|l| format!("dc={}", escape_value(l)))
        .collect();
    format!("{},{root}", dcs.join(","))
}

/// `ldap:///base??scope?filter` (RFC 4516) → its search; the host part
/// must be empty: dynamic groups are resolved in this directory.
pub fn parse_ldap_url(url: &str) -> Option<(String, Scope, Filter)> {
    let rest = url
        .trim()
        .strip_prefix("ldap://")
        .or_else(|| url.trim().strip_prefix("LDAP://"))?;
    let (host, rest) = rest.split_once('/')?;
    if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let mut parts = rest.splitn(4, '?');
    let base = percent_decode(parts.next()?)?;
    let _attrs = parts.next();
    let scope = match parts.next().unwrap_or("").to_ascii_lowercase().as_str() {
        "base" => Scope::Base,
        "one" => Scope::One,
        "" | "sub" => Scope::Sub,
        _ => return None,
    };
    let filter = match parts.next() {
        Some(f) if !f.is_empty() => Filter::parse(&percent_decode(f)?).ok()?,
        _ => Filter::Present("objectClass".into()),
    };
    Some((base, scope, filter))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_tree_names() {
        assert_eq!(
            dc_dn("example.com", "o=internet"),
            "dc=example,dc=com,o=internet"
        );
    }

    #[test]
    fn member_urls() {
        let (base, scope, f) =
            parse_ldap_url("ldap:///o=example.com,o=usergroup??sub?(departmentNumber=42)").unwrap();
        assert_eq!(base, "o=example.com,o=usergroup");
        assert_eq!(scope, Scope::Sub);
        assert_eq!(f, Filter::eq("departmentNumber", "42"));
        assert!(parse_ldap_url("ldap://elsewhere.example.net/o=x??sub?(a=b)").is_none());
        assert!(parse_ldap_url("http://x").is_none());
        let (_, _, f) = parse_ldap_url("ldap:///o=x??one?(cn=a%20b)").unwrap();
        assert_eq!(f, Filter::eq("cn", "a b"));
    }
}
