//! One SMTP session (RFC 5321 with the ESMTP extensions the server
//! offers): commands read with the pure codec of `epistle_mta::smtp`,
//! policy asked of the shared [`Server`], the message written into the
//! channel queues durably before `250` is sent.
//!
//! Replies to pipelined commands are written when the client has nothing
//! more buffered, so a pipelining client gets them in one batch; input
//! that arrived with STARTTLS is thrown away before TLS starts (no
//! command injection into the encrypted session).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use epistle_channels::master::Outcome;
use epistle_channels::store_delivery::StoreDelivery;
use epistle_daemon::Io;
use epistle_directory::Auth;
use epistle_directory::sasl;
use epistle_ipc::handoff::Handoff;
use epistle_mta::access::{AccessAnswer, AccessFlags};
use epistle_mta::address_reversal::{self, AddressPolicy, Treated};
use epistle_mta::channel_options::SmtpServerOptions;
use epistle_mta::dns::IdentMode;
use epistle_mta::maillog::{Action, Record};
use epistle_mta::queuefile::{Envelope, Origin, QueueError, Recipient, Staged};
use epistle_mta::resolve::{BITBUCKET_CHANNEL, Resolver, Route, STORE_CHANNEL};
use epistle_mta::smtp::{
    Body, Command, DataReader, MAX_COMMAND_LINE, MailParams, Mailbox, Reply, xtext_encode,
};
use epistle_mta::submit::stage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::{Server, TlsPolicy, service_channel};

/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why a session ended early.
#[derive(Debug)]
enum End {
    /// The client left or the connection broke.
    Closed,
    /// We sent 421 (timeout, too many errors).
    Shutdown,
}

/// A recipient accepted into the transaction.
struct Accepted {
    /// As the client gave it.
    address: String,
    orcpt: Option<String>,
    notify: Option<String>,
    routes: Vec<Route>,
}

struct Transaction {
    /// Empty for `<>`.
    from: String,
    params: MailParams,
    recipients: Vec<Accepted>,
    /// Message text gathered from BDAT chunks.
    chunks: Option<Vec<u8>>,
    /// A BDAT chunk failed: the rest of the chunks are read and dropped.
    chunk_failed: bool,
    /// What the access tables asked for beyond yes or no.
    policy: Policy,
}

/// The access tables' actions on a transaction (`epistle_mta::access`).
#[derive(Debug, Default, Clone)]
struct Policy {
    /// `$H`: the message is queued held.
    hold: bool,
    /// `$V`/`$Z`, or `$B` from FROM_ACCESS: every recipient to the
    /// bitbucket.
    discard_all: bool,
    /// `$K`: the message's `Sender:`.
    sender: Option<String>,
}

impl Policy {
    fn add(&mut self, a: &AccessAnswer) {
        self.hold |= a.hold;
        self.discard_all |= a.discard_all;
        if a.new_sender.is_some() {
            self.sender = a.new_sender.clone();
        }
    }
}

pub struct Session {
    server: Arc<Server>,
    stream: Box<dyn Io>,
    input: Vec<u8>,
    output: Vec<u8>,
    peer: SocketAddr,
    local: String,
    /// The channel mail from this connection enqueues from.
    channel: String,
    /// The client's name by reverse DNS, when the channel asks for it
    /// (`ident*`), as `Received:` shows it.
    client_name: Option<String>,
    /// The user IDENT named (`identtcp*`), as `Received:` shows it.
    client_user: Option<String>,
    internal: bool,
    helo: Option<String>,
    esmtp: bool,
    /// `TLS1.3 TLS13_AES_256_GCM_SHA384` once TLS is up.
    tls: Option<String>,
    user: Option<String>,
    txn: Option<Transaction>,
    /// LMTP's link to stored, made at the first delivery.
    store: Option<StoreDelivery>,
    transactions: usize,
    /// Bad commands so far (`disconnectbadcommandlimit`).
    errors: usize,
    /// Recipients refused so far (`ALLOW_REJECTIONS_BEFORE_DEFERRAL`).
    rejected: usize,
    etrns: usize,
    /// The service channel's option file's limits, times and banner.
    options: SmtpServerOptions,
    id: u64,
    /// A positive `$D` from an access table: every later command waits
    /// this long.
    slowdown: Option<Duration>,
    /// A negative `$D`: the current command's reply waits this long.
    pause: Option<Duration>,
}

impl Session {
    pub fn new(server: Arc<Server>, stream: Box<dyn Io>, handoff: &Handoff) -> Option<Session> {
        let peer: SocketAddr = handoff.peer.parse().ok()?;
        let service = service_channel(&handoff.parameter);
        let options = SmtpServerOptions::of(&server.mta, &service);
        let channel = server.initial_channel(&service, peer.ip());
        let internal = server.is_internal(peer.ip());
        Some(Session {
            server,
            stream,
            input: Vec::new(),
            output: Vec::new(),
            peer,
            local: handoff.local.clone(),
            channel,
            client_name: None,
            client_user: None,
            internal,
            helo: None,
            esmtp: false,
            tls: None,
            user: None,
            txn: None,
            store: None,
            transactions: 0,
            errors: 0,
            rejected: 0,
            etrns: 0,
            options,
            id: session_id(),
            slowdown: None,
            pause: None,
        })
    }

