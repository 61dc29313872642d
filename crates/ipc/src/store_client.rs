//! The store client: one connection to `stored`, owned by the client
//! itself. A request writes its frame and reads frames until its reply;
//! change events that arrive meanwhile wait in a queue for the session
//! ([`StoreEvents`]). No task or channel per connection: an idle IMAP
//! session holds just the socket and a few words, which is what lets one
//! imapd keep many thousands of them.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::UnixStream;

use crate::frame::{self, FrameReader};
use crate::store::{
    FlagOp, MailboxInfo, MessageInfo, MessageStructure, ServerFrame, StoreError, StoreEvent,
    StoreReply, StoreRequest,
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

/// A connection to stored. Cheap to clone; clones share it, their
/// requests taking turns.
#[derive(Clone)]
pub struct StoreClient {
    shared: Arc<Shared>,
}

struct Shared {
    conn: tokio::sync::Mutex<Conn>,
    events: Mutex<EventQueue>,
    /// The staging directory last given, and the account it is for
    /// (every mailbox of an account is on one partition).
    staging: Mutex<Option<(String, PathBuf)>>,
}

struct Conn {
    stream: FrameReader<UnixStream>,
    /// Replies still owed to requests whose callers stopped waiting
    /// (a cancelled future): read and dropped before the next request.
    owed: usize,
    /// A request frame was cut off halfway (its writer was cancelled):
    /// the stream is out of step and the connection unusable.
    broken: bool,
}

/// Events read while a request waited for its reply.
#[derive(Default)]
struct EventQueue {
    queue: VecDeque<StoreEvent>,
    /// Events were dropped since the reader last asked.
    lost: bool,
    /// Whether anyone still reads them ([`StoreEvents`] alive).
    wanted: bool,
}

impl EventQueue {
    fn push(&mut self, event: StoreEvent) {
        if !self.wanted {
            return;
        }
        if self.queue.len() >= EVENT_BACKLOG {
            self.lost = true;
        } else {
            self.queue.push_back(event);
        }
    }
}

/// The change events of one connection. A reader that falls behind by
/// [`EVENT_BACKLOG`] events loses the ones that do not fit, and is told
/// so ([`StoreEvents::lost`]) to read its mailbox again.
pub struct StoreEvents {
    shared: Arc<Shared>,
}

/// Events a connection's reader may be behind by.
pub const EVENT_BACKLOG: usize = 1024;

impl StoreEvents {
    /// The next event, waiting for one; `None` once the connection is
    /// gone. Cancel-safe. It holds the connection while it waits, so a
    /// session waits for events only when it has no request to make
    /// (IMAP's IDLE, in a `select!` with the client's input).
    pub async fn recv(&mut self) -> Option<StoreEvent> {
        loop {
            if let Some(e) = self.queued() {
                return Some(e);
            }
            let mut conn = self.shared.conn.lock().await;
            // Queued by a request while this waited for the lock.
            if let Some(e) = self.queued() {
                return Some(e);
            }
            match conn.read_frame(&self.shared).await {
                Ok(Some(event)) => return Some(event),
                Ok(None) => continue,
                Err(_) => return None,
            }
        }
    }

    /// An event already here, without waiting.
    pub fn try_recv(&mut self) -> Option<StoreEvent> {
        if let Some(e) = self.queued() {
            return Some(e);
        }
        let mut conn = self.shared.conn.try_lock().ok()?;
        // Frames already in the socket are read; none is waited for.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            let read = std::pin::pin!(conn.read_frame(&self.shared));
            match read.poll(&mut cx) {
                std::task::Poll::Ready(Ok(Some(event))) => return Some(event),
                std::task::Poll::Ready(Ok(None)) => continue,
                _ => return None,
            }
        }
    }

    /// Whether events were lost since the last call.
    pub fn lost(&self) -> bool {
        std::mem::take(&mut lock(&self.shared.events).lost)
    }

    fn queued(&self) -> Option<StoreEvent> {
        lock(&self.shared.events).queue.pop_front()
    }
}

