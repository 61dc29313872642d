//! The LDAP backend (ldap3 over rustls): the servers of
//! `local.ugldaphost` tried in order (failover), a small pool of bound
//! connections, a timeout on every connect and operation, `ldaps://` or
//! StartTLS. A server that does not answer makes lookups fail as
//! *unavailable* (temporary), never as "no such user".

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, SearchEntry};
use tokio::sync::Mutex;

use crate::entry::Entry;
use crate::filter::Filter;
use crate::{DirError, Scope};

/// LDAP result codes this backend tells apart.
const NO_SUCH_OBJECT: u32 = 32;
const INVALID_CREDENTIALS: u32 = 49;
const INSUFFICIENT_ACCESS: u32 = 50;
const BUSY: u32 = 51;
const UNAVAILABLE: u32 = 52;
const ALREADY_EXISTS: u32 = 68;

pub struct LdapDirectory {
    urls: Vec<String>,
    bind_dn: String,
    bind_pw: String,
    timeout: Duration,
    starttls: bool,
    check_cert: bool,
    pool: Vec<Mutex<Option<Ldap>>>,
    next: AtomicUsize,
}

/// Connection settings, from `local.ugldap*` or given by a tool.
#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// `ldap://host:port` or `ldaps://host:port`, tried in order.
    pub urls: Vec<String>,
    pub bind_dn: String,
    pub bind_pw: String,
    pub timeout: Duration,
    pub pool_size: usize,
    pub starttls: bool,
    pub check_cert: bool,
}

