//! One IMAP connection: reads commands through the codec's framer, runs
//! them in the state RFC 9051 allows (not authenticated, authenticated,
//! selected), and writes the answers. Login, the mailbox commands and
//! APPEND live here; what needs a selected mailbox is in `selected.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use epistle_daemon::Io;
use epistle_daemon::access::{
    CommandRate, SessionRecord, admit, close_gracefully, is_local_client, log_safe, start_tls,
};
use epistle_directory::Auth;
use epistle_imap::command::{BadCommand, ListCommand, QResync, StatusItem};
use epistle_imap::{Command, CommandBody, Frame, Framer, response};
use epistle_ipc::store::{MailboxInfo, StoreError, StoreReply, StoreRequest, mailbox_object_id};
use epistle_ipc::store_client::{StoreClient, StoreEvents};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::selected::Selected;
use crate::server::{MAX_LINE, PREAUTH_TIMEOUT, Server};

/// Why a session ends.
#[derive(Debug)]
pub enum End {
    /// The client went away, or the connection failed.
    Closed,
    /// We said BYE.
    Bye,
}

pub type Result<T> = std::result::Result<T, End>;

/// What ended a session's wait.
enum Woken {
    /// The client sent more.
    Input,
    /// A store event came, queued on the selected mailbox.
    Event,
}

/// A buffer grown by a large command or answer is given back when the
/// session goes idle, so idle sessions stay small.
const IDLE_BUFFER: usize = 16 * 1024;

/// Where other users' shared folders appear.
pub const OTHER_USERS: &str = "Other Users";

/// Serves one accepted connection to the end.
pub async fn serve(server: Arc<Server>, conn: TcpStream, peer: SocketAddr, implicit_tls: bool) {
    let full = "* BYE Too many connections, try again later\r\n";
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
    if let Err(End::Bye) = s.run().await {
        close_gracefully(&mut s.stream).await;
    }
    s.record.log_close();
}

pub struct Session {
    pub server: Arc<Server>,
    stream: Box<dyn Io>,
    pub tls: bool,
    pub peer: SocketAddr,
    inbuf: Vec<u8>,
    pub out: Vec<u8>,
    framer: Framer,
    /// The logged-in user's id.
    pub user: Option<String>,
    pub store: Option<StoreClient>,
    events: Option<StoreEvents>,
    pub selected: Option<Selected>,
    /// UTF8=ACCEPT enabled: names and strings in UTF-8.
    pub utf8: bool,
    /// CONDSTORE enabled (or implied by a CONDSTORE command).
    pub condstore: bool,
    /// QRESYNC enabled: expunges are reported as VANISHED.
    pub qresync: bool,
    /// COMPRESS=DEFLATE is on.
    compressed: bool,
    /// IMAP4rev2 enabled (RFC 9051 answers: no RECENT, ESEARCH).
    pub rev2: bool,
    /// For the close log line; `count` is the folders selected.
    record: SessionRecord,
    rate: CommandRate,
}

impl Session {
    fn new(server: Arc<Server>, stream: Box<dyn Io>, peer: SocketAddr, tls: bool) -> Session {
        let limits = server.limits();
        Session {
            server,
            stream,
            tls,
            peer,
            inbuf: Vec::new(),
            out: Vec::new(),
            framer: Framer::new(limits),
            user: None,
            store: None,
            events: None,
            selected: None,
            utf8: false,
            condstore: false,
            qresync: false,
            compressed: false,
            rev2: false,
            record: SessionRecord::new(peer),
            rate: CommandRate::default(),
        }
    }

    /// Appends an untagged or continuation line (CRLF added).
    pub fn line(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    pub async fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Boxed: the write and its timer are large, and an idle session's
        // future would otherwise keep room for them.
        Box::pin(self.write_out()).await
    }