    /// Runs the session to its end; `tls_first` for TLS_PORT services.
    pub async fn run(mut self, tls_first: bool) {
        if tls_first && self.start_tls().await.is_err() {
            return;
        }
        if self.server.lmtp && !self.internal {
            // LMTP delivers straight into the store: for the site's own
            // relays only (INTERNAL_IP).
            self.reply(Reply::new(
                554,
                "5.7.1",
                format!("{} LMTP is for internal hosts only", self.banner_host()),
            ));
            let _ = self.flush().await;
            return;
        }
        if !self.server.lmtp {
            // The name and the IDENT user are asked for together: a slow
            // one does not add to the other.
            let local: Option<SocketAddr> = self.local.parse().ok();
            let (name, user) = tokio::join!(
                self.server.client_name(&self.channel, self.peer.ip()),
                async {
                    match local {
                        Some(l) => self.server.client_user(&self.channel, self.peer, l).await,
                        None => None,
                    }
                }
            );
            self.client_name = name;
            self.client_user = user;
        }
        if !self.options.banner_purge_delay.is_zero() {
            tokio::time::sleep(self.options.banner_purge_delay).await;
            self.purge_input().await;
        }
        let protocol = if self.server.lmtp { "LMTP" } else { "ESMTP" };
        let mut banner = format!("{} {protocol} Epistle ready", self.banner_host());
        if let Some(addition) = &self.options.banner_addition {
            banner.push(' ');
            banner.push_str(addition);
        }
        let greeting = Reply::plain(220, vec![banner]);
        self.reply(greeting);
        let end = self.serve().await;
        tracing::debug!(
            "session {:016X} from {} to {} ended: {end:?}",
            self.id,
            self.peer,
            self.local
        );
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    async fn serve(&mut self) -> End {
        loop {
            if self.flush_if_idle().await.is_err() {
                return End::Closed;
            }
            let line = match self.read_line(self.options.command_timeout).await {
                Ok(Some(line)) => line,
                Ok(None) => return End::Closed,
                Err(End::Shutdown) => return self.timed_out("a command"),
                Err(e) => return e,
            };
            let command = match line {
                Line::TooLong => Err(Reply::new(500, "5.5.2", "Line too long")),
                Line::Text(l) => Command::parse(&l),
            };
            if let Some(d) = self.slowdown {
                tokio::time::sleep(d).await;
            }
            let keep_going = match command {
                Err(reply) => self.fail(reply),
                Ok(cmd) => match self.command(cmd).await {
                    Ok(go_on) => go_on,
                    // Only reading the message or an AUTH answer can
                    // time out inside a command.
                    Err(End::Shutdown) => return self.timed_out("the client"),
                    Err(end) => return end,
                },
            };
            if let Some(d) = self.pause.take() {
                tokio::time::sleep(d).await;
            }
            if !keep_going {
                return End::Shutdown;
            }
            if self.errors as u64 >= self.server.bad_command_limit(&self.channel) {
                self.reply(Reply::new(
                    421,
                    "4.7.0",
                    format!("{} Too many errors; closing", self.banner_host()),
                ));
                return End::Shutdown;
            }
        }
    }

    /// RFC 5321 §4.5.3.2: a silent client gets 421 and the connection
    /// closes.
    fn timed_out(&mut self, waiting_for: &str) -> End {
        self.reply(Reply::new(
            421,
            "4.4.2",
            format!(
                "{} Timeout waiting for {waiting_for}; closing",
                self.banner_host()
            ),
        ));
        End::Shutdown
    }

    /// Queues a reply that counts as an error; always continues.
    fn fail(&mut self, reply: Reply) -> bool {
        self.errors += 1;
        self.reply(reply);
        true
    }

    /// Throws away what the client sent before it was greeted
    /// (`BANNER_PURGE_DELAY`): whatever can be read now, without waiting.
    async fn purge_input(&mut self) {
        self.input.clear();
        let mut buf = [0u8; 4096];
        // Bounded: a client streaming without pause is not read for ever.
        for _ in 0..64 {
            match tokio::time::timeout(Duration::ZERO, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Our name in greetings and the replies that start with it: the
    /// option file's `BANNER_HOST`, else the host's name.
    fn banner_host(&self) -> &str {
        self.options
            .banner_host
            .as_deref()
            .unwrap_or(&self.server.host)
    }

    fn reply(&mut self, reply: Reply) {
        self.output.extend_from_slice(&reply.encode());
    }

    /// Handles one command; `Ok(false)` ends the session after the reply.
    async fn command(&mut self, cmd: Command) -> Result<bool, End> {
        match cmd {
            Command::Ehlo(_) | Command::Helo(_) if self.server.lmtp => {
                return Ok(self.fail(Reply::new(500, "5.5.1", "This is LMTP; use LHLO")));
            }
            Command::Lhlo(_) if !self.server.lmtp => {
                return Ok(self.fail(Reply::new(500, "5.5.1", "LHLO is for LMTP; use EHLO")));
            }
            Command::Ehlo(domain) | Command::Lhlo(domain) => {
                self.helo = Some(domain.clone());
                self.esmtp = true;
                self.txn = None;
                let lines = self.ehlo_lines(&domain);
                self.reply(Reply::plain(250, lines));
            }
            Command::Helo(domain) => {
                self.helo = Some(domain.clone());
                self.esmtp = false;
                self.txn = None;
                self.reply(Reply::plain(
                    250,
                    vec![format!("{} Hello {domain}", self.banner_host())],
                ));
            }
            Command::StartTls => {
                if self.tls.is_some() {
                    return Ok(self.fail(Reply::new(503, "5.5.1", "TLS already active")));
                }
                if self.server.tls.is_none()
                    || self.server.tls_policy(&self.channel) == TlsPolicy::Never
                {
                    return Ok(self.fail(Reply::new(454, "4.7.0", "TLS not available")));
                }
                self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
                self.flush().await.map_err(|_| End::Closed)?;
                // Whatever the client sent after STARTTLS was sent in the
                // clear: it is dropped, and the session starts over.
                self.input.clear();
                self.start_tls().await?;
                self.helo = None;
                self.esmtp = false;
                self.txn = None;
            }
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial).await?,
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params).await,
            Command::Data => self.data().await?,
            Command::Bdat { size, last } => self.bdat(size, last).await?,
            Command::Rset => {
                self.txn = None;
                self.reply(Reply::new(250, "2.0.0", "Reset"));
            }
            Command::Noop => self.reply(Reply::new(250, "2.0.0", "OK")),
            Command::Help => self.reply(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT STARTTLS AUTH ETRN",
            )),
            Command::Quit => {
                self.reply(Reply::new(
                    221,
                    "2.0.0",
                    format!("{} closing connection", self.banner_host()),
                ));
                return Ok(false);
            }
            Command::Vrfy(_) => {
                // Off by default: confirming addresses helps harvesters.
                self.reply(Reply::new(
                    252,
                    "2.5.2",
                    "Cannot VRFY user; send some mail and it will be tried",
                ));
            }
            Command::Expn(_) => {
                return Ok(self.fail(Reply::new(502, "5.5.1", "EXPN is not available")));
            }
            Command::Etrn(arg) => self.etrn(&arg).await,
        }
        Ok(true)
    }

    fn ehlo_lines(&self, domain: &str) -> Vec<String> {
        let mut lines = vec![
            format!("{} Hello {domain} [{}]", self.banner_host(), self.peer.ip()),
            "PIPELINING".into(),
            format!("SIZE {}", self.server.limits.max_message),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "DSN".into(),
            "CHUNKING".into(),
            "ETRN".into(),
        ];
        if self.tls.is_none()
            && self.server.tls.is_some()
            && self.server.tls_policy(&self.channel) != TlsPolicy::Never
        {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines
    }

    /// AUTH is offered once TLS protects the password, or in the clear to
    /// internal clients only.
    fn auth_offered(&self) -> bool {
        self.user.is_none()
            && self.server.directory.is_some()
            && (self.tls.is_some() || self.internal)
    }

    async fn start_tls(&mut self) -> Result<(), End> {
        let Some(acceptor) = self.server.tls.clone() else {
            return Err(End::Closed);
        };
        // A stand-in while the handshake owns the real stream.
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0));
        let accepted = tokio::time::timeout(Duration::from_secs(60), acceptor.accept(plain)).await;
        match accepted {
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                let version = conn
                    .protocol_version()
                    .and_then(|v| v.as_str())
                    .unwrap_or("TLS")
                    .replace("v1_", "1.");
                let cipher = conn
                    .negotiated_cipher_suite()
                    .and_then(|c| c.suite().as_str())
                    .unwrap_or("unknown");
                self.tls = Some(format!("{version} {cipher}"));
                self.stream = Box::new(tls);
                Ok(())
            }
            _ => {
                tracing::info!("TLS handshake with {} failed", self.peer);
                Err(End::Closed)
            }
        }
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Result<(), End> {
        if !self.esmtp {
            self.fail(Reply::new(503, "5.5.1", "Send EHLO first"));
            return Ok(());
        }
        if self.user.is_some() {
            self.fail(Reply::new(503, "5.5.1", "Already authenticated"));
            return Ok(());
        }
        if self.txn.is_some() {
            self.fail(Reply::new(
                503,
                "5.5.1",
                "AUTH is not allowed during a transaction",
            ));
            return Ok(());
        }
        if !self.auth_offered() {
            self.fail(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
            return Ok(());
        }
        let creds = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => r,
                    None => self.challenge("").await?,
                };
                sasl::plain(&response).map(|c| (c.authzid, c.login, c.password))
            }
            "LOGIN" => {
                let user = match initial {
                    Some(r) => r,
                    None => self.challenge(&sasl::encode(b"Username:")).await?,
                };
                match sasl::login_step(&user) {
                    Ok(login) => {
                        let pw = self.challenge(&sasl::encode(b"Password:")).await?;
                        sasl::login_step(&pw).map(|pw| (String::new(), login, pw))
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                self.fail(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
                return Ok(());
            }
        };
        let (authzid, login, password) = match creds {
            Ok(c) => c,
            Err(sasl::SaslError::Cancelled) => {
                self.fail(Reply::new(501, "5.0.0", "Authentication cancelled"));
                return Ok(());
            }
            Err(e) => {
                self.fail(Reply::new(501, "5.5.2", format!("Bad response: {e}")));
                return Ok(());
            }
        };
        if !authzid.is_empty() && authzid != login {
            self.fail(Reply::new(
                535,
                "5.7.8",
                "Authentication credentials invalid",
            ));
            return Ok(());
        }
        let Some(dir) = self.server.directory.clone() else {
            self.fail(Reply::new(454, "4.7.0", "Temporary authentication failure"));
            return Ok(());
        };
        match dir.authenticate(&login, &password).await {
            Ok(Auth::Ok(_)) => {
                tracing::info!(
                    target: "Account",
                    "login [{}] {login} SMTP AUTH{}",
                    self.peer,
                    if self.tls.is_some() { " over TLS" } else { "" }
                );
                self.user = Some(login);
                if let Some(ch) = self.server.sasl_channel(&self.channel) {
                    self.channel = ch;
                }
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
            }
            Ok(Auth::Denied(why)) => {
                tracing::warn!(
                    target: "Account",
                    "badlogin: [{}] SMTP AUTH {login} {}",
                    self.peer,
                    why.reason()
                );
                // Slow down password guessing; one answer for every reason.
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.fail(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
            }
            Err(e) => {
                tracing::error!("directory error during SMTP AUTH for {login}: {e}");
                self.fail(Reply::new(454, "4.7.0", "Temporary authentication failure"));
            }
        }
        Ok(())
    }

    /// Sends a `334` challenge and reads the client's one-line answer.
    async fn challenge(&mut self, text: &str) -> Result<String, End> {
        self.reply(Reply::plain(334, vec![text.to_string()]));
        self.flush().await.map_err(|_| End::Closed)?;
        match self.read_line(self.options.command_timeout).await? {
            Some(Line::Text(l)) => Ok(String::from_utf8_lossy(&l).into_owned()),
            Some(Line::TooLong) => Ok(String::from("!")),
            None => Err(End::Closed),
        }
    }

    fn mail(&mut self, from: Option<Mailbox>, params: MailParams) {
        if self.helo.is_none() {
            self.fail(Reply::new(503, "5.5.1", "Send HELO or EHLO first"));
            return;
        }
        if self.txn.is_some() {
            self.fail(Reply::new(503, "5.5.1", "Nested MAIL command"));
            return;
        }
        if self.user.is_none() && self.server.requires_auth(&self.channel) {
            self.fail(Reply::new(530, "5.7.0", "Authentication required"));
            return;
        }
        if self.tls.is_none() && self.server.tls_policy(&self.channel) == TlsPolicy::Must {
            self.fail(Reply::new(
                530,
                "5.7.0",
                "Must issue a STARTTLS command first",
            ));
            return;
        }
        let per_session = self.options.transactions_per_session;
        if self.transactions >= self.server.max_transactions(&self.channel, per_session) {
            self.fail(Reply::new(
                452,
                "4.5.3",
                "Too many transactions in one session; reconnect",
            ));
            return;
        }
        if !self.esmtp && params != MailParams::default() {
            self.fail(Reply::new(555, "5.5.4", "MAIL parameters need EHLO"));
            return;
        }
        if params
            .size
            .is_some_and(|s| s > self.server.limits.max_message)
        {
            self.fail(Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds the limit of {} bytes",
                    self.server.limits.max_message
                ),
            ));
            return;
        }
        let mut from = from.map(|m| m.to_string()).unwrap_or_default();
        if from.len() > 320 {
            self.fail(Reply::new(553, "5.1.7", "Sender address too long"));
            return;
        }
        let probe = format!(
            "{}|{from}|{}",
            self.transport_info(),
            self.user.as_deref().unwrap_or("")
        );
        let flags = self.access_flags(None);
        let mut policy = Policy::default();
        match access(&self.server.mta, "FROM_ACCESS", &probe, flags) {
            Err((r, delay)) => {
                self.delay(delay.as_deref());
                self.fail(r);
                return;
            }
            Ok(Some(a)) => {
                self.delay(Some(&a));
                policy.add(&a);
                // From here, `$B` is about the whole message.
                policy.discard_all |= a.bitbucket;
                if let Some(new) = a.new_from {
                    from = new
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string();
                }
            }
            Ok(None) => {}
        }
        self.txn = Some(Transaction {
            from,
            params,
            recipients: Vec::new(),
            chunks: None,
            chunk_failed: false,
            policy,
        });
        self.reply(Reply::new(250, "2.1.0", "Sender OK"));
    }

