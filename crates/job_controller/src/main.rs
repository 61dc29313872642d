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
use epistle_mta::job_cnf::{self, DeliveryThreads, Master};
use epistle_mta::maillog::{Action, MailLog, Record};
use epistle_mta::optionfile::int;
use epistle_mta::queue::QueueDir;
use epistle_mta::queuefile::Envelope;
use tokio::net::UnixStream;
use tokio::sync::Notify;

use scheduler::{Scheduler, now_ms, synch_time};

/// A channel whose program cannot be started is not tried again sooner.
const BROKEN_PROGRAM_PAUSE: Duration = Duration::from_secs(60);
/// How long a channel program with nothing to do waits for work before it
/// is told to exit: under a steady flow of mail the same programs keep
/// delivering instead of a new one starting for every few messages.
const PROGRAM_LINGER: Duration = Duration::from_secs(5);
/// MAX_LIFE_AGE when job_controller.cnf does not set it: after this many
/// seconds a program is told to exit at its next request.
const DEFAULT_MAX_LIFE_AGE: u64 = 3600;

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
    /// Counts configuration reloads: a program started under an older
    /// configuration is told to exit at its next request.
    generation: u64,
}

type Shared = Arc<Mutex<Controller>>;

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Controller> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

#[tokio::main(flavor = "current_thread")]
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
        generation: 0,
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
    // Lingering programs' Take requests wait on this.
    let work_ready = Arc::new(Notify::new());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_rescan = Instant::now();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    let shared = (controller.clone(), wake.clone(), work_ready.clone());
                    tokio::spawn(serve(conn, shared));
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
                            c.generation += 1;
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
        let synch = synch_time(&lock(&controller).mta);
        if last_rescan.elapsed() >= synch {
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
        if schedule(&controller, &wake) {
            work_ready.notify_waiters();
        }
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("job controller stopped");
}

fn load_mta(d: &Daemon) -> anyhow::Result<MtaConfig> {
    Ok(MtaConfig::load(&d.base.config())?)
}

/// Starts channel programs where messages are due and limits allow, and
/// empties the bitbucket. Whether anything is due (for lingering
/// programs).
fn schedule(controller: &Shared, wake: &Arc<Notify>) -> bool {
    let mut c = lock(controller);
    let now = now_ms();
    let mta = c.mta.clone();
    let pools = job_cnf::pools(&mta.job_controller);
    // No channel needs more programs than its maxjobs (one per
    // filesperjob due messages), so counting due messages stops there (the
    // queue may hold many thousands).
    let channels: Vec<(String, usize, usize)> = c
        .sched
        .channels
        .iter()
        .map(|(name, s)| {
            let cap = job_cnf::max_jobs(&mta.imta, name)
                .saturating_mul(job_cnf::files_per_job(&mta.imta, name));
            (name.clone(), s.due_count_at_most(now, cap), s.jobs)
        })
        .filter(|(_, due, _)| *due > 0)
        .collect();
    let any_due = !channels.is_empty();
    for (channel, due, jobs) in channels {
        match job_cnf::master(&mta.job_controller, &channel) {
            Master::Program(program) => {
                if c.broken
                    .get(&channel)
                    .is_some_and(|until| *until > Instant::now())
                {
                    continue;
                }
                let wanted = job_cnf::programs_wanted(&mta.imta, &channel, due);
                let pool = job_cnf::pool_of(&pools, &mta.imta, &channel);
                let mut running = jobs;
                while running < wanted
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
    any_due
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
async fn serve(
    mut conn: UnixStream,
    (controller, wake, work_ready): (Shared, Arc<Notify>, Arc<Notify>),
) {
    // Files this connection took and has not finished, by channel.
    let mut taken: Vec<(String, String)> = Vec::new();
    // A channel program's connection lives as long as the program.
    let started = Instant::now();
    let generation = lock(&controller).generation;
    loop {
        let req = match frame::read::<JobRequest>(&mut conn).await {
            Ok(r) => r,
            Err(_) => break,
        };
        let reply = match req {
            JobRequest::Take { channel, finished } => {
                if let Some(done) = finished {
                    taken.retain(|(ch, p)| !(ch == &channel && *p == done.path));
                    let mut c = lock(&controller);
                    let mta = c.mta.clone();
                    c.sched.finished(&mta, &channel, &done.path, done.requeued);
                }
                match take_when_due(&controller, &work_ready, &channel, started, generation).await {
                    Some((path, waiting)) => {
                        taken.push((channel, path.clone()));
                        JobReply::Job { path, waiting }
                    }
                    None => JobReply::Idle,
                }
            }
            other => answer(&controller, &wake, other),
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

/// A channel program's next message: one due now, or the first to become
/// due within [`PROGRAM_LINGER`], with how many more are due. `None`
/// tells the program to exit — also when it has outlived MAX_LIFE_AGE or
/// a configuration reload.
async fn take_when_due(
    controller: &Shared,
    work_ready: &Notify,
    channel: &str,
    started: Instant,
    generation: u64,
) -> Option<(String, usize)> {
    let deadline = tokio::time::Instant::now() + PROGRAM_LINGER;
    loop {
        // Registered before looking, so a wake-up between the look and
        // the wait is not missed.
        let ready = work_ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        {
            let mut c = lock(controller);
            let max_age = c
                .mta
                .job_controller
                .global("MAX_LIFE_AGE")
                .and_then(int)
                .filter(|n| *n > 0)
                .map_or(DEFAULT_MAX_LIFE_AGE, |n| n as u64);
            if c.generation != generation || started.elapsed() >= Duration::from_secs(max_age) {
                return None;
            }
            if let Some(path) = c.sched.take(channel) {
                // Past this many, no program starts another thread: the
                // count (a walk of the due list) stops there.
                let threads = DeliveryThreads::of(&c.mta, channel);
                let enough = threads.depth.saturating_mul(threads.max);
                let waiting = c
                    .sched
                    .channels
                    .get(channel)
                    .map_or(0, |s| s.due_count_at_most(now_ms(), enough));
                return Some((path, waiting));
            }
        }
        if tokio::time::timeout_at(deadline, ready).await.is_err() {
            return None;
        }
    }
}

/// Every request but Take, answered at once.
fn answer(controller: &Shared, wake: &Notify, req: JobRequest) -> JobReply {
    let mut c = lock(controller);
    match req {
        JobRequest::Enqueued { files } => {
            let mta = c.mta.clone();
            for f in files {
                c.sched.enqueued(&mta, &f.channel, f.path, f.priority);
            }
            wake.notify_one();
            JobReply::Ok
        }
        JobRequest::Take { .. } => JobReply::Idle,
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
}
