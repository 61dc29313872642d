//! standin: a small daemon that stands in, in the test tree only, for the
//! protocol daemons later work brings (imapd, popd, mshttpd). Copied into a
//! test installation as lib/imapd or lib/popd, it goes through the real
//! daemon start-up (config, log, pid file, bind, watcher registration),
//! answers with its protocol's greeting, and on SIGUSR1 stops answering,
//! so the watcher's probe can be tested.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use epistle_config::services;
use epistle_daemon::{Daemon, SignalEvent, Signals};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let program = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let Some(svc) = services::by_program(&program) else {
        eprintln!("standin: run me as one of the service programs, not {program:?}");
        std::process::exit(2);
    };
    let (param, protocol, greeting) = match svc.name {
        "imap" => ("service.imap.port", "imap", "* OK standin IMAP ready\r\n"),
        "pop" => ("service.pop.port", "pop3", "+OK standin POP ready\r\n"),
        _ => ("service.http.port", "http", ""),
    };
    let mut d = match Daemon::init(svc.name, &program) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            std::process::exit(1);
        }
    };
    let listener = match d.bind_tcp(param, protocol) {
        Ok(Some(l)) => tokio::net::TcpListener::from_std(l).expect("tokio listener"),
        Ok(None) => d.fail(&anyhow::anyhow!("{param} is 0")),
        Err(e) => d.fail(&e),
    };
    if let Err(e) = d.drop_privileges() {
        d.fail(&e);
    }
    let mut signals = Signals::new().expect("signals");
    let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1");
    let hung = Arc::new(AtomicBool::new(false));
    if let Err(e) = d.ready() {
        d.fail(&e);
    }
    loop {
        tokio::select! {
            Ok((mut stream, peer)) = listener.accept() => {
                tracing::debug!(target: "Network", "connection from {peer}");
                let hung = hung.clone();
                tokio::spawn(async move {
                    if hung.load(Ordering::Relaxed) {
                        // Accept, then say nothing: a wedged server.
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        return;
                    }
                    if greeting.is_empty() {
                        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                        return;
                    }
                    let _ = stream.write_all(greeting.as_bytes()).await;
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let upper = line.to_ascii_uppercase();
                        let w = lines.get_mut().get_mut();
                        if upper.contains("QUIT") || upper.contains("LOGOUT") {
                            let _ = w.write_all(b"+OK bye\r\n").await;
                            return;
                        }
                        let _ = w.write_all(b"-ERR standin\r\n").await;
                    }
                });
            }
            _ = usr1.recv() => {
                tracing::warn!("SIGUSR1: no longer answering");
                hung.store(true, Ordering::Relaxed);
            }
            ev = signals.next() => match ev {
                SignalEvent::Shutdown => break,
                SignalEvent::Reload => d.reload(),
            },
        }
    }
    tracing::info!("{} stopping", svc.name);
}
