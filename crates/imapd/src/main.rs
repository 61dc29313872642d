//! imapd: the IMAP server. Users read their mail here with any IMAP
//! client; every mailbox operation goes to stored, the only writer of the
//! store, and a mailbox's changes come back from stored as events, so a
//! message delivered by another process shows at once.
//!
//! Start-up: configuration and log, bind the IMAP port (143, STARTTLS) and
//! the IMAPS port (993), drop privileges, the directory and the TLS
//! identity, tell the watcher, serve; on TERM stop accepting and let the
//! open sessions go.

mod compress;
mod flag_lists;
mod render;
mod search;
mod selected;
mod server;
mod session;
mod sort;
mod thread;

use std::sync::Arc;

use epistle_daemon::Daemon;
use epistle_daemon::access::{AccessPorts, PortParams};

use server::Server;

#[tokio::main]
async fn main() {
    let mut d = match Daemon::init("imap", "imapd") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("imapd: {e:#}");
            std::process::exit(1);
        }
    };
    let ports = match AccessPorts::bind(
        &mut d,
        PortParams {
            port: "service.imap.port",
            sslport: "service.imap.sslport",
            enablesslport: "service.imap.enablesslport",
            protocols: ["imap", "imaps"],
        },
    ) {
        Ok(p) => p,
        Err(e) => d.fail(&e),
    };
    if let Err(e) = d.drop_privileges() {
        d.fail(&e);
    }
    let server = Arc::new(Server::load(&d).await);
    ports
        .serve(&mut d, server.tls.is_some(), |conn, peer, tls| {
            session::serve(server.clone(), conn, peer, tls)
        })
        .await;
}

#[cfg(test)]
mod tests {
    /// An idle session costs its task's future plus what it allocates;
    /// the future is sized for its largest state, so whatever is large
    /// and short-lived (a TLS handshake, a command's work, a drain
    /// buffer) must be boxed or it is paid by every session all the time.
    #[test]
    fn a_session_future_stays_small() {
        fn future_size<F, Fut>(_: F) -> usize
        where
            F: FnOnce(
                std::sync::Arc<crate::server::Server>,
                tokio::net::TcpStream,
                std::net::SocketAddr,
                bool,
            ) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = future_size(crate::session::serve);
        assert!(size <= 1600, "a session's future is {size} bytes");
    }
}
