//! NAME
//!   stored - the message store server
//!
//! SYNOPSIS
//!   lib/stored           (started by start-msg store)
//!
//! DESCRIPTION
//!   The one owner of the store database (data/store/mboxlist/store.redb)
//!   and of writes to the partitions (store.partition.NAME.path). Serves
//!   the store protocol (epistle_ipc::store) on data/run/stored.sock: one
//!   transaction per request, many clients at once, and change events
//!   (new messages, flag changes, expunges, mailboxes gone) pushed to the
//!   connections that watch a mailbox, so a delivery shows at once in
//!   another process's IMAP IDLE. Flag changes and expunges are made
//!   durable within a second unless local.store.synclevel is "all" (see
//!   epistle_store::db::SyncLevel). Its log is log/store/store.
//!
//! SECURITY
//!   Runs as the mail system's user; the socket is reachable by that user
//!   only. Mailbox names and staged file names from clients are checked
//!   before they touch a path.

mod acl;
mod appender;
mod quota;
mod watchers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use acl::need;
use anyhow::Context as _;
use appender::Appender;
use epistle_daemon::{Daemon, SignalEvent, Signals};
use epistle_ipc::frame::{self, FrameSender};
use epistle_ipc::store::{ClientFrame, ServerFrame, StoreEvent, StoreReply, StoreRequest};
use epistle_store::db::{Quota, QuotaWarning, SyncLevel};
use epistle_store::{MailboxName, Store, StoreError};
use quota::Quotas;
use tokio::net::UnixStream;
use watchers::{Watcher, Watchers};

#[tokio::main]
async fn main() {
    let mut d = match Daemon::init("store", "stored") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("stored: {e:#}");
            std::process::exit(1);
        }
    };
    if let Err(e) = d.drop_privileges() {
        d.fail(&e);
    }
    let store = match open_store(&d) {
        Ok(s) => Arc::new(s),
        Err(e) => d.fail(&e),
    };
    let socket = d.base.store_socket();
    let listener = match epistle_daemon::bind_unix(&socket) {
        Ok(l) => l,
        Err(e) => d.fail(&e),
    };
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => d.fail(&e.into()),
    };
    if let Err(e) = d.ready() {
        d.fail(&e);
    }
    tracing::info!(target: "Store", "store serving on {}", socket.display());
    let appender = match Appender::start(store.clone()) {
        Ok(a) => a,
        Err(e) => d.fail(&anyhow::anyhow!("cannot start the appending thread: {e}")),
    };
    let shared = Arc::new(Shared {
        appender,
        store,
        quotas: Quotas::from_config(&d.base, &d.config).await,
        watchers: Watchers::default(),
        postmaster: match d.config.get("local.postmaster") {
            "" => format!("postmaster@{}", d.config.get("local.defdomain")),
            p => p.to_string(),
        },
        host: d.config.get("local.hostname").to_string(),
    });
    let expire_hour = u32::try_from(d.config.get_int("store.expirestart")).unwrap_or(23);
    tokio::spawn(expire_daily(shared.clone(), expire_hour));
    tokio::spawn(sync_every_second(shared.store.clone()));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => { tokio::spawn(serve(conn, shared.clone())); }
                Err(e) => tracing::warn!("accept on {}: {e}", socket.display()),
            },
            ev = signals.next() => match ev {
                SignalEvent::Reload => d.reload(),
                SignalEvent::Shutdown => break,
            },
        }
    }
    let _ = std::fs::remove_file(&socket);
    if let Err(e) = shared.store.sync_pending() {
        tracing::error!(target: "Store", "cannot make the last changes durable: {e}");
    }
    tracing::info!(target: "Store", "store stopped");
}

