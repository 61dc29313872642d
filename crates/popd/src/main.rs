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

use epistle_daemon::access::accept;
use epistle_daemon::{Daemon, SignalEvent, Signals};
use tokio::net::TcpListener;

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
    let plain = match d.bind_tcp("service.pop.port", "pop3") {
        Ok(l) => l,
        Err(e) => d.fail(&e),
    };
    let secure = if d.config.get_bool("service.pop.enablesslport") {
        match d.bind_tcp("service.pop.sslport", "pop3s") {
            Ok(l) => l,
            Err(e) => d.fail(&e),
        }
    } else {
        None
    };
    if let Err(e) = d.drop_privileges() {
        d.fail(&e);
    }
    let server = Arc::new(Server::load(&d).await);
    if secure.is_some() && server.tls.is_none() {
        d.fail(&anyhow::anyhow!(
            "POP3S needs the TLS certificate; fix local.ssl.certfile and local.ssl.keyfile \
             or turn the port off with configutil -o service.pop.enablesslport -v no"
        ));
    }
    let to_tokio = |l: Option<std::net::TcpListener>| l.map(TcpListener::from_std).transpose();
    let (plain, secure) = match (to_tokio(plain), to_tokio(secure)) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(e), _) | (_, Err(e)) => d.fail(&e.into()),
    };
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => d.fail(&e.into()),
    };
    if let Err(e) = d.ready() {
        d.fail(&e);
    }
    loop {
        tokio::select! {
            Some((conn, peer)) = accept(plain.as_ref()) => {
                tokio::spawn(session::serve(server.clone(), conn, peer, false));
            }
            Some((conn, peer)) = accept(secure.as_ref()) => {
                tokio::spawn(session::serve(server.clone(), conn, peer, true));
            }
            ev = signals.next() => match ev {
                SignalEvent::Reload => d.reload(),
                SignalEvent::Shutdown => break,
            },
        }
    }
    tracing::info!("popd stopped");
}
