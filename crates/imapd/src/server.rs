//! What every session shares: the configuration it needs, the directory,
//! the TLS identity, the store's socket, the session count, and the
//! failed-login tracker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use epistle_daemon::Daemon;
use epistle_directory::Directory;
use epistle_imap::Limits;
use tokio_rustls::TlsAcceptor;

/// Idle time allowed before login.
pub const PREAUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest command line; literals are limited separately.
pub const MAX_LINE: usize = 64 * 1024;

pub struct Server {
    pub greeting: String,
    pub directory: Option<Arc<Directory>>,
    pub tls: Option<TlsAcceptor>,
    pub store_socket: PathBuf,
    /// Authenticated sessions may be silent this long (IDLE included).
    pub idle_timeout: Duration,
    pub append_limit: u64,
    /// LOGIN and AUTHENTICATE PLAIN without TLS from anywhere.
    pub allow_plaintext: bool,
    pub max_sessions: usize,
    pub sessions: AtomicUsize,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
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
        let tls = match epistle_daemon::tls::server_config(&d.base, &d.config) {
            Ok(c) => Some(TlsAcceptor::from(c)),
            Err(e) => {
                tracing::warn!("STARTTLS is off: {e:#}");
                None
            }
        };
        let host = match d.config.get("local.hostname") {
            "" => "localhost".to_string(),
            h => h.to_string(),
        };
        let greeting = epistle_daemon::banner(d.config.get("service.imap.banner"), &host, "IMAP4");
        Server {
            greeting,
            directory,
            tls,
            store_socket: d.base.store_socket(),
            idle_timeout: Duration::from_secs(
                d.config.get_u64("service.imap.idletimeout").max(30) * 60,
            ),
            append_limit: d.config.get_u64("service.imap.appendlimit"),
            allow_plaintext: d.config.get_bool("service.imap.allowplaintext"),
            max_sessions: d.config.get_u64("service.imap.maxsessions").max(1) as usize,
            sessions: AtomicUsize::new(0),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_line: MAX_LINE,
            max_literal: self.append_limit,
            max_literals: 64,
        }
    }

    /// Takes a session slot; `false` when the server is full.
    pub fn enter(&self) -> bool {
        let n = self.sessions.fetch_add(1, Ordering::AcqRel);
        if n >= self.max_sessions {
            self.sessions.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn leave(&self) {
        self.sessions.fetch_sub(1, Ordering::AcqRel);
    }

    /// How long to wait before answering a failed login from `ip`: one
    /// second, doubling with each failure in the last quarter hour, at
    /// most half a minute. Slows password guessing from one address
    /// across connections.
    pub fn failed_login(&self, ip: IpAddr) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() > 100_000 {
            f.retain(|_, (_, t)| t.elapsed() < Duration::from_secs(900));
        }
        let e = f.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() > Duration::from_secs(900) {
            e.0 = 0;
        }
        e.0 = (e.0 + 1).min(6);
        e.1 = Instant::now();
        Duration::from_secs(1 << (e.0 - 1)).min(Duration::from_secs(30))
    }

    pub fn login_succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}