    async fn write_out(&mut self) -> Result<()> {
        let out = std::mem::take(&mut self.out);
        self.record.bytes_out += out.len() as u64;
        let written = tokio::time::timeout(Duration::from_secs(300), async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Closed),
        }
    }

    fn timeout(&self) -> Duration {
        if self.user.is_some() {
            self.server.idle_timeout
        } else {
            PREAUTH_TIMEOUT
        }
    }

    /// Reads more input, taking store events meanwhile (kept for the next
    /// point where they may be reported). Says BYE on timeout.
    async fn fill(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        while let Woken::Event = self.wait(deadline).await? {}
        Ok(())
    }

    /// Waits for the client's next bytes (added to `inbuf`) or a store
    /// event (queued on the selected mailbox); says BYE at `deadline`.
    /// The one place a session waits, so an idle session's future is this
    /// and little more.
    async fn wait(&mut self, deadline: tokio::time::Instant) -> Result<Woken> {
        // Between commands a session keeps no input buffer.
        if self.inbuf.is_empty() {
            self.inbuf = Vec::new();
        }
        tokio::select! {
            read = epistle_daemon::read_appending(&mut self.stream, &mut self.inbuf) => match read {
                Ok(0) | Err(_) => Err(End::Closed),
                Ok(n) => {
                    self.record.bytes_in += n as u64;
                    Ok(Woken::Input)
                }
            },
            true = take_event(self.events.as_mut(), &mut self.selected) => Ok(Woken::Event),
            _ = tokio::time::sleep_until(deadline) => {
                self.line("* BYE Autologout; idle for too long");
                let _ = self.flush().await;
                Err(End::Bye)
            }
        }
    }

    async fn run(&mut self) -> Result<()> {
        let greeting = format!(
            "* OK [CAPABILITY {}] {}",
            self.capabilities(),
            self.server.greeting
        );
        self.line(&greeting);
        self.flush().await?;
        loop {
            match self.framer.next(&self.inbuf) {
                Frame::Complete(n) => {
                    Box::pin(self.rate.pace()).await;
                    let parsed = Command::parse(&self.inbuf[..n]);
                    self.inbuf.drain(..n);
                    self.framer.reset();
                    // IDLE waits here, in the session's own future; every
                    // other command's work is boxed, so a waiting session
                    // keeps only a small future, not room for the largest
                    // command.
                    let done = match parsed {
                        Ok(cmd) if matches!(cmd.body, CommandBody::Idle) && self.user.is_some() => {
                            self.idle(&cmd.tag).await
                        }
                        Ok(cmd) => Box::pin(self.run_command(cmd)).await,
                        Err(BadCommand { tag, error }) => {
                            let tag = tag.unwrap_or_else(|| "*".into());
                            self.line(&format!("{tag} BAD {error}"));
                            Ok(())
                        }
                    };
                    if let Err(end) = done {
                        let _ = self.flush().await;
                        return Err(end);
                    }
                }
                Frame::Incomplete => {
                    self.flush().await?;
                    if self.inbuf.capacity() > IDLE_BUFFER && self.inbuf.len() < IDLE_BUFFER {
                        self.inbuf.shrink_to(IDLE_BUFFER);
                    }
                    if self.out.capacity() > IDLE_BUFFER {
                        self.out = Vec::new();
                    }
                    self.fill().await?;
                }
                Frame::LiteralAnnounced { size, line_end } => {
                    // Only APPEND carries large literals.
                    if size > MAX_LINE as u64 && !is_append(&self.inbuf[..line_end]) {
                        let tag = tag_of(&self.inbuf[..line_end]);
                        self.inbuf.drain(..line_end);
                        self.framer.reset();
                        self.line(&format!("{tag} BAD Literal too large for this command"));
                    } else {
                        self.line("+ Ready for literal data");
                        self.flush().await?;
                    }
                }
                Frame::LiteralTooLarge {
                    sync: true,
                    line_end,
                    ..
                } => {
                    let tag = tag_of(&self.inbuf[..line_end]);
                    self.inbuf.drain(..line_end);
                    self.framer.reset();
                    self.line(&format!(
                        "{tag} NO [TOOBIG] Messages are limited to {} bytes",
                        self.server.append_limit
                    ));
                }
                Frame::LiteralTooLarge { sync: false, .. } => {
                    self.line("* BYE [TOOBIG] Literal too large");
                    self.flush().await?;
                    return Err(End::Bye);
                }
                Frame::LineTooLong => {
                    self.line("* BYE Command line too long");
                    self.flush().await?;
                    return Err(End::Bye);
                }
                Frame::TooManyLiterals => {
                    self.line("* BYE Too many literals in one command");
                    self.flush().await?;
                    return Err(End::Bye);
                }
            }
        }
    }

    pub fn capabilities(&self) -> String {
        let mut caps = vec![
            "IMAP4rev1",
            "IMAP4rev2",
            "LITERAL+",
            "SASL-IR",
            "ENABLE",
            "ID",
            "IDLE",
        ];
        if self.user.is_none() {
            if !self.tls && self.server.tls.is_some() {
                caps.push("STARTTLS");
            }
            if self.plaintext_allowed() {
                caps.push("AUTH=PLAIN");
            } else {
                caps.push("LOGINDISABLED");
            }
            return caps.join(" ");
        }
        caps.extend([
            "NAMESPACE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "CHILDREN",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "ESEARCH",
            "SEARCHRES",
            "CONDSTORE",
            "QRESYNC",
            "UTF8=ACCEPT",
            "STATUS=SIZE",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "QUOTA=RES-MESSAGE",
            "ACL",
            "RIGHTS=kxte",
            "SORT",
            "SORT=DISPLAY",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            "BINARY",
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "COMPRESS=DEFLATE",
            "PREVIEW",
            "OBJECTID",
        ]);
        let mut s = caps.join(" ");
        s.push_str(&format!(" APPENDLIMIT={}", self.server.append_limit));
        s
    }

    /// Passwords may be sent: over TLS, from this host, or when the
    /// administrator allows it everywhere.
    fn plaintext_allowed(&self) -> bool {
        self.tls || is_local_client(self.peer.ip()) || self.server.allow_plaintext
    }

    /// Runs one command and writes its answers (tagged line included).
    async fn run_command(&mut self, cmd: Command) -> Result<()> {
        let Command { tag, body } = cmd;
        // Commands that need a state the session is not in.
        let authed = self.user.is_some();
        let needs_auth = !matches!(
            body,
            CommandBody::Capability
                | CommandBody::Noop
                | CommandBody::Logout
                | CommandBody::Id(_)
                | CommandBody::StartTls
                | CommandBody::Login { .. }
                | CommandBody::Authenticate { .. }
        );
        if needs_auth && !authed {
            self.line(&format!("{tag} BAD Log in first"));
            return Ok(());
        }
        if authed
            && matches!(
                body,
                CommandBody::StartTls
                    | CommandBody::Login { .. }
                    | CommandBody::Authenticate { .. }
            )
        {
            self.line(&format!("{tag} BAD Already logged in"));
            return Ok(());
        }
        match body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                self.line(&format!("* CAPABILITY {caps}"));
                self.ok(&tag, "CAPABILITY completed");
            }
            CommandBody::Noop | CommandBody::Check => {
                self.report_changes(true).await?;
                self.ok(&tag, "NOOP completed");
            }
            CommandBody::Logout => {
                self.line("* BYE Logging out");
                self.ok(&tag, "LOGOUT completed");
                self.flush().await?;
                return Err(End::Bye);
            }
            CommandBody::Id(_) => {
                let mut line = b"* ID (\"name\" \"Epistle\" \"version\" ".to_vec();
                response::string(&mut line, env!("CARGO_PKG_VERSION").as_bytes(), false);
                line.extend_from_slice(b")\r\n");
                self.out.extend_from_slice(&line);
                self.ok(&tag, "ID completed");
            }
            CommandBody::StartTls => return self.starttls(&tag).await,
            CommandBody::Login { user, password } => {
                if !self.plaintext_allowed() {
                    self.line(&format!(
                        "{tag} NO [PRIVACYREQUIRED] Use STARTTLS or IMAPS before sending a password"
                    ));
                    return Ok(());
                }
                self.login(&tag, &user, &password, "plaintext").await?;
            }
            CommandBody::Authenticate { mechanism, initial } => {
                self.authenticate(&tag, &mechanism, initial).await?;
            }
            CommandBody::Enable(caps) => {
                let mut enabled = Vec::new();
                for c in caps {
                    match c.as_str() {
                        "UTF8=ACCEPT" => {
                            self.utf8 = true;
                            enabled.push(c);
                        }
                        "CONDSTORE" => {
                            self.condstore = true;
                            enabled.push(c);
                        }
                        "IMAP4REV2" => {
                            self.rev2 = true;
                            enabled.push("IMAP4rev2".into());
                        }
                        "QRESYNC" => {
                            self.condstore = true;
                            self.qresync = true;
                            enabled.push(c);
                        }
                        _ => {}
                    }
                }
                self.line(format!("* ENABLED {}", enabled.join(" ")).trim_end());
                self.ok(&tag, "ENABLE completed");
            }
            CommandBody::Namespace => {
                let mut l = b"* NAMESPACE ((\"\" \"/\")) ((".to_vec();
                response::string(&mut l, format!("{OTHER_USERS}/").as_bytes(), false);
                l.extend_from_slice(b" \"/\")) NIL\r\n");
                self.out.extend_from_slice(&l);
                self.ok(&tag, "NAMESPACE completed");
            }
            CommandBody::Create {
                mailbox,
                special_use,
            } => {
                let Some(name) = self.store_name(&tag, &mailbox, true) else {
                    return Ok(());
                };
                // Virtual collections (\All, \Flagged) cannot be created.
                if let Some(bad) = special_use
                    .iter()
                    .find(|a| !STORED_SPECIAL_USE.iter().any(|k| k.eq_ignore_ascii_case(a)))
                {
                    self.line(&format!(
                        "{tag} NO [USEATTR] {bad} cannot be given to a new mailbox"
                    ));
                    return Ok(());
                }
                let store = self.store()?;
                // The levels above it are made too (RFC 9051 §6.3.4).
                for (at, _) in name.match_indices('/').skip(2) {
                    let _ = store.create(&name[..at]).await;
                }
                let created = store.create(&name).await;
                let id = created.as_ref().map_or(0, |m| m.record.id);
                let mut r = created.map(|_| ());
                if r.is_ok() && !special_use.is_empty() {
                    let attrs = special_use
                        .iter()
                        .filter_map(|a| {
                            STORED_SPECIAL_USE
                                .iter()
                                .find(|k| k.eq_ignore_ascii_case(a))
                        })
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" ");
                    r = store
                        .request(StoreRequest::SetSpecialUse { name, attrs })
                        .await
                        .map(|_| ());
                }
                match r {
                    Ok(()) => self.ok(
                        &tag,
                        &format!("[MAILBOXID ({})] CREATE completed", mailbox_object_id(id)),
                    ),
                    Err(e) => self.store_error(&tag, &e),
                }
            }
            CommandBody::Delete(mailbox) => {
                let Some(name) = self.store_name(&tag, &mailbox, false) else {
                    return Ok(());
                };
                if self.selected.as_ref().is_some_and(|s| s.name == name) {
                    self.unselect().await;
                }
                let r = self
                    .store()?
                    .request(StoreRequest::Delete { name })
                    .await
                    .map(|_| ());
                self.answer(&tag, "DELETE", r);
            }
            CommandBody::Rename { from, to } => {
                let (Some(old), Some(new)) = (
                    self.store_name(&tag, &from, false),
                    self.store_name(&tag, &to, true),
                ) else {
                    return Ok(());
                };
                let r = self
                    .store()?
                    .request(StoreRequest::Rename { old, new })
                    .await
                    .map(|_| ());
                self.answer(&tag, "RENAME", r);
            }
            CommandBody::Subscribe(mailbox) => self.subscribe(&tag, &mailbox, true).await?,
            CommandBody::Unsubscribe(mailbox) => self.subscribe(&tag, &mailbox, false).await?,
            CommandBody::List(list) => self.list(&tag, list).await?,
            CommandBody::Lsub { reference, pattern } => {
                let list = ListCommand {
                    selection: vec!["SUBSCRIBED".into()],
                    reference,
                    patterns: vec![pattern],
                    ..ListCommand::default()
                };
                self.list_as(&tag, list, "LSUB").await?;
            }
            CommandBody::Status { mailbox, items } => {
                let Some(name) = self.store_name(&tag, &mailbox, false) else {
                    return Ok(());
                };
                match self.status_line(&mailbox, &name, &items).await {
                    Ok(line) => {
                        self.out.extend_from_slice(&line);
                        self.ok(&tag, "STATUS completed");
                    }
                    Err(e) => self.store_error(&tag, &e),
                }
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
                binary: _,
            } => self.append(&tag, &mailbox, flags, date, message).await?,
            CommandBody::Idle => self.idle(&tag).await?,
            CommandBody::Select {
                mailbox,
                read_only,
                params,
            } => {
                let Some(name) = self.store_name(&tag, &mailbox, false) else {
                    return Ok(());
                };
                if params.qresync.is_some() && !self.qresync {
                    self.line(&format!("{tag} BAD QRESYNC must be enabled first"));
                    return Ok(());
                }
                if params.condstore || params.qresync.is_some() {
                    self.condstore = true;
                }
                self.select(&tag, name, read_only, params.qresync).await?;
            }
            CommandBody::Compress(mechanism) => {
                if mechanism != "DEFLATE" {
                    self.line(&format!("{tag} BAD Only DEFLATE is offered"));
                } else if self.compressed {
                    self.line(&format!("{tag} NO [COMPRESSIONACTIVE] Already compressing"));
                } else {
                    self.ok(&tag, "DEFLATE active");
                    self.flush().await?;
                    // What the client sent after the command is compressed.
                    let already = std::mem::take(&mut self.inbuf);
                    self.framer.reset();
                    let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
                    self.stream = Box::new(crate::compress::Deflate::new(plain, already));
                    self.compressed = true;
                }
            }
            CommandBody::GetQuotaRoot(mailbox) => {
                if self.store_name(&tag, &mailbox, false).is_none() {
                    return Ok(());
                }
                let mut l = b"* QUOTAROOT ".to_vec();
                response::mailbox(&mut l, client_display(&mailbox), self.utf8);
                l.extend_from_slice(b" \"\"\r\n");
                self.out.extend_from_slice(&l);
                self.quota(&tag, "GETQUOTAROOT").await?;
            }
            CommandBody::GetQuota(root) => {
                if root.is_empty() {
                    self.quota(&tag, "GETQUOTA").await?;
                } else {
                    self.line(&format!("{tag} NO [NONEXISTENT] No such quota root"));
                }
            }
            CommandBody::SetQuota { .. } => {
                self.line(&format!(
                    "{tag} NO [NOPERM] Quotas are set in the directory (commadmin user modify)"
                ));
            }
            CommandBody::GetAcl(mailbox) => {
                let Some(name) = self.store_name(&tag, &mailbox, false) else {
                    return Ok(());
                };
                match self.store()?.request(StoreRequest::GetAcl { name }).await {
                    Ok(StoreReply::Acl { acl }) => self.acl_line(&tag, &mailbox, &acl),
                    Ok(_) => self.line(&format!("{tag} NO [SERVERBUG] Unexpected answer")),
                    Err(e) => self.store_error(&tag, &e),
                }
            }
            CommandBody::SetAcl {
                mailbox,
                identifier,
                rights,
            } => {
                self.set_acl(&tag, &mailbox, identifier, Some(rights))
                    .await?
            }
            CommandBody::DeleteAcl {
                mailbox,
                identifier,
            } => self.set_acl(&tag, &mailbox, identifier, None).await?,
            CommandBody::ListRights {
                mailbox,
                identifier,
            } => {
                if self.store_name(&tag, &mailbox, false).is_none() {
                    return Ok(());
                }
                let mut l = b"* LISTRIGHTS ".to_vec();
                response::mailbox(&mut l, client_display(&mailbox), self.utf8);
                l.push(b' ');
                response::astring(&mut l, &identifier, self.utf8);
                // Nothing is always granted; each right stands alone.
                l.extend_from_slice(b" \"\" l r s w i p k x t e a\r\n");
                self.out.extend_from_slice(&l);
                self.ok(&tag, "LISTRIGHTS completed");
            }
            CommandBody::MyRights(mailbox) => {
                let Some(name) = self.store_name(&tag, &mailbox, false) else {
                    return Ok(());
                };
                match self.store()?.request(StoreRequest::MyRights { name }).await {
                    Ok(StoreReply::Rights { rights }) => {
                        let mut l = b"* MYRIGHTS ".to_vec();
                        response::mailbox(&mut l, client_display(&mailbox), self.utf8);
                        l.push(b' ');
                        response::astring(&mut l, &rights, self.utf8);
                        l.extend_from_slice(b"\r\n");
                        self.out.extend_from_slice(&l);
                        self.ok(&tag, "MYRIGHTS completed");
                    }
                    Ok(_) => self.line(&format!("{tag} NO [SERVERBUG] Unexpected answer")),
                    Err(e) => self.store_error(&tag, &e),
                }
            }
            other => {
                if self.selected.is_none() {
                    self.line(&format!("{tag} BAD No mailbox selected"));
                } else {
                    crate::selected::command(self, &tag, other).await?;
                }
            }
        }
        Ok(())
    }

    /// `* QUOTA "" (…)` for the user's own account, then the tagged OK.
    async fn quota(&mut self, tag: &str, verb: &str) -> Result<()> {
        let user = self.user.clone().unwrap_or_default();
        match self
            .store()?
            .request(StoreRequest::QuotaUsage { user })
            .await
        {
            Ok(StoreReply::Quota {
                bytes,
                messages,
                limit_bytes,
                limit_messages,
                ..
            }) => {
                let mut res = Vec::new();
                if let Some(limit) = limit_bytes {
                    // STORAGE counts units of 1024 octets.
                    res.push(format!("STORAGE {} {}", bytes.div_ceil(1024), limit / 1024));
                }
                if let Some(limit) = limit_messages {
                    res.push(format!("MESSAGE {messages} {limit}"));
                }
                self.line(&format!("* QUOTA \"\" ({})", res.join(" ")));
                self.ok(tag, &format!("{verb} completed"));
            }
            Ok(_) => self.line(&format!("{tag} NO [SERVERBUG] Unexpected answer")),
            Err(e) => self.store_error(tag, &e),
        }
        Ok(())
    }

    fn acl_line(&mut self, tag: &str, mailbox: &str, acl: &[(String, String)]) {
        let mut l = b"* ACL ".to_vec();
        response::mailbox(&mut l, client_display(mailbox), self.utf8);
        for (id, rights) in acl {
            l.push(b' ');
            response::astring(&mut l, id, self.utf8);
            l.push(b' ');
            response::astring(&mut l, rights, self.utf8);
        }
        l.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(&l);
        self.ok(tag, "GETACL completed");
    }

    async fn set_acl(
        &mut self,
        tag: &str,
        mailbox: &str,
        identifier: String,
        rights: Option<String>,
    ) -> Result<()> {
        let Some(name) = self.store_name(tag, mailbox, false) else {
            return Ok(());
        };
        if let Some(r) = &rights {
            let letters = r.trim_start_matches(['+', '-']);
            if let Some(bad) = letters.chars().find(|c| !"lrswipkxteacd".contains(*c)) {
                self.line(&format!("{tag} BAD [INVALID] Unknown right {bad}"));
                return Ok(());
            }
        }
        let verb = if rights.is_some() {
            "SETACL"
        } else {
            "DELETEACL"
        };
        let req = StoreRequest::SetAcl {
            name,
            identifier,
            rights,
        };
        let r = self.store()?.request(req).await.map(|_| ());
        self.answer(tag, verb, r);
        Ok(())
    }

    async fn subscribe(&mut self, tag: &str, mailbox: &str, on: bool) -> Result<()> {
        let Some(name) = self.store_name(tag, mailbox, false) else {
            return Ok(());
        };
        let user = self.user.clone().unwrap_or_default();
        let r = self
            .store()?
            .request(StoreRequest::Subscribe { user, name, on })
            .await
            .map(|_| ());
        self.answer(tag, if on { "SUBSCRIBE" } else { "UNSUBSCRIBE" }, r);
        Ok(())
    }

    pub fn ok(&mut self, tag: &str, text: &str) {
        self.line(&format!("{tag} OK {text}"));
    }

    /// The tagged answer to a store operation.
    fn answer(&mut self, tag: &str, what: &str, r: std::result::Result<(), StoreError>) {
        match r {
            Ok(()) => self.ok(tag, &format!("{what} completed")),
            Err(e) => self.store_error(tag, &e),
        }
    }

    /// A store error as the tagged NO (or BAD) it means to a client.
    pub fn store_error(&mut self, tag: &str, e: &StoreError) {
        let line = match e {
            StoreError::NoMailbox(_) => format!("{tag} NO [NONEXISTENT] No such mailbox"),
            StoreError::Exists(_) => format!("{tag} NO [ALREADYEXISTS] Mailbox already exists"),
            StoreError::Invalid(why) => format!("{tag} NO [CANNOT] {}", log_safe(why)),
            StoreError::Refused(_) => format!("{tag} NO [NOPERM] Permission denied"),
            StoreError::OverQuota(_) => format!("{tag} NO [OVERQUOTA] Quota exceeded"),
            StoreError::Io(_) | StoreError::Db(_) => {
                tracing::error!(target: "Store", "[{}] {e}", self.peer);
                format!("{tag} NO [SERVERBUG] The message store failed; try again")
            }
        };
        self.line(&line);
    }

    pub fn store(&self) -> Result<StoreClient> {
        self.store.clone().ok_or(End::Closed)
    }

    /// The store's name for a client's mailbox name, or a NO said.
    /// `creating`: wildcards and other names a new mailbox cannot take
    /// are refused too.
    pub fn store_name(&mut self, tag: &str, client: &str, creating: bool) -> Option<String> {
        let user = self.user.clone().unwrap_or_default();
        match store_name(&user, client, self.utf8, creating) {
            Some(n) => Some(n),
            None => {
                self.line(&format!("{tag} NO [CANNOT] Invalid mailbox name"));
                None
            }
        }
    }

    async fn starttls(&mut self, tag: &str) -> Result<()> {
        let Some(acceptor) = self.server.tls.clone().filter(|_| !self.tls) else {
            self.line(&format!("{tag} BAD STARTTLS is not available"));
            return Ok(());
        };
        self.ok(tag, "Begin TLS negotiation now");
        self.flush().await?;
        // Anything pipelined after STARTTLS came in the clear: dropped.
        self.inbuf.clear();
        self.framer.reset();
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        match start_tls(&acceptor, plain).await {
            Some(s) => {
                self.stream = s;
                self.tls = true;
                Ok(())
            }
            None => Err(End::Closed),
        }
    }

    async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: &str,
        initial: Option<String>,
    ) -> Result<()> {
        if mechanism != "PLAIN" {
            self.line(&format!(
                "{tag} NO [CANNOT] Unsupported authentication mechanism"
            ));
            return Ok(());
        }
        if !self.plaintext_allowed() {
            self.line(&format!(
                "{tag} NO [PRIVACYREQUIRED] Use STARTTLS or IMAPS before sending a password"
            ));
            return Ok(());
        }
        let response = match initial {
            Some(ir) if ir == "=" => String::new(),
            Some(ir) => ir,
            None => {
                self.line("+ ");
                self.flush().await?;
                self.read_line().await?
            }
        };
        if response == "*" {
            self.line(&format!("{tag} BAD Authentication cancelled"));
            return Ok(());
        }
        match epistle_directory::sasl::plain(&response) {
            Ok(c) => {
                if !c.authzid.is_empty() && c.authzid != c.login {
                    self.bad_login(tag, &c.login, "authorization identity differs")
                        .await;
                    return Ok(());
                }
                self.login(tag, &c.login, &c.password, "PLAIN").await
            }
            Err(_) => {
                self.line(&format!("{tag} BAD Malformed PLAIN response"));
                Ok(())
            }
        }
    }

    /// A bare line from the client (SASL responses, DONE).
    async fn read_line(&mut self) -> Result<String> {
        loop {
            if let Some(nl) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line);
                return Ok(text.trim_end_matches(['\r', '\n']).to_string());
            }
            if self.inbuf.len() > MAX_LINE {
                self.line("* BYE Line too long");
                self.flush().await?;
                return Err(End::Bye);
            }
            self.fill().await?;
        }
    }

    async fn login(&mut self, tag: &str, login: &str, password: &str, how: &str) -> Result<()> {
        let Some(dir) = self.server.directory.clone() else {
            self.line(&format!(
                "{tag} NO [UNAVAILABLE] The directory is unavailable; try again later"
            ));
            return Ok(());
        };
        match dir.authenticate(login, password).await {
            Ok(Auth::Ok(user)) => {
                let (store, events) = match self.server.store.session_as(&user.uid).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(target: "Store", "[{}] login of {}: {e}", self.peer, user.uid);
                        self.line(&format!("{tag} NO [UNAVAILABLE] The message store is unavailable; try again later"));
                        return Ok(());
                    }
                };
                self.server.failed_logins.succeeded(self.peer.ip());
                tracing::info!(
                    target: "Account",
                    "login [{}] {} {how}{}",
                    self.peer,
                    user.uid,
                    if self.tls { " TLS" } else { "" }
                );
                self.user = Some(user.uid.clone());
                self.store = Some(store);
                self.events = Some(events);
                self.record.logged_in(&user.uid);
                let caps = self.capabilities();
                self.ok(tag, &format!("[CAPABILITY {caps}] Logged in"));
                Ok(())
            }
            Ok(Auth::Denied(why)) => {
                self.bad_login(tag, login, &why.reason()).await;
                Ok(())
            }
            Err(e) => {
                tracing::error!(target: "Account", "[{}] directory error at login of {login}: {e}", self.peer);
                self.line(&format!(
                    "{tag} NO [UNAVAILABLE] Temporary authentication failure"
                ));
                Ok(())
            }
        }
    }

    /// One answer for every reason, after a delay that grows with the
    /// address's recent failures.
    async fn bad_login(&mut self, tag: &str, login: &str, reason: &str) {
        tracing::warn!(
            target: "Account",
            "badlogin: [{}] plaintext {} {reason}",
            self.peer,
            log_safe(login)
        );
        let delay = self.server.failed_logins.failed(self.peer.ip());
        tokio::time::sleep(delay).await;
        self.line(&format!(
            "{tag} NO [AUTHENTICATIONFAILED] Authentication failed"
        ));
    }

    async fn select(
        &mut self,
        tag: &str,
        name: String,
        read_only: bool,
        qresync: Option<QResync>,
    ) -> Result<()> {
        // Opening the new one stops the events of the old.
        if self.selected.take().is_some() {
            self.line("* OK [CLOSED] Previous mailbox closed");
        }
        let store = self.store()?;
        let open = match store.open(&name, true).await {
            Ok(o) => o,
            Err(e) => {
                self.store_error(tag, &e);
                return Ok(());
            }
        };
        // Events still on their way are the old mailbox's (dropped when
        // they come) or this one's since it was watched (applying them
        // again is harmless).
        // In their own mailboxes, new messages' entries come with the
        // events as this user sees them (others have their own \Seen).
        let own = self
            .user
            .as_deref()
            .is_some_and(|u| name.starts_with(&format!("user/{u}/")));
        let sel = Selected::new(name, read_only, own, open);
        sel.announce(self);
        if let Some(q) = qresync.filter(|q| q.uidvalidity == sel.uidvalidity) {
            sel.resynchronize(self, &q);
        }
        self.selected = Some(sel);
        self.record.count += 1;
        let mode = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        self.ok(
            tag,
            &format!(
                "[{mode}] {} completed",
                if read_only { "EXAMINE" } else { "SELECT" }
            ),
        );
        Ok(())
    }

    pub async fn unselect(&mut self) {
        if let Some(sel) = self.selected.take()
            && let Some(store) = &self.store
        {
            let _ = store.watch(&sel.name, false).await;
        }
    }

    /// Reports what other sessions changed in the selected mailbox
    /// (`expunges`: EXPUNGE responses are allowed now).
    pub async fn report_changes(&mut self, expunges: bool) -> Result<()> {
        if let Some(ev) = self.events.as_mut() {
            while let Some(e) = ev.try_recv() {
                if let Some(sel) = self.selected.as_mut() {
                    sel.queue(e);
                }
            }
            if ev.lost()
                && let Some(sel) = self.selected.as_mut()
            {
                sel.read_again();
            }
        }
        if let Some(mut sel) = self.selected.take() {
            let reported = sel.report(self, expunges).await;
            self.selected = Some(sel);
            reported?;
        }
        Ok(())
    }

    async fn idle(&mut self, tag: &str) -> Result<()> {
        self.line("+ idling");
        Box::pin(self.report_changes(true)).await?;
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + self.server.idle_timeout;
        loop {
            if let Some(nl) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=nl).collect();
                if line.trim_ascii().eq_ignore_ascii_case(b"DONE") {
                    self.ok(tag, "IDLE terminated");
                } else {
                    self.line(&format!("{tag} BAD Expected DONE"));
                }
                return Ok(());
            }
            if self.inbuf.len() > MAX_LINE {
                self.line("* BYE Line too long");
                self.flush().await?;
                return Err(End::Bye);
            }
            if let Woken::Event = self.wait(deadline).await? {
                Box::pin(self.report_changes(true)).await?;
                self.flush().await?;
            }
        }
    }

    async fn append(
        &mut self,
        tag: &str,
        mailbox: &str,
        flags: Vec<String>,
        date: Option<i64>,
        message: Vec<u8>,
    ) -> Result<()> {
        let Some(name) = self.store_name(tag, mailbox, false) else {
            return Ok(());
        };
        if flags.iter().any(|f| f.eq_ignore_ascii_case("\\Recent")) {
            self.line(&format!("{tag} BAD \\Recent cannot be set"));
            return Ok(());
        }
        if message.is_empty() {
            self.line(&format!("{tag} NO An empty message cannot be appended"));
            return Ok(());
        }
        let date = date.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let store = self.store()?;
        match store.append(&name, &message, &flags, date).await {
            Ok((uid, info)) => {
                self.report_changes(true).await?;
                self.ok(
                    tag,
                    &format!(
                        "[APPENDUID {} {uid}] APPEND completed",
                        info.record.uidvalidity
                    ),
                );
            }
            Err(StoreError::NoMailbox(_)) => {
                self.line(&format!("{tag} NO [TRYCREATE] No such mailbox"));
            }
            Err(e) => self.store_error(tag, &e),
        }
        Ok(())
    }

    async fn status_line(
        &mut self,
        client: &str,
        name: &str,
        items: &[StatusItem],
    ) -> std::result::Result<Vec<u8>, StoreError> {
        let store = self
            .store
            .clone()
            .ok_or_else(|| StoreError::Io("no store".into()))?;
        let info = store.status(name).await?;
        let deleted = if items.contains(&StatusItem::Deleted) {
            store
                .messages(name)
                .await?
                .iter()
                .filter(|m| m.record.flags.iter().any(|f| f == "\\Deleted"))
                .count()
        } else {
            0
        };
        let mut l = b"* STATUS ".to_vec();
        response::mailbox(&mut l, client_display(client), self.utf8);
        l.extend_from_slice(b" (");
        let r = &info.record;
        let parts: Vec<String> = items
            .iter()
            .map(|i| {
                let v = match i {
                    StatusItem::Messages => r.messages.to_string(),
                    StatusItem::UidNext => r.uidnext.to_string(),
                    StatusItem::UidValidity => r.uidvalidity.to_string(),
                    StatusItem::Unseen => r.unseen.to_string(),
                    StatusItem::Deleted => deleted.to_string(),
                    StatusItem::Size => r.size.to_string(),
                    StatusItem::Recent => "0".into(),
                    StatusItem::HighestModSeq => r.highest_modseq.to_string(),
                    StatusItem::AppendLimit => self.server.append_limit.to_string(),
                    StatusItem::MailboxId => format!("({})", mailbox_object_id(r.id)),
                };
                format!("{} {v}", i.name())
            })
            .collect();
        l.extend_from_slice(parts.join(" ").as_bytes());
        l.extend_from_slice(b")\r\n");
        Ok(l)
    }

    async fn list(&mut self, tag: &str, list: ListCommand) -> Result<()> {
        self.list_as(tag, list, "LIST").await
    }

    /// LIST and LSUB (RFC 9051 §6.3.9, RFC 5258): the user's mailboxes,
    /// other accounts' mailboxes shared with them under `Other Users/`,
    /// hierarchy levels that exist only as parents (`\Noselect`), and
    /// subscriptions to mailboxes that are gone (`\NonExistent`).
    async fn list_as(&mut self, tag: &str, list: ListCommand, verb: &str) -> Result<()> {
        let user = self.user.clone().unwrap_or_default();
        let store = self.store()?;
        // LIST "" "": the hierarchy separator.
        if list.patterns.iter().all(String::is_empty) && verb == "LIST" {
            self.line("* LIST (\\Noselect) \"/\" \"\"");
            self.ok(tag, "LIST completed");
            return Ok(());
        }
        let mut patterns: Vec<String> = Vec::new();
        for p in &list.patterns {
            let decoded = if self.utf8 {
                Some(p.clone())
            } else {
                epistle_imap::utf7::decode(p)
            };
            let Some(p) = decoded else { continue };
            patterns.push(format!("{}{p}", list.reference));
        }
        let mut boxes = match store.list(&format!("user/{user}/")).await {
            Ok(b) => b,
            Err(e) => {
                self.store_error(tag, &e);
                return Ok(());
            }
        };
        if patterns.iter().any(|p| may_reach_other_users(p))
            && let Ok(StoreReply::Mailboxes { mailboxes, .. }) = store
                .request(StoreRequest::SharedWith { user: user.clone() })
                .await
        {
            boxes.extend(mailboxes);
        }
        let subscribed: Vec<String> = match store
            .request(StoreRequest::Subscriptions { user: user.clone() })
            .await
        {
            Ok(StoreReply::Names { names }) => names,
            _ => Vec::new(),
        };
        let attributes: Vec<(String, String)> = match store
            .request(StoreRequest::SpecialUses {
                prefix: format!("user/{user}/"),
            })
            .await
        {
            Ok(StoreReply::Attributes { pairs }) => pairs,
            _ => Vec::new(),
        };
        let only_subscribed = list.selection.iter().any(|s| s == "SUBSCRIBED");
        let only_special = list.selection.iter().any(|s| s == "SPECIAL-USE");
        let recursive = list.selection.iter().any(|s| s == "RECURSIVEMATCH");
        let show_subscribed = (list.returns.subscribed || only_subscribed) && verb == "LIST";
        // Every name the answer may show, in order: mailboxes, the levels
        // above them, and subscriptions.
        let mut names: BTreeMap<String, ListEntry> = BTreeMap::new();
        for b in &boxes {
            if let Some(client) = client_name(&user, &b.name) {
                names.insert(client, ListEntry::Mailbox(b));
            }
        }
        if only_subscribed {
            for sub in &subscribed {
                if let Some(client) = client_name(&user, sub) {
                    names.entry(client).or_insert(ListEntry::Gone);
                }
            }
        }
        let parents: Vec<String> = names
            .keys()
            .flat_map(|n| {
                n.match_indices('/')
                    .map(|(i, _)| n[..i].to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        for p in parents {
            names.entry(p).or_insert(ListEntry::Level);
        }
        let is_subscribed = |client: &str| {
            store_name(&user, client, true, false).is_some_and(|s| subscribed.contains(&s))
        };
        // The names below `parent`: those from "parent/" up to "parent0"
        // ('0' follows '/').
        let below = |parent: &str| names.range(format!("{parent}/")..format!("{parent}0"));
        for (client, entry) in &names {
            let sub = is_subscribed(client);
            // RECURSIVEMATCH: a name whose descendants match the selection
            // is shown with CHILDINFO, selected itself or not.
            let child_info =
                recursive && only_subscribed && below(client).any(|(c, _)| is_subscribed(c));
            let selected = !only_subscribed || sub;
            if !patterns.iter().any(|p| matches_pattern(p, client)) || !(selected || child_info) {
                continue;
            }
            let children = below(client).any(|(_, e)| !matches!(e, ListEntry::Gone));
            let mut attrs: Vec<&str> = Vec::new();
            match entry {
                ListEntry::Mailbox(_) => {}
                ListEntry::Level => attrs.push("\\Noselect"),
                // A subscription to a mailbox that is gone (RFC 5258 §3).
                ListEntry::Gone if verb == "LSUB" => attrs.push("\\Noselect"),
                ListEntry::Gone => attrs.push("\\NonExistent"),
            }
            if !matches!(entry, ListEntry::Gone) {
                attrs.push(if children {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
            }
            if sub && show_subscribed {
                attrs.push("\\Subscribed");
            }
            let special: Vec<&str> = match entry {
                ListEntry::Mailbox(info) => {
                    match attributes.iter().find(|(n, _)| n == &info.name) {
                        Some((_, a)) => a.split(' ').collect(),
                        None => special_use(client).into_iter().collect(),
                    }
                }
                _ => Vec::new(),
            };
            if only_special && special.is_empty() {
                continue;
            }
            attrs.extend(special);
            let mut l = format!("* {verb} ({}) \"/\" ", attrs.join(" ")).into_bytes();
            response::mailbox(&mut l, client, self.utf8);
            if child_info && verb == "LIST" {
                l.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            l.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&l);
            if let (Some(items), ListEntry::Mailbox(info)) = (&list.returns.status, entry) {
                let items = items.clone();
                if let Ok(line) = self.status_line(client, &info.name, &items).await {
                    self.out.extend_from_slice(&line);
                }
            }
        }
        self.ok(tag, &format!("{verb} completed"));
        Ok(())
    }
}

/// A name a LIST answer may show.
enum ListEntry<'a> {
    Mailbox(&'a MailboxInfo),
    /// A level of the hierarchy with mailboxes below it but none of its
    /// own (`Other Users/ann`).
    Level,
    /// Subscribed, but not there (deleted, or no longer shared).
    Gone,
}

/// Whether a LIST pattern can match names under `Other Users/`.
fn may_reach_other_users(pattern: &str) -> bool {
    let literal = pattern.split(['*', '%']).next().unwrap_or_default();
    let prefix = format!("{OTHER_USERS}/");
    prefix.starts_with(literal) || literal.starts_with(&prefix)
}

/// Waits for a store event and queues it on the selected mailbox; false
/// once the store connection is gone. Never ready before login.
async fn take_event(rx: Option<&mut StoreEvents>, selected: &mut Option<Selected>) -> bool {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    let Some(event) = rx.recv().await else {
        return false;
    };
    if let Some(sel) = selected.as_mut() {
        sel.queue(event);
    }
    true
}

/// Special-use attributes a mailbox can be given (RFC 6154; \All and
/// \Flagged name virtual collections this server does not make).
const STORED_SPECIAL_USE: [&str; 5] = ["\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"];

/// The attributes of the well-known folder names, for mailboxes that
/// were given none.
fn special_use(client: &str) -> Option<&'static str> {
    match client {
        "Drafts" => Some("\\Drafts"),
        "Sent" => Some("\\Sent"),
        "Trash" => Some("\\Trash"),
        "Junk" => Some("\\Junk"),
        "Archive" => Some("\\Archive"),
        _ => None,
    }
}

/// A client name for display: INBOX in its canonical spelling.
fn client_display(client: &str) -> &str {
    if client.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        client
    }
}

/// Whether a LIST pattern (`*` anything, `%` anything but the separator)
/// matches a name. Iterative, so no pattern can make it run away.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize, bool)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'*' || p[pi] == b'%') {
            star = Some((pi, ni, p[pi] == b'%'));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn, percent)) = star {
            if percent && n[sn] == b'/' {
                return false;
            }
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1, percent));
        } else {
            return false;
        }
    }
    while pi < p.len() && (p[pi] == b'*' || p[pi] == b'%') {
        pi += 1;
    }
    pi == p.len()
}