/// The database and partitions the configuration names.
fn open_store(d: &Daemon) -> anyhow::Result<Store> {
    let mut partitions = BTreeMap::new();
    partitions.insert(
        "primary".to_string(),
        d.base.resolve(d.config.get("store.partition.primary.path")),
    );
    for name in d.config.names_matching("store.partition.*.path") {
        let part = name
            .trim_start_matches("store.partition.")
            .trim_end_matches(".path")
            .to_string();
        partitions.insert(part, d.base.resolve(d.config.get(&name)));
    }
    let sync_level: SyncLevel = d
        .config
        .get("local.store.synclevel")
        .parse()
        .context("local.store.synclevel")?;
    let db = d.base.data().join("store/mboxlist/store.redb");
    Ok(
        Store::open(&db, partitions, d.config.get("store.defaultpartition"))
            .with_context(|| format!("cannot open the store database {}", db.display()))?
            .with_sync_level(sync_level),
    )
}

/// Makes the flag changes and expunges of the last second durable
/// (local.store.synclevel = messages).
async fn sync_every_second(store: Arc<Store>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.sync_pending()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(target: "Store", "cannot make changes durable: {e}"),
            Err(e) => tracing::error!(target: "Store", "the sync task failed: {e}"),
        }
    }
}

/// What every connection shares.
struct Shared {
    store: Arc<Store>,
    /// Every append goes through it, so appends that arrive together
    /// share a batch.
    appender: Appender,
    quotas: Quotas,
    /// Who gets which change events.
    watchers: Watchers,
    /// Sender of quota warnings.
    postmaster: String,
    host: String,
}

/// The quota that applies to a request: the target owner's, for what adds
/// messages to another account.
async fn quota_for(sh: &Shared, req: &StoreRequest) -> Quota {
    let owner = |n: &str| MailboxName::parse(n).map(|m| m.owner().to_string()).ok();
    let target = match req {
        StoreRequest::Append { name, .. } => owner(name),
        StoreRequest::Copy { to, .. } => owner(to),
        StoreRequest::Move { from, to, .. } if owner(from) != owner(to) => owner(to),
        StoreRequest::QuotaUsage { user } => Some(user.clone()),
        _ => None,
    };
    match target {
        Some(user) => sh.quotas.of(&user).await,
        None => Quota::UNLIMITED,
    }
}

/// Appends the warning message to the user's INBOX (no quota applies).
fn deliver_warning(sh: &Shared, user: &str, w: &QuotaWarning) -> Option<Vec<StoreEvent>> {
    let inbox = format!("user/{user}/INBOX");
    let part = sh.store.user_partition(user).ok()?;
    let dir = sh.store.stage_dir(&part)?;
    let staged = format!(
        "quota-warning-{}-{}.tmp",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let text = quota::warning_message(user, w, &sh.postmaster, &sh.host);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.join(&staged))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        tracing::error!(target: "Store", "cannot write the quota warning for {user}: {e}");
        return None;
    }
    match sh.store.append(
        &inbox,
        &staged,
        &[],
        chrono::Utc::now().timestamp(),
        &Quota::UNLIMITED,
    ) {
        Ok((msg, _, _)) => {
            tracing::info!(target: "Store", "{user} is at {}% of quota; warning sent", w.percent);
            exists_events(&sh.store, &inbox, &[msg.uid]).ok()
        }
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(&staged));
            tracing::error!(target: "Store", "cannot deliver the quota warning to {inbox}: {e}");
            None
        }
    }
}

