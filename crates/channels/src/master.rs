//! What every channel program does around its own delivery step: ask the
//! job controller for due messages, lock and read each queue file, let
//! the channel deliver to each recipient, then settle the file —
//! delivered and failed recipients leave it (failures, and successes the
//! sender asked about, become notices), deferred ones stay in it with one
//! more attempt counted — and tell the job controller.
//!
//! A queue file is changed only by rename: the remaining recipients are
//! written to a temporary file that replaces the old content, then the
//! file takes its next attempt name; a crash at any point leaves a whole
//! file. The lock (`flock`) keeps two programs off one message, also
//! across a job controller restart.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use epistle_config::{Config, MsgSvrBase};
use epistle_directory::Directory;
use epistle_ipc::frame;
use epistle_ipc::jobs::{Finished, JobReply, JobRequest};
use epistle_mta::compiled::MtaConfig;
use epistle_mta::job_cnf::DeliveryThreads;
use epistle_mta::maillog::{Action, MailLog, Record};
use epistle_mta::queue::QueueDir;
use epistle_mta::queuefile::{self, Envelope, Recipient};
use epistle_mta::resolve::Resolver;
use epistle_mta::retry::{NoticeAction, Notices, Priority, block_size};
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixStream;

use crate::dsn::{DsnAction, Notice, RecipientStatus};

/// Most bytes of an original returned inside a failure notice.
const RETURN_LIMIT: usize = 1 << 20;

/// Why a recipient was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// RFC 3463 status, `5.1.1`.
    pub status: String,
    /// `smtp; 550 5.1.1 …` from a remote server, or our own words.
    pub text: String,
    /// The remote server, when one answered.
    pub remote: Option<String>,
}

impl Diagnostic {
    pub fn new(status: &str, text: impl Into<String>) -> Diagnostic {
        Diagnostic {
            status: status.to_string(),
            text: text.into(),
            remote: None,
        }
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    /// Temporary: try again on the backoff schedule.
    Deferred(Diagnostic),
    /// Permanent: return to the sender.
    Failed(Diagnostic),
}

/// One message handed to a channel.
pub struct Job {
    pub path: PathBuf,
    pub envelope: Envelope,
    pub message: Vec<u8>,
    /// When the message was last tried (the file's time).
    pub last_attempt: SystemTime,
    _lock: Flock<File>,
}

impl Job {
    /// How long the message has been queued.
    pub fn age(&self) -> Duration {
        let received = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(self.envelope.received).unwrap_or(0));
        SystemTime::now()
            .duration_since(received)
            .unwrap_or_default()
    }
}

/// A channel's delivery step: one outcome per recipient, in order.
pub trait Deliver {
    /// Whether the channel's messages may be delivered on several
    /// threads at once ([`DeliveryThreads`]); a channel whose steps must
    /// see each other's results (defragment) says no.
    const CONCURRENT: bool = true;

    fn deliver(
        &mut self,
        ctx: &Context,
        job: &Job,
    ) -> impl std::future::Future<Output = Vec<Outcome>> + Send;
}

/// What a channel program works with.
pub struct Context {
    pub channel: String,
    pub base: MsgSvrBase,
    pub config: Config,
    pub mta: Arc<MtaConfig>,
    pub directory: Option<Arc<Directory>>,
    pub queue: QueueDir,
    pub maillog: MailLog,
    pub host: String,
    pub postmaster: String,
}

impl Context {
    /// Loads what the channel needs; `base` and `config` come from the
    /// program's [`epistle_daemon::Daemon`].
    pub async fn load(channel: &str, base: MsgSvrBase, config: Config) -> anyhow::Result<Context> {
        let mta = MtaConfig::load(&base.config())?;
        if mta.imta.channel(channel).is_none() {
            anyhow::bail!("imta.cnf has no channel {channel}");
        }
        let directory = match epistle_directory::open(&base, &config).await {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                tracing::error!("the directory cannot be opened: {e}");
                None
            }
        };
        let host = match config.get("local.hostname") {
            "" => "localhost".to_string(),
            h => h.to_string(),
        };
        let postmaster = match config.get("local.postmaster") {
            "" => format!("postmaster@{host}"),
            p => p.to_string(),
        };
        Ok(Context {
            channel: channel.to_string(),
            queue: QueueDir::new(base.queue()),
            maillog: MailLog::new(base.mail_log()),
            mta: Arc::new(mta),
            directory,
            host,
            postmaster,
            base,
            config,
        })
    }
}

