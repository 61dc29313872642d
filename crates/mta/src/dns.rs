//! The MTA's DNS: the resolver every MTA program asks (option.dat
//! `DNS_SERVER=ip[:port]` alone, else the system's configuration with
//! /etc/hosts), and the name an SMTP
//! server gives its client by the source channel's `ident*` and
//! `forwardcheck*` keywords.
//!
//! The `identtcp*` keywords also ask the client's host for the user
//! holding the connection (IDENT, [`crate::ident`]). The name and the
//! user are shown in `Received:` lines only; channel switching goes by
//! the client's address, since a reverse DNS name is whatever the owner
//! of the address's zone says.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::imtacnf::Channel;
use crate::optionfile::OptionFile;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("option.dat DNS_SERVER={0} is not an address; give ip or ip:port")]
    BadServer(String),
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
}

/// The resolver named by option.dat, else the system's.
pub fn resolver(options: &OptionFile) -> Result<TokioResolver, DnsError> {
    let provider = TokioRuntimeProvider::default();
    let builder = match options.global("DNS_SERVER") {
        Some(server) => {
            let addr: SocketAddr = server
                .parse()
                .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| DnsError::BadServer(server.to_string()))?;
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                provider,
            );
            // The server named is asked alone: not /etc/hosts first.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        }
        None => TokioResolver::builder(provider).map_err(|e| DnsError::Setup(e.to_string()))?,
    };
    builder.build().map_err(|e| DnsError::Setup(e.to_string()))
}

/// What a source channel's `ident*` keyword asks of the client's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentMode {
    /// `identnone`, `identtcp` (the default): looked up; `Received:`
    /// shows the name and the address.
    Both,
    /// `identnonesymbolic`, `identtcpsymbolic`: looked up; `Received:`
    /// shows the name alone when there is one.
    Symbolic,
    /// `identnonelimited`, `identtcplimited`: in the original, looked up
    /// for channel switching only; switching here goes by address, so not
    /// looked up, and `Received:` shows the address.
    Limited,
    /// `identnonenumeric`, `identtcpnumeric`: not looked up.
    Numeric,
}

/// How a looked-up name is confirmed (`forwardcheck*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardCheck {
    /// `forwardchecknone` (the default): the name is taken as given.
    None,
    /// `forwardchecktag`: a name whose addresses do not include the
    /// client's is kept with `*` after it.
    Tag,
    /// `forwardcheckdelete`: such a name is dropped.
    Delete,
}

const IDENT: &[&str] = &[
    "identnone",
    "identnonenumeric",
    "identnonelimited",
    "identnonesymbolic",
    "identtcp",
    "identtcpnumeric",
    "identtcplimited",
    "identtcpsymbolic",
];

impl IdentMode {
    pub fn of(channel: Option<&Channel>) -> IdentMode {
        let last = channel.and_then(|c| c.last_of(IDENT));
        match last.map(|k| {
            k.name
                .trim_start_matches("identnone")
                .trim_start_matches("identtcp")
        }) {
            Some("numeric") => IdentMode::Numeric,
            Some("limited") => IdentMode::Limited,
            Some("symbolic") => IdentMode::Symbolic,
            _ => IdentMode::Both,
        }
    }

    pub fn looks_up(self) -> bool {
        matches!(self, IdentMode::Both | IdentMode::Symbolic)
    }

    /// Whether the channel asks IDENT (`identtcp*`, the original's
    /// default; the shipped `defaults` line says `identnone`).
    pub fn asks_ident(channel: Option<&Channel>) -> bool {
        channel
            .and_then(|c| c.last_of(IDENT))
            .is_none_or(|k| k.name.starts_with("identtcp"))
    }

    /// The client as a `Received:` line's `from` clause shows it, inside
    /// the parentheses, with the user IDENT gave (`user@`).
    pub fn received_from(self, name: Option<&str>, ip: IpAddr, user: Option<&str>) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        match (self, name) {
            (IdentMode::Both, Some(n)) => format!("{user}{n} [{ip}]"),
            (IdentMode::Symbolic, Some(n)) => format!("{user}{n}"),
            _ => format!("{user}[{ip}]"),
        }
    }
}