    async fn rcpt(&mut self, to: Mailbox, params: epistle_mta::smtp::RcptParams) {
        let Some(txn) = self.txn.as_ref() else {
            self.fail(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
            return;
        };
        if self
            .options
            .rejections_before_deferral
            .is_some_and(|n| self.rejected >= n)
        {
            // Good or bad, no recipient is answered for now: an address
            // harvester learns nothing more, and each try counts as a bad
            // command, so it is soon cut off.
            self.fail(Reply::new(
                451,
                "4.7.1",
                "Too many recipients refused in this session; try again later",
            ));
            return;
        }
        if txn.recipients.len() >= self.options.recipients_per_transaction {
            // RFC 5321 §4.5.3.1.10: 452 for too many recipients.
            self.reply(Reply::new(452, "4.5.3", "Too many recipients"));
            return;
        }
        if to.is_utf8() && !txn.params.smtputf8 {
            self.fail(Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address requires SMTPUTF8",
            ));
            return;
        }
        let from = txn.from.clone();
        let address = match &to.domain {
            Some(_) => to.to_string(),
            // The bare `postmaster` of RFC 5321 §4.5.1.
            None => format!("postmaster@{}", self.server.host),
        };
        let transport = self.transport_info();
        let flags = self.access_flags(params.notify.as_ref());
        let asked = Asked {
            transport: &transport,
            channel: &self.channel,
            from: &from,
            flags,
        };
        // Past the source channel's `expandlimit`, recipients are only
        // checked here and expanded later by the reprocess channel.
        let expand_later = self
            .server
            .expand_channel(&self.channel, txn.recipients.len());
        let routed = match expand_later {
            Some(channel) => route_later(&self.server, &asked, &address, channel),
            None => match route(&self.server, &asked, &address).await {
                Ok((routes, answers)) => match self.channel_limits(&routes) {
                    Some(reply) => Err((reply, None)),
                    None => Ok((routes, answers)),
                },
                Err(e) => Err(e),
            },
        };
        match routed {
            Ok((routes, answers)) => {
                for a in &answers {
                    self.delay(Some(a));
                }
                let notify = params.notify.map(|n| n.to_string());
                let orcpt = params.orcpt.clone();
                if let Some(txn) = self.txn.as_mut() {
                    for a in &answers {
                        txn.policy.add(a);
                    }
                    txn.recipients.push(Accepted {
                        address,
                        orcpt,
                        notify,
                        routes,
                    });
                }
                self.reply(Reply::new(250, "2.1.5", "Recipient OK"));
            }
            Err((reply, delay)) => {
                self.delay(delay.as_deref());
                self.server.maillog.write(&[Record {
                    source_channel: &self.channel,
                    dest_channel: "",
                    action: Action::Reject,
                    modifiers: self.modifiers(),
                    size: 0,
                    from: &from,
                    original_to: &address,
                    active_to: &address,
                    diagnostic: &reply.lines.join(" "),
                }]);
                // A refused recipient is not a bad command: a list's
                // sender may well have many stale addresses.
                if reply.code >= 500 {
                    self.rejected += 1;
                }
                self.reply(reply);
            }
        }
    }

