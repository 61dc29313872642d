//! One POP3 connection (RFC 1939): the AUTHORIZATION state (CAPA, STLS,
//! USER/PASS, APOP, AUTH PLAIN), then TRANSACTION on a snapshot of the
//! INBOX taken at login, then UPDATE at QUIT, where stored removes the
//! deleted messages in one transaction. Commands pipelined by the client
//! (RFC 2449 PIPELINING) are answered in order and flushed together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use epistle_daemon::Io;
use epistle_daemon::access::{
    CommandRate, SessionRecord, admit, close_gracefully, is_local_client, log_safe, start_tls,
};
use epistle_directory::Auth;
use epistle_ipc::store::{FlagOp, StoreError, message_file};
use epistle_ipc::store_client::{READ_IN_PLACE, StoreClient, read_message_file};
use epistle_pop3::{Command, DotStuffer, Line, LineFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::{MAX_LINE, MaildropLock, PREAUTH_TIMEOUT, Server};

/// Why a session ends.
#[derive(Debug)]
pub enum End {
    /// The client went away, or the connection failed.
    Closed,
    /// The session is over (QUIT, timeout, protocol violation).
    Done,
}

type Result<T> = std::result::Result<T, End>;

/// Most bytes one read asks for.
const READ_CHUNK: usize = 4096;
/// Answers are sent once this much is waiting, so a large RETR streams.
const FLUSH_AT: usize = 64 * 1024;
/// A message is read from its file in blocks of this size.
const FILE_BLOCK: usize = 64 * 1024;
/// How long one write may take before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Serves one accepted connection to the end.
pub async fn serve(server: Arc<Server>, conn: TcpStream, peer: SocketAddr, implicit_tls: bool) {
    let full = "-ERR [SYS/TEMP] Too many connections, try again later\r\n";
    let Some((_slot, stream)) = admit(
        &server.slots,
        server.tls.as_ref(),
        conn,
        peer,
        implicit_tls,
        full,
    )
    .await
    else {
        return;
    };
    let mut s = Session::new(server.clone(), stream, peer, implicit_tls);
    if let Err(End::Done) = s.run().await {
        close_gracefully(&mut s.stream).await;
    }
    s.record.log_close();
}

/// One message of the maildrop as the session sees it.
struct Message {
    uid: u32,
    size: u64,
    deleted: bool,
    retrieved: bool,
}

/// The INBOX snapshot of the TRANSACTION state.
struct Maildrop {
    mailbox: String,
    /// Where the INBOX's message files are.
    dir: std::path::PathBuf,
    uidvalidity: u32,
    messages: Vec<Message>,
    store: StoreClient,
    _lock: MaildropLock,
}

impl Maildrop {
    /// Count and octets of the messages not marked deleted.
    fn totals(&self) -> (usize, u64) {
        self.messages
            .iter()
            .filter(|m| !m.deleted)
            .fold((0, 0), |(n, size), m| (n + 1, size + m.size))
    }

    /// RFC 1939's unique-id: UIDVALIDITY and UID, so it is stable across
    /// sessions and tells an IMAP client's view of the same message.
    fn unique_id(&self, m: &Message) -> String {
        format!("{}.{}", self.uidvalidity, m.uid)
    }

    /// The message numbered `n`, or the `-ERR` text saying why not.
    fn get(&self, n: u32) -> std::result::Result<&Message, String> {
        match self.messages.get((n as usize).wrapping_sub(1)) {
            None => Err(format!("No message {n}")),
            Some(m) if m.deleted => Err(format!("Message {n} is deleted")),
            Some(m) => Ok(m),
        }
    }
}

enum State {
    /// Before login; the name given by USER, waiting for PASS.
    Authorization {
        user: Option<String>,
    },
    Transaction(Maildrop),
}

struct Session {
    server: Arc<Server>,
    stream: Box<dyn Io>,
    tls: bool,
    peer: SocketAddr,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    framer: LineFramer,
    state: State,
    /// The APOP challenge of the greeting, when APOP is offered.
    timestamp: Option<String>,
    /// For the close log line; `count` is the messages retrieved.
    record: SessionRecord,
    rate: CommandRate,
}

impl Session {
    fn new(server: Arc<Server>, stream: Box<dyn Io>, peer: SocketAddr, tls: bool) -> Session {
        let timestamp = server.apop.then(|| server.apop_timestamp());
        Session {
            server,
            stream,
            tls,
            peer,
            inbuf: Vec::new(),
            out: Vec::new(),
            framer: LineFramer::new(MAX_LINE),
            state: State::Authorization { user: None },
            timestamp,
            record: SessionRecord::new(peer),
            rate: CommandRate::default(),
        }
    }

    fn line(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn ok(&mut self, text: &str) {
        self.line(&format!("+OK {text}"));
    }

    fn err(&mut self, text: &str) {
        self.line(&format!("-ERR {text}"));
    }

    async fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        self.record.bytes_out += out.len() as u64;
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await;
        // Keep the buffer for the next answers unless a large one grew it.
        if out.capacity() <= FLUSH_AT * 2 {
            self.out = out;
            self.out.clear();
        }
        match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Closed),
        }
    }

    fn logged_in(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// Reads more input; on timeout says so and ends the session without
    /// entering the UPDATE state (RFC 1939 §3: nothing is deleted).
    async fn fill(&mut self) -> Result<()> {
        let limit = if self.logged_in() {
            self.server.idle_timeout
        } else {
            PREAUTH_TIMEOUT
        };
        self.inbuf.reserve(READ_CHUNK);
        match tokio::time::timeout(limit, self.stream.read_buf(&mut self.inbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(End::Closed),
            Ok(Ok(n)) => {
                self.record.bytes_in += n as u64;
                Ok(())
            }
            Err(_) => {
                self.err("Disconnected for inactivity");
                let _ = self.flush().await;
                Err(End::Done)
            }
        }
    }

    /// The next line from the client, without its line end.
    async fn read_line(&mut self) -> Result<Vec<u8>> {
        loop {
            match self.framer.next(&self.inbuf) {
                Line::Complete(n) => {
                    let mut line: Vec<u8> = self.inbuf.drain(..n).collect();
                    while matches!(line.last(), Some(b'\n' | b'\r')) {
                        line.pop();
                    }
                    return Ok(line);
                }
                Line::Incomplete => {
                    self.flush().await?;
                    self.fill().await?;
                }
                Line::TooLong => {
                    self.err("Line too long");
                    self.flush().await?;
                    return Err(End::Done);
                }
            }
        }
    }

    async fn run(&mut self) -> Result<()> {
        let greeting = match &self.timestamp {
            Some(ts) => format!("{} {ts}", self.server.greeting),
            None => self.server.greeting.clone(),
        };
        self.ok(&greeting);
        self.flush().await?;
        loop {
            let line = self.read_line().await?;
            match Command::parse(&line) {
                Ok(cmd) => {
                    self.rate.pace().await;
                    // Boxed: a session waiting for its next command keeps
                    // only a small future, not room for the largest one.
                    if let Err(end) = Box::pin(self.command(cmd)).await {
                        let _ = self.flush().await;
                        return Err(end);
                    }
                }
                Err(bad) => self.err(&bad.to_string()),
            }
            if self.out.len() >= FLUSH_AT {
                self.flush().await?;
            }
        }
    }

    fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = vec![
            "TOP".into(),
            "UIDL".into(),
            "RESP-CODES".into(),
            "AUTH-RESP-CODE".into(),
            "PIPELINING".into(),
            "LOGIN-DELAY 0".into(),
        ];
        if !self.server.expires {
            caps.push("EXPIRE NEVER".into());
        }
        if !self.logged_in() {
            if self.plaintext_allowed() {
                caps.push("USER".into());
                caps.push("SASL PLAIN".into());
            }
            if !self.tls && self.server.tls.is_some() {
                caps.push("STLS".into());
            }
        }
        caps.push(format!(
            "IMPLEMENTATION Epistle-{}",
            env!("CARGO_PKG_VERSION")
        ));
        caps
    }

    /// Passwords may be sent: over TLS, from this host, or when the
    /// administrator allows it everywhere.
    fn plaintext_allowed(&self) -> bool {
        self.tls || is_local_client(self.peer.ip()) || self.server.allow_plaintext
    }

    async fn command(&mut self, cmd: Command) -> Result<()> {
        match cmd {
            Command::Capa => {
                self.ok("Capability list follows");
                let mut list = self.capabilities().join("\r\n").into_bytes();
                list.extend_from_slice(b"\r\n");
                epistle_pop3::multiline(&list, &mut self.out);
                Ok(())
            }
            Command::Quit => self.quit().await,
            other if self.logged_in() => self.transaction(other).await,
            other => self.authorization(other).await,
        }
    }

    async fn authorization(&mut self, cmd: Command) -> Result<()> {
        match cmd {
            Command::Stls => self.stls().await,
            Command::User(name) => {
                if !self.plaintext_allowed() {
                    self.err("[AUTH] Plaintext authentication is refused without TLS; use STLS");
                    return Ok(());
                }
                self.state = State::Authorization { user: Some(name) };
                self.ok("Send the password");
                Ok(())
            }
            Command::Pass(password) => {
                let State::Authorization { user: Some(name) } =
                    std::mem::replace(&mut self.state, State::Authorization { user: None })
                else {
                    self.err("Send USER first");
                    return Ok(());
                };
                if !self.plaintext_allowed() {
                    self.err("[AUTH] Plaintext authentication is refused without TLS; use STLS");
                    return Ok(());
                }
                self.login(&name, Secret::Password(&password), "plaintext")
                    .await
            }
            Command::Apop { name, digest } => {
                let Some(timestamp) = self.timestamp.clone() else {
                    self.err("APOP is not offered here");
                    return Ok(());
                };
                self.login(&name, Secret::Apop(&timestamp, &digest), "APOP")
                    .await
            }
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await,
            _ => {
                self.err("Log in first");
                Ok(())
            }
        }
    }

    async fn stls(&mut self) -> Result<()> {
        let Some(acceptor) = self.server.tls.clone().filter(|_| !self.tls) else {
            self.err("STLS is not available");
            return Ok(());
        };
        self.ok("Begin TLS negotiation");
        self.flush().await?;
        // Anything pipelined after STLS came in the clear: dropped.
        self.inbuf.clear();
        self.framer = LineFramer::new(MAX_LINE);
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        match start_tls(&acceptor, plain).await {
            Some(s) => {
                self.stream = s;
                self.tls = true;
                // A USER given before TLS does not carry over.
                self.state = State::Authorization { user: None };
                Ok(())
            }
            None => Err(End::Closed),
        }
    }

    /// AUTH (RFC 5034): alone, the mechanisms; `AUTH PLAIN` with the
    /// response inline or after a `+ ` continuation.
    async fn auth(&mut self, mechanism: Option<String>, initial: Option<String>) -> Result<()> {
        let Some(mechanism) = mechanism else {
            self.ok("Mechanisms follow");
            let list: &[u8] = if self.plaintext_allowed() {
                b"PLAIN\r\n"
            } else {
                b""
            };
            epistle_pop3::multiline(list, &mut self.out);
            return Ok(());
        };
        if mechanism != "PLAIN" {
            self.err("Unsupported authentication mechanism");
            return Ok(());
        }
        if !self.plaintext_allowed() {
            self.err("[AUTH] Plaintext authentication is refused without TLS; use STLS");
            return Ok(());
        }
        let response = match initial {
            Some(ir) if ir == "=" => String::new(),
            Some(ir) => ir,
            None => {
                self.line("+ ");
                self.flush().await?;
                String::from_utf8_lossy(&self.read_line().await?).into_owned()
            }
        };
        if response == "*" {
            self.err("Authentication cancelled");
            return Ok(());
        }
        match epistle_directory::sasl::plain(&response) {
            Ok(c) if !c.authzid.is_empty() && c.authzid != c.login => {
                self.bad_login(&c.login, "authorization identity differs")
                    .await;
                Ok(())
            }
            Ok(c) => {
                self.login(&c.login, Secret::Password(&c.password), "PLAIN")
                    .await
            }
            Err(_) => {
                self.err("Malformed PLAIN response");
                Ok(())
            }
        }
    }

    async fn login(&mut self, name: &str, secret: Secret<'_>, how: &str) -> Result<()> {
        let Some(dir) = self.server.directory.clone() else {
            self.err("[SYS/TEMP] The directory is unavailable; try again later");
            return Ok(());
        };
        let checked = match secret {
            Secret::Password(p) => dir.authenticate(name, p).await,
            Secret::Apop(ts, digest) => dir.authenticate_apop(name, ts, digest).await,
        };
        let user = match checked {
            Ok(Auth::Ok(user)) => user,
            Ok(Auth::Denied(why)) => {
                self.bad_login(name, &why.reason()).await;
                return Ok(());
            }
            Err(e) => {
                tracing::error!(target: "Account", "[{}] directory error at login of {}: {e}", self.peer, log_safe(name));
                self.err("[SYS/TEMP] Temporary authentication failure");
                return Ok(());
            }
        };
        self.server.failed_logins.succeeded(self.peer.ip());
        let Some(lock) = self.server.lock_maildrop(&user.uid) else {
            tracing::warn!(target: "Account", "[{}] {}: maildrop in use by another POP session", self.peer, user.uid);
            self.err("[IN-USE] Another POP session has this maildrop open");
            return Ok(());
        };
        let maildrop = match open_maildrop(&self.server, &user.uid, lock).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(target: "Store", "[{}] maildrop of {}: {e}", self.peer, user.uid);
                self.err("[SYS/TEMP] The message store is unavailable; try again later");
                return Ok(());
            }
        };
        tracing::info!(
            target: "Account",
            "login [{}] {} {how}{}",
            self.peer,
            user.uid,
            if self.tls { " TLS" } else { "" }
        );
        self.record.logged_in(&user.uid);
        let (n, size) = maildrop.totals();
        self.state = State::Transaction(maildrop);
        self.ok(&format!("Logged in; {n} messages ({size} octets)"));
        Ok(())
    }

    /// One answer for every reason (no telling a wrong password from an
    /// unknown user), after a delay that grows with the address's recent
    /// failures.
    async fn bad_login(&mut self, name: &str, reason: &str) {
        tracing::warn!(
            target: "Account",
            "badlogin: [{}] plaintext {} {reason}",
            self.peer,
            log_safe(name)
        );
        let delay = self.server.failed_logins.failed(self.peer.ip());
        tokio::time::sleep(delay).await;
        self.err("[AUTH] Authentication failed");
    }

    async fn transaction(&mut self, cmd: Command) -> Result<()> {
        let State::Transaction(maildrop) = &mut self.state else {
            return Ok(());
        };
        match cmd {
            Command::Stat => {
                let (n, size) = maildrop.totals();
                self.ok(&format!("{n} {size}"));
            }
            Command::List(None) => {
                let (n, size) = maildrop.totals();
                let mut list = String::new();
                for (i, m) in maildrop.messages.iter().enumerate() {
                    if !m.deleted {
                        list.push_str(&format!("{} {}\r\n", i + 1, m.size));
                    }
                }
                self.ok(&format!("{n} messages ({size} octets)"));
                epistle_pop3::multiline(list.as_bytes(), &mut self.out);
            }
            Command::List(Some(n)) => match maildrop.get(n) {
                Ok(m) => {
                    let size = m.size;
                    self.ok(&format!("{n} {size}"));
                }
                Err(why) => self.err(&why),
            },
            Command::Uidl(None) => {
                let mut list = String::new();
                for (i, m) in maildrop.messages.iter().enumerate() {
                    if !m.deleted {
                        list.push_str(&format!("{} {}\r\n", i + 1, maildrop.unique_id(m)));
                    }
                }
                self.ok("Unique-id listing follows");
                epistle_pop3::multiline(list.as_bytes(), &mut self.out);
            }
            Command::Uidl(Some(n)) => match maildrop.get(n) {
                Ok(m) => {
                    let id = maildrop.unique_id(m);
                    self.ok(&format!("{n} {id}"));
                }
                Err(why) => self.err(&why),
            },
            Command::Dele(n) => match maildrop.get(n) {
                Ok(_) => {
                    maildrop.messages[n as usize - 1].deleted = true;
                    self.ok(&format!("Message {n} deleted"));
                }
                Err(why) => self.err(&why),
            },
            Command::Rset => {
                for m in maildrop.messages.iter_mut() {
                    m.deleted = false;
                }
                let (n, size) = maildrop.totals();
                self.ok(&format!("Maildrop has {n} messages ({size} octets)"));
            }
            Command::Noop => self.ok("Still here"),
            Command::Retr(n) => return self.send_message(n, None).await,
            Command::Top { msg, lines } => return self.send_message(msg, Some(lines)).await,
            Command::Stls => self.err("STLS is only available before login"),
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. } => {
                self.err("Already logged in")
            }
            Command::Capa | Command::Quit => {}
        }
        Ok(())
    }

    /// RETR (`lines` = None) or TOP: the message from its file. A small
    /// message is read whole in one step; a large one is streamed a block
    /// at a time. A message another session
    /// removed meanwhile gets an `-ERR` and the session goes on.
    async fn send_message(&mut self, n: u32, lines: Option<u32>) -> Result<()> {
        let State::Transaction(maildrop) = &self.state else {
            return Ok(());
        };
        let (uid, size) = match maildrop.get(n) {
            Ok(m) => (m.uid, m.size),
            Err(why) => {
                self.err(&why);
                return Ok(());
            }
        };
        let path = message_file(&maildrop.dir, uid);
        let source = match MessageSource::open(path.clone(), size).await {
            Ok(s) => s,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    self.err(&format!("Message {n} was removed by another session"));
                } else {
                    tracing::error!(target: "Store", "[{}] {}: {e}", self.peer, path.display());
                    self.err("[SYS/TEMP] The message cannot be read; try again later");
                }
                return Ok(());
            }
        };
        match lines {
            None => self.ok(&format!("{size} octets")),
            Some(_) => self.ok("Top of message follows"),
        }
        let mut stuffer = DotStuffer::new();
        match source {
            MessageSource::Whole(data) => {
                let part = match lines {
                    None => &data[..],
                    Some(l) => epistle_pop3::top(&data, l),
                };
                stuffer.feed(part, &mut self.out);
            }
            MessageSource::File(file) => {
                if let Err(e) = self.stream_file(file, lines, &mut stuffer).await {
                    // The +OK is out; the answer cannot be finished.
                    tracing::error!(target: "Store", "[{}] reading {}: {e}", self.peer, path.display());
                    return Err(End::Closed);
                }
            }
        }
        stuffer.finish(&mut self.out);
        if lines.is_none() {
            self.record.count += 1;
            if let State::Transaction(maildrop) = &mut self.state {
                maildrop.messages[n as usize - 1].retrieved = true;
            }
        }
        Ok(())
    }

    /// Sends a large message (or its TOP) from its file a block at a time.
    async fn stream_file(
        &mut self,
        mut file: tokio::fs::File,
        lines: Option<u32>,
        stuffer: &mut DotStuffer,
    ) -> std::io::Result<()> {
        let mut block = vec![0u8; FILE_BLOCK];
        // TOP: what has been read so far, until it holds the header and
        // the lines asked for.
        let mut head: Vec<u8> = Vec::new();
        loop {
            let got = file.read(&mut block).await?;
            if got == 0 {
                break;
            }
            match lines {
                None => stuffer.feed(&block[..got], &mut self.out),
                Some(l) => {
                    head.extend_from_slice(&block[..got]);
                    if epistle_pop3::top(&head, l).len() < head.len() {
                        break;
                    }
                }
            }
            if self.out.len() >= FLUSH_AT && self.flush().await.is_err() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
        }
        if let Some(l) = lines {
            stuffer.feed(epistle_pop3::top(&head, l), &mut self.out);
        }
        Ok(())
    }

    /// QUIT: before login, just goodbye; after it, the UPDATE state: the
    /// deleted messages go in one store transaction, and the retrieved
    /// ones are marked seen for the user's IMAP clients.
    async fn quit(&mut self) -> Result<()> {
        let state = std::mem::replace(&mut self.state, State::Authorization { user: None });
        let State::Transaction(maildrop) = state else {
            self.ok(&format!("{} POP3 server signing off", self.server.host));
            return Err(End::Done);
        };
        let deleted: Vec<u32> = maildrop
            .messages
            .iter()
            .filter(|m| m.deleted)
            .map(|m| m.uid)
            .collect();
        let seen: Vec<u32> = maildrop
            .messages
            .iter()
            .filter(|m| m.retrieved && !m.deleted)
            .map(|m| m.uid)
            .collect();
        if !deleted.is_empty()
            && let Err(e) = maildrop.store.remove(&maildrop.mailbox, deleted).await
        {
            tracing::error!(target: "Store", "[{}] removing deleted messages of {}: {e}", self.peer, maildrop.mailbox);
            self.err("[SYS/TEMP] Deleted messages not removed; nothing was changed");
            return Err(End::Done);
        }
        if !seen.is_empty() {
            // Flags are a courtesy to IMAP clients; failing them loses nothing.
            let _ = maildrop
                .store
                .store_flags(
                    &maildrop.mailbox,
                    &seen,
                    FlagOp::Add,
                    &["\\Seen".into()],
                    None,
                )
                .await;
        }
        let left = maildrop.messages.iter().filter(|m| !m.deleted).count();
        self.ok(&format!(
            "{} POP3 server signing off ({left} messages left)",
            self.server.host
        ));
        Err(End::Done)
    }
}