impl ForwardCheck {
    pub fn of(channel: Option<&Channel>) -> ForwardCheck {
        let last = channel.and_then(|c| {
            c.last_of(&["forwardchecknone", "forwardchecktag", "forwardcheckdelete"])
        });
        match last.map(|k| k.name.as_str()) {
            Some("forwardchecktag") => ForwardCheck::Tag,
            Some("forwardcheckdelete") => ForwardCheck::Delete,
            _ => ForwardCheck::None,
        }
    }
}

/// The longest a client's name is waited for (the greeting waits on
/// it); without one the session goes on with the address, so a DNS
/// outage slows each connection by this much at most.
pub const CLIENT_NAME_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's name by reverse DNS (the first PTR record), confirmed as
/// `check` asks; `None` when there is none, the lookup fails or times
/// out, or the check deletes it.
pub async fn client_name(
    resolver: &TokioResolver,
    ip: IpAddr,
    check: ForwardCheck,
) -> Option<String> {
    let lookup = async {
        let names = resolver.reverse_lookup(ip).await.ok()?;
        let name = names.answers().iter().find_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })?;
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return None;
        }
        if check == ForwardCheck::None {
            return Some(name);
        }
        let confirmed = resolver
            .lookup_ip(format!("{name}."))
            .await
            .is_ok_and(|found| found.iter().any(|a| a == ip));
        match (confirmed, check) {
            (true, _) => Some(name),
            (false, ForwardCheck::Tag) => Some(format!("{name}*")),
            (false, _) => None,
        }
    };
    tokio::time::timeout(CLIENT_NAME_TIMEOUT, lookup)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imtacnf::ImtaConfig;

    #[test]
    fn keywords_choose_the_mode_the_last_one_counting() {
        let c = ImtaConfig::parse(
            "imta.cnf",
            "a b\n\nl\nlocalhost\n\nplain smtp\nplain-daemon\n\nnum smtp identnone identtcpnumeric forwardchecktag\nnum-daemon\n\nsym identnonesymbolic forwardcheckdelete\nsym-daemon\n\nlim identtcplimited\nlim-daemon\n",
            &mut |_| Err("no includes".into()),
        )
        .unwrap();
        let mode = |n: &str| IdentMode::of(c.channel(n));
        let check = |n: &str| ForwardCheck::of(c.channel(n));
        assert_eq!(mode("plain"), IdentMode::Both);
        assert_eq!(mode("num"), IdentMode::Numeric);
        assert_eq!(mode("sym"), IdentMode::Symbolic);
        assert_eq!(mode("lim"), IdentMode::Limited);
        assert_eq!(IdentMode::of(None), IdentMode::Both);
        assert_eq!(check("plain"), ForwardCheck::None);
        assert_eq!(check("num"), ForwardCheck::Tag);
        assert_eq!(check("sym"), ForwardCheck::Delete);
        assert!(mode("plain").looks_up() && mode("sym").looks_up());
        assert!(!mode("num").looks_up() && !mode("lim").looks_up());

        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            IdentMode::Both.received_from(Some("h.example"), ip, Some("joe")),
            "joe@h.example [192.0.2.7]"
        );
        assert_eq!(
            IdentMode::Symbolic.received_from(Some("h.example"), ip, None),
            "h.example"
        );
        assert_eq!(
            IdentMode::Symbolic.received_from(None, ip, None),
            "[192.0.2.7]"
        );
        assert_eq!(
            IdentMode::Limited.received_from(Some("h.example"), ip, Some("joe")),
            "joe@[192.0.2.7]"
        );
        assert!(IdentMode::asks_ident(c.channel("plain")) && IdentMode::asks_ident(None));
        assert!(IdentMode::asks_ident(c.channel("num")) && IdentMode::asks_ident(c.channel("lim")));
        assert!(!IdentMode::asks_ident(c.channel("sym")));
    }
}