/// A channel program's life: start as a worker of the job controller,
/// load the channel named as the first argument (else
/// `default_channel`), then [`run`] until nothing is due, with a
/// deliverer from `make` for each delivery thread. Failures are logged
/// and end the process with status 1.
pub async fn program_main<D: Deliver + Send + 'static>(
    program: &str,
    default_channel: &str,
    make: impl Fn(&Context) -> anyhow::Result<D>,
) {
    let channel = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default_channel.into());
    let d = match epistle_daemon::Daemon::init_worker(program, program) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            std::process::exit(1);
        }
    };
    let result = async {
        let ctx = Context::load(&channel, d.base.clone(), d.config.clone()).await?;
        run(Arc::new(ctx), make).await
    };
    if let Err(e) = result.await {
        tracing::error!("{program} {channel}: {e:#}");
        std::process::exit(1);
    }
}

/// Queues a message on from this channel (all files or none), logs the
/// enqueue records (with `diagnostic`) and tells the job controller.
pub async fn queue_on(
    ctx: &Context,
    envelope: Envelope,
    recipients: Vec<(String, Recipient)>,
    message: Vec<u8>,
    diagnostic: &str,
) -> Result<(), String> {
    let (q, mta) = (ctx.queue.clone(), ctx.mta.clone());
    let size = message.len() as u64;
    let from = envelope.from.clone();
    let for_queue = recipients.clone();
    let files = tokio::task::spawn_blocking(move || {
        epistle_mta::submit::enqueue(
            &q,
            &mta.imta,
            block_size(&mta.options),
            &envelope,
            &for_queue,
            &message,
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let records: Vec<Record> = recipients
        .iter()
        .map(|(ch, r)| Record {
            source_channel: &ctx.channel,
            dest_channel: ch,
            action: Action::Enqueue,
            modifiers: "",
            size,
            from: &from,
            original_to: r.orcpt.as_deref().unwrap_or(""),
            active_to: &r.address,
            diagnostic,
        })
        .collect();
    ctx.maillog.write(&records);
    epistle_mta::submit::notify(&ctx.base.job_controller_socket(), files).await;
    Ok(())
}

/// Works due messages until the job controller has none for a while
/// (or goes away), on as many delivery threads as the channel's
/// [`DeliveryThreads`] call for. Each thread is a task with its own
/// connection to the job controller and its own deliverer (`make`), and
/// delivers one message at a time; one more starts when the job
/// controller says more messages wait than the running threads cover.
/// Messages in flight at once share this process's connections (the
/// store's, the directory's) and its wake-ups, where a program per
/// message would pay for each.
pub async fn run<D: Deliver + Send + 'static>(
    ctx: Arc<Context>,
    make: impl Fn(&Context) -> anyhow::Result<D>,
) -> anyhow::Result<()> {
    let plan = if D::CONCURRENT {
        DeliveryThreads::of(&ctx.mta, &ctx.channel)
    } else {
        DeliveryThreads { depth: 1, max: 1 }
    };
    // Each thread reports how many messages it saw waiting.
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut threads = tokio::task::JoinSet::new();
    threads.spawn(delivery_thread(ctx.clone(), make(&ctx)?, report.clone()));
    let mut failure: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            Some(waiting) = reports.recv() => {
                if threads.len() < plan.wanted(threads.len(), waiting) {
                    match make(&ctx) {
                        Ok(d) => {
                            threads.spawn(delivery_thread(ctx.clone(), d, report.clone()));
                        }
                        Err(e) => tracing::warn!("no more delivery threads: {e:#}"),
                    }
                }
            }
            ended = threads.join_next() => match ended {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    failure.get_or_insert(e);
                }
                Some(Err(e)) => {
                    failure.get_or_insert(anyhow::anyhow!("a delivery thread failed: {e}"));
                }
            },
        }
    }
    failure.map_or(Ok(()), Err)
}

