//! The SMTP server processes of each service (original.md §3.1): start
//! one when fewer than MIN_PROCS run or every one already has MIN_CONNS
//! connections; give a process at most MAX_CONNS; run at most MAX_PROCS;
//! retire a process after MAX_LIFE_TIME seconds or MAX_LIFE_CONNS
//! connections; replace one that dies.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use epistle_ipc::handoff::{self, Handoff, Link, WorkerReport};
use epistle_mta::compiled::MtaConfig;
use epistle_mta::dispatcher_cnf::ServiceSpec;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpStream;

/// Why a connection is turned away.
#[derive(Debug)]
pub enum Refusal {
    /// PORT_ACCESS said no, with its reply.
    Access(epistle_mta::access::Refusal),
    TooManyFromClient,
    /// Every process is full and MAX_PROCS run.
    Busy,
}

struct Worker {
    id: u64,
    pid: u32,
    link: Arc<Link>,
    /// Connections open now, by client address.
    clients: Vec<IpAddr>,
    /// Connections ever handed to it.
    total: u64,
    started: Instant,
    retiring: bool,
}

struct ServicePool {
    spec: ServiceSpec,
    workers: Vec<Worker>,
    /// Open connections per client address, over all processes.
    clients: HashMap<IpAddr, usize>,
}

impl ServicePool {
    fn live(&self) -> usize {
        self.workers.iter().filter(|w| !w.retiring).count()
    }

    fn forget_client(&mut self, ip: IpAddr) {
        if let Some(n) = self.clients.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.clients.remove(&ip);
            }
        }
    }
}

pub struct Pools {
    lib: PathBuf,
    mta: Arc<MtaConfig>,
    services: Vec<ServicePool>,
    stopping: bool,
    next_id: u64,
}

