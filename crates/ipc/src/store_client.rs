//! The store client. A [`StoreLink`] is one connection to stored that
//! carries many sessions: every IMAP or POP login of a server process
//! shares a few links ([`StorePool`]), so an idle session costs stored
//! and its server a table entry, not a connection, a task and buffers
//! on each side. A session ([`StoreClient`], [`StoreEvents`]) sends its
//! requests on its link and gets its replies and the change events of
//! the mailboxes it watches back from the link's reader task.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{Notify, oneshot};

use crate::frame::{self, FrameReader, FrameSender};
use crate::store::{
    ClientFrame, FlagOp, MailboxInfo, MessageInfo, MessageStructure, ServerFrame, StoreError,
    StoreEvent, StoreReply, StoreRequest,
};

/// Most UIDs one `Structures` request names.
const STRUCTURES_PAGE: usize = 512;

/// A mailbox as a session opens it.
#[derive(Debug)]
pub struct OpenMailbox {
    pub info: MailboxInfo,
    pub messages: Vec<MessageInfo>,
    /// Where its message files are ([`crate::store::message_file`]).
    pub dir: PathBuf,
}

/// One connection to stored, carrying many sessions. Cheap to clone; it
/// closes when the last clone and the last of its sessions are gone.
#[derive(Clone)]
pub struct StoreLink {
    owner: Arc<LinkOwner>,
}

/// Closes the link when dropped (the reader task sees stored hang up
/// in turn, and ends).
struct LinkOwner {
    link: Arc<Link>,
}

impl Drop for LinkOwner {
    fn drop(&mut self) {
        self.link.sender.close();
    }
}

struct Link {
    sender: Arc<FrameSender>,
    sessions: Mutex<HashMap<u32, Arc<Slot>>>,
    next_session: AtomicU32,
    /// stored hung up: every request fails from now on.
    gone: AtomicBool,
}

/// What the reader task hands a session.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// An event was queued, or the link is gone.
    woken: Notify,
}

#[derive(Default)]
struct SlotState {
    /// Requests sent and not answered yet, by `seq` (more than one only
    /// when clones of a client ask at once).
    waiting: Vec<(u32, oneshot::Sender<StoreReply>)>,
    next_seq: u32,
    events: EventQueue,
    /// The staging directory last given, and the account it is for
    /// (every mailbox of an account is on one partition).
    staging: Option<(String, PathBuf)>,
}

/// Events not yet taken by the session.
#[derive(Default)]
struct EventQueue {
    queue: VecDeque<StoreEvent>,
    /// Events were dropped since the reader last asked.
    lost: bool,
    /// Whether anyone still reads them ([`StoreEvents`] alive).
    wanted: bool,
}

impl EventQueue {
    /// Whether the event was kept.
    fn push(&mut self, event: StoreEvent) -> bool {
        if !self.wanted {
            return false;
        }
        if self.queue.len() >= EVENT_BACKLOG {
            self.lost = true;
            return false;
        }
        self.queue.push_back(event);
        true
    }
}

/// A session on a link; ended (in stored too) when its last handle goes.
struct Session {
    id: u32,
    slot: Arc<Slot>,
    link: StoreLink,
}

impl Drop for Session {
    fn drop(&mut self) {
        let link = &self.link.owner.link;
        lock(&link.sessions).remove(&self.id);
        if let Ok(f) = frame::encode(&ClientFrame::End { session: self.id }) {
            let _ = link.sender.send(&f);
        }
    }
}

/// A session's requests. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct StoreClient {
    session: Arc<Session>,
}

/// The change events of one session. A reader that falls behind by
/// [`EVENT_BACKLOG`] events loses the ones that do not fit, and is told
/// so ([`StoreEvents::lost`]) to read its mailbox again.
pub struct StoreEvents {
    session: Arc<Session>,
}

/// Events a session's reader may be behind by.
pub const EVENT_BACKLOG: usize = 1024;

impl StoreEvents {
    /// The next event, waiting for one; `None` once the link is gone.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<StoreEvent> {
        loop {
            if let Some(e) = self.try_recv() {
                return Some(e);
            }
            let s = &self.session;
            if s.link.owner.link.gone.load(Ordering::SeqCst) {
                return None;
            }
            s.slot.woken.notified().await;
        }
    }

    /// An event already here, without waiting.
    pub fn try_recv(&mut self) -> Option<StoreEvent> {
        lock(&self.session.slot.state).events.queue.pop_front()
    }

    /// Whether events were lost since the last call.
    pub fn lost(&self) -> bool {
        std::mem::take(&mut lock(&self.session.slot.state).events.lost)
    }
}