/// One delivery thread: take a due message, deliver it, settle its file,
/// tell the job controller; until it has nothing more.
async fn delivery_thread<D: Deliver>(
    ctx: Arc<Context>,
    mut deliverer: D,
    report: tokio::sync::mpsc::UnboundedSender<usize>,
) -> anyhow::Result<()> {
    let ctx = &*ctx;
    let socket = ctx.base.job_controller_socket();
    let mut jc = UnixStream::connect(&socket)
        .await
        .with_context(|| format!("cannot reach the job controller at {}", socket.display()))?;
    let mut finished: Option<Finished> = None;
    loop {
        let take = JobRequest::Take {
            channel: ctx.channel.clone(),
            finished: finished.take(),
        };
        frame::write(&mut jc, &take).await?;
        let path = match frame::read::<JobReply>(&mut jc).await {
            Ok(JobReply::Job { path, waiting }) => {
                let _ = report.send(waiting);
                PathBuf::from(path)
            }
            Ok(_) => return Ok(()),
            // Stopped (stop-msg) while this program waited for work.
            Err(_) => {
                tracing::info!("the job controller went away; stopping");
                return Ok(());
            }
        };
        let requeued = match open_job(&path) {
            Ok(Some(job)) => {
                let outcomes = match crate::defragment::divert(ctx, &job).await {
                    Some(held) => held,
                    None => deliverer.deliver(ctx, &job).await,
                };
                settle(ctx, job, outcomes).await
            }
            Ok(None) => Some(path.clone()), // another program has it
            // Taken out of the queue since it was handed out (its
            // message was reassembled, or an administrator deleted it).
            Err(_) if !path.exists() => None,
            Err(e) => {
                tracing::error!("{}: {e:#}", path.display());
                set_aside(&path);
                None
            }
        };
        finished = Some(Finished {
            path: path.display().to_string(),
            requeued: requeued.map(|p| p.display().to_string()),
        });
    }
}

/// `imsimta qm return`: the message goes back to its sender with a
/// failure notice for every recipient left, and leaves the queue.
/// `Ok(false)` when a channel program holds it right now.
pub async fn return_to_sender(ctx: &Context, path: &Path, reason: &str) -> anyhow::Result<bool> {
    let Some(job) = open_job(path)? else {
        return Ok(false);
    };
    let outcomes = job
        .envelope
        .recipients
        .iter()
        .map(|_| Outcome::Failed(Diagnostic::new("5.0.0", reason)))
        .collect();
    match settle(ctx, job, outcomes).await {
        None => Ok(true),
        Some(_) => anyhow::bail!("the notice could not be queued; the message stays"),
    }
}

/// Locks and reads a queue file; `None` when another process holds it.
pub fn open_job(path: &Path) -> anyhow::Result<Option<Job>> {
    let file = File::open(path).with_context(|| "cannot open the queue file".to_string())?;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => return Err(e).context("cannot lock the queue file"),
    };
    // The previous owner may have removed or replaced the file between
    // our open and our lock: only the inode still at `path` counts.
    let locked = lock.metadata()?;
    {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => {}
            _ => return Ok(None),
        }
    }
    let last_attempt = locked.modified()?;
    let mut data = Vec::with_capacity(usize::try_from(locked.len()).unwrap_or(0));
    std::io::Read::read_to_end(&mut &*lock, &mut data)?;
    let (envelope, at) = Envelope::decode(&data)?;
    Ok(Some(Job {
        path: path.to_path_buf(),
        envelope,
        message: data[at..].to_vec(),
        last_attempt,
        _lock: lock,
    }))
}

/// A queue file that cannot be read is renamed out of the queue (kept for
/// the administrator, never delivered half-understood).
fn set_aside(path: &Path) {
    let bad = path.with_extension("BAD");
    match std::fs::rename(path, &bad) {
        Ok(()) => tracing::error!("unreadable queue file kept as {}", bad.display()),
        Err(e) => tracing::error!("cannot set aside {}: {e}", path.display()),
    }
}