/// A request other than ActAs and Watch: checked against the acting
/// user's rights and run as one transaction; the events it causes are
/// published before the reply is returned.
async fn run_request(sh: &Arc<Shared>, user: Option<String>, other: StoreRequest) -> StoreReply {
    let quota = quota_for(sh, &other).await;
    if matches!(other, StoreRequest::Append { .. }) {
        return append_request(sh, user, other, quota).await;
    }
    let inline = reads_only(&other);
    let shc = sh.clone();
    let work = move || {
        let mut other = other;
        if let Some(u) = &user
            && let Err(e) = acl::authorize(&shc.store, u, &mut other)
        {
            return (StoreReply::Error { error: e }, Vec::new());
        }
        if let (Some(u), StoreRequest::MyRights { name }) = (&user, &other) {
            let reply = match shc.store.rights(name, u) {
                Ok(rights) => StoreReply::Rights { rights },
                Err(error) => StoreReply::Error { error },
            };
            return (reply, Vec::new());
        }
        let (mut reply, evs) = handle(&shc.store, other, &quota, user.as_deref());
        if let (Some(u), StoreReply::Mailboxes { mailboxes, .. }) = (&user, &mut reply) {
            mailboxes.retain(|m| shc.store.rights(&m.name, u).is_ok_and(|r| r.contains('l')));
        }
        (reply, evs)
    };
    // A bug answers this request with an error; the connection stays.
    let run = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    // A read takes microseconds: it runs right here. A write (which
    // syncs) runs here too, telling the runtime this thread may block so
    // the other connections move to another worker: a hand-off to the
    // blocking pool and back would cost two thread wake-ups, a third of a
    // flag change's time. (Reads do not take that path: each use moves
    // the worker to another thread, and a churn of threads costs memory.)
    let done = if inline {
        run()
    } else {
        tokio::task::block_in_place(run)
    };
    match done {
        Ok((reply, evs)) => {
            for e in &evs {
                sh.watchers.publish(e);
            }
            reply
        }
        Err(_) => StoreReply::Error {
            error: StoreError::Io("the request failed; see the store log".into()),
        },
    }
}

/// An append: checked against the acting user's rights, then made by the
/// appending thread; its events (and a quota warning's) published.
async fn append_request(
    sh: &Arc<Shared>,
    user: Option<String>,
    mut req: StoreRequest,
    quota: Quota,
) -> StoreReply {
    if let Some(u) = &user
        && let Err(error) = guarded(|| acl::authorize(&sh.store, u, &mut req))
    {
        return StoreReply::Error { error };
    }
    let StoreRequest::Append {
        name,
        staged,
        flags,
        internal_date,
        uid,
    } = req
    else {
        return StoreReply::Error {
            error: StoreError::Invalid("not an append".into()),
        };
    };
    let args = epistle_store::AppendArgs {
        name: name.clone(),
        staged,
        flags,
        internal_date,
        quota,
        want_uid: uid,
    };
    let (msg, mailbox, warning) = match sh.appender.append(args).await {
        Ok(done) => done,
        Err(error) => return StoreReply::Error { error },
    };
    // The message is in: a failure to tell watchers is logged, not
    // answered (a client told of an error would append it again).
    let mut events = guarded(|| exists_events(&sh.store, &name, &[msg.uid])).unwrap_or_else(|e| {
        tracing::error!(target: "Store", "cannot announce the new message in {name}: {e}");
        Vec::new()
    });
    if let (Some(w), Ok(n)) = (warning, MailboxName::parse(&name)) {
        let (shc, owner) = (sh.clone(), n.owner().to_string());
        if let Ok(Some(more)) =
            tokio::task::spawn_blocking(move || deliver_warning(&shc, &owner, &w)).await
        {
            events.extend(more);
        }
    }
    for e in &events {
        sh.watchers.publish(e);
    }
    StoreReply::Appended {
        uid: msg.uid,
        mailbox,
    }
}

/// Runs store work so that a bug in it fails this request with an error
/// (as [`run_request`] does) instead of leaving its client unanswered.
fn guarded<T>(work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(StoreError::Io(
            "the request failed; see the store log".into(),
        ))
    })
}

/// Requests that only read (one short read transaction; `Structures` may
/// parse a few messages stored before their structure was kept).
fn reads_only(req: &StoreRequest) -> bool {
    matches!(
        req,
        StoreRequest::List { .. }
            | StoreRequest::Subscriptions { .. }
            | StoreRequest::Status { .. }
            | StoreRequest::StageDir { .. }
            | StoreRequest::Messages { .. }
            | StoreRequest::MailboxDir { .. }
            | StoreRequest::QuotaUsage { .. }
            | StoreRequest::GetAcl { .. }
            | StoreRequest::MyRights { .. }
            | StoreRequest::SpecialUses { .. }
            | StoreRequest::SharedWith { .. }
            | StoreRequest::Open { .. }
            | StoreRequest::Structures { .. }
    )
}