    async fn data(&mut self) -> Result<(), End> {
        match &self.txn {
            None => {
                self.fail(Reply::new(503, "5.5.1", "Need MAIL before DATA"));
                return Ok(());
            }
            Some(t) if t.recipients.is_empty() => {
                self.fail(Reply::new(554, "5.5.1", "No valid recipients"));
                return Ok(());
            }
            Some(t) if t.chunks.is_some() => {
                self.fail(Reply::new(503, "5.5.1", "DATA after BDAT is not allowed"));
                return Ok(());
            }
            Some(_) => {}
        }
        self.reply(Reply::plain(
            354,
            vec!["Start mail input; end with <CRLF>.<CRLF>".into()],
        ));
        self.flush().await.map_err(|_| End::Closed)?;
        let limit = self.server.limits.max_message;
        let mut reader = DataReader::new(limit);
        // Sized once from the client's SIZE (bounded), not grown by
        // doubling as the text arrives.
        let declared = self.txn.as_ref().and_then(|t| t.params.size);
        let mut message = Vec::with_capacity(initial_capacity(declared, limit));
        loop {
            if !self.input.is_empty() {
                let progress = reader.feed(&self.input, &mut message);
                self.input.drain(..progress.consumed);
                if progress.done {
                    break;
                }
            }
            if !self.fill(self.options.data_timeout).await? {
                return Err(End::Closed);
            }
        }
        let refusal = if reader.over_limit() {
            Some(Reply::new(
                552,
                "5.3.4",
                format!("Message size exceeds the limit of {limit} bytes"),
            ))
        } else if reader.nul {
            Some(Reply::new(554, "5.6.0", "Message contains NUL characters"))
        } else {
            None
        };
        self.end_of_data(refusal, message).await;
        Ok(())
    }