impl LdapSettings {
    pub fn from_config(cfg: &epistle_config::Config) -> LdapSettings {
        let ssl = cfg.get_bool("local.ugldapusessl");
        let port = cfg.get_port("local.ugldapport");
        let urls = cfg
            .get("local.ugldaphost")
            .split_whitespace()
            .map(|h| {
                // A host may carry its own port: "ldap1.example.com:1389".
                let scheme = if ssl { "ldaps" } else { "ldap" };
                if h.rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                    && !h.starts_with('[')
                {
                    format!("{scheme}://{h}")
                } else {
                    format!("{scheme}://{h}:{port}")
                }
            })
            .collect();
        LdapSettings {
            urls,
            bind_dn: cfg.get("local.ugldapbinddn").to_string(),
            bind_pw: cfg.get("local.ugldapbindcred").to_string(),
            timeout: Duration::from_secs(cfg.get_u64("local.ugldap.timeout").max(1)),
            pool_size: usize::try_from(cfg.get_u64("local.ugldap.poolsize"))
                .unwrap_or(4)
                .max(1),
            starttls: cfg.get_bool("local.ugldapstarttls"),
            check_cert: cfg.get_bool("local.ldapcheckcert"),
        }
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> DirError {
    DirError::Unavailable(format!("{what}: {e}"))
}

impl LdapDirectory {
    pub fn from_config(cfg: &epistle_config::Config) -> Result<LdapDirectory, DirError> {
        LdapDirectory::new(LdapSettings::from_config(cfg))
    }

    pub fn new(s: LdapSettings) -> Result<LdapDirectory, DirError> {
        if s.urls.is_empty() {
            return Err(DirError::Unavailable(
                "no LDAP server is configured: set local.ugldaphost with configutil".into(),
            ));
        }
        Ok(LdapDirectory {
            urls: s.urls,
            bind_dn: s.bind_dn,
            bind_pw: s.bind_pw,
            timeout: s.timeout,
            starttls: s.starttls,
            check_cert: s.check_cert,
            pool: (0..s.pool_size).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    fn settings(&self) -> LdapConnSettings {
        LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls)
            .set_no_tls_verify(!self.check_cert)
    }

    /// Connects to the first server that answers, bound as `dn`.
    async fn connect_as(&self, dn: &str, pw: &str) -> Result<Result<Ldap, u32>, DirError> {
        let mut failures = Vec::new();
        for url in &self.urls {
            let attempt = async {
                let (conn, mut ldap) = LdapConnAsync::with_settings(self.settings(), url).await?;
                ldap3::drive!(conn);
                let res = ldap.with_timeout(self.timeout).simple_bind(dn, pw).await?;
                Ok::<_, LdapError>((ldap, res.rc))
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok((ldap, 0))) => return Ok(Ok(ldap)),
                Ok(Ok((_, INVALID_CREDENTIALS))) => return Ok(Err(INVALID_CREDENTIALS)),
                Ok(Ok((_, rc))) if rc != BUSY && rc != UNAVAILABLE => return Ok(Err(rc)),
                Ok(Ok((_, rc))) => failures.push(format!("{url}: result code {rc}")),
                Ok(Err(e)) => failures.push(format!("{url}: {e}")),
                Err(_) => failures.push(format!(
                    "{url}: no answer within {} s",
                    self.timeout.as_secs()
                )),
            }
        }
        Err(DirError::Unavailable(format!(
            "no LDAP server answered ({})",
            failures.join("; ")
        )))
    }

    /// A pooled connection bound as the configured DN.
    async fn handle(&self) -> Result<(usize, Ldap), DirError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let mut guard = self.pool[slot].lock().await;
        if let Some(l) = guard.as_mut()
            && !l.is_closed()
        {
            return Ok((slot, l.clone()));
        }
        match self.connect_as(&self.bind_dn, &self.bind_pw).await? {
            Ok(l) => {
                *guard = Some(l.clone());
                Ok((slot, l))
            }
            Err(rc) => Err(DirError::Unavailable(format!(
                "the directory refused the bind as {} (result code {rc}); check local.ugldapbinddn and local.ugldapbindcred",
                self.bind_dn
            ))),
        }
    }

    async fn forget(&self, slot: usize) {
        *self.pool[slot].lock().await = None;
    }

    /// Runs one operation on a pooled connection; a broken connection is
    /// replaced and the operation tried once more (on the next server if
    /// this one is gone).
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, DirError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: std::future::Future<Output = Result<T, LdapError>>,
    {
        let mut last = None;
        for _ in 0..2 {
            let (slot, ldap) = self.handle().await?;
            match tokio::time::timeout(self.timeout, op(ldap)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    self.forget(slot).await;
                    last = Some(unavailable(what, e));
                }
                Err(_) => {
                    self.forget(slot).await;
                    last = Some(unavailable(
                        what,
                        format!("no answer within {} s", self.timeout.as_secs()),
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| unavailable(what, "failed")))
    }

    pub async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &Filter,
    ) -> Result<Vec<Entry>, DirError> {
        let scope = match scope {
            Scope::Base => ldap3::Scope::Base,
            Scope::One => ldap3::Scope::OneLevel,
            Scope::Sub => ldap3::Scope::Subtree,
        };
        let text = filter.to_string();
        let timeout = self.timeout;
        let res = self
            .run("LDAP search", |mut l| {
                let text = text.clone();
                async move {
                    l.with_timeout(timeout)
                        .search(base, scope, &text, vec!["*"])
                        .await
                }
            })
            .await?;
        match res.1.rc {
            0 => {}
            NO_SUCH_OBJECT => return Ok(Vec::new()),
            BUSY | UNAVAILABLE => {
                return Err(unavailable(
                    "LDAP search",
                    format!("result code {}", res.1.rc),
                ));
            }
            rc => {
                return Err(DirError::Data(format!(
                    "search of {base} failed: result code {rc} {}",
                    res.1.text
                )));
            }
        }
        Ok(res
            .0
            .into_iter()
            .map(|re| {
                let se = SearchEntry::construct(re);
                let mut e = Entry::new(se.dn);
                let mut names: Vec<_> = se.attrs.into_iter().collect();
                names.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, values) in names {
                    for v in values {
                        e.add(&name, v);
                    }
                }
                e
            })
            .collect())
    }

    /// Binds as `dn` with `password` on a connection of its own.
    pub async fn check_bind(&self, dn: &str, password: &str) -> Result<bool, DirError> {
        match self.connect_as(dn, password).await? {
            Ok(mut l) => {
                let _ = l.unbind().await;
                Ok(true)
            }
            Err(INVALID_CREDENTIALS) => Ok(false),
            Err(rc) => Err(DirError::Data(format!(
                "bind as {dn} failed with result code {rc}"
            ))),
        }
    }

    fn check(what: &str, dn: &str, rc: u32, text: &str) -> Result<(), DirError> {
        match rc {
            0 => Ok(()),
            NO_SUCH_OBJECT => Err(DirError::NotFound(dn.to_string())),
            ALREADY_EXISTS => Err(DirError::AlreadyExists(dn.to_string())),
            INSUFFICIENT_ACCESS => Err(DirError::Refused(format!("{what} {dn}: {text}"))),
            BUSY | UNAVAILABLE => Err(unavailable(what, format!("result code {rc}"))),
            _ => Err(DirError::Data(format!(
                "{what} {dn}: result code {rc} {text}"
            ))),
        }
    }

    pub async fn add(&self, entry: Entry) -> Result<(), DirError> {
        let attrs: Vec<(String, HashSet<String>)> = entry
            .attributes()
            .map(|(n, v)| (n.to_string(), v.iter().cloned().collect()))
            .collect();
        let dn = entry.dn.clone();
        let res = self
            .run("LDAP add", |mut l| {
                let attrs = attrs.clone();
                let dn = dn.clone();
                async move { l.add(&dn, attrs).await }
            })
            .await?;
        Self::check("add", &entry.dn, res.rc, &res.text)
    }

    pub async fn replace(&self, entry: Entry) -> Result<(), DirError> {
        let current = self
            .search(
                &entry.dn,
                Scope::Base,
                &Filter::Present("objectClass".into()),
            )
            .await?;
        let Some(current) = current.into_iter().next() else {
            return Err(DirError::NotFound(entry.dn.clone()));
        };
        let mut mods: Vec<Mod<String>> = Vec::new();
        for (name, values) in entry.attributes() {
            if current.get_all(name) != values {
                mods.push(Mod::Replace(
                    name.to_string(),
                    values.iter().cloned().collect(),
                ));
            }
        }
        for (name, _) in current.attributes() {
            if !entry.has(name) {
                mods.push(Mod::Replace(name.to_string(), HashSet::new()));
            }
        }
        if mods.is_empty() {
            return Ok(());
        }
        let dn = entry.dn.clone();
        let res = self
            .run("LDAP modify", |mut l| {
                let mods = mods.clone();
                let dn = dn.clone();
                async move { l.modify(&dn, mods).await }
            })
            .await?;
        Self::check("modify", &entry.dn, res.rc, &res.text)
    }

    /// Adds values to one attribute of an existing entry.
    pub async fn add_values(
        &self,
        dn: &str,
        attr: &str,
        values: &[String],
    ) -> Result<(), DirError> {
        let set: HashSet<String> = values.iter().cloned().collect();
        let res = self
            .run("LDAP modify", |mut l| {
                let set = set.clone();
                async move { l.modify(dn, vec![Mod::Add(attr.to_string(), set)]).await }
            })
            .await?;
        Self::check("modify", dn, res.rc, &res.text)
    }

    pub async fn delete(&self, dn: &str) -> Result<(), DirError> {
        let res = self
            .run("LDAP delete", |mut l| async move { l.delete(dn).await })
            .await?;
        Self::check("delete", dn, res.rc, &res.text)
    }
}