/// Does what the outcomes say; returns the requeued file, if any.
async fn settle(ctx: &Context, job: Job, mut outcomes: Vec<Outcome>) -> Option<PathBuf> {
    outcomes.resize(
        job.envelope.recipients.len(),
        Outcome::Deferred(Diagnostic::new("4.3.0", "no result from the channel")),
    );
    let channel = ctx.mta.imta.channel(&ctx.channel);
    let unit = epistle_mta::retry::return_unit(&ctx.mta.options);
    let block = block_size(&ctx.mta.options);
    let priority = Priority::of_message(&job.message, job.message.len() as u64, channel, block);
    let notices = channel.and_then(|c| Notices::for_channel(&ctx.mta.imta, c, priority, unit).ok());
    let age = job.age();
    let prev_age = job
        .last_attempt
        .duration_since(
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(job.envelope.received).unwrap_or(0)),
        )
        .unwrap_or_default();
    let (expired, warn) = match &notices {
        Some(n) => {
            let sent = match n.due(prev_age, 0) {
                NoticeAction::Warn(k) => k,
                _ => 0,
            };
            match n.due(age, sent) {
                NoticeAction::Return => (true, false),
                NoticeAction::Warn(_) => (false, true),
                NoticeAction::Nothing => (false, false),
            }
        }
        None => (false, false),
    };
    let size = job.message.len() as u64;
    let env = &job.envelope;
    let mut remaining: Vec<Recipient> = Vec::new();
    let mut failed: Vec<RecipientStatus> = Vec::new();
    let mut delayed: Vec<RecipientStatus> = Vec::new();
    let mut delivered: Vec<RecipientStatus> = Vec::new();
    // What the postmaster's copies report: every failure and warning,
    // whatever the sender asked to hear of.
    let mut post_failed: Vec<RecipientStatus> = Vec::new();
    let mut post_delayed: Vec<RecipientStatus> = Vec::new();
    let mut records: Vec<(Action, &Recipient, String)> = Vec::new();
    for (r, outcome) in env.recipients.iter().zip(outcomes) {
        let notify = r.notify.as_deref().unwrap_or("").to_ascii_uppercase();
        // RFC 3461 §4.1: without NOTIFY, failures only; NOTIFY=SUCCESS alone
        // asks for no failure notice.
        let on_failure = notify.is_empty() || notify.contains("FAILURE");
        let status = |action, d: &Diagnostic| RecipientStatus {
            original: r.orcpt.clone(),
            final_recipient: r.address.clone(),
            action,
            status: d.status.clone(),
            remote_mta: d.remote.clone(),
            diagnostic: d.text.clone(),
        };
        match outcome {
            Outcome::Delivered(detail) => {
                if notify.contains("SUCCESS") {
                    delivered.push(status(
                        DsnAction::Delivered,
                        &Diagnostic::new("2.0.0", detail.clone()),
                    ));
                }
                records.push((Action::Dequeue, r, detail));
            }
            Outcome::Failed(d) => {
                post_failed.push(status(DsnAction::Failed, &d));
                if on_failure {
                    failed.push(status(DsnAction::Failed, &d));
                }
                records.push((Action::Return, r, d.text.clone()));
            }
            Outcome::Deferred(d) if expired => {
                let d = Diagnostic {
                    status: "4.4.7".into(),
                    text: format!("delivery time expired; last error: {}", d.text),
                    remote: d.remote,
                };
                post_failed.push(status(DsnAction::Failed, &d));
                if on_failure {
                    failed.push(status(DsnAction::Failed, &d));
                }
                records.push((Action::Return, r, d.text.clone()));
            }
            Outcome::Deferred(d) => {
                // Warnings when asked, or by default (as the original's
                // `notices` promise).
                if warn {
                    post_delayed.push(status(DsnAction::Delayed, &d));
                }
                if warn && (notify.is_empty() || notify.contains("DELAY")) {
                    delayed.push(status(DsnAction::Delayed, &d));
                    records.push((Action::Warning, r, "delay notice sent".into()));
                }
                records.push((Action::Requeue, r, d.text.clone()));
                remaining.push(r.clone());
            }
        }
    }
    let log: Vec<Record> = records
        .iter()
        .map(|(action, r, diag)| Record {
            source_channel: &env.source_channel,
            dest_channel: &ctx.channel,
            action: *action,
            modifiers: "",
            size,
            from: &env.from,
            original_to: r.orcpt.as_deref().unwrap_or(""),
            active_to: &r.address,
            diagnostic: diag,
        })
        .collect();
    // Notices first: once the file changes, what they report is gone.
    let retry_until = notices
        .as_ref()
        .and_then(|n| n.ages.last())
        .and_then(|last| {
            chrono::DateTime::from_timestamp(env.received + last.as_secs() as i64, 0)
                .map(|t| t.to_rfc2822())
        });
    let copies = [
        (&failed, &post_failed, None, SENDPOST),
        (&delayed, &post_delayed, retry_until, WARNPOST),
        (&delivered, &Vec::new(), None, &[][..]),
    ];
    for (list, post_list, until, post_group) in copies {
        let mut sent = NoticeSent::Unreturnable;
        if !list.is_empty() {
            sent = send_notice(ctx, env, &job.message, list, until.clone(), None).await;
        }
        let copy = !post_list.is_empty()
            && post_copy(channel, post_group).wanted(&env.from, sent == NoticeSent::Unreturnable);
        if copy {
            let headers_only = channel.is_some_and(|c| c.has("postheadonly"));
            let post = PostmasterCopy { headers_only };
            if send_notice(ctx, env, &job.message, post_list, until, Some(post)).await
                == NoticeSent::TryLater
            {
                sent = NoticeSent::TryLater;
            }
        }
        if sent == NoticeSent::TryLater {
            // The notice could not be queued: keep everything as it is
            // and try the whole message again later.
            return Some(requeue_unchanged(&job));
        }
    }
    ctx.maillog.write(&log);
    if remaining.is_empty() {
        // Not fsynced: every process sees the file gone at once (so a
        // killed program never delivers twice), and only a power cut could
        // bring it back — then the message is delivered again rather than
        // lost, the side a mail system must err on.
        if let Err(e) = ctx.queue.retire(&job.path) {
            tracing::error!("cannot remove {}: {e}", job.path.display());
        }
        return None;
    }
    match rewrite(&job, remaining) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!("cannot requeue {}: {e}", job.path.display());
            Some(job.path.clone())
        }
    }
}