    /// Whether a recipient's routes would take a destination channel
    /// past its `recipientlimit`, or a message of the declared SIZE past
    /// its `blocklimit`.
    fn channel_limits(&self, routes: &[Route]) -> Option<Reply> {
        let txn = self.txn.as_ref()?;
        for r in routes {
            let ch = r.channel.as_str();
            let limit = self.server.channel_size_limit(ch);
            if let (Some(size), Some(limit)) = (txn.params.size, limit)
                && size > limit
            {
                return Some(too_large(ch, limit));
            }
            if let Some(limit) = self.server.channel_recipient_limit(ch) {
                let so_far = txn.recipients.iter().flat_map(|a| &a.routes);
                let n = so_far.chain(routes).filter(|x| x.channel == ch).count();
                if n > limit {
                    return Some(Reply::new(
                        452,
                        "4.5.3",
                        format!("Too many recipients for channel {ch} in one message"),
                    ));
                }
            }
        }
        None
    }

    /// A message larger than a destination channel's `blocklimit`.
    fn channel_size_refusal(&self, size: usize) -> Option<Reply> {
        let txn = self.txn.as_ref()?;
        txn.recipients.iter().flat_map(|a| &a.routes).find_map(|r| {
            let limit = self.server.channel_size_limit(&r.channel)?;
            (size as u64 > limit).then(|| too_large(&r.channel, limit))
        })
    }

