//! What every session shares: the configuration it needs, the directory,
//! the TLS identity, the store's socket, the session count, and the
//! failed-login tracker.

use epistle_ipc::store_client::StorePool;
use std::sync::Arc;
use std::time::Duration;

use epistle_daemon::Daemon;
use epistle_daemon::access::{FailedLogins, SessionSlots};
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
    /// The links to stored every session shares.
    pub store: StorePool,
    /// Authenticated sessions may be silent this long (IDLE included).
    pub idle_timeout: Duration,
    pub append_limit: u64,
    /// LOGIN and AUTHENTICATE PLAIN without TLS from anywhere.
    pub allow_plaintext: bool,
    pub slots: SessionSlots,
    pub failed_logins: FailedLogins,
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
        let (_, greeting) =
            epistle_daemon::access::host_and_greeting(d, "service.imap.banner", "IMAP4");
        Server {
            greeting,
            directory,
            tls,
            store: StorePool::new(d.base.store_socket()),
            idle_timeout: Duration::from_secs(
                d.config.get_u64("service.imap.idletimeout").max(30) * 60,
            ),
            append_limit: d.config.get_u64("service.imap.appendlimit"),
            allow_plaintext: d.config.get_bool("service.imap.allowplaintext"),
            slots: SessionSlots::new(d.config.get_u64("service.imap.maxsessions") as usize),
            failed_logins: FailedLogins::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_line: MAX_LINE,
            max_literal: self.append_limit,
            max_literals: 64,
        }
    }
}
