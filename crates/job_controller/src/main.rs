//! job_controller: works the channel queues. It learns of new queue files
//! from whoever writes them (and from rescanning `data/queue/` every
//! SYNCH_TIME seconds, and at start, so a restart loses nothing), starts
//! each channel's program (`MASTER_COMMAND` of job_controller.cnf) within
//! the channel's `maxjobs` and its pool's `JOB_LIMIT`, hands the programs
//! due messages one at a time, and schedules what they give back by the
//! channel's `backoff`.
//!
//! Start-up: configuration and log, drop privileges, the compiled MTA
//! configuration, bind `data/run/job_controller.sock`, scan the queues,
//! tell the watcher, serve. HUP (`imsimta restart`) reloads the compiled
//! configuration and rescans.

mod scheduler;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use epistle_daemon::{Daemon, SignalEvent, Signals};
use epistle_ipc::frame;
use epistle_ipc::jobs::{JobReply, JobRequest};
use epistle_mta::compiled::MtaConfig;
use epistle_mta::job_cnf::{self, Master};
use epistle_mta::maillog::{Action, MailLog, Record};
use epistle_mta::optionfile::int;
use epistle_mta::queue::QueueDir;
use epistle_mta::queuefile::Envelope;
use tokio::net::UnixStream;
use tokio::sync::Notify;

use scheduler::{Scheduler, now_ms};

/// A channel whose program cannot be started is not tried again sooner.
const BROKEN_PROGRAM_PAUSE: Duration = Duration::from_secs(60);

struct Controller {
    mta: Arc<MtaConfig>,
    queue: QueueDir,
    lib: PathBuf,
    maillog: MailLog,
    sched: Scheduler,
    /// Programs running per pool.
    pool_jobs: HashMap<String, usize>,
    /// Channels whose program failed to start, until when.
    broken: HashMap<String, Instant>,
}

type Shared = Arc<Mutex<Controller>>;

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Controller> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

#[tokio::main]
async fn main() {
    let mut d = match Daemon::init("job_controller", "job_controller") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("job_controller: {e:#}");
            std::process::exit(1);
        }
    };
    if let Err(e) = d.drop_privileges() {
        d.fail(&e);
    }
    let mta = match load_mta(&d) {
        Ok(m) => m,
        Err(e) => d.fail(&e),
    };
    let socket = d.base.job_controller_socket();
    let listener = match epistle_daemon::bind_unix(&socket) {
        Ok(l) => l,
        Err(e) => d.fail(&e),
    };
    let controller: Shared = Arc::new(Mutex::new(Controller {
        mta: Arc::new(mta),
        queue: QueueDir::new(d.base.queue()),
        lib: d.base.lib(),
        maillog: MailLog::new(d.base.mail_log()),
        sched: Scheduler::new(),
        pool_jobs: HashMap::new(),
        broken: HashMap::new(),
    }));
    {
        let mut c = lock(&controller);
        let (queue, mta) = (c.queue.clone(), c.mta.clone());
        c.sched.rescan(&queue, &mta);
    }
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => d.fail(&e.into()),
    };
    if let Err(e) = d.ready() {
        d.fail(&e);
    }
    let wake = Arc::new(Notify::new());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_rescan = Instant::now();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    tokio::spawn(serve(conn, controller.clone(), wake.clone()));
                }
                Err(e) => tracing::warn!("accept on {}: {e}", socket.display()),
            },
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            ev = signals.next() => match ev {
                SignalEvent::Reload => {
                    d.reload();
                    match load_mta(&d) {
                        Ok(mta) => {
                            let mut c = lock(&controller);
                            c.mta = Arc::new(mta);
                            c.broken.clear();
                            let (queue, mta) = (c.queue.clone(), c.mta.clone());
                            c.sched.rescan(&queue, &mta);
                            tracing::info!("new MTA configuration in force");
                        }
                        Err(e) => tracing::error!("configuration not reloaded: {e:#}"),
                    }
                }
                SignalEvent::Shutdown => break,
            },
        }
        let synch = {
            let c = lock(&controller);
            c.mta
                .job_controller
                .global("SYNCH_TIME")
                .and_then(int)
                .filter(|n| *n > 0)
                .unwrap_or(30) as u64
        };
        if last_rescan.elapsed() >= Duration::from_secs(synch) {
            let mut c = lock(&controller);
            let (queue, mta) = (c.queue.clone(), c.mta.clone());
            c.sched.rescan(&queue, &mta);
            match c.maillog.roll_over_daily() {
                Ok(Some(p)) => tracing::info!("mail.log_current rolled over to {}", p.display()),
                Ok(None) => {}
                Err(e) => tracing::error!("cannot roll mail.log_current over: {e}"),
            }
            last_rescan = Instant::now();
        }
        schedule(&controller, &wake);
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("job controller stopped");
}

fn load_mta(d: &Daemon) -> anyhow::Result<MtaConfig> {
    Ok(MtaConfig::load(&d.base.config())?)
}

