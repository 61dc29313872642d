//! What every session of one SMTP server process shares: the compiled
//! MTA configuration it started with (a new one arrives with new
//! processes, after `imsimta restart`), the directory, TLS, the queues
//! and the limits.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use epistle_directory::Directory;
use epistle_mta::compiled::MtaConfig;
use epistle_mta::dispatcher_cnf::parameter;
use epistle_mta::dns::{self, ForwardCheck, IdentMode, TokioResolver};
use epistle_mta::maillog::MailLog;
use epistle_mta::queue::QueueDir;
use epistle_mta::rewrite::{Context, Rewriter};
use epistle_mta::submit::GroupCommit;
use tokio_rustls::TlsAcceptor;

/// Message size limits, from option.dat (the session limits and times
/// come from the service channel's option file:
/// [`epistle_mta::channel_options::SmtpServerOptions`]).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message, bytes (`BLOCK_LIMIT` × `BLOCK_SIZE`).
    pub max_message: u64,
    /// `BLOCK_SIZE`: the unit of the channels' `blocklimit`.
    pub block_size: u64,
}

impl Limits {
    pub fn from_options(mta: &MtaConfig) -> Limits {
        Limits {
            max_message: epistle_mta::retry::message_limit(&mta.options),
            block_size: epistle_mta::retry::block_size(&mta.options),
        }
    }
}

/// Bad commands a session may make before it is closed, when its channel
/// sets no `disconnectbadcommandlimit` (the original has no limit; a
/// client this wrong is not going to get better).
pub const DEFAULT_BAD_COMMAND_LIMIT: u64 = 20;

/// A source channel's STARTTLS policy (`maytlsserver`, `musttlsserver`,
/// `notls`…; the last of them in the channel block counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Offered (the default).
    May,
    /// Mail is refused until the session is under TLS.
    Must,
    /// Not offered.
    Never,
}

pub struct Server {
    /// Our name in greetings and Received: lines.
    pub host: String,
    /// `local.defdomain`: what a short-form header address gets, unless
    /// the source channel says `remotehost` or `defaulthost`.
    pub default_domain: String,
    /// Speaking LMTP (RFC 2033) as tcp_lmtp_server: LHLO, delivery into
    /// the store at the end of data, a reply per recipient.
    pub lmtp: bool,
    pub store_socket: PathBuf,
    pub mta: Arc<MtaConfig>,
    pub directory: Option<Arc<Directory>>,
    pub tls: Option<TlsAcceptor>,
    pub queue: QueueDir,
    /// Shares fsyncs among the sessions of this process.
    pub committer: GroupCommit,
    pub jobs_socket: PathBuf,
    pub maillog: MailLog,
    pub limits: Limits,
    /// For clients' names (`ident*`); `None` when it could not be set up.
    pub resolver: Option<TokioResolver>,
}

/// A service's own channel: its `PARAMETER=CHANNEL=…`, else tcp_local.
/// Its option file sets the service's session limits.
pub fn service_channel(service_parameter: &str) -> String {
    parameter(service_parameter, "CHANNEL").unwrap_or_else(|| "tcp_local".into())
}

impl Server {
    /// The channel a connection starts on: its service channel, switched
    /// by the client's address literal when the channel has
    /// `switchchannel` and the rewrite rules send `[ip]` to another SMTP
    /// channel (internal clients to tcp_intranet).
    pub fn initial_channel(&self, service_channel: &str, client: IpAddr) -> String {
        let base = service_channel.to_string();
        let imta = &self.mta.imta;
        // Keywords of one group override each other: the last one counts
        // (a channel block's own keyword beats what `defaults` set).
        let last = |ch: &str, group: &[&str]| {
            imta.channel(ch)
                .and_then(|c| c.last_of(group))
                .map(|k| k.name.clone())
        };
        const GROUP: &[&str] = &["switchchannel", "allowswitchchannel", "noswitchchannel"];
        if last(&base, GROUP).as_deref() != Some("switchchannel") {
            return base;
        }
        let ctx = Context {
            envelope: true,
            forward: true,
            source_channel: &base,
        };
        let probe = format!("postmaster@[{client}]");
        match Rewriter::new(imta, &self.mta.mappings).rewrite(&probe, &ctx) {
            Ok(r)
                if r.channel != base
                    && imta.channel(&r.channel).is_some_and(|c| c.has("smtp"))
                    && last(&r.channel, GROUP).as_deref() != Some("noswitchchannel") =>
            {
                r.channel
            }
            _ => base,
        }
    }

    /// The client's name, when the channel's `ident*` keyword asks for
    /// a reverse DNS lookup, confirmed as its `forwardcheck*` says.
    pub async fn client_name(&self, channel: &str, client: IpAddr) -> Option<String> {
        let channel = self.mta.imta.channel(channel);
        if !IdentMode::of(channel).looks_up() {
            return None;
        }
        let resolver = self.resolver.as_ref()?;
        dns::client_name(resolver, client, ForwardCheck::of(channel)).await
    }