    /// Answers the end of a message: one reply in SMTP, one per accepted
    /// recipient in LMTP (RFC 2033 §4.2), refusals included.
    async fn end_of_data(&mut self, refusal: Option<Reply>, message: Vec<u8>) {
        let refusal = refusal.or_else(|| self.channel_size_refusal(message.len()));
        let count = match (&self.txn, self.server.lmtp) {
            (Some(t), true) => t.recipients.len(),
            _ => 1,
        };
        let replies = match refusal {
            Some(r) => vec![r; count],
            None if self.server.lmtp => self.deliver_lmtp(message).await,
            None => vec![self.accept_message(message).await],
        };
        self.txn = None;
        if replies.iter().any(Reply::is_positive) {
            self.transactions += 1;
        }
        for r in replies {
            if r.is_positive() {
                self.reply(r);
            } else {
                self.fail(r);
            }
        }
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Result<(), End> {
        let limit = self.server.limits.max_message;
        let refusal = match &self.txn {
            None => Some(Reply::new(503, "5.5.1", "Need MAIL before BDAT")),
            Some(t) if t.recipients.is_empty() => {
                Some(Reply::new(554, "5.5.1", "No valid recipients"))
            }
            Some(t) if t.chunk_failed => {
                Some(Reply::new(552, "5.3.4", "Message refused; send RSET"))
            }
            Some(t) => {
                let have = t.chunks.as_ref().map_or(0, |c| c.len() as u64);
                (have.saturating_add(size) > limit).then(|| {
                    Reply::new(
                        552,
                        "5.3.4",
                        format!("Message size exceeds the limit of {limit} bytes"),
                    )
                })
            }
        };
        // The chunk is read in any case, to stay in step with the client.
        let mut chunk = Vec::new();
        let keep = refusal.is_none();
        let mut left = size;
        while left > 0 {
            if self.input.is_empty() && !self.fill(self.options.data_timeout).await? {
                return Err(End::Closed);
            }
            let n = (left as usize).min(self.input.len());
            if keep {
                chunk.extend_from_slice(&self.input[..n]);
            }
            self.input.drain(..n);
            left -= n as u64;
        }
        if let Some(r) = refusal {
            if let Some(t) = self.txn.as_mut() {
                t.chunk_failed = true;
                if last {
                    self.txn = None;
                }
            }
            self.fail(r);
            return Ok(());
        }
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        txn.chunks.get_or_insert_with(Vec::new).extend(chunk);
        if !last {
            self.reply(Reply::new(250, "2.0.0", format!("{size} octets received")));
            return Ok(());
        }
        let message = txn.chunks.take().unwrap_or_default();
        let refusal = (message.contains(&0) && txn.params.body != Some(Body::BinaryMime))
            .then(|| Reply::new(554, "5.6.0", "Message contains NUL characters"));
        self.end_of_data(refusal, message).await;
        Ok(())
    }

    /// LMTP: the store's recipients are delivered now, through stored;
    /// any others (forwarding) are queued. One reply per recipient.
    async fn deliver_lmtp(&mut self, message: Vec<u8>) -> Vec<Reply> {
        let Some(txn) = self.txn.take() else {
            return Vec::new();
        };
        let id = format!("{:016X}.{}", self.id, self.transactions);
        let text = self.message_text(&txn, &id, &message);
        let text = epistle_mta::header::with_return_path(&text, &txn.from);
        let mut replies = Vec::with_capacity(txn.recipients.len());
        let store = self.store.get_or_insert_with(|| {
            // A full mailbox is the relay's to retry: always 4xx here.
            StoreDelivery::new(self.server.store_socket.clone(), Duration::MAX)
        });
        let mut queued: Vec<Accepted> = Vec::new();
        let mut queued_index: Vec<usize> = Vec::new();
        // A message the access tables hold or discard goes through the
        // queue like any other, not straight into the store.
        let direct = !(txn.policy.hold || txn.policy.discard_all);
        for (n, a) in txn.recipients.iter().enumerate() {
            let mut worst: Option<Reply> = None;
            let to_store = |r: &&Route| direct && r.channel == STORE_CHANNEL;
            for r in a.routes.iter().filter(to_store) {
                let outcome = store
                    .deliver(
                        self.server.directory.as_deref(),
                        &r.address,
                        &text,
                        Duration::ZERO,
                    )
                    .await;
                let reply = match outcome {
                    Outcome::Delivered(_) => continue,
                    Outcome::Deferred(d) => {
                        Reply::plain(451, vec![format!("{} {}: {}", d.status, a.address, d.text)])
                    }
                    Outcome::Failed(d) => {
                        Reply::plain(550, vec![format!("{} {}: {}", d.status, a.address, d.text)])
                    }
                };
                if worst.as_ref().is_none_or(|w| w.code < reply.code) {
                    worst = Some(reply);
                }
            }
            let others: Vec<Route> = a.routes.iter().filter(|r| !to_store(r)).cloned().collect();
            if !others.is_empty() {
                queued_index.push(n);
                queued.push(Accepted {
                    address: a.address.clone(),
                    orcpt: a.orcpt.clone(),
                    notify: a.notify.clone(),
                    routes: others,
                });
            }
            replies.push(
                worst.unwrap_or_else(|| {
                    Reply::new(250, "2.1.5", format!("{} delivered", a.address))
                }),
            );
        }
        if !queued.is_empty() {
            self.txn = Some(Transaction {
                recipients: queued,
                ..txn
            });
            let r = self.accept_message(message).await;
            self.txn = None;
            if !r.is_positive() {
                for n in queued_index {
                    if replies[n].is_positive() {
                        replies[n] = r.clone();
                    }
                }
            }
        }
        replies
    }

    /// Adds the Received: line, writes the queue files, tells the job
    /// controller; the reply is 250 only once every file is on disk.
    async fn accept_message(&mut self, message: Vec<u8>) -> Reply {
        let Some(txn) = self.txn.as_ref() else {
            return Reply::new(503, "5.5.1", "No transaction");
        };
        let id = format!("{:016X}.{}", self.id, self.transactions);
        let text = self.message_text(txn, &id, &message);
        let server = self.server.clone();
        let policy = AddressPolicy::of(
            &server.mta,
            &self.channel,
            self.helo.as_deref(),
            &server.default_domain,
        );
        let treated = address_reversal::treat(
            &server.mta,
            server.directory.as_deref(),
            &policy,
            &text,
            &txn.from,
        )
        .await;
        let envelope = Envelope {
            from: txn.from.clone(),
            recipients: Vec::new(),
            envid: txn.params.envid.clone(),
            ret: txn.params.ret.map(|r| match r {
                epistle_mta::smtp::Ret::Full => "FULL".to_string(),
                epistle_mta::smtp::Ret::Hdrs => "HDRS".to_string(),
            }),
            received: chrono::Utc::now().timestamp(),
            source_channel: self.channel.clone(),
            origin: Some(Origin {
                // A client's HELO may hold anything; the queue file's
                // line may not hold a tab or a line break.
                transport: self.transport_info().replace(|c: char| c.is_control(), "?"),
                flags: self.access_flags(None).letters().into_iter().collect(),
            }),
        };
        let mut recipients: Vec<(String, Recipient)> = Vec::new();
        for a in &txn.recipients {
            let orcpt = a
                .orcpt
                .clone()
                .unwrap_or_else(|| format!("rfc822;{}", xtext_encode(&a.address)));
            for r in &a.routes {
                let channel = match txn.policy.discard_all {
                    true => BITBUCKET_CHANNEL,
                    false => &r.channel,
                };
                recipients.push((
                    channel.to_string(),
                    Recipient {
                        address: r.address.clone(),
                        orcpt: Some(orcpt.clone()),
                        notify: a.notify.clone(),
                    },
                ));
            }
        }
        let size = text.len() as u64;
        let recips = recipients.clone();
        // Written by each session (into the page cache: quick enough to do
        // in place), made durable together by the group commit thread.
        let hold = txn.policy.hold;
        let written = match stage_treated(&server, &envelope, &recips, &text, treated) {
            Ok(staged) => {
                // Held: the whole message by an access table, or one
                // channel's file past the channel's `holdlimit`.
                let held = staged.into_iter().map(|(ch, s)| {
                    let count = recips.iter().filter(|(c, _)| *c == ch).count();
                    let over = server.channel_hold_limit(&ch).is_some_and(|l| count > l);
                    match hold || over {
                        true => (ch, s.held()),
                        false => (ch, s),
                    }
                });
                self.server.committer.commit(held.collect()).await
            }
            Err(e) => Err(e),
        };
        // The committer tells the job controller of the files.
        if let Err(e) = written {
            tracing::error!("cannot queue a message from {}: {e}", self.peer);
            return Reply::new(452, "4.3.1", "Cannot queue the message now; try later");
        }
        let modifiers = self.modifiers();
        let records: Vec<Record> = recipients
            .iter()
            .map(|(ch, r)| Record {
                source_channel: &self.channel,
                dest_channel: ch,
                action: Action::Enqueue,
                modifiers,
                size,
                from: &envelope.from,
                original_to: r.orcpt.as_deref().unwrap_or(""),
                active_to: &r.address,
                diagnostic: "",
            })
            .collect();
        self.server.maillog.write(&records);
        Reply::new(250, "2.0.0", format!("Ok, queued as {id}"))
    }

    /// The message as it goes on: our trace line, then the client's
    /// text (with the `Sender:` an access table gave, if it gave one).
    fn message_text(&self, txn: &Transaction, id: &str, message: &[u8]) -> Vec<u8> {
        let mut text = self.received_line(txn, id).into_bytes();
        match &txn.policy.sender {
            Some(sender) => text.extend(epistle_mta::header::replace_field(
                message, "Sender", sender,
            )),
            None => text.extend_from_slice(message),
        }
        text
    }

    /// The trace line (RFC 5321 §4.4), with TLS and authentication
    /// (RFC 3848 protocol names).
    fn received_line(&self, txn: &Transaction, id: &str) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let mut with = String::from(match (self.server.lmtp, self.esmtp) {
            (true, _) => "LMTP",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        });
        if self.tls.is_some() {
            with.push('S');
        }
        if self.user.is_some() {
            with.push('A');
        }
        if txn.params.smtputf8 {
            with.insert_str(0, "UTF8");
        }
        let client = IdentMode::of(self.server.mta.imta.channel(&self.channel)).received_from(
            self.client_name.as_deref(),
            self.peer.ip(),
            self.client_user.as_deref(),
        );
        let mut line = format!(
            "Received: from {} ({client})\r\n by {} (Epistle) with {with} id <{id}>",
            clean(helo),
            self.server.host
        );
        if let Some(tls) = &self.tls {
            line.push_str(&format!("\r\n (using {tls})"));
        }
        if let Some(user) = &self.user {
            line.push_str(&format!("\r\n (authenticated as {})", clean(user)));
        }
        if let [one] = txn.recipients.as_slice() {
            line.push_str(&format!("\r\n for <{}>", clean(&one.address)));
        }
        line.push_str(&format!("; {}\r\n", chrono::Local::now().to_rfc2822()));
        line
    }