/// The store's name (`user/<uid>/<folder>`) of a client's mailbox name;
/// `None` for a name no mailbox can have.
pub fn store_name(user: &str, client: &str, utf8: bool, creating: bool) -> Option<String> {
    let name = if utf8 {
        client.to_string()
    } else {
        epistle_imap::utf7::decode(client)?
    };
    let name = name.strip_suffix('/').unwrap_or(&name);
    if name.is_empty()
        || name.len() > 512
        || name.starts_with('/')
        || name.chars().any(|c| c.is_control())
        || (creating && name.contains(['*', '%']))
    {
        return None;
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    if parts[0] == OTHER_USERS {
        if parts.len() < 3 {
            return None;
        }
        return Some(format!("user/{}", parts[1..].join("/")));
    }
    if parts[0].eq_ignore_ascii_case("INBOX") {
        let rest = &parts[1..];
        if rest.is_empty() {
            return Some(format!("user/{user}/INBOX"));
        }
        return Some(format!("user/{user}/INBOX/{}", rest.join("/")));
    }
    Some(format!("user/{user}/{name}"))
}

/// The client's name for a store name, as `user` sees it.
pub fn client_name(user: &str, store: &str) -> Option<String> {
    let rest = store.strip_prefix("user/")?;
    let (owner, folder) = rest.split_once('/')?;
    if owner == user {
        Some(folder.to_string())
    } else {
        Some(format!("{OTHER_USERS}/{owner}/{folder}"))
    }
}

fn tag_of(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let tag = String::from_utf8_lossy(&line[..end]).into_owned();
    if tag.is_empty() || !tag.bytes().all(epistle_imap::response::is_tag_char) {
        "*".into()
    } else {
        tag
    }
}

fn is_append(line: &[u8]) -> bool {
    let mut words = line.split(|&b| b == b' ');
    let _tag = words.next();
    words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_patterns_reach_other_users() {
        for p in ["*", "%", "Other*", "Other Users/%", "Other Users/ann/*", ""] {
            assert!(may_reach_other_users(p), "{p}");
        }
        for p in ["INBOX", "Work/*", "Others*", "O%x"] {
            assert_eq!(may_reach_other_users(p), p == "O%x", "{p}");
        }
    }

    #[test]
    fn patterns() {
        assert!(matches_pattern("*", "Lists/rust"));
        assert!(matches_pattern("%", "INBOX"));
        assert!(!matches_pattern("%", "Lists/rust"));
        assert!(matches_pattern("Lists/%", "Lists/rust"));
        assert!(matches_pattern("L*t", "Lists/rust"));
        assert!(!matches_pattern("L%t", "Lists/rust"));
        assert!(matches_pattern("INBOX", "INBOX"));
        assert!(!matches_pattern("INBOX", "INBOXES"));
        assert!(matches_pattern(
            "%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%x",
            "abcdefghijklmnopqrstuvwxyzx"
        ));
    }

    #[test]
    fn names() {
        assert_eq!(
            store_name("joe", "inbox", false, false).as_deref(),
            Some("user/joe/INBOX")
        );
        assert_eq!(
            store_name("joe", "Sent", false, false).as_deref(),
            Some("user/joe/Sent")
        );
        assert_eq!(
            store_name("joe", "Entw&APw-rfe", false, false).as_deref(),
            Some("user/joe/Entwürfe")
        );
        assert_eq!(
            store_name("joe", "Other Users/ann/Shared", false, false).as_deref(),
            Some("user/ann/Shared")
        );
        for bad in [
            "",
            "/abs",
            "a//b",
            "../x",
            "a/../b",
            "Other Users/ann",
            "Entw\u{fc}rfe",
        ] {
            assert_eq!(store_name("joe", bad, false, false), None, "{bad}");
        }
        assert_eq!(store_name("joe", "a*", false, true), None);
        assert_eq!(
            client_name("joe", "user/joe/INBOX").as_deref(),
            Some("INBOX")
        );
        assert_eq!(
            client_name("joe", "user/ann/x").as_deref(),
            Some("Other Users/ann/x")
        );
    }
}