type Shared = Arc<Mutex<Pools>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Pools> {
    // A panic elsewhere must not stop the dispatcher handing off mail.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

impl Pools {
    pub fn new(lib: PathBuf, specs: Vec<ServiceSpec>, mta: Arc<MtaConfig>) -> Pools {
        Pools {
            lib,
            mta,
            services: specs
                .into_iter()
                .map(|spec| ServicePool {
                    spec,
                    workers: Vec::new(),
                    clients: HashMap::new(),
                })
                .collect(),
            stopping: false,
            next_id: 0,
        }
    }

    /// Starts MIN_PROCS servers of every service.
    pub fn start_minimum(this: &Shared) -> anyhow::Result<()> {
        let mut p = lock(this);
        for s in 0..p.services.len() {
            while p.services[s].live() < p.services[s].spec.min_procs {
                p.spawn(this, s)?;
            }
        }
        Ok(())
    }

    /// Starts one server process for service `s`.
    fn spawn(&mut self, this: &Shared, s: usize) -> anyhow::Result<usize> {
        let image = self.lib.join(&self.services[s].spec.image);
        let (ours, theirs) = handoff::pair().context("cannot make a socket pair")?;
        let mut child = tokio::process::Command::new(&image)
            .stdin(Stdio::from(theirs))
            .env_remove(epistle_ipc::watcher::SERVICE_ENV)
            .spawn()
            .with_context(|| format!("cannot start {}", image.display()))?;
        let pid = child.id().unwrap_or(0);
        let link = Arc::new(Link::new(ours)?);
        self.next_id += 1;
        let id = self.next_id;
        self.services[s].workers.push(Worker {
            id,
            pid,
            link: link.clone(),
            clients: Vec::new(),
            total: 0,
            started: Instant::now(),
            retiring: false,
        });
        tracing::info!(
            "started {} (pid {pid}) for service {}",
            image.display(),
            self.services[s].spec.name
        );
        let shared = this.clone();
        tokio::spawn(async move {
            // Reports until the process closes its end.
            while let Ok(Some((WorkerReport::Closed { peer }, _))) =
                link.recv::<WorkerReport>().await
            {
                lock(&shared).closed(s, id, &peer);
            }
        });
        let shared = this.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            Pools::exited(&shared, s, id, status.ok());
        });
        Ok(self.services[s].workers.len() - 1)
    }

    fn closed(&mut self, s: usize, id: u64, peer: &str) {
        let Ok(ip) = peer.parse::<SocketAddr>().map(|a| a.ip()) else {
            return;
        };
        let pool = &mut self.services[s];
        if let Some(w) = pool.workers.iter_mut().find(|w| w.id == id)
            && let Some(i) = w.clients.iter().position(|c| *c == ip)
        {
            w.clients.swap_remove(i);
            pool.forget_client(ip);
        }
    }

    fn exited(this: &Shared, s: usize, id: u64, status: Option<std::process::ExitStatus>) {
        let mut p = lock(this);
        let pool = &mut p.services[s];
        let Some(i) = pool.workers.iter().position(|w| w.id == id) else {
            return;
        };
        let w = pool.workers.swap_remove(i);
        for ip in w.clients {
            pool.forget_client(ip);
        }
        if !w.retiring {
            tracing::warn!(
                "SMTP server pid {} of service {} ended unexpectedly ({})",
                w.pid,
                pool.spec.name,
                status.map_or_else(|| "unknown status".into(), |s| s.to_string())
            );
        }
        let wanted = pool.live() < pool.spec.min_procs && !p.stopping;
        let quick_death = w.started.elapsed() < Duration::from_secs(1);
        drop(p);
        if wanted {
            let shared = this.clone();
            tokio::spawn(async move {
                if quick_death {
                    // A server that dies at once is not restarted in a loop.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let mut p = lock(&shared);
                if !p.stopping
                    && p.services[s].live() < p.services[s].spec.min_procs
                    && let Err(e) = p.spawn(&shared, s)
                {
                    tracing::error!("{e:#}");
                }
            });
        }
    }

    /// Chooses a process for a new connection (starting one when the
    /// rules say so) and sends it the connection.
    pub fn hand_off(
        this: &Shared,
        service: &str,
        tls: bool,
        conn: TcpStream,
        peer: SocketAddr,
        local: String,
    ) -> Result<(), (TcpStream, Refusal)> {
        let chosen = {
            let mut p = lock(this);
            let Some(s) = p.services.iter().position(|x| x.spec.name == service) else {
                return Err((conn, Refusal::Busy));
            };
            let local_addr: Option<SocketAddr> = local.parse().ok();
            let probe = format!(
                "TCP|{}|{}|{}|{}",
                local_addr.map_or_else(String::new, |a| a.ip().to_string()),
                local_addr.map_or(0, |a| a.port()),
                peer.ip(),
                peer.port()
            );
            let port_access = match p.mta.mappings.lookup("PORT_ACCESS", &probe) {
                Some(r) => {
                    let answer = epistle_mta::access::answer(&r.flags, &r.output);
                    if let Some(line) = answer.log_line() {
                        tracing::warn!("PORT_ACCESS {probe}: {line}");
                    }
                    if let Some(refusal) = answer.refusal {
                        return Err((conn, Refusal::Access(refusal)));
                    }
                    // What is left is the connection's tag for the server.
                    r.output
                }
                None => String::new(),
            };
            let pool = &p.services[s];
            if pool.clients.get(&peer.ip()).copied().unwrap_or(0) >= pool.spec.max_client_conns {
                return Err((conn, Refusal::TooManyFromClient));
            }
            let best = pool
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| !w.retiring && w.clients.len() < pool.spec.max_conns)
                .min_by_key(|(_, w)| w.clients.len())
                .map(|(i, w)| (i, w.clients.len()));
            let can_grow = pool.live() < pool.spec.max_procs;
            let index = match best {
                Some((i, n)) if n < pool.spec.min_conns || !can_grow => i,
                _ if can_grow => match p.spawn(this, s) {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        match best {
                            Some((i, _)) => i,
                            None => return Err((conn, Refusal::Busy)),
                        }
                    }
                },
                _ => return Err((conn, Refusal::Busy)),
            };
            let pool = &mut p.services[s];
            let spec_parameter = pool.spec.parameter.clone();
            let max_life = pool.spec.max_life_conns;
            let w = &mut pool.workers[index];
            w.clients.push(peer.ip());
            w.total += 1;
            let retire_now = w.total >= max_life;
            if retire_now {
                w.retiring = true;
            }
            let (link, pid, id) = (w.link.clone(), w.pid, w.id);
            *pool.clients.entry(peer.ip()).or_insert(0) += 1;
            let handoff = Handoff {
                service: service.to_string(),
                parameter: spec_parameter,
                local,
                peer: peer.to_string(),
                tls,
                port_access,
            };
            (s, id, pid, link, handoff, retire_now)
        };
        let (s, id, pid, link, handoff, retire_now) = chosen;
        let shared = this.clone();
        tokio::spawn(async move {
            if let Err(e) = link.send(&handoff, Some(conn.as_fd())).await {
                // The process died between choice and send: the client
                // sees the connection close and tries again.
                tracing::warn!("cannot hand a connection to pid {pid}: {e}");
                lock(&shared).closed(s, id, &handoff.peer);
            }
            drop(conn); // the server holds its own copy now
            if retire_now {
                terminate(pid);
            }
        });
        Ok(())
    }

    /// A new configuration: every process is retired (finishes its
    /// sessions, then exits) and new ones start with it.
    pub fn renew(this: &Shared, mta: Arc<MtaConfig>) {
        {
            let mut p = lock(this);
            p.mta = mta;
            for pool in &mut p.services {
                for w in &mut pool.workers {
                    if !w.retiring {
                        w.retiring = true;
                        terminate(w.pid);
                    }
                }
            }
        }
        if let Err(e) = Pools::start_minimum(this) {
            tracing::error!("{e:#}");
        }
    }

    pub fn stop_all(this: &Shared) {
        let mut p = lock(this);
        p.stopping = true;
        for pool in &mut p.services {
            for w in &mut pool.workers {
                w.retiring = true;
                terminate(w.pid);
            }
        }
    }

    pub async fn wait_empty(this: &Shared) {
        while lock(this).services.iter().any(|s| !s.workers.is_empty()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Retires processes older than MAX_LIFE_TIME, once a minute or sooner.
pub async fn retire_old(this: Shared) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let old: Vec<u32> = {
            let mut p = lock(&this);
            let mut pids = Vec::new();
            for pool in &mut p.services {
                let life = pool.spec.max_life_time;
                for w in &mut pool.workers {
                    if !w.retiring && w.started.elapsed() >= life {
                        w.retiring = true;
                        pids.push(w.pid);
                    }
                }
            }
            pids
        };
        for pid in old {
            terminate(pid);
        }
        if let Err(e) = Pools::start_minimum(&this) {
            tracing::error!("{e:#}");
        }
    }
}