/// The keywords choosing the postmaster's copies of failure notices
/// (`sendpost` …) and of delay warnings (`warnpost` …).
const SENDPOST: &[&str] = &["sendpost", "copysendpost", "errsendpost", "nosendpost"];
const WARNPOST: &[&str] = &["warnpost", "copywarnpost", "errwarnpost", "nowarnpost"];

/// When the postmaster gets a copy of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PostCopy {
    /// `sendpost` / `warnpost`: every time.
    Always,
    /// `copy…post`, and the default without a keyword (as the original
    /// did): unless the message is itself a notice (`<>`).
    UnlessNotice,
    /// `err…post`: only when the sender cannot be told.
    Unreturnable,
    /// `no…post`.
    Never,
}

impl PostCopy {
    fn wanted(self, from: &str, unreturnable: bool) -> bool {
        match self {
            PostCopy::Always => true,
            PostCopy::UnlessNotice => !from.is_empty(),
            PostCopy::Unreturnable => unreturnable,
            PostCopy::Never => false,
        }
    }
}

fn post_copy(channel: Option<&epistle_mta::imtacnf::Channel>, group: &[&str]) -> PostCopy {
    match channel
        .and_then(|c| c.last_of(group))
        .map(|k| k.name.as_str())
    {
        _ if group.is_empty() => PostCopy::Never,
        Some(k) if k.starts_with("copy") => PostCopy::UnlessNotice,
        Some(k) if k.starts_with("err") => PostCopy::Unreturnable,
        Some(k) if k.starts_with("no") => PostCopy::Never,
        Some(_) => PostCopy::Always,
        None => PostCopy::UnlessNotice,
    }
}

/// A notice's copy for the postmaster.
#[derive(Debug, Clone, Copy)]
struct PostmasterCopy {
    /// `postheadonly`: only the message's header goes along.
    headers_only: bool,
}

/// What became of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoticeSent {
    Queued,
    /// Nobody to send it to: the message was a notice itself (`<>`), or
    /// its sender's address is no good.
    Unreturnable,
    /// It could not be queued now.
    TryLater,
}

