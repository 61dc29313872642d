//! What every POP session shares: settings, the directory, the TLS
//! identity, the store's socket, the session limit, the failed-login
//! tracker, and the maildrops in use.

use epistle_ipc::store_client::StorePool;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use epistle_daemon::Daemon;
use epistle_daemon::access::{FailedLogins, SessionSlots};
use epistle_directory::Directory;
use tokio_rustls::TlsAcceptor;

/// Idle time allowed before login.
pub const PREAUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest line read: commands are at most 255 octets (RFC 2449), but
/// SASL responses and long passwords need more.
pub const MAX_LINE: usize = 4096;

pub struct Server {
    pub greeting: String,
    pub host: String,
    pub directory: Option<Arc<Directory>>,
    pub tls: Option<TlsAcceptor>,
    /// The links to stored every session shares.
    pub store: StorePool,
    /// Sessions may be silent this long (RFC 1939 §3: at least 10 minutes).
    pub idle_timeout: Duration,
    /// USER/PASS and AUTH PLAIN without TLS from anywhere.
    pub allow_plaintext: bool,
    /// APOP offered (a timestamp in the greeting).
    pub apop: bool,
    /// The store has aging rules: EXPIRE NEVER would be a lie.
    pub expires: bool,
    pub slots: SessionSlots,
    pub failed_logins: FailedLogins,
    /// Users with a POP session in the transaction state.
    in_use: Mutex<HashSet<String>>,
    greetings: AtomicU64,
}

impl Server {
    pub async fn load(d: &Daemon) -> Server {
        let directory = match epistle_directory::open(&d.base, &d.config).await {
            Ok(dir) => Some(Arc::new(dir)),
            Err(e) => {
                tracing::error!("the directory cannot be opened ({e}); logins fail until it can");
                None
            }
        };
        let tls = epistle_daemon::access::tls_acceptor(d);
        let (host, greeting) =
            epistle_daemon::access::host_and_greeting(d, "service.pop.banner", "POP3");
        let rules =
            std::fs::read_to_string(d.base.config().join("store.expirerule")).unwrap_or_default();
        Server {
            greeting,
            host,
            directory,
            tls,
            store: StorePool::new(d.base.store_socket()),
            idle_timeout: Duration::from_secs(
                d.config.get_u64("service.pop.idletimeout").max(10) * 60,
            ),
            allow_plaintext: d.config.get_bool("service.pop.allowplaintext"),
            apop: d.config.get_bool("service.pop.apop"),
            expires: rules
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')),
            slots: SessionSlots::new(d.config.get_u64("service.pop.maxsessions") as usize),
            failed_logins: FailedLogins::default(),
            in_use: Mutex::new(HashSet::new()),
            greetings: AtomicU64::new(0),
        }
    }

    /// A timestamp for an APOP greeting, different in every greeting
    /// (RFC 1939 §7: `<process-id.clock@hostname>`).
    pub fn apop_timestamp(&self) -> String {
        let n = self.greetings.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "<{}.{}.{}{:09}@{}>",
            std::process::id(),
            n,
            t.as_secs(),
            t.subsec_nanos(),
            self.host
        )
    }

    /// Locks a user's maildrop for one session (RFC 1939 §8: one POP
    /// session at a time); `None` when another session holds it.
    pub fn lock_maildrop(self: &Arc<Self>, user: &str) -> Option<MaildropLock> {
        let mut held = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(user.to_string()) {
            return None;
        }
        Some(MaildropLock {
            server: self.clone(),
            user: user.to_string(),
        })
    }
}

/// A held maildrop; dropping it (session end) frees it.
pub struct MaildropLock {
    server: Arc<Server>,
    user: String,
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        self.server
            .in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.user);
    }
}