/// Where a message's bytes come from: small files are read whole, large
/// ones streamed.
enum MessageSource {
    Whole(Vec<u8>),
    File(tokio::fs::File),
}

impl MessageSource {
    async fn open(path: std::path::PathBuf, size: u64) -> std::io::Result<MessageSource> {
        if size > READ_IN_PLACE {
            return tokio::fs::File::open(&path).await.map(MessageSource::File);
        }
        read_message_file(&path, size)
            .await
            .map(MessageSource::Whole)
    }
}

enum Secret<'a> {
    Password(&'a str),
    /// The greeting's timestamp and the client's digest.
    Apop(&'a str, &'a str),
}

/// Reads the INBOX's index from stored for the TRANSACTION state.
async fn open_maildrop(
    server: &Server,
    user: &str,
    lock: MaildropLock,
) -> std::result::Result<Maildrop, StoreError> {
    let (store, _events) = server.store.session_as(user).await?;
    let mailbox = format!("user/{user}/INBOX");
    let open = store.open(&mailbox, false).await?;
    let messages = open
        .messages
        .into_iter()
        .map(|m| Message {
            uid: m.uid,
            size: m.record.size,
            deleted: false,
            retrieved: false,
        })
        .collect();
    Ok(Maildrop {
        mailbox,
        dir: open.dir,
        uidvalidity: open.info.record.uidvalidity,
        messages,
        store,
        _lock: lock,
    })
}
