//! The Directory: who a user is, where their mail goes, whether their
//! password is right — answered from an LDAP server or from the embedded
//! LDIF directory, through one interface ([`Directory`]).
//!
//! - Pure building blocks: [`dn`], [`entry`], [`filter`] (RFC 4515, with
//!   escaping and evaluation), [`ldif`] (RFC 2849), [`password`] (every
//!   `userPassword` scheme a migrated directory holds), [`model`] (domains,
//!   users, groups, statuses, quotas in the Sun ONE schema's terms).
//! - [`lookup`]: the lookups, written once over a [`Backend`].
//! - Backends: [`embedded`] (LDIF file) and [`ldap`] (ldap3 over rustls,
//!   several servers with failover, a pool, timeouts).
//! - [`cache`]: answers reused for `local.ugldap.cachettl` seconds;
//!   [`verified`]: logins verified within `local.ugldap.authcachettl`.

pub mod cache;
pub mod dn;
pub mod embedded;
pub mod entry;
pub mod filter;
pub mod ldap;
pub mod ldif;
pub mod lookup;
pub mod model;
pub mod password;
pub mod provision;
pub mod sasl;
pub mod verified;

use std::sync::Arc;
use std::time::Duration;

pub use dn::Dn;
pub use entry::Entry;
pub use filter::Filter;
pub use lookup::{Auth, Denied, Directory, Schema, Settings};
pub use model::{Delivery, Domain, Group, Limit, Recipient, Status, User};

/// Search scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Base,
    One,
    Sub,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    /// The directory cannot be reached or did not answer in time: a
    /// temporary failure (SMTP 4xx, IMAP NO [UNAVAILABLE]).
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// The directory answered with something inconsistent (a login that
    /// matches two entries, a filter template that does not parse).
    #[error("directory data error: {0}")]
    Data(String),
    #[error("no such entry: {0}")]
    NotFound(String),
    #[error("entry already exists: {0}")]
    AlreadyExists(String),
    #[error("not permitted: {0}")]
    Refused(String),
}

impl DirError {
    /// Should the client be told to try again later?
    pub fn is_temporary(&self) -> bool {
        matches!(self, DirError::Unavailable(_) | DirError::Data(_))
    }
}

/// Where the entries come from.
#[derive(Clone)]
pub enum Backend {
    Embedded(Arc<embedded::EmbeddedDirectory>),
    Ldap(Arc<ldap::LdapDirectory>),
}

impl Backend {
    pub async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &Filter,
    ) -> Result<Vec<Entry>, DirError> {
        match self {
            Backend::Embedded(e) => e.search(base, scope, filter),
            Backend::Ldap(l) => l.search(base, scope, filter).await,
        }
    }

    /// Does `dn` bind with `password`? (The embedded directory compares
    /// the stored userPassword.)
    pub async fn check_bind(&self, dn: &str, password: &str) -> Result<bool, DirError> {
        match self {
            Backend::Embedded(e) => {
                let hits = e.search(dn, Scope::Base, &Filter::Present("objectClass".into()))?;
                Ok(hits
                    .iter()
                    .flat_map(|h| h.get_all("userPassword"))
                    .any(|p| password::verify(p, password)))
            }
            Backend::Ldap(l) => l.check_bind(dn, password).await,
        }
    }

    pub async fn add(&self, entry: Entry) -> Result<(), DirError> {
        match self {
            Backend::Embedded(e) => e.add(entry),
            Backend::Ldap(l) => l.add(entry).await,
        }
    }

    /// Replaces every attribute of an existing entry with `entry`'s.
    pub async fn replace(&self, entry: Entry) -> Result<(), DirError> {
        match self {
            Backend::Embedded(e) => e.replace(entry),
            Backend::Ldap(l) => l.replace(entry).await,
        }
    }

    pub async fn delete(&self, dn: &str) -> Result<(), DirError> {
        match self {
            Backend::Embedded(e) => e.delete(dn),
            Backend::Ldap(l) => l.delete(dn).await,
        }
    }
}

/// Opens the directory the configuration names: the embedded file under
/// `data/`, or the LDAP servers of `local.ugldaphost`.
pub async fn open(
    base: &epistle_config::MsgSvrBase,
    cfg: &epistle_config::Config,
) -> Result<Directory, DirError> {
    let backend = match cfg.get("local.directory.backend") {
        "ldap" => Backend::Ldap(Arc::new(ldap::LdapDirectory::from_config(cfg)?)),
        _ => {
            let path = base.resolve(cfg.get("local.directory.file"));
            Backend::Embedded(Arc::new(embedded::EmbeddedDirectory::open(path)?))
        }
    };
    let cache = cache::Cache::new(
        Duration::from_secs(cfg.get_u64("local.ugldap.cachettl")),
        usize::try_from(cfg.get_u64("local.ugldap.cachesize")).unwrap_or(usize::MAX),
    );
    let verified = verified::VerifiedLogins::new(
        Duration::from_secs(cfg.get_u64("local.ugldap.authcachettl")),
        usize::try_from(cfg.get_u64("local.ugldap.cachesize")).unwrap_or(usize::MAX),
    );
    Ok(Directory::new(backend, Settings::from_config(cfg), cache).with_verified_logins(verified))
}