/// Starts channel programs where messages are due and limits allow, and
/// empties the bitbucket.
fn schedule(controller: &Shared, wake: &Arc<Notify>) {
    let mut c = lock(controller);
    let now = now_ms();
    let mta = c.mta.clone();
    let pools = job_cnf::pools(&mta.job_controller);
    let channels: Vec<(String, usize, usize)> = c
        .sched
        .channels
        .iter()
        .map(|(name, s)| (name.clone(), s.due_count(now), s.jobs))
        .filter(|(_, due, _)| *due > 0)
        .collect();
    for (channel, due, jobs) in channels {
        match job_cnf::master(&mta.job_controller, &channel) {
            Master::Program(program) => {
                if c.broken
                    .get(&channel)
                    .is_some_and(|until| *until > Instant::now())
                {
                    continue;
                }
                let max_jobs = job_cnf::max_jobs(&mta.imta, &channel);
                let pool = job_cnf::pool_of(&pools, &mta.imta, &channel);
                let mut running = jobs;
                while running < max_jobs
                    && running < due
                    && c.pool_jobs.get(&pool.name).copied().unwrap_or(0) < pool.job_limit
                {
                    match start_program(controller, &mut c, &channel, &program, &pool.name, wake) {
                        Ok(()) => running += 1,
                        Err(e) => {
                            tracing::error!("channel {channel}: {e:#}");
                            c.broken
                                .insert(channel.clone(), Instant::now() + BROKEN_PROGRAM_PAUSE);
                            break;
                        }
                    }
                }
            }
            Master::Discard => discard_due(&mut c, &channel),
            Master::Hold | Master::None => {}
        }
    }
}

fn start_program(
    controller: &Shared,
    c: &mut Controller,
    channel: &str,
    program: &str,
    pool: &str,
    wake: &Arc<Notify>,
) -> anyhow::Result<()> {
    let path = c.lib.join(program);
    let mut child = tokio::process::Command::new(&path)
        .arg(channel)
        .stdin(std::process::Stdio::null())
        .env_remove(epistle_ipc::watcher::SERVICE_ENV)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (MASTER_COMMAND in job_controller.cnf)",
                path.display()
            )
        })?;
    c.sched
        .channels
        .entry(channel.to_string())
        .or_default()
        .jobs += 1;
    *c.pool_jobs.entry(pool.to_string()).or_insert(0) += 1;
    let (shared, wake, channel, pool) = (
        controller.clone(),
        wake.clone(),
        channel.to_string(),
        pool.to_string(),
    );
    tokio::spawn(async move {
        let status = child.wait().await;
        let mut c = lock(&shared);
        if let Some(s) = c.sched.channels.get_mut(&channel) {
            s.jobs = s.jobs.saturating_sub(1);
        }
        if let Some(n) = c.pool_jobs.get_mut(&pool) {
            *n = n.saturating_sub(1);
        }
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!("{channel} program ended with {s}"),
            Err(e) => tracing::warn!("{channel} program: {e}"),
        }
        drop(c);
        wake.notify_one();
    });
    Ok(())
}

/// The bitbucket channel: due messages are dropped, and logged.
fn discard_due(c: &mut Controller, channel: &str) {
    while let Some(path) = c.sched.take(channel) {
        if let Ok(data) = std::fs::read(&path)
            && let Ok((env, at)) = Envelope::decode(&data)
        {
            let size = (data.len() - at) as u64;
            let records: Vec<Record> = env
                .recipients
                .iter()
                .map(|r| Record {
                    source_channel: &env.source_channel,
                    dest_channel: channel,
                    action: Action::Dequeue,
                    modifiers: "",
                    size,
                    from: &env.from,
                    original_to: r.orcpt.as_deref().unwrap_or(""),
                    active_to: &r.address,
                    diagnostic: "discarded",
                })
                .collect();
            c.maillog.write(&records);
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::error!("cannot remove {path}: {e}");
        }
        let mta = c.mta.clone();
        c.sched.finished(&mta, channel, &path, None);
    }
}

/// One client: an SMTP server's notice, a channel program's work
/// requests, or imsimta.
async fn serve(mut conn: UnixStream, controller: Shared, wake: Arc<Notify>) {
    // Files this connection took and has not finished, by channel.
    let mut taken: Vec<(String, String)> = Vec::new();
    loop {
        let req = match frame::read::<JobRequest>(&mut conn).await {
            Ok(r) => r,
            Err(_) => break,
        };
        let reply = {
            let mut c = lock(&controller);
            match req {
                JobRequest::Enqueued { files } => {
                    for f in files {
                        c.sched.enqueued(&f.channel, f.path);
                    }
                    wake.notify_one();
                    JobReply::Ok
                }
                JobRequest::Take { channel } => match c.sched.take(&channel) {
                    Some(path) => {
                        taken.push((channel, path.clone()));
                        JobReply::Job { path }
                    }
                    None => JobReply::Idle,
                },
                JobRequest::Finished {
                    channel,
                    path,
                    requeued,
                } => {
                    taken.retain(|(ch, p)| !(ch == &channel && p == &path));
                    let mta = c.mta.clone();
                    c.sched.finished(&mta, &channel, &path, requeued);
                    JobReply::Ok
                }
                JobRequest::Queues => JobReply::Queues {
                    channels: c.sched.summary(),
                },
                JobRequest::Rebuild => {
                    let (queue, mta) = (c.queue.clone(), c.mta.clone());
                    c.sched.rescan(&queue, &mta);
                    wake.notify_one();
                    JobReply::Ok
                }
                JobRequest::RunNow { channel } => {
                    c.sched.run_now(channel.as_deref());
                    c.broken.clear();
                    wake.notify_one();
                    JobReply::Ok
                }
            }
        };
        if frame::write(&mut conn, &reply).await.is_err() {
            break;
        }
    }
    if !taken.is_empty() {
        let mut c = lock(&controller);
        for (channel, path) in &taken {
            c.sched.abandoned(channel, std::slice::from_ref(path));
        }
        wake.notify_one();
    }
}
