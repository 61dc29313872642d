//! The supervisor: one record per service, the processes it started, and
//! the rules for restarting them.
//!
//! A service moves through these phases:
//!
//! ```text
//! Stopped ──start──▶ Starting ──Ready──▶ Running ──stop──▶ Stopping ──exit──▶ Stopped
//!                       │                   │
//!                       │ exit/timeout      │ exit, or probe failure (killed)
//!                       ▼                   ▼
//!                    Failed            Restarting ──▶ Starting (restart)
//!                                           │ second failure within
//!                                           ▼ local.autorestart.timeout
//!                                        GivenUp
//! ```
//!
//! The watcher is the parent of every daemon, so a death is seen at once
//! through `wait`, whatever killed it. Each spawn gets a new generation
//! number, so a late event from an old process is never mistaken for the
//! current one.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use epistle_config::services::{self, Service};
use epistle_config::{Config, MsgSvrBase};
use epistle_ipc::watcher::{Listener, Reply, SERVICE_ENV, ServiceStatus, WatcherStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{Notify, watch};

/// How soon a dead service is started again: long enough not to spin on a
/// crash at start-up, short enough to be back within the 2 s promised.
const RESTART_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Stopped,
    Starting { restart: bool },
    Running,
    Stopping,
    Restarting,
    Failed,
    GivenUp,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Stopped => "stopped",
            Phase::Starting { .. } => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Restarting => "restarting",
            Phase::Failed => "failed",
            Phase::GivenUp => "given-up",
        }
    }
    fn is_live(self) -> bool {
        matches!(
            self,
            Phase::Starting { .. } | Phase::Running | Phase::Restarting | Phase::Stopping
        )
    }
}

struct Supervised {
    service: &'static Service,
    phase: Phase,
    pid: Option<u32>,
    since: Option<Instant>,
    restarts: u32,
    /// Recent unexpected deaths, for the twice-within-the-timeout rule.
    deaths: Vec<Instant>,
    listeners: Vec<Listener>,
    last_error: Option<String>,
    generation: u64,
}

struct Inner {
    config: Config,
    services: BTreeMap<&'static str, Supervised>,
}

pub struct Supervisor {
    base: MsgSvrBase,
    ha: bool,
    inner: Mutex<Inner>,
    /// Bumped on every phase change; waiters re-check their condition.
    changed: watch::Sender<u64>,
    /// Set when the watcher must stop everything and exit.
    pub exit: Notify,
}

