//! NAME
//!   watcher - start, supervise and probe the Epistle daemons
//!
//! SYNOPSIS
//!   lib/watcher [--ha]        (normally launched by start-msg)
//!
//! DESCRIPTION
//!   The watcher is the parent of every daemon start-msg starts. It takes
//!   requests on data/run/watcher.sock (start, stop, status, shutdown) and
//!   answers status queries on loopback port local.watcher.port (49994).
//!   A daemon that dies is restarted within a second when local.autorestart
//!   is on; one that fails twice within local.autorestart.timeout seconds
//!   is left down and logged as Critical, and in HA mode (--ha, from
//!   `start-msg ha`) the watcher then stops everything and exits so the
//!   cluster agent fails over. Every local.probe.interval seconds it reads
//!   each service's greeting (msprobe) and restarts one that stops
//!   answering. Its log is log/watcher/watcher.
//!
//! SECURITY
//!   Runs as the user who ran start-msg (root for privileged ports), since
//!   it starts the daemons, which drop privileges themselves after binding.
//!   Control requests are taken only on the Unix socket, whose directory
//!   belongs to the mail system's user; the TCP port answers status only.

mod probe;
mod supervisor;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context as _;
use epistle_daemon::{Daemon, SignalEvent, Signals};
use epistle_ipc::frame;
use epistle_ipc::watcher::{Reply, Request};
use supervisor::Supervisor;
use tokio::net::{TcpListener, UnixListener, UnixStream};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ha = std::env::args().any(|a| a == "--ha" || a == "-ha");
    let mut daemon = match Daemon::init("watcher", "watcher") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("watcher: {e:#}");
            std::process::exit(1);
        }
    };
    let (unix, tcp) = match bind(&mut daemon).await {
        Ok(l) => l,
        Err(e) => daemon.fail(&e),
    };
    let sup = Supervisor::new(daemon.base.clone(), daemon.config.clone(), ha);
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => daemon.fail(&e.into()),
    };
    tracing::info!("watcher started{}", if ha { " in HA mode" } else { "" });

    tokio::spawn(sup.clone().probe_loop());
    if let Some(tcp) = tcp {
        tokio::spawn(serve_status_port(tcp, sup.clone()));
    }
    let socket_path = daemon.base.watcher_socket();
    loop {
        tokio::select! {
            accepted = unix.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(serve_control(stream, sup.clone())); }
                Err(e) => tracing::warn!("control socket accept: {e}"),
            },
            ev = signals.next() => match ev {
                SignalEvent::Reload => { daemon.reload(); sup.reload_config(); sup.reload_services(); }
                SignalEvent::Shutdown => break,
            },
            _ = sup.exit.notified() => break,
        }
    }
    tracing::info!("watcher stopping every service");
    sup.stop_all(false).await;
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!("watcher exits");
}

/// Binds the control socket (refusing to run twice) and the status port.
async fn bind(daemon: &mut Daemon) -> anyhow::Result<(UnixListener, Option<TcpListener>)> {
    let path = daemon.base.watcher_socket();
    if UnixStream::connect(&path).await.is_ok() {
        anyhow::bail!("another watcher already answers on {}", path.display());
    }
    let _ = std::fs::remove_file(&path);
    let unix =
        UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    // The mail system's user may administer the suite too (start-msg,
    // stop-msg as mailsrv), as in the original.
    if nix::unistd::Uid::effective().is_root() {
        let user = nix::unistd::User::from_name(daemon.config.get("local.serveruid"))
            .ok()
            .flatten();
        let group = nix::unistd::Group::from_name(daemon.config.get("local.servergid"))
            .ok()
            .flatten();
        if let (Some(u), Some(g)) = (user, group) {
            nix::unistd::chown(&path, Some(u.uid), Some(g.gid))?;
        }
    }
    let tcp = match daemon.config.get_port("local.watcher.port") {
        0 => None,
        port => {
            let l = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on port {port} (local.watcher.port) at 127.0.0.1: {e}; \
                     free the port or choose another with configutil -o local.watcher.port -v PORT"
                )
            })?;
            l.set_nonblocking(true)?;
            Some(TcpListener::from_std(l)?)
        }
    };
    Ok((unix, tcp))
}

/// One client on the control socket: start-msg, stop-msg, status-msg or a
/// daemon reporting its state.
async fn serve_control(mut stream: UnixStream, sup: Arc<Supervisor>) {
    loop {
        let req: Request = match frame::read(&mut stream).await {
            Ok(r) => r,
            Err(frame::FrameError::Closed) => return,
            Err(e) => {
                tracing::warn!("control socket: {e}");
                return;
            }
        };
        let mut replies = Vec::new();
        let mut exit_after = false;
        match req {
            // A daemon's report is acknowledged once recorded, so a daemon
            // that exits right after reporting a failure is never seen to
            // die before its reason is known.
            Request::Ready {
                service,
                pid,
                listeners,
            } => sup.on_ready(&service, pid, listeners),
            Request::Failed {
                service,
                pid,
                reason,
            } => sup.on_failed(&service, pid, reason),
            Request::Status => replies.push(Reply::Status(sup.status())),
            Request::Start { services } => {
                sup.reload_config();
                let mut store_failed = false;
                for name in services {
                    let reply = if store_failed && sup.is_installed(&name) {
                        Reply::StartFailed {
                            service: name.clone(),
                            reason: "not started because the store failed to start".into(),
                            log: String::new(),
                        }
                    } else {
                        sup.start(&name).await
                    };
                    store_failed |= name == "store" && matches!(reply, Reply::StartFailed { .. });
                    if frame::write(&mut stream, &reply).await.is_err() {
                        return;
                    }
                }
            }
            Request::Stop { services, force } => {
                for name in services {
                    let reply = sup.stop(&name, force).await;
                    if frame::write(&mut stream, &reply).await.is_err() {
                        return;
                    }
                }
            }
            Request::Shutdown { force } => {
                replies = sup.stop_all(force).await;
                exit_after = true;
            }
        }
        replies.push(Reply::Done);
        for r in &replies {
            if frame::write(&mut stream, r).await.is_err() {
                break;
            }
        }
        if exit_after {
            sup.exit.notify_one();
            return;
        }
    }
}

/// The loopback status port: one request, status only.
async fn serve_status_port(listener: TcpListener, sup: Arc<Supervisor>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let sup = sup.clone();
        tokio::spawn(async move {
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                frame::read::<Request>(&mut stream),
            );
            let reply = match read.await {
                Ok(Ok(Request::Status)) => Reply::Status(sup.status()),
                Ok(Ok(_)) => Reply::Refused {
                    reason: "only status is answered on the TCP port".into(),
                },
                _ => return,
            };
            let _ = frame::write(&mut stream, &reply).await;
        });
    }
}
