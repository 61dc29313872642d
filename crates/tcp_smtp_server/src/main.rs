//! tcp_smtp_server: an SMTP server process (and, installed as
//! tcp_lmtp_server, the LMTP server in front of the store). The dispatcher starts it with
//! one end of a socket pair on standard input and hands it accepted
//! connections over that socket; it serves many sessions at once and
//! reports each one's end, so the dispatcher can balance the load.
//!
//! Start-up: configuration and log, the compiled MTA configuration, the
//! directory, the TLS identity, then serve handoffs until the dispatcher
//! says stop (TERM) or goes away — then finish the open sessions and exit.

mod server;
mod session;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use epistle_daemon::{Daemon, SignalEvent, Signals};
use epistle_ipc::handoff::{Handoff, Link, WorkerReport};
use epistle_mta::compiled::MtaConfig;
use epistle_mta::maillog::MailLog;
use epistle_mta::queue::QueueDir;
use tokio::task::JoinSet;

use server::{Limits, Server};
use session::Session;

/// How long open sessions may run on after TERM.
const DRAIN_TIME: Duration = Duration::from_secs(600);

fn main() {
    // One program, two names: the dispatcher.cnf IMAGE says which.
    let lmtp = std::env::args()
        .next()
        .is_some_and(|a| a.ends_with("tcp_lmtp_server"));
    let (service, program) = if lmtp {
        ("lmtp", "tcp_lmtp_server")
    } else {
        ("smtp", "tcp_smtp_server")
    };
    let d = match Daemon::init_worker(service, program) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            std::process::exit(1);
        }
    };
    // One thread per process: the dispatcher spreads connections over
    // processes, so threads inside one would only add hand-offs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = rt.block_on(run(d, lmtp)) {
        tracing::error!("{program}: {e:#}");
        eprintln!("{program}: {e:#}");
        std::process::exit(1);
    }
}

async fn run(d: Daemon, lmtp: bool) -> anyhow::Result<()> {
    let server = Arc::new(load(&d, lmtp).await?);
    let link = Link::new(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("standard input is not the dispatcher's socket")?,
    )
    .context("standard input is not the dispatcher's socket")?;
    let link = Arc::new(link);
    let mut signals = Signals::new()?;
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            msg = link.recv::<Handoff>() => match msg {
                Ok(Some((handoff, Some(fd)))) => {
                    let server = server.clone();
                    let link = link.clone();
                    sessions.spawn(async move {
                        let peer = handoff.peer.clone();
                        serve_connection(server, handoff, fd).await;
                        let _ = link.send(&WorkerReport::Closed { peer }, None).await;
                    });
                }
                Ok(Some((_, None))) => tracing::warn!("a handoff came without its connection"),
                Ok(None) | Err(_) => break, // the dispatcher is gone
            },
            ev = signals.next() => match ev {
                SignalEvent::Shutdown => break,
                SignalEvent::Reload => {} // new configurations come with new processes
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    // Retired: finish what is open, take nothing new.
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn load(d: &Daemon, lmtp: bool) -> anyhow::Result<Server> {
    let mta = MtaConfig::load(&d.base.config())?;
    let directory = match epistle_directory::open(&d.base, &d.config).await {
        Ok(dir) => Some(Arc::new(dir)),
        Err(e) => {
            tracing::error!("the directory cannot be opened ({e}); local recipients are deferred");
            None
        }
    };
    let tls = epistle_daemon::access::tls_acceptor(d);
    let host = match d.config.get("local.hostname") {
        "" => "localhost".to_string(),
        h => h.to_string(),
    };
    let default_domain = match d.config.get("local.defdomain") {
        "" => host.clone(),
        dom => dom.to_string(),
    };
    let resolver = epistle_mta::dns::resolver(&mta.options)
        .inspect_err(|e| tracing::error!("{e}; clients' names are not looked up"))
        .ok();
    Ok(Server {
        host,
        default_domain,
        lmtp,
        store_socket: d.base.store_socket(),
        limits: Limits::from_options(&mta),
        mta: Arc::new(mta),
        directory,
        tls,
        queue: QueueDir::new(d.base.queue()),
        committer: epistle_mta::submit::GroupCommit::start(d.base.job_controller_socket()),
        jobs_socket: d.base.job_controller_socket(),
        maillog: MailLog::new(d.base.mail_log()),
        resolver,
    })
}

async fn serve_connection(server: Arc<Server>, handoff: Handoff, fd: std::os::fd::OwnedFd) {
    let std = std::net::TcpStream::from(fd);
    if std.set_nonblocking(true).is_err() {
        return;
    }
    let _ = std.set_nodelay(true);
    let Ok(stream) = tokio::net::TcpStream::from_std(std) else {
        return;
    };
    let tls_first = handoff.tls;
    if let Some(session) = Session::new(server, Box::new(stream), &handoff) {
        session.run(tls_first).await;
    }
}