impl Supervisor {
    pub fn new(base: MsgSvrBase, config: Config, ha: bool) -> Arc<Self> {
        let services = services::SERVICES
            .iter()
            .map(|s| {
                (
                    s.name,
                    Supervised {
                        service: s,
                        phase: Phase::Stopped,
                        pid: None,
                        since: None,
                        restarts: 0,
                        deaths: Vec::new(),
                        listeners: Vec::new(),
                        last_error: None,
                        generation: 0,
                    },
                )
            })
            .collect();
        Arc::new(Supervisor {
            base,
            ha,
            inner: Mutex::new(Inner { config, services }),
            changed: watch::channel(0).0,
            exit: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Reads the configuration again (before each start and on HUP).
    pub fn reload_config(&self) {
        match self.base.config_files().load() {
            Ok(cfg) => self.lock().config = cfg,
            Err(errs) => {
                for e in errs {
                    tracing::error!("configuration not reloaded: {e}");
                }
            }
        }
    }

    fn secs(&self, name: &str) -> Duration {
        Duration::from_secs(self.lock().config.get_u64(name).max(1))
    }

    fn log_file(&self, service: &str) -> String {
        let cfg = self.lock().config.clone();
        self.base
            .service_log_dir(&cfg, service)
            .join(service)
            .display()
            .to_string()
    }

    /// Is the service's program in lib/?
    pub fn is_installed(&self, name: &str) -> bool {
        services::find(name).is_some_and(|s| self.base.lib().join(s.program).is_file())
    }

    /// Starts one service and waits until it serves or fails.
    pub async fn start(self: &Arc<Self>, name: &str) -> Reply {
        let Some(svc) = services::find(name) else {
            return Reply::StartFailed {
                service: name.to_string(),
                reason: "unknown service".into(),
                log: String::new(),
            };
        };
        {
            let mut inner = self.lock();
            let rec = inner.services.get_mut(svc.name).expect("catalogue");
            if rec.phase.is_live() {
                return Reply::AlreadyRunning {
                    service: svc.name.into(),
                    pid: rec.pid.unwrap_or(0),
                };
            }
            let program = self.base.lib().join(svc.program);
            if !program.is_file() {
                return Reply::NotInstalled {
                    service: svc.name.into(),
                    program: program.display().to_string(),
                };
            }
            rec.deaths.clear();
            rec.restarts = 0;
            if let Err(e) = self.spawn(&mut inner, svc, false) {
                return Reply::StartFailed {
                    service: svc.name.into(),
                    reason: e,
                    log: self.log_file(svc.name),
                };
            }
        }
        self.wait_until(svc.name, |p| !matches!(p, Phase::Starting { .. }))
            .await;
        let inner = self.lock();
        let rec = &inner.services[svc.name];
        match rec.phase {
            Phase::Running => Reply::Started {
                service: svc.name.into(),
                pid: rec.pid.unwrap_or(0),
                listeners: rec.listeners.clone(),
            },
            _ => Reply::StartFailed {
                service: svc.name.into(),
                reason: rec
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "exited during start-up".into()),
                log: {
                    drop(inner);
                    self.log_file(svc.name)
                },
            },
        }
    }

    /// Launches the daemon; the caller holds the lock.
    fn spawn(
        self: &Arc<Self>,
        inner: &mut Inner,
        svc: &'static Service,
        restart: bool,
    ) -> Result<(), String> {
        let log_dir = self.base.service_log_dir(&inner.config, svc.name);
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
        let console = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}.console", svc.name)))
            .map_err(|e| format!("cannot open its console log: {e}"))?;
        let console2 = console.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(self.base.lib().join(svc.program));
        cmd.env(epistle_config::paths::BASE_ENV, self.base.root())
            .env(SERVICE_ENV, svc.name)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .kill_on_drop(false);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot run {}: {e}",
                self.base.lib().join(svc.program).display()
            )
        })?;
        let pid = child.id().unwrap_or(0);
        let rec = inner.services.get_mut(svc.name).expect("catalogue");
        rec.generation += 1;
        let generation = rec.generation;
        rec.phase = Phase::Starting { restart };
        rec.pid = Some(pid);
        rec.since = None;
        rec.listeners.clear();
        rec.last_error = None;
        tracing::info!("starting {} ({}), pid {pid}", svc.name, svc.description);
        self.notify();

        let me = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let how = match status {
                Ok(s) => describe_exit(s),
                Err(e) => format!("could not be waited for: {e}"),
            };
            me.on_exit(svc.name, generation, how);
        });
        let me = self.clone();
        let deadline = self.secs_locked(&inner.config, "local.watcher.starttimeout");
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let mut inner = me.lock();
            let rec = inner.services.get_mut(svc.name).expect("catalogue");
            if rec.generation == generation && matches!(rec.phase, Phase::Starting { .. }) {
                rec.last_error = Some(format!(
                    "did not report that it accepts connections within {} s (local.watcher.starttimeout)",
                    deadline.as_secs()
                ));
                if let Some(pid) = rec.pid {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        });
        Ok(())
    }

    fn secs_locked(&self, cfg: &Config, name: &str) -> Duration {
        Duration::from_secs(cfg.get_u64(name).max(1))
    }

    /// A daemon reports that it serves.
    pub fn on_ready(&self, service: &str, pid: u32, listeners: Vec<Listener>) {
        let mut inner = self.lock();
        let Some(rec) = inner.services.get_mut(service) else {
            return;
        };
        if rec.pid != Some(pid) {
            return;
        }
        if let Phase::Starting { restart } = rec.phase {
            rec.phase = Phase::Running;
            rec.since = Some(Instant::now());
            rec.listeners = listeners;
            if restart {
                rec.restarts += 1;
                tracing::warn!("{service} restarted, pid {pid}");
            } else {
                tracing::info!("{service} is running, pid {pid}");
            }
            drop(inner);
            self.notify();
        }
    }

    /// A daemon reports why it cannot start; its exit follows.
    pub fn on_failed(&self, service: &str, pid: u32, reason: String) {
        let mut inner = self.lock();
        if let Some(rec) = inner
            .services
            .get_mut(service)
            .filter(|r| r.pid == Some(pid))
        {
            rec.last_error = Some(reason);
        }
    }

    fn on_exit(self: &Arc<Self>, service: &'static str, generation: u64, how: String) {
        let mut inner = self.lock();
        let autorestart = inner.config.get_bool("local.autorestart");
        let window = self.secs_locked(&inner.config, "local.autorestart.timeout");
        let rec = inner.services.get_mut(service).expect("catalogue");
        if rec.generation != generation {
            return;
        }
        let pid = rec.pid.take().unwrap_or(0);
        rec.listeners.clear();
        rec.since = None;
        match rec.phase {
            Phase::Stopping => {
                rec.phase = Phase::Stopped;
                tracing::info!("{service} (pid {pid}) stopped: {how}");
            }
            Phase::Starting { restart: false } => {
                rec.phase = Phase::Failed;
                let why = rec
                    .last_error
                    .get_or_insert_with(|| format!("{how} before accepting connections"));
                tracing::error!("{service} (pid {pid}) failed to start: {why}");
            }
            Phase::Starting { restart: true } | Phase::Running => {
                let why = match rec.last_error.take() {
                    Some(e) => format!("{how} ({e})"),
                    None => how,
                };
                tracing::error!("{service} (pid {pid}) died: {why}");
                rec.last_error = Some(why);
                if !autorestart {
                    rec.phase = Phase::Failed;
                } else {
                    let now = Instant::now();
                    rec.deaths.retain(|t| now.duration_since(*t) < window);
                    rec.deaths.push(now);
                    if rec.deaths.len() >= 2 {
                        rec.phase = Phase::GivenUp;
                        tracing::error!(
                            critical = true,
                            "{service} failed twice within {} s (local.autorestart.timeout); \
                             it will not be restarted. Look at its log, then start it with start-msg {service}",
                            window.as_secs()
                        );
                        if self.ha {
                            tracing::error!(
                                critical = true,
                                "HA mode: the watcher stops everything and exits so the cluster fails over"
                            );
                            self.exit.notify_one();
                        }
                    } else {
                        rec.phase = Phase::Restarting;
                        let me = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(RESTART_DELAY).await;
                            let mut inner = me.lock();
                            let rec = &inner.services[service];
                            if rec.generation == generation && rec.phase == Phase::Restarting {
                                let svc = rec.service;
                                if let Err(e) = me.spawn(&mut inner, svc, true) {
                                    let rec = inner.services.get_mut(service).expect("catalogue");
                                    rec.phase = Phase::GivenUp;
                                    tracing::error!(
                                        critical = true,
                                        "{service} could not be restarted: {e}"
                                    );
                                    drop(inner);
                                    me.notify();
                                }
                            }
                        });
                    }
                }
            }
            Phase::Stopped | Phase::Restarting | Phase::Failed | Phase::GivenUp => {}
        }
        drop(inner);
        self.notify();
    }

    async fn wait_until(&self, service: &str, done: impl Fn(Phase) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if done(self.lock().services[service].phase) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stops one service: TERM, then KILL after `local.watcher.stoptimeout`
    /// (at once with `force`).
    pub async fn stop(&self, name: &str, force: bool) -> Reply {
        let pid = {
            let mut inner = self.lock();
            let Some(rec) = inner.services.get_mut(name) else {
                return Reply::NotRunning {
                    service: name.into(),
                };
            };
            match (rec.phase, rec.pid) {
                (Phase::Restarting, _) | (_, None) => {
                    if rec.phase == Phase::Restarting {
                        rec.phase = Phase::Stopped;
                    }
                    return Reply::NotRunning {
                        service: name.into(),
                    };
                }
                (_, Some(pid)) => {
                    rec.phase = Phase::Stopping;
                    pid
                }
            }
        };
        self.notify();
        let signal = if force {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        let _ = kill(Pid::from_raw(pid as i32), signal);
        let grace = self.secs("local.watcher.stoptimeout");
        let stopped = |p: Phase| !matches!(p, Phase::Stopping);
        if tokio::time::timeout(grace, self.wait_until(name, stopped))
            .await
            .is_err()
        {
            tracing::warn!(
                "{name} (pid {pid}) did not stop within {} s; killing it",
                grace.as_secs()
            );
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.wait_until(name, stopped)).await;
        }
        Reply::Stopped {
            service: name.into(),
        }
    }

    /// Stops every live service, last started first.
    pub async fn stop_all(&self, force: bool) -> Vec<Reply> {
        let mut replies = Vec::new();
        for svc in services::SERVICES.iter().rev() {
            let live = self.lock().services[svc.name].phase.is_live();
            if live {
                replies.push(self.stop(svc.name, force).await);
            }
        }
        replies
    }

    /// Passes a HUP on to every running service, so one `kill -HUP` of
    /// the watcher makes the whole suite re-read its configuration.
    pub fn reload_services(&self) {
        let inner = self.lock();
        for rec in inner
            .services
            .values()
            .filter(|r| r.phase == Phase::Running)
        {
            if let Some(pid) = rec.pid {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
            }
        }
    }

    pub fn status(&self) -> WatcherStatus {
        let inner = self.lock();
        WatcherStatus {
            watcher_pid: std::process::id(),
            ha: self.ha,
            services: services::SERVICES
                .iter()
                .map(|s| &inner.services[s.name])
                .map(|r| ServiceStatus {
                    name: r.service.name.to_string(),
                    state: r.phase.name().to_string(),
                    pid: r.pid,
                    uptime_secs: r.since.map(|t| t.elapsed().as_secs()),
                    restarts: r.restarts,
                    listeners: r.listeners.clone(),
                    last_error: r.last_error.clone(),
                })
                .collect(),
        }
    }

    /// msprobe: every `local.probe.interval` seconds, each running service
    /// is asked for its greeting; one that does not answer within
    /// `local.probe.<service>.timeout` is killed, and so restarted.
    pub async fn probe_loop(self: Arc<Self>) {
        loop {
            let interval = self.secs("local.probe.interval");
            tokio::time::sleep(interval).await;
            let (enabled, targets) = {
                let inner = self.lock();
                let enabled = inner.config.get_bool("local.watcher.enable");
                let targets: Vec<_> = inner
                    .services
                    .values()
                    .filter(|r| r.phase == Phase::Running)
                    .filter_map(|r| {
                        let l = r.listeners.first()?;
                        let name = r.service.name;
                        let timeout = inner
                            .config
                            .get_u64(&format!("local.probe.{name}.timeout"))
                            .max(1);
                        let warn = inner
                            .config
                            .get_u64(&format!("local.probe.{name}.warningthreshold"));
                        Some((name, r.generation, l.clone(), timeout, warn))
                    })
                    .collect();
                (enabled, targets)
            };
            if !enabled {
                continue;
            }
            // Probed side by side, so one wedged service does not delay
            // the verdict on the others.
            let mut probes = tokio::task::JoinSet::new();
            for (name, generation, listener, timeout, warn) in targets {
                let Some(addr) = crate::probe::probe_target(&listener.addr) else {
                    continue;
                };
                let me = self.clone();
                probes.spawn(async move {
                    match crate::probe::probe(
                        addr,
                        &listener.protocol,
                        Duration::from_secs(timeout),
                    )
                    .await
                    {
                        Ok(took) if took.as_secs() >= warn => {
                            tracing::warn!(
                                "{name} answered its probe on {addr} slowly: {} ms",
                                took.as_millis()
                            );
                        }
                        Ok(_) => {}
                        Err(e) => me.on_probe_failure(
                            name,
                            generation,
                            &format!("no answer to its probe on {addr}: {e}"),
                        ),
                    }
                });
            }
            while probes.join_next().await.is_some() {}
        }
    }

    fn on_probe_failure(&self, name: &str, generation: u64, why: &str) {
        let mut inner = self.lock();
        let autorestart = inner.config.get_bool("local.autorestart");
        let rec = inner.services.get_mut(name).expect("catalogue");
        if rec.generation != generation || rec.phase != Phase::Running {
            return;
        }
        tracing::error!("{name} (pid {}) {why}", rec.pid.unwrap_or(0));
        if autorestart {
            rec.last_error = Some(why.to_string());
            if let Some(pid) = rec.pid {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str())
                .unwrap_or("unknown");
            format!("killed by signal {sig} ({name})")
        }
        _ => "exited".to_string(),
    }
}

/// Asks the kernel to TERM the daemon if the watcher itself dies, so no
/// orphan keeps a port that the next start-msg needs. (PR_SET_PDEATHSIG
/// follows the forking thread: the watcher runs on one thread.)
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs between fork and exec and calls only
    // prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
}