/// Queues a notice to the message's return path (never to `<>`), or,
/// with `post`, the postmaster's copy.
async fn send_notice(
    ctx: &Context,
    env: &Envelope,
    message: &[u8],
    list: &[RecipientStatus],
    retry_until: Option<String>,
    post: Option<PostmasterCopy>,
) -> NoticeSent {
    let to = match post {
        Some(_) => ctx.postmaster.as_str(),
        None => env.from.as_str(),
    };
    if to.is_empty() {
        return NoticeSent::Unreturnable; // RFC 5321 §4.5.5: no notice about a notice
    }
    // The postmaster's copy may carry only the header.
    let headers_only = Envelope {
        ret: Some("HDRS".into()),
        ..env.clone()
    };
    let env = match post {
        Some(PostmasterCopy { headers_only: true }) => &headers_only,
        _ => env,
    };
    let token = format!(
        "{}.{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let notice = Notice {
        to,
        host: &ctx.host,
        postmaster: &ctx.postmaster,
        envelope: env,
        recipients: list,
        message,
        retry_until,
        token: &token,
        return_limit: RETURN_LIMIT,
    };
    let text = notice.build(&chrono::Local::now().to_rfc2822());
    let resolver = Resolver {
        config: &ctx.mta,
        directory: ctx.directory.as_deref(),
    };
    let routes = match resolver.resolve(to, "", &ctx.channel).await {
        Ok(r) => r.routes,
        Err(reply) if reply.code >= 500 => {
            // The address is no good: the notice has nowhere to go.
            tracing::warn!("notice to {to} dropped: {}", reply.lines.join(" "));
            return NoticeSent::Unreturnable;
        }
        Err(reply) => {
            tracing::warn!("notice to {to} deferred: {}", reply.lines.join(" "));
            return NoticeSent::TryLater;
        }
    };
    let dsn_env = Envelope {
        from: String::new(),
        recipients: Vec::new(),
        envid: None,
        ret: None,
        received: chrono::Utc::now().timestamp(),
        source_channel: ctx.channel.clone(),
        origin: None,
    };
    let recipients: Vec<(String, Recipient)> = routes
        .into_iter()
        .map(|r| {
            (
                r.channel,
                Recipient {
                    address: r.address,
                    orcpt: Some(format!("rfc822;{to}")),
                    notify: Some("NEVER".into()),
                },
            )
        })
        .collect();
    match queue_on(
        ctx,
        dsn_env,
        recipients,
        text,
        "delivery status notification",
    )
    .await
    {
        Ok(()) => NoticeSent::Queued,
        Err(e) => {
            tracing::error!("cannot queue a notice to {to}: {e}");
            NoticeSent::TryLater
        }
    }
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The same file under its next attempt name (time now), for a retry of
/// the whole message.
fn requeue_unchanged(job: &Job) -> PathBuf {
    let next = next_name(&job.path);
    match std::fs::rename(&job.path, &next).and_then(|_| fsync_dir(&next)) {
        Ok(()) => {
            let _ = File::options()
                .write(true)
                .open(&next)
                .and_then(|f| f.set_modified(SystemTime::now()));
            next
        }
        Err(_) => job.path.clone(),
    }
}

fn next_name(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match queuefile::next_attempt_name(name) {
        Some(n) => path.with_file_name(n),
        None => path.to_path_buf(),
    }
}

/// Writes the remaining recipients over the file, then renames it to its
/// next attempt name.
fn rewrite(job: &Job, remaining: Vec<Recipient>) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let env = Envelope {
        recipients: remaining,
        ..job.envelope.clone()
    };
    let dir = job
        .path
        .parent()
        .context("queue file without a directory")?;
    let tmp = dir.join(format!(
        "${}.requeue",
        job.path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    // The new file is locked before it takes the name, so a program that
    // opens it meanwhile (after a job controller restart) waits its turn.
    let f = File::create(&tmp)?;
    let mut f = Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", tmp.display()))?;
    f.write_all(&env.encode()?)?;
    f.write_all(&job.message)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &job.path)?;
    let next = next_name(&job.path);
    std::fs::rename(&job.path, &next)?;
    fsync_dir(&next)?;
    drop(f);
    Ok(next)
}