impl Drop for StoreEvents {
    fn drop(&mut self) {
        let mut q = lock(&self.shared.events);
        q.wanted = false;
        q.queue = VecDeque::new();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("the store server is unavailable: {e}"))
}

impl Conn {
    /// Reads one frame: `Ok(Some(event))` for an event (returned, not
    /// queued), `Ok(None)` for an owed reply it dropped.
    async fn read_frame(&mut self, shared: &Shared) -> Result<Option<StoreEvent>, StoreError> {
        match self.stream.next::<ServerFrame>().await {
            Ok(ServerFrame::Event { event }) => {
                let wanted = lock(&shared.events).wanted;
                Ok(wanted.then_some(event))
            }
            Ok(ServerFrame::Reply { .. }) if self.owed > 0 => {
                self.owed -= 1;
                Ok(None)
            }
            Ok(ServerFrame::Reply { .. }) => Err(unavailable("a reply nobody asked for")),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Sends a request and reads up to its reply, queueing the events
    /// that come first. Cancelled halfway, the reply is owed and dropped
    /// later; a frame cut off halfway breaks the connection.
    async fn exchange(
        &mut self,
        shared: &Shared,
        req: &StoreRequest,
    ) -> Result<StoreReply, StoreError> {
        if self.broken {
            return Err(unavailable("connection closed"));
        }
        while self.owed > 0 {
            if let Some(event) = self.read_frame(shared).await? {
                lock(&shared.events).push(event);
            }
        }
        self.broken = true;
        frame::write(self.stream.get_mut(), req)
            .await
            .map_err(unavailable)?;
        self.broken = false;
        self.owed = 1;
        loop {
            match self
                .stream
                .next::<ServerFrame>()
                .await
                .map_err(unavailable)?
            {
                ServerFrame::Reply { reply } => {
                    self.owed = 0;
                    return Ok(reply);
                }
                ServerFrame::Event { event } => lock(&shared.events).push(event),
            }
        }
    }
}

impl StoreClient {
    /// Connects to stored's socket; the receiver carries change events for
    /// the mailboxes this connection watches.
    pub async fn connect(socket: &Path) -> Result<(StoreClient, StoreEvents), StoreError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| unavailable(format!("{}: {e}", socket.display())))?;
        let shared = Arc::new(Shared {
            conn: tokio::sync::Mutex::new(Conn {
                stream: FrameReader::new(stream),
                owed: 0,
                broken: false,
            }),
            events: Mutex::new(EventQueue {
                wanted: true,
                ..EventQueue::default()
            }),
            staging: Mutex::new(None),
        });
        Ok((
            StoreClient {
                shared: shared.clone(),
            },
            StoreEvents { shared },
        ))
    }

    /// Connects on behalf of `user` after a login: every request is then
    /// checked against what the user may do, and the user's INBOX exists
    /// (RFC 9051 §5.1; POP3 reads it).
    pub async fn connect_as(
        socket: &Path,
        user: &str,
    ) -> Result<(StoreClient, StoreEvents), StoreError> {
        let (client, events) = StoreClient::connect(socket).await?;
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

    /// Sends one request; a store-side error comes back as `Err`.
    pub async fn request(&self, req: StoreRequest) -> Result<StoreReply, StoreError> {
        let mut conn = self.shared.conn.lock().await;
        match conn.exchange(&self.shared, &req).await? {
            StoreReply::Error { error } => Err(error),
            other => Ok(other),
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
        let known = lock(&self.shared.staging)
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
        *lock(&self.shared.staging) = Some((account.to_string(), dir.clone()));
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
        in_place(move || -> std::io::Result<()> {
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

/// Runs short blocking file work right here on a multi-threaded runtime
/// (telling it this thread may block, so other tasks move to another: a
/// hand-off to the blocking pool costs more than the work), on the
/// blocking pool otherwise.
async fn in_place<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(f);
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
    if size > READ_IN_PLACE {
        return tokio::fs::read(path).await;
    }
    let path = path.to_path_buf();
    in_place(move || std::fs::read(path)).await
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
