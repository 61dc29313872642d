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
//!   another process's IMAP IDLE. Its log is log/store/store.
//!
//! SECURITY
//!   Runs as the mail system's user; the socket is reachable by that user
//!   only. Mailbox names and staged file names from clients are checked
//!   before they touch a path.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use epistle_daemon::{Daemon, SignalEvent, Signals};
use epistle_ipc::frame;
use epistle_ipc::store::{ServerFrame, StoreEvent, StoreReply, StoreRequest};
use epistle_store::{MailboxName, Store, StoreError};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

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
    let socket = d.base.run().join("stored.sock");
    let listener = match bind(&socket) {
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
    let (events, _) = broadcast::channel::<StoreEvent>(4096);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => { tokio::spawn(serve(conn, store.clone(), events.clone())); }
                Err(e) => tracing::warn!("accept on {}: {e}", socket.display()),
            },
            ev = signals.next() => match ev {
                SignalEvent::Reload => d.reload(),
                SignalEvent::Shutdown => break,
            },
        }
    }
    let _ = std::fs::remove_file(&socket);
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
    let db = d.base.data().join("store/mboxlist/store.redb");
    Store::open(&db, partitions, d.config.get("store.defaultpartition"))
        .with_context(|| format!("cannot open the store database {}", db.display()))
}

fn bind(path: &PathBuf) -> anyhow::Result<UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("another stored already answers on {}", path.display());
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// One client: requests in order, events for the mailboxes it watches.
async fn serve(conn: UnixStream, store: Arc<Store>, events: broadcast::Sender<StoreEvent>) {
    let (mut rd, mut wr) = conn.into_split();
    let mut watched: HashSet<String> = HashSet::new();
    let mut feed = events.subscribe();
    loop {
        tokio::select! {
            req = frame::read::<StoreRequest>(&mut rd) => {
                let req = match req {
                    Ok(r) => r,
                    Err(frame::FrameError::Closed) => return,
                    Err(e) => {
                        // A malformed request closes this connection only.
                        tracing::warn!(target: "Store", "store client sent a bad request: {e}");
                        return;
                    }
                };
                let reply = match req {
                    StoreRequest::Watch { name, on } => match MailboxName::parse(&name) {
                        Ok(n) => {
                            if on { watched.insert(n.to_string()); } else { watched.remove(&n.to_string()); }
                            StoreReply::Done
                        }
                        Err(e) => StoreReply::Error { error: StoreError::Invalid(e.to_string()) },
                    },
                    other => {
                        let s = store.clone();
                        match tokio::task::spawn_blocking(move || handle(&s, other)).await {
                            Ok((reply, evs)) => {
                                for e in evs {
                                    let _ = events.send(e);
                                }
                                reply
                            }
                            Err(e) => StoreReply::Error { error: StoreError::Io(format!("request failed: {e}")) },
                        }
                    }
                };
                if frame::write(&mut wr, &ServerFrame::Reply { reply }).await.is_err() {
                    return;
                }
            }
            ev = feed.recv() => match ev {
                Ok(event) if watched.contains(event.mailbox()) => {
                    if frame::write(&mut wr, &ServerFrame::Event { event }).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // A slow reader misses events; it sees the state on its next
                // request. The connection stays.
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(target: "Store", "a store client missed {n} events"),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

fn err(e: StoreError) -> (StoreReply, Vec<StoreEvent>) {
    (StoreReply::Error { error: e }, Vec::new())
}

/// One request, one transaction; the reply and the events it causes.
fn handle(s: &Store, req: StoreRequest) -> (StoreReply, Vec<StoreEvent>) {
    let canonical = |n: &str| {
        MailboxName::parse(n)
            .map(|m| m.to_string())
            .unwrap_or_else(|_| n.to_string())
    };
    let result: Result<(StoreReply, Vec<StoreEvent>), StoreError> = (|| {
        Ok(match req {
            StoreRequest::List { prefix } => (
                StoreReply::Mailboxes {
                    mailboxes: s.list(&prefix)?,
                },
                vec![],
            ),
            StoreRequest::Create { name, partition } => (
                StoreReply::Mailbox {
                    mailbox: s.create_mailbox(&name, partition.as_deref())?,
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
            StoreRequest::Status { name } => match s.mailbox(&name)? {
                Some(m) => (StoreReply::Mailbox { mailbox: m }, vec![]),
                None => return Err(StoreError::NoMailbox(name)),
            },
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
            StoreRequest::Append {
                name,
                staged,
                flags,
                internal_date,
            } => {
                let (msg, mailbox) = s.append(&name, &staged, &flags, internal_date)?;
                let ev = StoreEvent::Exists {
                    mailbox: mailbox.name.clone(),
                    uids: vec![msg.uid],
                    status: mailbox.record.clone(),
                };
                (
                    StoreReply::Appended {
                        uid: msg.uid,
                        mailbox,
                    },
                    vec![ev],
                )
            }
            StoreRequest::Messages { name } => (
                StoreReply::Messages {
                    messages: s.messages(&name)?,
                },
                vec![],
            ),
            StoreRequest::MessagePath { name, uid } => (
                StoreReply::Path {
                    path: s.message_path(&name, uid)?.display().to_string(),
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
                let (changed, refused, mailbox) =
                    s.store_flags(&name, &uids, op, &flags, unchanged_since)?;
                let evs = if changed.is_empty() {
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
                let pairs = s.copy(&from, &uids, &to)?;
                (
                    StoreReply::Copied {
                        pairs: pairs.clone(),
                    },
                    exists_event(s, &to, &pairs)?,
                )
            }
            StoreRequest::Move { from, uids, to } => {
                let pairs = s.copy(&from, &uids, &to)?;
                let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                let gone = s.expunge_uids(&from, &moved, false)?;
                let mut evs = exists_event(s, &to, &pairs)?;
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
                let evs = if gone.is_empty() {
                    vec![]
                } else {
                    vec![StoreEvent::Expunged {
                        mailbox: canonical(&name),
                        uids: gone.clone(),
                    }]
                };
                (StoreReply::Expunged { uids: gone }, evs)
            }
            StoreRequest::QuotaUsage { user } => {
                let (bytes, messages) = s.quota_usage(&user)?;
                (StoreReply::Quota { bytes, messages }, vec![])
            }
            StoreRequest::Watch { .. } => (StoreReply::Done, vec![]),
        })
    })();
    result.unwrap_or_else(err)
}

fn exists_event(s: &Store, to: &str, pairs: &[(u32, u32)]) -> Result<Vec<StoreEvent>, StoreError> {
    if pairs.is_empty() {
        return Ok(vec![]);
    }
    let info = s
        .mailbox(to)?
        .ok_or_else(|| StoreError::NoMailbox(to.to_string()))?;
    Ok(vec![StoreEvent::Exists {
        mailbox: info.name,
        uids: pairs.iter().map(|p| p.1).collect(),
        status: info.record,
    }])
}
