//! popd: the POP3 server. Users and devices fetch their INBOX here; the
//! message list is read from stored at login, messages are read from
//! their files, and the DELEs of a session are applied by stored in one
//! transaction at QUIT.
//!
//! Start-up: configuration and log, bind the POP3 port (110, STLS) and
//! the POP3S port (995), drop privileges, the directory and the TLS
//! identity, tell the watcher, serve; on TERM stop accepting and let the
//! open sessions go.

mod server;
mod session;

use std::sync::Arc;

use epistle_daemon::Daemon;
use epistle_daemon::access::{AccessPorts, PortParams};

use server::Server;

#[tokio::main]
async fn main() {
    let mut d = match Daemon::init("pop", "popd") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("popd: {e:#}");
            std::process::exit(1);
        }
    };
    let ports = match AccessPorts::bind(
        &mut d,
        PortParams {
            port: "service.pop.port",
            sslport: "service.pop.sslport",
            enablesslport: "service.pop.enablesslport",
            protocols: ["pop3", "pop3s"],
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
    /// See imapd's test of the same name: what is large and short-lived
    /// is boxed, so every open session does not pay for it.
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
        assert!(size <= 2560, "a session's future is {size} bytes");
    }
}