    /// The user holding the client's end of the connection, when the
    /// channel's `identtcp*` keyword asks the client's IDENT service.
    pub async fn client_user(
        &self,
        channel: &str,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Option<String> {
        if !IdentMode::asks_ident(self.mta.imta.channel(channel)) {
            return None;
        }
        let service = SocketAddr::new(client.ip(), epistle_mta::ident::IDENT_PORT);
        epistle_mta::ident::query(service, local.ip(), client.port(), local.port()).await
    }

    /// Whether the INTERNAL_IP mapping calls the client internal.
    pub fn is_internal(&self, client: IpAddr) -> bool {
        self.mta
            .mappings
            .lookup("INTERNAL_IP", &client.to_string())
            .is_some_and(|r| r.yes())
    }

    /// The channel an authenticated session moves to
    /// (`saslswitchchannel`), if any.
    pub fn sasl_channel(&self, channel: &str) -> Option<String> {
        let imta = &self.mta.imta;
        let to = imta.channel(channel)?.arg("saslswitchchannel")?;
        imta.channel(to).map(|c| c.name.clone())
    }

    /// The STARTTLS policy of a source channel.
    pub fn tls_policy(&self, channel: &str) -> TlsPolicy {
        const GROUP: &[&str] = &[
            "maytls",
            "musttls",
            "notls",
            "maytlsserver",
            "musttlsserver",
            "notlsserver",
        ];
        let chosen = self
            .mta
            .imta
            .channel(channel)
            .and_then(|c| c.last_of(GROUP));
        match chosen.map(|k| k.name.as_str()) {
            Some("musttls" | "musttlsserver") => TlsPolicy::Must,
            Some("notls" | "notlsserver") => TlsPolicy::Never,
            _ => TlsPolicy::May,
        }
    }

    /// Messages one connection may send: the service channel's
    /// `ALLOW_TRANSACTIONS_PER_SESSION` (`per_session`), or the source
    /// channel's `transactionlimit` when lower.
    pub fn max_transactions(&self, channel: &str, per_session: Option<usize>) -> usize {
        let keyword = self
            .channel_number(channel, "transactionlimit")
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        keyword
            .into_iter()
            .chain(per_session)
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Bad commands before the session is closed: the source channel's
    /// `disconnectbadcommandlimit` (0: no limit).
    pub fn bad_command_limit(&self, channel: &str) -> u64 {
        match self.channel_number(channel, "disconnectbadcommandlimit") {
            Some(0) => u64::MAX,
            Some(n) => n,
            None => DEFAULT_BAD_COMMAND_LIMIT,
        }
    }

    /// The largest message a destination channel takes, bytes
    /// (`blocklimit` × `BLOCK_SIZE`), when it sets one.
    pub fn channel_size_limit(&self, channel: &str) -> Option<u64> {
        self.channel_number(channel, "blocklimit")
            .map(|n| n.saturating_mul(self.limits.block_size))
    }

    /// Most recipients of one message for a destination channel
    /// (`recipientlimit`).
    pub fn channel_recipient_limit(&self, channel: &str) -> Option<usize> {
        self.channel_number(channel, "recipientlimit")
            .map(|n| n as usize)
    }

    /// Above this many recipients for a destination channel, the
    /// message's file for it is held (`holdlimit`).
    pub fn channel_hold_limit(&self, channel: &str) -> Option<usize> {
        self.channel_number(channel, "holdlimit")
            .map(|n| n as usize)
    }

    /// Where a recipient goes unexpanded once a transaction already has
    /// `accepted` of them: past the source channel's `expandlimit`, its
    /// `expandchannel` (else reprocess), when that channel exists.
    pub fn expand_channel(&self, channel: &str, accepted: usize) -> Option<String> {
        let limit = self.channel_number(channel, "expandlimit")?;
        if (accepted as u64) < limit {
            return None;
        }
        let imta = &self.mta.imta;
        let to = imta
            .channel(channel)
            .and_then(|c| c.arg("expandchannel"))
            .unwrap_or("reprocess");
        imta.channel(to).map(|c| c.name.clone())
    }

    fn channel_number(&self, channel: &str, keyword: &str) -> Option<u64> {
        self.mta.imta.channel(channel)?.arg(keyword)?.parse().ok()
    }

    /// Whether a channel must see SASL before mail (`mustsaslserver`,
    /// unless a later `maysaslserver` or `nosasl` overrides it).
    pub fn requires_auth(&self, channel: &str) -> bool {
        self.mta
            .imta
            .channel(channel)
            .and_then(|c| c.last_of(&["mustsaslserver", "maysaslserver", "nosasl", "nosaslserver"]))
            .is_some_and(|k| k.name == "mustsaslserver")
    }
}