    async fn etrn(&mut self, arg: &str) {
        if self.etrns >= self.options.etrns_per_session {
            self.reply(Reply::new(
                458,
                "4.7.0",
                "Too many ETRN commands in this session",
            ));
            return;
        }
        self.etrns += 1;
        let domain = arg.trim_start_matches(['@', '#']);
        let resolver = Resolver {
            config: &self.server.mta,
            directory: None,
        };
        let channel = resolver
            .rewrite(&format!("postmaster@{domain}"), &self.channel)
            .ok()
            .map(|r| r.channel);
        match channel {
            Some(ch) if ch.starts_with("tcp_") => {
                let req = epistle_ipc::jobs::JobRequest::RunNow { channel: Some(ch) };
                epistle_mta::submit::ask(&self.server.jobs_socket, &req).await;
                self.reply(Reply::new(
                    250,
                    "2.0.0",
                    format!("Queuing for node {domain} started"),
                ));
            }
            _ => self.reply(Reply::new(
                459,
                "4.0.0",
                format!("Node {domain} not allowed"),
            )),
        }
    }

    /// The flags access-table templates test with `$:x` / `$;x`.
    fn access_flags(&self, rcpt: Option<&epistle_mta::smtp::Notify>) -> AccessFlags {
        let notify = rcpt.copied().unwrap_or_default();
        AccessFlags {
            sasl: self.user.is_some(),
            tls: self.tls.is_some(),
            esmtp: self.esmtp,
            lmtp: self.server.lmtp,
            notify_delay: notify.delay,
            notify_failure: notify.failure,
            notify_success: notify.success,
        }
    }

    /// Takes an access answer's `$D`: negative waits once (before this
    /// reply), positive slows every later command of the session.
    fn delay(&mut self, answer: Option<&AccessAnswer>) {
        let Some(a) = answer else { return };
        let Some(d) = a.delay() else { return };
        if a.slows_session() {
            self.slowdown = Some(d);
        } else {
            self.pause = Some(self.pause.map_or(d, |p| p.max(d)));
        }
    }

    /// The access tables' view of this connection.
    fn transport_info(&self) -> String {
        let local: Option<SocketAddr> = self.local.parse().ok();
        format!(
            "TCP|{}|{}|{}|{}|SMTP/{}",
            local.map_or_else(String::new, |a| a.ip().to_string()),
            local.map_or(0, |a| a.port()),
            self.peer.ip(),
            self.peer.port(),
            self.helo.as_deref().unwrap_or("")
        )
    }

    fn modifiers(&self) -> &'static str {
        match (self.esmtp, self.tls.is_some()) {
            (true, true) => "ET",
            (true, false) => "E",
            (false, true) => "ST",
            (false, false) => "S",
        }
    }

    /// Writes the queued replies when the client has nothing more
    /// waiting (so pipelined commands get their replies in one batch).
    async fn flush_if_idle(&mut self) -> std::io::Result<()> {
        if !self.input.contains(&b'\n') {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        tokio::time::timeout(self.options.command_timeout, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    /// Reads more input; `Ok(false)` at end of stream.
    async fn fill(&mut self, timeout: Duration) -> Result<bool, End> {
        // Straight into the input buffer's spare room: no zeroed buffer
        // per read, no copy.
        self.input.reserve(READ_CHUNK);
        match tokio::time::timeout(timeout, self.stream.read_buf(&mut self.input)).await {
            Err(_) => Err(End::Shutdown),
            Ok(Err(_)) | Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
        }
    }

    /// The next command line, without its line end. An over-long line is
    /// read to its end and reported as such.
    async fn read_line(&mut self, timeout: Duration) -> Result<Option<Line>, End> {
        let mut too_long = false;
        loop {
            if let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.input.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if too_long || line.len() > MAX_COMMAND_LINE {
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(Line::Text(line)));
            }
            if self.input.len() > MAX_COMMAND_LINE {
                too_long = true;
                self.input.clear();
            }
            if !self.fill(timeout).await? {
                return Ok(None);
            }
        }
    }
}

fn too_large(channel: &str, limit: u64) -> Reply {
    Reply::new(
        552,
        "5.3.4",
        format!("Message too large for channel {channel} (limit {limit} bytes)"),
    )
}

/// Who asks the access tables about a recipient.
struct Asked<'a> {
    /// `TCP|server-ip|server-port|client-ip|client-port|SMTP/helo`.
    transport: &'a str,
    /// The source channel.
    channel: &'a str,
    from: &'a str,
    flags: AccessFlags,
}

/// A refusal, and the delay the refusing entry asked for.
type Refused = (Reply, Option<Box<AccessAnswer>>);

/// Where one recipient goes, or the refusal: rewriting, the access
/// tables before alias expansion (ORIG_SEND_ACCESS: the relay check;
/// ORIG_MAIL_ACCESS), the aliases and the directory, then SEND_ACCESS and
/// MAIL_ACCESS on each resulting recipient. `$B` sends the recipient (or,
/// before expansion, all it expands to) to the bitbucket; the other
/// answers come back for the transaction.
async fn route(
    server: &Server,
    asked: &Asked<'_>,
    address: &str,
) -> Result<(Vec<Route>, Vec<AccessAnswer>), Refused> {
    let mta = &server.mta;
    let resolver = Resolver {
        config: mta,
        directory: server.directory.as_deref(),
    };
    let (channel, from, transport) = (asked.channel, asked.from, asked.transport);
    let mut answers = admit(server, asked, address)?;
    let all_to_bitbucket = answers.iter().any(|a| a.bitbucket);
    let mut resolved = resolver
        .resolve(address, from, channel)
        .await
        .map_err(|r| (r, None))?;
    for (addr, why) in &resolved.dropped {
        tracing::info!("{address}: member {addr} skipped: {why}");
    }
    for r in &mut resolved.routes {
        let probe = format!("{channel}|{from}|{}|{}", r.channel, r.address);
        let mut bitbucket = all_to_bitbucket;
        for a in [
            access(mta, "SEND_ACCESS", &probe, asked.flags)?,
            access(
                mta,
                "MAIL_ACCESS",
                &format!("{transport}|{probe}"),
                asked.flags,
            )?,
        ]
        .into_iter()
        .flatten()
        {
            bitbucket |= a.bitbucket;
            answers.push(a);
        }
        if bitbucket {
            r.channel = BITBUCKET_CHANNEL.to_string();
        }
    }
    Ok((resolved.routes, answers))
}