impl Drop for StoreEvents {
    fn drop(&mut self) {
        let mut st = lock(&self.session.slot.state);
        st.events = EventQueue::default();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("the store server is unavailable: {e}"))
}

impl StoreLink {
    /// Connects to stored's socket.
    pub async fn connect(socket: &Path) -> Result<StoreLink, StoreError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| unavailable(format!("{}: {e}", socket.display())))?;
        let (rd, wr) = stream.into_split();
        let link = Arc::new(Link {
            sender: FrameSender::new(wr),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU32::new(1),
            gone: AtomicBool::new(false),
        });
        tokio::spawn(read_frames(link.clone(), FrameReader::new(rd)));
        Ok(StoreLink {
            owner: Arc::new(LinkOwner { link }),
        })
    }

    /// stored hung up on this link.
    pub fn is_gone(&self) -> bool {
        self.owner.link.gone.load(Ordering::SeqCst)
    }

    /// A new session acting for the system (tools, delivery).
    pub fn session(&self) -> Result<(StoreClient, StoreEvents), StoreError> {
        let link = &self.owner.link;
        let id = link.next_session.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        lock(&slot.state).events.wanted = true;
        lock(&link.sessions).insert(id, slot.clone());
        let session = Arc::new(Session {
            id,
            slot,
            link: self.clone(),
        });
        // Checked after the slot is in the table: the reader marks the
        // link gone before it empties the table's slots.
        if self.is_gone() {
            return Err(unavailable("connection closed"));
        }
        Ok((
            StoreClient {
                session: session.clone(),
            },
            StoreEvents { session },
        ))
    }

    /// A new session on behalf of `user` after a login: every request is
    /// then checked against what the user may do, and the user's INBOX
    /// exists (RFC 9051 §5.1; POP3 reads it).
    pub async fn session_as(&self, user: &str) -> Result<(StoreClient, StoreEvents), StoreError> {
        let (client, events) = self.session()?;
        client
            .request(StoreRequest::ActAs { user: user.into() })
            .await?;
        // Looked at first: a read, where a create is a write.
        let inbox = format!("user/{user}/INBOX");
        match client.status(&inbox).await {
            Err(StoreError::NoMailbox(_)) => match client.create(&inbox).await {
                Ok(_) | Err(StoreError::Exists(_)) => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        Ok((client, events))
    }
}

/// The link's reader: replies to the requests waiting for them, events
/// to their sessions' queues. When stored hangs up, every waiting
/// request fails and every event reader wakes.
async fn read_frames(link: Arc<Link>, mut frames: FrameReader<OwnedReadHalf>) {
    let slot = |id| lock(&link.sessions).get(&id).cloned();
    loop {
        match frames.next::<ServerFrame>().await {
            Ok(ServerFrame::Reply {
                session,
                seq,
                reply,
            }) => {
                let Some(slot) = slot(session) else { continue };
                let waiter = {
                    let mut st = lock(&slot.state);
                    let at = st.waiting.iter().position(|(s, _)| *s == seq);
                    at.map(|i| st.waiting.swap_remove(i).1)
                };
                // A caller that gave up has dropped its receiver.
                if let Some(tx) = waiter {
                    let _ = tx.send(reply);
                }
            }
            Ok(ServerFrame::Event { session, event }) => {
                let Some(slot) = slot(session) else { continue };
                if lock(&slot.state).events.push(event) {
                    slot.woken.notify_one();
                }
            }
            Err(_) => break,
        }
    }
    link.gone.store(true, Ordering::SeqCst);
    link.sender.close();
    let slots: Vec<Arc<Slot>> = lock(&link.sessions).values().cloned().collect();
    for slot in slots {
        lock(&slot.state).waiting.clear();
        slot.woken.notify_one();
    }
}

/// Links in a [`StorePool`]: enough that stored answers several at once
/// (it reads a link's requests in turn), few enough to cost nothing.
const POOL_LINKS: usize = 4;

/// A few links that every session of a server process (imapd, popd)
/// shares, taken in turn; one stored has hung up on is replaced when
/// next taken.
pub struct StorePool {
    socket: PathBuf,
    links: Mutex<Vec<Option<StoreLink>>>,
    next: AtomicUsize,
}

impl StorePool {
    pub fn new(socket: PathBuf) -> StorePool {
        StorePool {
            socket,
            links: Mutex::new(vec![None; POOL_LINKS]),
            next: AtomicUsize::new(0),
        }
    }

    /// A session for `user` ([`StoreLink::session_as`]) on the next link.
    pub async fn session_as(&self, user: &str) -> Result<(StoreClient, StoreEvents), StoreError> {
        let (at, link) = {
            let links = lock(&self.links);
            let at = self.next.fetch_add(1, Ordering::Relaxed) % links.len();
            (at, links[at].clone().filter(|l| !l.is_gone()))
        };
        let link = match link {
            Some(l) => l,
            None => {
                let l = StoreLink::connect(&self.socket).await?;
                lock(&self.links)[at] = Some(l.clone());
                l
            }
        };
        link.session_as(user).await
    }
}

impl StoreClient {
    /// A session on a link of its own (tools, a delivery): the link
    /// closes when the session ends.
    pub async fn connect(socket: &Path) -> Result<(StoreClient, StoreEvents), StoreError> {
        StoreLink::connect(socket).await?.session()
    }

    /// [`StoreLink::session_as`] on a link of its own.
    pub async fn connect_as(
        socket: &Path,
        user: &str,
    ) -> Result<(StoreClient, StoreEvents), StoreError> {
        StoreLink::connect(socket).await?.session_as(user).await
    }

    /// Sends one request; a store-side error comes back as `Err`.
    /// Cancel-safe: the reply to a request given up on is dropped.
    pub async fn request(&self, req: StoreRequest) -> Result<StoreReply, StoreError> {
        let s = &self.session;
        let link = &s.link.owner.link;
        let (tx, rx) = oneshot::channel();
        let seq = {
            let mut st = lock(&s.slot.state);
            if link.gone.load(Ordering::SeqCst) {
                return Err(unavailable("connection closed"));
            }
            let seq = st.next_seq;
            st.next_seq = seq.wrapping_add(1);
            st.waiting.push((seq, tx));
            seq
        };
        let sent = frame::encode(&ClientFrame::Request {
            session: s.id,
            seq,
            request: req,
        })
        .map_err(unavailable)
        .and_then(|f| link.sender.send(&f).map_err(unavailable));
        if let Err(e) = sent {
            lock(&s.slot.state).waiting.retain(|(q, _)| *q != seq);
            return Err(e);
        }
        match rx.await {
            Ok(StoreReply::Error { error }) => Err(error),
            Ok(other) => Ok(other),
            Err(_) => Err(unavailable("connection closed")),
        }
    }

    pub async fn create(&self, name: &str) -> Result<MailboxInfo, StoreError> {
        match self
            .request(StoreRequest::Create {
                name: name.into(),
                partition: None,
                uidvalidity: None,
            })
            .await?
        {
            StoreReply::Mailbox { mailbox } => Ok(mailbox),
            other => Err(unexpected(other)),
        }
    }

    pub async fn status(&self, name: &str) -> Result<MailboxInfo, StoreError> {
        match self
            .request(StoreRequest::Status { name: name.into() })
            .await?
        {
            StoreReply::Mailbox { mailbox } => Ok(mailbox),
            other => Err(unexpected(other)),
        }
    }

    /// Every mailbox named `prefix...`, paging through a large store.
    pub async fn list(&self, prefix: &str) -> Result<Vec<MailboxInfo>, StoreError> {
        let mut all: Vec<MailboxInfo> = Vec::new();
        let mut after = String::new();
        loop {
            match self
                .request(StoreRequest::List {
                    prefix: prefix.into(),
                    after,
                })
                .await?
            {
                StoreReply::Mailboxes { mailboxes, next } => {
                    all.extend(mailboxes);
                    match next {
                        Some(n) => after = n,
                        None => return Ok(all),
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    pub async fn messages(&self, name: &str) -> Result<Vec<MessageInfo>, StoreError> {
        match self
            .request(StoreRequest::Messages {
                name: name.into(),
                after: 0,
            })
            .await?
        {
            StoreReply::Messages { messages } => self.rest_of_index(name, messages).await,
            other => Err(unexpected(other)),
        }
    }

    /// Pages through the rest of a large index after its first page.
    async fn rest_of_index(
        &self,
        name: &str,
        mut all: Vec<MessageInfo>,
    ) -> Result<Vec<MessageInfo>, StoreError> {
        let mut page_len = all.len();
        while page_len == crate::store::INDEX_PAGE {
            let after = all.last().map_or(0, |m| m.uid);
            match self
                .request(StoreRequest::Messages {
                    name: name.into(),
                    after,
                })
                .await?
            {
                StoreReply::Messages { messages } => {
                    page_len = messages.len();
                    all.extend(messages);
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(all)
    }

    /// The structures of `uids` in order (`None`: not in the mailbox),
    /// asked a page at a time.
    pub async fn structures(
        &self,
        name: &str,
        uids: &[u32],
    ) -> Result<Vec<Option<MessageStructure>>, StoreError> {
        let mut all = Vec::with_capacity(uids.len());
        while all.len() < uids.len() {
            let rest = &uids[all.len()..];
            let req = StoreRequest::Structures {
                name: name.into(),
                uids: rest[..rest.len().min(STRUCTURES_PAGE)].to_vec(),
            };
            match self.request(req).await? {
                StoreReply::Structures { structures } if !structures.is_empty() => {
                    all.extend(structures)
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(all)
    }

    /// Opens a mailbox for a session (see [`StoreRequest::Open`]): its
    /// status, whole index and message directory.
    pub async fn open(&self, name: &str, watch: bool) -> Result<OpenMailbox, StoreError> {
        match self
            .request(StoreRequest::Open {
                name: name.into(),
                watch,
            })
            .await?
        {
            StoreReply::Opened {
                mailbox,
                messages,
                dir,
            } => Ok(OpenMailbox {
                info: mailbox,
                messages: self.rest_of_index(name, messages).await?,
                dir: dir.into(),
            }),
            other => Err(unexpected(other)),
        }
    }

    pub async fn mailbox_dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        match self
            .request(StoreRequest::MailboxDir { name: name.into() })
            .await?
        {
            StoreReply::Path { path } => Ok(path.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Where one message's file is (whether or not it is still there).
    pub async fn message_path(&self, name: &str, uid: u32) -> Result<PathBuf, StoreError> {
        Ok(crate::store::message_file(
            &self.mailbox_dir(name).await?,
            uid,
        ))
    }

    pub async fn store_flags(
        &self,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageInfo>, Vec<u32>, MailboxInfo), StoreError> {
        let req = StoreRequest::StoreFlags {
            name: name.into(),
            uids: uids.to_vec(),
            op,
            flags: flags.to_vec(),
            unchanged_since,
        };
        match self.request(req).await? {
            StoreReply::Flags {
                changed,
                refused,
                mailbox,
            } => Ok((changed, refused, mailbox)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn expunge(
        &self,
        name: &str,
        uids: Option<Vec<u32>>,
    ) -> Result<Vec<u32>, StoreError> {
        match self
            .request(StoreRequest::Expunge {
                name: name.into(),
                uids,
            })
            .await?
        {
            StoreReply::Expunged { uids } => Ok(uids),
            other => Err(unexpected(other)),
        }
    }

    /// Removes messages whatever their flags; the UIDs actually removed
    /// come back (others were gone already).
    pub async fn remove(&self, name: &str, uids: Vec<u32>) -> Result<Vec<u32>, StoreError> {
        match self
            .request(StoreRequest::Remove {
                name: name.into(),
                uids,
            })
            .await?
        {
            StoreReply::Expunged { uids } => Ok(uids),
            other => Err(unexpected(other)),
        }
    }

    pub async fn watch(&self, name: &str, on: bool) -> Result<(), StoreError> {
        self.request(StoreRequest::Watch {
            name: name.into(),
            on,
        })
        .await
        .map(|_| ())
    }

    /// Appends a message: writes it to a staged file, then asks stored to
    /// make it durable and put it in place. Returns the new UID.
    pub async fn append(
        &self,
        name: &str,
        message: &[u8],
        flags: &[String],
        internal_date: i64,
    ) -> Result<(u32, MailboxInfo), StoreError> {
        self.append_as(name, message, flags, internal_date, None)
            .await
    }

    /// Delivers a message, creating the mailbox when it does not exist yet
    /// (first mail to a new user). Safe when many deliveries race to create
    /// the same mailbox: the losers find it made and append to it.
    pub async fn deliver(
        &self,
        name: &str,
        message: &[u8],
        flags: &[String],
        internal_date: i64,
    ) -> Result<(u32, MailboxInfo), StoreError> {
        match self.append(name, message, flags, internal_date).await {
            Err(StoreError::NoMailbox(_)) => {
                match self.create(name).await {
                    Ok(_) | Err(StoreError::Exists(_)) => {}
                    Err(e) => return Err(e),
                }
                self.append(name, message, flags, internal_date).await
            }
            other => other,
        }
    }

    /// [`StoreClient::append`] keeping a given UID (imsrestore).
    pub async fn append_as(
        &self,
        name: &str,
        message: &[u8],
        flags: &[String],
        internal_date: i64,
        uid: Option<u32>,
    ) -> Result<(u32, MailboxInfo), StoreError> {
        let account = name.split('/').nth(1).unwrap_or_default();
        let known = lock(&self.session.slot.state)
            .staging
            .as_ref()
            .filter(|(a, _)| a == account)
            .map(|(_, dir)| dir.clone());
        let append = |dir| self.append_staged(name, message, flags, internal_date, uid, dir);
        match known {
            // The account may have moved to another partition since.
            Some(dir) => match append(dir).await {
                Err(StoreError::Io(_)) => append(self.stage_dir(name, account).await?).await,
                other => other,
            },
            None => append(self.stage_dir(name, account).await?).await,
        }
    }

    /// Where to stage a message for `name`, remembered for its account.
    async fn stage_dir(&self, name: &str, account: &str) -> Result<PathBuf, StoreError> {
        let dir = match self
            .request(StoreRequest::StageDir { name: name.into() })
            .await?
        {
            StoreReply::Path { path } => PathBuf::from(path),
            other => return Err(unexpected(other)),
        };
        lock(&self.session.slot.state).staging = Some((account.to_string(), dir.clone()));
        Ok(dir)
    }

    /// Writes the message into `dir` and asks stored to append it.
    async fn append_staged(
        &self,
        name: &str,
        message: &[u8],
        flags: &[String],
        internal_date: i64,
        uid: Option<u32>,
        dir: PathBuf,
    ) -> Result<(u32, MailboxInfo), StoreError> {
        let staged = stage_name();
        let path = dir.join(&staged);
        let body = message.to_vec();
        let p = path.clone();
        file_work(body.len() as u64, move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)?;
            // No fsync here: stored syncs the file (with its internal date)
            // before renaming it into the mailbox, and nobody sees it
            // before then.
            f.write_all(&body)
        })
        .await
        .map_err(|e| {
            StoreError::Io(format!(
                "cannot stage the message in {}: {e}",
                dir.display()
            ))
        })?;
        let req = StoreRequest::Append {
            name: name.into(),
            staged,
            flags: flags.to_vec(),
            internal_date,
            uid,
        };
        match self.request(req).await {
            Ok(StoreReply::Appended { uid, mailbox }) => Ok((uid, mailbox)),
            Ok(other) => Err(unexpected(other)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

/// Runs short blocking file work (at most [`READ_IN_PLACE`] bytes) right
/// here. On a multi-threaded runtime it tells the runtime this thread may
/// block, so other tasks move to another; on a current-thread runtime
/// (channel programs, tools) it just runs, holding up the thread's other
/// tasks for the microseconds a page-cache read or write takes. Either
/// way a hand-off to the blocking pool, two thread wake-ups, would cost
/// more than the work.
async fn in_place<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::current().runtime_flavor() {
        RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs blocking file work of `size` bytes: [`in_place`] when small, on
/// the blocking pool otherwise (a big file would stall the thread's other
/// tasks).
async fn file_work<R: Send + 'static>(size: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    if size <= READ_IN_PLACE {
        return in_place(f).await;
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Message files up to this size are read in place (see
/// [`read_message_file`]).
pub const READ_IN_PLACE: u64 = 1024 * 1024;

/// Reads a message file whole; one of `size` (the index's figure) up to
/// [`READ_IN_PLACE`] [`in_place`].
pub async fn read_message_file(path: &Path, size: u64) -> std::io::Result<Vec<u8>> {
    let path = path.to_path_buf();
    file_work(size, move || std::fs::read(path)).await
}

fn unexpected(r: StoreReply) -> StoreError {
    StoreError::Io(format!("unexpected answer from the store server: {r:?}"))
}

/// A staged file name no other writer uses.
fn stage_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}-{}-{}.tmp",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for stored on a socket of its own: the link it accepts.
    async fn fake_stored() -> (
        StoreLink,
        FrameReader<OwnedReadHalf>,
        tokio::net::unix::OwnedWriteHalf,
    ) {
        let dir = std::env::temp_dir().join(format!("epistle-link-{}", stage_name()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stored.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let link = StoreLink::connect(&path).await.unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let (rd, wr) = conn.into_split();
        (link, FrameReader::new(rd), wr)
    }

    async fn next_request(frames: &mut FrameReader<OwnedReadHalf>) -> (u32, u32, StoreRequest) {
        match frames.next::<ClientFrame>().await.unwrap() {
            ClientFrame::Request {
                session,
                seq,
                request,
            } => (session, seq, request),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn gone(name: &str) -> StoreEvent {
        StoreEvent::Gone {
            mailbox: name.into(),
        }
    }

    #[tokio::test]
    async fn sessions_share_a_link_and_each_gets_its_own_answers() {
        let (link, mut from_client, mut to_client) = fake_stored().await;
        let (a, mut a_events) = link.session().unwrap();
        let (b, mut b_events) = link.session().unwrap();
        let ask_a = tokio::spawn(async move { a.watch("user/a/INBOX", true).await.map(|_| a) });
        let (sa, qa, _) = next_request(&mut from_client).await;
        let ask_b = tokio::spawn(async move { b.watch("user/b/INBOX", true).await.map(|_| b) });
        let (sb, qb, _) = next_request(&mut from_client).await;
        assert_ne!(sa, sb);
        // Answered the other way round, with a stale reply and events
        // for each session in between.
        for f in [
            ServerFrame::Reply {
                session: sb,
                seq: qb.wrapping_add(7),
                reply: StoreReply::Error {
                    error: StoreError::Io("stale".into()),
                },
            },
            ServerFrame::Event {
                session: sa,
                event: gone("user/a/INBOX"),
            },
            ServerFrame::Reply {
                session: sb,
                seq: qb,
                reply: StoreReply::Done,
            },
            ServerFrame::Event {
                session: sb,
                event: gone("user/b/INBOX"),
            },
            ServerFrame::Reply {
                session: sa,
                seq: qa,
                reply: StoreReply::Done,
            },
        ] {
            frame::write(&mut to_client, &f).await.unwrap();
        }
        let b = ask_b.await.unwrap().unwrap();
        let a = ask_a.await.unwrap().unwrap();
        assert_eq!(a_events.recv().await, Some(gone("user/a/INBOX")));
        assert_eq!(b_events.recv().await, Some(gone("user/b/INBOX")));
        assert_eq!(a_events.try_recv(), None);
        // A session that ends says so; the link stays for the other.
        drop((b, b_events));
        assert_eq!(
            from_client.next::<ClientFrame>().await.unwrap(),
            ClientFrame::End { session: sb }
        );
        // stored hanging up fails what waits and wakes event readers.
        let waiting = tokio::spawn(async move { a.status("user/a/INBOX").await });
        next_request(&mut from_client).await;
        drop((from_client, to_client));
        assert!(matches!(waiting.await.unwrap(), Err(StoreError::Io(_))));
        assert_eq!(a_events.recv().await, None);
        assert!(link.is_gone());
        assert!(link.session().is_err());
    }

    #[tokio::test]
    async fn a_link_closes_when_its_last_user_goes() {
        let (link, mut from_client, _to_client) = fake_stored().await;
        let (client, events) = link.session().unwrap();
        drop(link);
        drop((client, events));
        assert!(matches!(
            from_client.next::<ClientFrame>().await,
            Ok(ClientFrame::End { .. })
        ));
        assert!(matches!(
            from_client.next::<ClientFrame>().await,
            Err(frame::FrameError::Closed)
        ));
    }
}
