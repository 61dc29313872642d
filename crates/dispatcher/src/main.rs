//! dispatcher: owns the SMTP listening sockets of dispatcher.cnf and hands
//! each accepted connection to one of its SMTP server processes over a
//! socket pair (the descriptor travels with `SCM_RIGHTS`).
//!
//! Start-up: configuration and log, the compiled MTA configuration, bind
//! every service's ports (as root when they are below 1024), drop
//! privileges, start each service's MIN_PROCS servers, tell the watcher,
//! serve. HUP (`imsimta restart`) retires every server process gracefully
//! — each finishes its open sessions — and new ones start with the new
//! configuration, so no connection is lost. TERM stops accepting and lets
//! the servers finish.

mod pool;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use epistle_daemon::{Daemon, SignalEvent, Signals};
use epistle_mta::compiled::MtaConfig;
use epistle_mta::dispatcher_cnf::{ServiceSpec, services};
use nix::sys::socket::{Backlog, listen};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use pool::{Pools, Refusal};

/// How long servers may take to finish after TERM before the dispatcher
/// exits anyway (they go on alone; the watcher has what it needs).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut d = match Daemon::init("dispatcher", "dispatcher") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("dispatcher: {e:#}");
            std::process::exit(1);
        }
    };
    let mta = match load_mta(&d) {
        Ok(m) => m,
        Err(e) => d.fail(&e),
    };
    let specs = match services(&mta.dispatcher) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => d.fail(&anyhow::anyhow!(
            "dispatcher.cnf has no [SERVICE=...] section; add one (see lib/config-templates/dispatcher.cnf), then run imsimta cnbuild"
        )),
        Err(e) => d.fail(&anyhow::anyhow!("{e}; correct it, then run imsimta cnbuild")),
    };
    let mut listeners = Vec::new();
    for spec in &specs {
        match bind_service(&mut d, spec) {
            Ok(mut l) => listeners.append(&mut l),
            Err(e) => d.fail(&e),
        }
    }
    if let Err(e) = d.drop_privileges() {
        d.fail(&e);
    }
    let pools = Arc::new(Mutex::new(Pools::new(
        d.base.lib(),
        specs.clone(),
        Arc::new(mta),
    )));
    if let Err(e) = Pools::start_minimum(&pools) {
        d.fail(&e);
    }
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => d.fail(&e.into()),
    };
    if let Err(e) = d.ready() {
        d.fail(&e);
    }
    let mut accepting = tokio::task::JoinSet::new();
    for (spec, tls, listener) in listeners {
        accepting.spawn(accept_loop(pools.clone(), spec, tls, listener));
    }
    tokio::spawn(pool::retire_old(pools.clone()));
    // Until TERM: each HUP brings a new configuration.
    while let SignalEvent::Reload = signals.next().await {
        d.reload();
        match load_mta(&d) {
            Ok(mta) => {
                tracing::info!("new MTA configuration; retiring the SMTP servers");
                Pools::renew(&pools, Arc::new(mta));
            }
            Err(e) => tracing::error!("configuration not reloaded: {e:#}"),
        }
    }
    accepting.abort_all();
    Pools::stop_all(&pools);
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, Pools::wait_empty(&pools)).await;
    tracing::info!("dispatcher stopped");
}

fn load_mta(d: &Daemon) -> anyhow::Result<MtaConfig> {
    Ok(MtaConfig::load(&d.base.config())?)
}

/// Binds every port of a service.
fn bind_service(
    d: &mut Daemon,
    spec: &ServiceSpec,
) -> anyhow::Result<Vec<(String, bool, TcpListener)>> {
    let ip = spec.interface.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let mut out = Vec::new();
    for &port in &spec.ports {
        let tls = spec.tls_ports.contains(&port);
        // The watcher probes the greeting where there is one in the clear.
        let protocol = if tls { "tcp" } else { "smtp" };
        let origin = format!("PORT in dispatcher.cnf [SERVICE={}]", spec.name);
        let l = d.bind_addr(
            SocketAddr::new(ip, port),
            protocol,
            &origin,
            "choose another in dispatcher.cnf, then run imsimta cnbuild",
        )?;
        // BACKLOG: connections the kernel holds before they are accepted
        // (listen again with the configured depth; the system's ceiling
        // caps it).
        let depth = i32::try_from(spec.backlog).unwrap_or(i32::MAX);
        let backlog = Backlog::new(depth.min(Backlog::MAXCONN.into())).unwrap_or(Backlog::MAXCONN);
        listen(&l, backlog).map_err(|e| {
            anyhow::anyhow!("cannot set BACKLOG={} on port {port}: {e}", spec.backlog)
        })?;
        out.push((spec.name.clone(), tls, TcpListener::from_std(l)?));
    }
    Ok(out)
}

async fn accept_loop(pools: Arc<Mutex<Pools>>, service: String, tls: bool, listener: TcpListener) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!("accept on service {service}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = conn
            .local_addr()
            .map_or_else(|_| String::new(), |a| a.to_string());
        let handed = Pools::hand_off(&pools, &service, tls, conn, peer, local);
        match handed {
            Ok(()) => {}
            Err((conn, refusal)) => {
                tokio::spawn(refuse(conn, refusal));
            }
        }
    }
}

/// Says why a connection is not served, in SMTP, and closes it.
async fn refuse(mut conn: TcpStream, refusal: Refusal) {
    let line = match refusal {
        // 421 unless the table gave its own code: the client should not
        // take a refused connection for a refused message.
        Refusal::Access(r) => {
            let code = r.code.unwrap_or(421);
            let class = if code < 500 { "4.7.0" } else { "5.7.1" };
            format!(
                "{code} {} {}\r\n",
                r.enhanced.as_deref().unwrap_or(class),
                r.text
            )
        }
        Refusal::TooManyFromClient => {
            "421 4.7.0 Too many connections from your address; try again later\r\n".to_string()
        }
        Refusal::Busy => "421 4.3.2 Too busy; try again later\r\n".to_string(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.write_all(line.as_bytes())).await;
    let _ = conn.shutdown().await;
}