/// Stages a message's queue files: for channels with `noreverse` the
/// message with its short forms completed, for the others with its
/// addresses reversed too (and the envelope From, when reversal changed
/// it).
fn stage_treated(
    server: &Server,
    envelope: &Envelope,
    recipients: &[(String, Recipient)],
    text: &[u8],
    treated: Treated,
) -> Result<Vec<(String, Staged)>, QueueError> {
    let plain = treated.plain.as_deref().unwrap_or(text);
    let reversed = treated.reversed.as_deref().unwrap_or(plain);
    let reversed_envelope = match &treated.from {
        Some(from) => &Envelope {
            from: from.clone(),
            ..envelope.clone()
        },
        None => envelope,
    };
    let (kept, turned): (Vec<_>, Vec<_>) = recipients
        .iter()
        .cloned()
        .partition(|(ch, _)| !address_reversal::reverses(&server.mta, ch));
    let (queue, imta, block) = (&server.queue, &server.mta.imta, server.limits.block_size);
    let mut staged = Vec::new();
    if !turned.is_empty() {
        staged = stage(queue, imta, block, reversed_envelope, &turned, reversed)?;
    }
    if !kept.is_empty() {
        match stage(queue, imta, block, envelope, &kept, plain) {
            Ok(more) => staged.extend(more),
            Err(e) => {
                for (_, s) in staged {
                    s.discard();
                }
                return Err(e);
            }
        }
    }
    Ok(staged)
}

/// Whether mail may go to `address` at all: the rewrite rules know it,
/// and ORIG_SEND_ACCESS and ORIG_MAIL_ACCESS (relaying among them) allow
/// it. Their answers, for the transaction's policy.
fn admit(server: &Server, asked: &Asked<'_>, address: &str) -> Result<Vec<AccessAnswer>, Refused> {
    let mta = &server.mta;
    let resolver = Resolver {
        config: mta,
        directory: None,
    };
    let (channel, from, transport) = (asked.channel, asked.from, asked.transport);
    let rewritten = resolver.rewrite(address, channel).map_err(|r| (r, None))?;
    let probe = format!(
        "{channel}|{from}|{}|{}",
        rewritten.channel, rewritten.address
    );
    let mut answers = Vec::new();
    answers.extend(access(mta, "ORIG_SEND_ACCESS", &probe, asked.flags)?);
    let mail_probe = format!("{transport}|{probe}");
    answers.extend(access(mta, "ORIG_MAIL_ACCESS", &mail_probe, asked.flags)?);
    Ok(answers)
}

/// A recipient left for `channel` (reprocess) to expand: admitted as
/// [`admit`] says, queued as given, looked up by no one yet.
fn route_later(
    server: &Server,
    asked: &Asked<'_>,
    address: &str,
    channel: String,
) -> Result<(Vec<Route>, Vec<AccessAnswer>), Refused> {
    let answers = admit(server, asked, address)?;
    let channel = match answers.iter().any(|a| a.bitbucket) {
        true => BITBUCKET_CHANNEL.to_string(),
        false => channel,
    };
    let route = Route {
        channel,
        address: address.to_string(),
    };
    Ok((vec![route], answers))
}

/// Asks an access table. A refusal becomes its reply (550 5.7.1 unless
/// the table wrote a code); the text an entry asks to be logged is.
fn access(
    mta: &epistle_mta::compiled::MtaConfig,
    table: &str,
    probe: &str,
    flags: AccessFlags,
) -> Result<Option<AccessAnswer>, Refused> {
    let Some(answer) = epistle_mta::access::ask(&mta.mappings, table, probe, flags) else {
        return Ok(None);
    };
    if let Some(line) = answer.log_line() {
        tracing::warn!("{table} {probe}: {line}");
    }
    let Some(r) = &answer.refusal else {
        return Ok(Some(answer));
    };
    let code = r.code.unwrap_or(550);
    let reply = match &r.enhanced {
        Some(e) => Reply::plain(code, vec![format!("{e} {}", r.text)]),
        None if code < 500 => Reply::new(code, "4.7.1", r.text.clone()),
        None => Reply::new(code, "5.7.1", r.text.clone()),
    };
    Err((reply, Some(Box::new(answer))))
}

enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// Text safe inside a header comment.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | '\\' | '<' | '>'))
        .take(255)
        .collect()
}

fn session_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    (t << 16) ^ (u64::from(std::process::id()) << 40) ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The message buffer to start DATA with: what SIZE declared (plus room
/// for the trace lines), else 16 KB; never more than 1 MB or the limit, so
/// a false SIZE cannot make the server reserve much.
fn initial_capacity(declared: Option<u64>, limit: u64) -> usize {
    let want = declared.map_or(16 * 1024, |s| s.saturating_add(1024));
    usize::try_from(want.min(limit).min(1 << 20)).unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::initial_capacity;

    #[test]
    fn data_buffer_starts_at_the_declared_size_within_bounds() {
        assert_eq!(initial_capacity(None, 10 << 20), 16 * 1024);
        assert_eq!(initial_capacity(Some(4096), 10 << 20), 5120);
        assert_eq!(initial_capacity(Some(u64::MAX), 10 << 20), 1 << 20);
        assert_eq!(initial_capacity(Some(50_000), 8192), 8192);
    }
}