/// Most sessions one connection may carry at once.
const MAX_SESSIONS: usize = 1 << 20;

/// A session of a connection: whom it acts for and what it watches.
#[derive(Default)]
struct SessionState {
    /// The user whose rights every request is checked against (ActAs);
    /// unset: the system (tools, delivery).
    acting: std::sync::OnceLock<String>,
    watched: std::sync::Mutex<Vec<String>>,
    /// A session's requests run one at a time.
    turn: tokio::sync::Mutex<()>,
}

impl SessionState {
    fn acting(&self) -> Option<String> {
        self.acting.get().cloned()
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch(&self, sh: &Shared, me: &Watcher, name: String, on: bool) {
        let mut watched = self.watched();
        let at = watched.iter().position(|n| *n == name);
        match (on, at) {
            (true, None) => {
                sh.watchers.add(&name, me);
                watched.push(name);
            }
            (false, Some(i)) => {
                sh.watchers.remove(&name, me);
                watched.swap_remove(i);
            }
            _ => {}
        }
    }

    fn unwatch_all(&self, sh: &Shared, me: &Watcher) {
        for name in self.watched().drain(..) {
            sh.watchers.remove(&name, me);
        }
    }
}

/// One client connection, carrying many sessions: their requests, and
/// back their replies and the events of the mailboxes each watches.
/// Reads are answered right here (microseconds); writes run in tasks of
/// their own, so one session's fsync does not hold up the others.
async fn serve(conn: UnixStream, sh: Arc<Shared>) {
    let (rd, wr) = conn.into_split();
    let mut rd = frame::FrameReader::new(rd);
    let out = FrameSender::new(wr);
    let mut sessions: HashMap<u32, Arc<SessionState>> = HashMap::new();
    loop {
        let (session, seq, request) = match rd.next::<ClientFrame>().await {
            Ok(ClientFrame::Request {
                session,
                seq,
                request,
            }) => (session, seq, request),
            Ok(ClientFrame::End { session }) => {
                if let Some(state) = sessions.remove(&session) {
                    state.unwatch_all(
                        &sh,
                        &Watcher {
                            out: out.clone(),
                            session,
                        },
                    );
                }
                continue;
            }
            Err(frame::FrameError::Closed) => break,
            Err(e) => {
                // A malformed request closes this connection only.
                tracing::warn!(target: "Store", "store client sent a bad request: {e}");
                break;
            }
        };
        let me = Watcher {
            out: out.clone(),
            session,
        };
        if !sessions.contains_key(&session) && sessions.len() >= MAX_SESSIONS {
            let error = StoreError::Refused("too many sessions on this connection".into());
            send_reply(&me, seq, StoreReply::Error { error });
            continue;
        }
        let state = sessions.entry(session).or_default().clone();
        let reply = match request {
            StoreRequest::ActAs { user } => match state.acting.set(user) {
                Ok(()) => StoreReply::Done,
                Err(_) => StoreReply::Error {
                    error: StoreError::Refused("this session already acts for a user".into()),
                },
            },
            StoreRequest::Watch { name, on } => {
                let allowed = match state.acting.get() {
                    None => Ok(()),
                    Some(u) => need(&sh.store, u, &name, 'r'),
                };
                match (MailboxName::parse(&name), allowed) {
                    (Ok(n), Ok(())) => {
                        state.watch(&sh, &me, n.to_string(), on);
                        StoreReply::Done
                    }
                    (Err(e), _) => StoreReply::Error {
                        error: StoreError::Invalid(e.to_string()),
                    },
                    (_, Err(e)) => StoreReply::Error { error: e },
                }
            }
            request => {
                // Not while the session's last request still runs (a
                // client gave up on it): the connection would wait.
                let inline = reads_only(&request) && state.turn.try_lock().is_ok();
                let job = session_request(sh.clone(), me.clone(), state, seq, request);
                if inline {
                    // Boxed: the connection's task keeps only what waiting
                    // needs, not room for a request's work.
                    Box::pin(job).await;
                } else {
                    tokio::spawn(job);
                }
                continue;
            }
        };
        send_reply(&me, seq, reply);
    }
    for (session, state) in sessions {
        state.unwatch_all(
            &sh,
            &Watcher {
                out: out.clone(),
                session,
            },
        );
    }
    out.close();
}

/// Runs one request of a session, in its turn, and sends the reply
/// (after the events it caused: a client that sees the reply has seen
/// the change, so an IMAP NOOP after APPEND shows it).
async fn session_request(
    sh: Arc<Shared>,
    me: Watcher,
    state: Arc<SessionState>,
    seq: u32,
    request: StoreRequest,
) {
    let _turn = state.turn.lock().await;
    let acting = state.acting();
    let reply = match request {
        // Watched before it is read, so nothing is missed.
        StoreRequest::Open { name, watch } => {
            if watch {
                state.unwatch_all(&sh, &me);
                if let Ok(n) = MailboxName::parse(&name) {
                    state.watch(&sh, &me, n.to_string(), true);
                }
            }
            let reply = run_request(&sh, acting, StoreRequest::Open { name, watch }).await;
            if watch && matches!(reply, StoreReply::Error { .. }) {
                state.unwatch_all(&sh, &me);
            }
            reply
        }
        other => run_request(&sh, acting, other).await,
    };
    send_reply(&me, seq, reply);
}

fn send_reply(to: &Watcher, seq: u32, reply: StoreReply) {
    let frame = frame::encode(&ServerFrame::Reply {
        session: to.session,
        seq,
        reply,
    });
    match frame {
        Ok(f) => {
            // A client gone since it asked: nothing to do.
            let _ = to.out.send(&f);
        }
        Err(e) => {
            tracing::error!(target: "Store", "cannot send a reply: {e}");
            let error = StoreError::Io(format!("the reply could not be sent: {e}"));
            if let Ok(f) = frame::encode(&ServerFrame::Reply {
                session: to.session,
                seq,
                reply: StoreReply::Error { error },
            }) {
                let _ = to.out.send(&f);
            }
        }
    }
}

/// About how much structure data (in its stored form; the JSON frame is
/// a few times larger) one `Structures` answer carries, so a reply stays
/// well under the frame limit.
const STRUCTURES_BUDGET: usize = 128 * 1024;

type Handled = (StoreReply, Vec<StoreEvent>);

/// One request, one transaction; the reply and the events it causes.
/// `reader`: the user a connection acts for, whose own `\Seen` state
/// applies in mailboxes they do not own (peruser.db).
fn handle(s: &Store, req: StoreRequest, quota: &Quota, reader: Option<&str>) -> Handled {
    let result: Result<(StoreReply, Vec<StoreEvent>), StoreError> = (|| {
        Ok(match req {
            StoreRequest::List { prefix, after } => {
                let mailboxes = s.list_after(&prefix, &after, epistle_ipc::store::INDEX_PAGE)?;
                // The cursor is the last name read, before any filtering by
                // access rights, so paging always moves on.
                let next = (mailboxes.len() == epistle_ipc::store::INDEX_PAGE)
                    .then(|| mailboxes.last().map(|m| m.name.clone()))
                    .flatten();
                (StoreReply::Mailboxes { mailboxes, next }, vec![])
            }
            StoreRequest::Create {
                name,
                partition,
                uidvalidity,
            } => (
                StoreReply::Mailbox {
                    mailbox: s.create_mailbox_as(&name, partition.as_deref(), uidvalidity)?,
                },
                vec![],
            ),
            StoreRequest::Delete { name } => {
                s.delete_mailbox(&name)?;
                (
                    StoreReply::Done,
                    vec![StoreEvent::Gone {
                        mailbox: canonical(&name),
                    }],
                )
            }
            StoreRequest::DeleteUser { user } => {
                let gone: Vec<StoreEvent> = s
                    .list(&format!("user/{user}/"))?
                    .into_iter()
                    .map(|m| StoreEvent::Gone { mailbox: m.name })
                    .collect();
                s.delete_user(&user)?;
                (StoreReply::Done, gone)
            }
            StoreRequest::Rename { old, new } => {
                s.rename_mailbox(&old, &new)?;
                (
                    StoreReply::Done,
                    vec![StoreEvent::Gone {
                        mailbox: canonical(&old),
                    }],
                )
            }
            StoreRequest::Subscribe { user, name, on } => {
                s.subscribe(&user, &name, on)?;
                (StoreReply::Done, vec![])
            }
            StoreRequest::Subscriptions { user } => (
                StoreReply::Names {
                    names: s.subscriptions(&user)?,
                },
                vec![],
            ),
            StoreRequest::Status { name } => {
                match reader.map_or_else(|| s.mailbox(&name), |r| s.mailbox_for(&name, r))? {
                    Some(m) => (StoreReply::Mailbox { mailbox: m }, vec![]),
                    None => return Err(StoreError::NoMailbox(name)),
                }
            }
            StoreRequest::StageDir { name } => {
                let n = MailboxName::parse(&name)?;
                let part = s.user_partition(n.owner())?;
                let dir = s
                    .stage_dir(&part)
                    .ok_or_else(|| StoreError::Invalid(format!("unknown partition {part}")))?;
                (
                    StoreReply::Path {
                        path: dir.display().to_string(),
                    },
                    vec![],
                )
            }
            // Appends take the appending thread ([`append_request`]).
            StoreRequest::Append { .. } => {
                return Err(StoreError::Invalid("an append out of turn".into()));
            }
            StoreRequest::Messages { name, after } => (
                StoreReply::Messages {
                    messages: match reader {
                        Some(r) => {
                            s.messages_for(&name, after, epistle_ipc::store::INDEX_PAGE, r)?
                        }
                        None => s.messages_after(&name, after, epistle_ipc::store::INDEX_PAGE)?,
                    },
                },
                vec![],
            ),
            StoreRequest::MailboxDir { name } => (
                StoreReply::Path {
                    path: s.mailbox_files(&name)?.display().to_string(),
                },
                vec![],
            ),
            StoreRequest::StoreFlags {
                name,
                uids,
                op,
                flags,
                unchanged_since,
            } => {
                let (changed, refused, mailbox) = match reader {
                    Some(r) => s.store_flags_for(&name, &uids, op, &flags, unchanged_since, r)?,
                    None => s.store_flags(&name, &uids, op, &flags, unchanged_since)?,
                };
                // What a reader who does not own the mailbox changed is in
                // their own view (their \Seen): it is not everyone's news.
                let foreign =
                    reader.is_some_and(|r| MailboxName::parse(&name).is_ok_and(|n| n.owner() != r));
                let evs = if changed.is_empty() || foreign {
                    vec![]
                } else {
                    vec![StoreEvent::Flags {
                        mailbox: mailbox.name.clone(),
                        messages: changed.clone(),
                        status: mailbox.record.clone(),
                    }]
                };
                (
                    StoreReply::Flags {
                        changed,
                        refused,
                        mailbox,
                    },
                    evs,
                )
            }
            StoreRequest::Copy { from, uids, to } => {
                let pairs = s.copy(&from, &uids, &to, quota)?;
                (
                    StoreReply::Copied {
                        pairs: pairs.clone(),
                    },
                    exists_events(s, &to, &pairs.iter().map(|p| p.1).collect::<Vec<_>>())?,
                )
            }
            StoreRequest::Move { from, uids, to } => {
                let pairs = s.copy(&from, &uids, &to, quota)?;
                let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                let gone = s.expunge_uids(&from, &moved, false)?;
                let mut evs =
                    exists_events(s, &to, &pairs.iter().map(|p| p.1).collect::<Vec<_>>())?;
                if !gone.is_empty() {
                    evs.push(StoreEvent::Expunged {
                        mailbox: canonical(&from),
                        uids: gone,
                    });
                }
                (StoreReply::Copied { pairs }, evs)
            }
            StoreRequest::Expunge { name, uids } => {
                let gone = s.expunge(&name, uids.as_deref())?;
                expunged(&name, gone)
            }
            StoreRequest::Remove { name, uids } => {
                let gone = s.expunge_uids(&name, &uids, false)?;
                expunged(&name, gone)
            }
            StoreRequest::QuotaUsage { user } => {
                let (bytes, messages) = s.quota_usage(&user)?;
                let over_since = s.over_quota_since(&user)?;
                (
                    StoreReply::Quota {
                        bytes,
                        messages,
                        over_since,
                        limit_bytes: quota.bytes,
                        limit_messages: quota.messages,
                    },
                    vec![],
                )
            }
            StoreRequest::Reconstruct {
                dry_run,
                quotas_only,
            } => {
                let names = if quotas_only {
                    s.recount_quotas()?
                } else {
                    s.reconstruct(dry_run)?
                };
                for line in &names {
                    tracing::warn!(target: "Store", "reconstruct: {line}");
                }
                (StoreReply::Names { names }, vec![])
            }
            StoreRequest::Expire { dry_run } => {
                let (names, removed) = run_expire(s, dry_run)?;
                let evs = removed
                    .into_iter()
                    .map(|(mailbox, uids)| StoreEvent::Expunged { mailbox, uids })
                    .collect();
                (
                    StoreReply::Names { names },
                    if dry_run { vec![] } else { evs },
                )
            }
            StoreRequest::MoveUser { user, partition } => {
                let gone = s
                    .list(&format!("user/{user}/"))?
                    .into_iter()
                    .map(|m| StoreEvent::Gone { mailbox: m.name })
                    .collect();
                s.move_user(&user, &partition)?;
                (StoreReply::Done, gone)
            }
            StoreRequest::Structures { name, uids } => (
                StoreReply::Structures {
                    structures: s.structures(&name, &uids, STRUCTURES_BUDGET)?,
                },
                vec![],
            ),
            StoreRequest::Open { name, .. } => {
                let mailbox = reader
                    .map_or_else(|| s.mailbox(&name), |r| s.mailbox_for(&name, r))?
                    .ok_or_else(|| StoreError::NoMailbox(name.clone()))?;
                let page = epistle_ipc::store::INDEX_PAGE;
                let messages = match reader {
                    Some(r) => s.messages_for(&name, 0, page, r)?,
                    None => s.messages_after(&name, 0, page)?,
                };
                let dir = s.mailbox_files(&name)?.display().to_string();
                (
                    StoreReply::Opened {
                        mailbox,
                        messages,
                        dir,
                    },
                    vec![],
                )
            }
            StoreRequest::SharedWith { user } => (
                StoreReply::Mailboxes {
                    mailboxes: s.shared_with(&user)?,
                    next: None,
                },
                vec![],
            ),
            StoreRequest::GetAcl { name } => (
                StoreReply::Acl {
                    acl: s.get_acl(&name)?,
                },
                vec![],
            ),
            StoreRequest::SetAcl {
                name,
                identifier,
                rights,
            } => (
                StoreReply::Acl {
                    acl: s.set_acl(&name, &identifier, rights.as_deref())?,
                },
                vec![],
            ),
            // Without an acting user, the system may do everything.
            StoreRequest::MyRights { .. } => (
                StoreReply::Rights {
                    rights: epistle_store::acl::ALL.to_string(),
                },
                vec![],
            ),
            StoreRequest::SetSpecialUse { name, attrs } => {
                s.set_special_use(&name, &attrs)?;
                (StoreReply::Done, vec![])
            }
            StoreRequest::SpecialUses { prefix } => (
                StoreReply::Attributes {
                    pairs: s.special_uses(&prefix)?,
                },
                vec![],
            ),
            StoreRequest::Watch { .. } | StoreRequest::ActAs { .. } => (StoreReply::Done, vec![]),
        })
    })();
    match result {
        Ok((reply, events)) => (reply, events),
        Err(e) => (StoreReply::Error { error: e }, Vec::new()),
    }
}

/// The rules file stored reads for aging.
fn rules_path() -> PathBuf {
    epistle_config::MsgSvrBase::locate()
        .config()
        .join("store.expirerule")
}

/// Applies config/store.expirerule (no file: no rules).
fn run_expire(s: &Store, dry_run: bool) -> Result<epistle_store::db::Expired, StoreError> {
    let path = rules_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(e) => return Err(StoreError::Io(format!("{}: {e}", path.display()))),
    };
    let rules = epistle_store::expire::parse_rules(&text)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    s.expire(&rules, chrono::Utc::now().timestamp(), dry_run)
}

/// The daily aging run at `store.expirestart` o'clock, local time.
async fn expire_daily(sh: Arc<Shared>, hour: u32) {
    use chrono::{Duration as Days, Local, Timelike};
    loop {
        let now = Local::now();
        let mut next = now
            .with_hour(hour)
            .and_then(|t| t.with_minute(0))
            .and_then(|t| t.with_second(0))
            .unwrap_or(now);
        if next <= now {
            next += Days::days(1);
        }
        let wait = (next - now)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(3600));
        tokio::time::sleep(wait).await;
        let shc = sh.clone();
        match tokio::task::spawn_blocking(move || run_expire(&shc.store, false)).await {
            Ok(Ok((lines, removed))) => {
                for l in &lines {
                    tracing::info!(target: "Store", "expire: {l}");
                }
                for (mailbox, uids) in removed {
                    sh.watchers.publish(&StoreEvent::Expunged { mailbox, uids });
                }
                tracing::info!(target: "Store", "Expire finished");
            }
            Ok(Err(e)) => tracing::error!(target: "Store", "expire failed: {e}"),
            Err(e) => tracing::error!(target: "Store", "expire failed: {e}"),
        }
    }
}

/// A mailbox name as events carry it.
fn canonical(n: &str) -> String {
    MailboxName::parse(n)
        .map(|m| m.to_string())
        .unwrap_or_else(|_| n.to_string())
}

/// The reply to an expunge, and the event for the mailbox's watchers.
fn expunged(name: &str, gone: Vec<u32>) -> (StoreReply, Vec<StoreEvent>) {
    let evs = if gone.is_empty() {
        vec![]
    } else {
        vec![StoreEvent::Expunged {
            mailbox: canonical(name),
            uids: gone.clone(),
        }]
    };
    (StoreReply::Expunged { uids: gone }, evs)
}

/// The events telling watchers of new messages in `to` (UIDs ascending),
/// a page of index entries each.
fn exists_events(s: &Store, to: &str, uids: &[u32]) -> Result<Vec<StoreEvent>, StoreError> {
    let mut evs = Vec::new();
    for chunk in uids.chunks(epistle_ipc::store::INDEX_PAGE) {
        let (after, messages) = s.arrivals(to, chunk)?;
        let info = s
            .mailbox(to)?
            .ok_or_else(|| StoreError::NoMailbox(to.to_string()))?;
        evs.push(StoreEvent::Exists {
            mailbox: info.name,
            after,
            messages,
            status: info.record,
        });
    }
    Ok(evs)
}
