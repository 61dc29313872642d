//! Delivery to another server over SMTP (`tcp_smtp_client`, the tcp_*
//! channels) or LMTP (`tcp_lmtp_client`): where to connect — a domain's
//! MX hosts by preference (RFC 5321 §5.1), the domain itself when it has
//! no MX, the host of a domain literal, or the channel's `daemon` host (a
//! smart host or store host) — then one transaction per domain with a
//! result per recipient.
//!
//! Channel keywords read: `daemon HOST`, `port N`, `maytlsclient` /
//! `musttlsclient` (STARTTLS when offered / required; the certificate is
//! not checked, as in opportunistic TLS, RFC 7435), `nomx` (connect to
//! the domain's own addresses, no MX lookup), `nonrandommx` (MX hosts of
//! equal preference in the order DNS gave them; by default they are
//! tried in random order, as RFC 5321 §5.1 asks, also with `randommx`),
//! `interfaceaddress IP` (the source address of outgoing connections).
//! Before each connection the `IP_ACCESS` mapping is asked
//! (`channel|n|count|ip|host`): `$I` skips the address, `$A` connects to
//! the output's address instead, `$N` fails the recipients with the
//! table's text. option.dat
//! `DNS_SERVER=ip[:port]` names the resolver to ask instead of the
//! system's (a test network, a local cache).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use epistle_mta::access::{IpVerdict, ip_access};
use epistle_mta::smtp::{PeerReply, xtext_encode};
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::client::{ClientError, SmtpClient, Timeouts};
use crate::master::{Context, Deliver, Diagnostic, Job, Outcome};
use epistle_mta::channel_options::SmtpClientOptions;

/// Most MX hosts tried for one domain, and addresses per host.
const MAX_HOSTS: usize = 10;
const MAX_ADDRESSES: usize = 4;

/// A host to try, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

pub struct Outbound {
    lmtp: bool,
    resolver: TokioResolver,
    tls: TlsConnector,
    /// The channel option file's EHLO name and times.
    options: SmtpClientOptions,
}

fn dns_failure(what: &str, e: impl std::fmt::Display) -> Diagnostic {
    Diagnostic::new("4.4.3", format!("DNS lookup of {what} failed: {e}"))
}

impl Outbound {
    pub fn new(ctx: &Context, lmtp: bool) -> anyhow::Result<Outbound> {
        let resolver = epistle_mta::dns::resolver(&ctx.mta.options)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Opportunistic(provider)))
            .with_no_client_auth();
        Ok(Outbound {
            lmtp,
            resolver,
            tls: TlsConnector::from(Arc::new(config)),
            options: SmtpClientOptions::of(&ctx.mta, &ctx.channel),
        })
    }

    /// The hosts for a domain, best first.
    async fn hosts(&self, ctx: &Context, domain: &str) -> Result<Vec<Host>, Outcome> {
        let channel = ctx.mta.imta.channel(&ctx.channel);
        if let Some(daemon) = channel.and_then(|c| c.arg("daemon")) {
            return self
                .addresses_of(daemon)
                .await
                .map(|h| vec![h])
                .map_err(Outcome::Deferred);
        }
        if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let ip = lit
                .trim_start_matches("IPv6:")
                .parse::<IpAddr>()
                .map_err(|_| {
                    Outcome::Failed(Diagnostic::new(
                        "5.1.2",
                        format!("bad address literal {domain}"),
                    ))
                })?;
            return Ok(vec![Host {
                name: domain.to_string(),
                addresses: vec![ip],
            }]);
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        if channel.is_some_and(|c| c.has("nomx")) {
            return self
                .addresses_of(&fqdn)
                .await
                .map(|h| vec![h])
                .map_err(Outcome::Deferred);
        }
        let mut mx: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(m) => Some((m.preference, m.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => {
                return Err(Outcome::Failed(Diagnostic::new(
                    "5.1.2",
                    format!("domain {domain} does not exist"),
                )));
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(Outcome::Deferred(dns_failure(domain, e))),
        };
        // RFC 7505: a lone MX of "." says the domain takes no mail.
        if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
            return Err(Outcome::Failed(Diagnostic::new(
                "5.1.10",
                format!("{domain} accepts no mail (null MX)"),
            )));
        }
        if mx.is_empty() {
            mx.push((0, fqdn)); // implicit MX: the domain itself
        }
        let random = !channel.is_some_and(|c| c.has("nonrandommx"));
        order_mx(&mut mx, random.then(epistle_mta::queuefile::random_u64));
        let mut hosts = Vec::new();
        let mut last_error = None;
        for (_, name) in mx.into_iter().take(MAX_HOSTS) {
            match self.addresses_of(&name).await {
                Ok(h) => hosts.push(h),
                Err(d) => last_error = Some(d),
            }
        }
        if hosts.is_empty() {
            return Err(Outcome::Deferred(last_error.unwrap_or_else(|| {
                Diagnostic::new(
                    "4.4.4",
                    format!("no address for the mail hosts of {domain}"),
                )
            })));
        }
        Ok(hosts)
    }

    async fn addresses_of(&self, name: &str) -> Result<Host, Diagnostic> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Host {
                name: name.to_string(),
                addresses: vec![ip],
            });
        }
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let found = self
            .resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| dns_failure(name, e))?;
        let addresses: Vec<IpAddr> = found.iter().take(MAX_ADDRESSES).collect();
        if addresses.is_empty() {
            return Err(Diagnostic::new("4.4.4", format!("{name} has no address")));
        }
        Ok(Host {
            name: name.trim_end_matches('.').to_string(),
            addresses,
        })
    }

    /// Delivers one domain's recipients: host after host until one takes
    /// the transaction (or refuses it for good).
    async fn domain(&self, ctx: &Context, job: &Job, domain: &str, idx: &[usize]) -> Vec<Outcome> {
        let hosts = match self.hosts(ctx, domain).await {
            Ok(h) => h,
            Err(o) => return vec![o; idx.len()],
        };
        let port = ctx
            .mta
            .imta
            .channel(&ctx.channel)
            .and_then(|c| c.arg("port"))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(if self.lmtp { 24 } else { 25 });
        let source = match channel_source(ctx) {
            Ok(s) => s,
            Err(d) => return vec![Outcome::Deferred(d); idx.len()],
        };
        let mut last = Diagnostic::new("4.4.1", format!("no mail host of {domain} answered"));
        let mut tries: Vec<(&Host, IpAddr)> = Vec::new();
        for h in &hosts {
            tries.extend(h.addresses.iter().map(|ip| (h, *ip)));
        }
        let count = tries.len();
        for (index, (host, ip)) in (1..).zip(tries) {
            let ip = match ip_access(
                &ctx.mta.mappings,
                &ctx.channel,
                index,
                count,
                ip,
                &host.name,
            ) {
                IpVerdict::Connect(ip) => ip,
                IpVerdict::Skip => {
                    last = Diagnostic::new(
                        "4.4.1",
                        format!("IP_ACCESS skipped every address of the mail hosts of {domain}"),
                    );
                    continue;
                }
                IpVerdict::Refuse(text) => {
                    let d = Diagnostic {
                        status: "5.7.1".into(),
                        text,
                        remote: Some(host.name.clone()),
                    };
                    return vec![Outcome::Failed(d); idx.len()];
                }
            };
            let addr = SocketAddr::new(ip, port);
            match self.transaction(ctx, job, idx, host, addr, source).await {
                Ok(outcomes) => return outcomes,
                Err(d) => last = d,
            }
        }
        vec![Outcome::Deferred(last); idx.len()]
    }

    /// One SMTP/LMTP transaction. `Err` means "try the next host".
    async fn transaction(
        &self,
        ctx: &Context,
        job: &Job,
        idx: &[usize],
        host: &Host,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<Vec<Outcome>, Diagnostic> {
        let peer = format!("{} [{}]", host.name, addr.ip());
        let hello_name = self.options.banner_host.as_deref().unwrap_or(&ctx.host);
        let remote = |status: &str, r: &PeerReply| Diagnostic {
            status: status.to_string(),
            text: format!("{}; {r}", if self.lmtp { "lmtp" } else { "smtp" }),
            remote: Some(host.name.clone()),
        };
        let retry = |e: ClientError| Diagnostic {
            status: "4.4.1".into(),
            text: e.to_string(),
            remote: Some(host.name.clone()),
        };
        let mut c = SmtpClient::connect(
            addr,
            source,
            peer.clone(),
            Timeouts::for_channel(&self.options),
        )
        .await
        .map_err(retry)?;
        let r = c.greeting().await.map_err(retry)?;
        if r.code != 220 {
            c.quit().await;
            return Err(remote("4.4.1", &r));
        }
        let r = c.hello(hello_name, self.lmtp).await.map_err(retry)?;
        if r.code != 250 {
            c.quit().await;
            return Err(remote("4.4.1", &r));
        }
        let channel = ctx.mta.imta.channel(&ctx.channel);
        // `maytls`/`musttls`/`notls` set both directions; the last
        // keyword of the group counts.
        const GROUP: &[&str] = &[
            "maytlsclient",
            "musttlsclient",
            "notlsclient",
            "maytls",
            "musttls",
            "notls",
        ];
        let tls_mode = channel
            .and_then(|ch| ch.last_of(GROUP))
            .map(|k| k.name.trim_end_matches("client").to_string());
        if tls_mode.as_deref() != Some("notls") && c.has("STARTTLS") {
            let name = ServerName::try_from(host.name.trim_matches(['[', ']']).to_string())
                .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
            let (next, r) = c.starttls(&self.tls, name).await.map_err(retry)?;
            c = next;
            if r.code == 220 {
                let r = c.hello(hello_name, self.lmtp).await.map_err(retry)?;
                if r.code != 250 {
                    c.quit().await;
                    return Err(remote("4.4.1", &r));
                }
            }
        }
        if tls_mode.as_deref() == Some("musttls") && !c.tls {
            c.quit().await;
            return Err(Diagnostic::new(
                "4.7.5",
                format!(
                    "{peer} does not offer TLS, which channel {} requires",
                    ctx.channel
                ),
            ));
        }
        let env = &job.envelope;
        let dsn = c.has("DSN");
        let mut mail = format!("MAIL FROM:<{}>", env.from);
        if c.has("SIZE") {
            mail.push_str(&format!(" SIZE={}", job.message.len()));
        }
        if c.has("8BITMIME") && !job.message.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        if dsn {
            if let Some(ret) = &env.ret {
                mail.push_str(&format!(" RET={ret}"));
            }
            if let Some(id) = &env.envid {
                mail.push_str(&format!(" ENVID={}", xtext_encode(id)));
            }
        }
        let r = c.command(&mail).await.map_err(retry)?;
        if r.code >= 500 {
            c.quit().await;
            return Ok(vec![
                Outcome::Failed(remote(&status_of(&r, "5.0.0"), &r));
                idx.len()
            ]);
        }
        if r.code != 250 {
            c.quit().await;
            return Err(remote(&status_of(&r, "4.0.0"), &r));
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; idx.len()];
        let mut accepted: Vec<usize> = Vec::new();
        for (k, &i) in idx.iter().enumerate() {
            let rcpt = &env.recipients[i];
            let mut line = format!("RCPT TO:<{}>", rcpt.address);
            if dsn {
                if let Some(n) = &rcpt.notify {
                    line.push_str(&format!(" NOTIFY={n}"));
                }
                if let Some(o) = &rcpt.orcpt {
                    let (kind, addr) = o.split_once(';').unwrap_or(("rfc822", o));
                    line.push_str(&format!(" ORCPT={kind};{}", xtext_encode(addr)));
                }
            }
            let r = c.command(&line).await.map_err(retry)?;
            outcomes[k] = match r.code {
                250 | 251 => {
                    accepted.push(k);
                    None
                }
                500.. => Some(Outcome::Failed(remote(&status_of(&r, "5.1.1"), &r))),
                _ => Some(Outcome::Deferred(remote(&status_of(&r, "4.0.0"), &r))),
            };
        }
        if accepted.is_empty() {
            c.quit().await;
            return Ok(outcomes.into_iter().map(|o| o.expect("set")).collect());
        }
        let r = c.command("DATA").await.map_err(retry)?;
        if r.code != 354 {
            c.quit().await;
            let o = if r.code >= 500 {
                Outcome::Failed(remote(&status_of(&r, "5.0.0"), &r))
            } else {
                Outcome::Deferred(remote(&status_of(&r, "4.0.0"), &r))
            };
            for k in &accepted {
                outcomes[*k] = Some(o.clone());
            }
            return Ok(outcomes.into_iter().map(|o| o.expect("set")).collect());
        }
        // SMTP: one reply for the message; LMTP: one per accepted recipient.
        let count = if self.lmtp { accepted.len() } else { 1 };
        let replies = match c.data(&job.message, count).await {
            Ok(r) => r,
            Err(e) => {
                // The end of data may or may not have been taken: retry
                // (RFC 5321 §6.1 accepts the risk of a duplicate).
                let d = retry(e);
                for k in &accepted {
                    outcomes[*k] = Some(Outcome::Deferred(d.clone()));
                }
                return Ok(outcomes.into_iter().map(|o| o.expect("set")).collect());
            }
        };
        for (n, k) in accepted.iter().enumerate() {
            let r = &replies[if self.lmtp { n } else { 0 }];
            outcomes[*k] = Some(match r.code {
                250 => Outcome::Delivered(format!("{} {}", peer, remote("2.0.0", r).text)),
                500.. => Outcome::Failed(remote(&status_of(r, "5.0.0"), r)),
                _ => Outcome::Deferred(remote(&status_of(r, "4.0.0"), r)),
            });
        }
        c.quit().await;
        Ok(outcomes.into_iter().map(|o| o.expect("set")).collect())
    }
}

/// The enhanced status code at the start of a reply, else a default.
/// The channel's `interfaceaddress`, if it names one.
fn channel_source(ctx: &Context) -> Result<Option<IpAddr>, Diagnostic> {
    let Some(arg) = ctx
        .mta
        .imta
        .channel(&ctx.channel)
        .and_then(|c| c.arg("interfaceaddress"))
    else {
        return Ok(None);
    };
    arg.parse().map(Some).map_err(|_| {
        Diagnostic::new(
            "4.3.5",
            format!(
                "channel {}: interfaceaddress {arg:?} is not an IP address",
                ctx.channel
            ),
        )
    })
}

/// MX hosts best first (RFC 5321 §5.1); with a seed, hosts of equal
/// preference in an order drawn from it, so load spreads over them.
fn order_mx(mx: &mut [(u16, String)], seed: Option<u64>) {
    mx.sort_by_key(|(pref, _)| *pref);
    let Some(seed) = seed else { return };
    let mut state = seed | 1; // xorshift never leaves zero
    let mut start = 0;
    while start < mx.len() {
        let end = start
            + mx[start..]
                .iter()
                .take_while(|(p, _)| *p == mx[start].0)
                .count();
        // Fisher–Yates over the run, with a xorshift stream.
        for i in (start + 1..end).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = start + (state % (i - start + 1) as u64) as usize;
            mx.swap(i, j);
        }
        start = end;
    }
}

fn status_of(r: &PeerReply, default: &str) -> String {
    let first = r
        .lines
        .first()
        .and_then(|l| l.split(' ').next())
        .unwrap_or("");
    let parts: Vec<&str> = first.split('.').collect();
    let ok = parts.len() == 3
        && ["2", "4", "5"].contains(&parts[0])
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        first.to_string()
    } else {
        default.to_string()
    }
}

impl Deliver for Outbound {
    async fn deliver(&mut self, ctx: &Context, job: &Job) -> Vec<Outcome> {
        let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in job.envelope.recipients.iter().enumerate() {
            let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
            by_domain
                .entry(domain.to_ascii_lowercase())
                .or_default()
                .push(i);
        }
        let mut out: Vec<Option<Outcome>> = vec![None; job.envelope.recipients.len()];
        for (domain, idx) in by_domain {
            let results = if domain.is_empty() {
                vec![Outcome::Failed(Diagnostic::new("5.1.3", "address has no domain")); idx.len()]
            } else {
                self.domain(ctx, job, &domain, &idx).await
            };
            for (i, o) in idx.into_iter().zip(results) {
                out[i] = Some(o);
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Deferred(Diagnostic::new("4.3.0", "not tried"))))
            .collect()
    }
}

/// Opportunistic TLS (RFC 7435): encrypt whatever the certificate.
#[derive(Debug)]
struct Opportunistic(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Opportunistic {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The whole of `tcp_smtp_client` and `tcp_lmtp_client`: load, then work
/// the channel named on the command line until nothing is due.
pub async fn run_program(program: &str, default_channel: &str, lmtp: bool) {
    crate::master::program_main(program, default_channel, |ctx| Outbound::new(ctx, lmtp)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_hosts_by_preference_shuffled_only_among_equals() {
        let hosts = |v: &[(u16, &str)]| -> Vec<(u16, String)> {
            v.iter().map(|(p, h)| (*p, h.to_string())).collect()
        };
        let given = hosts(&[(20, "c"), (10, "b"), (10, "a"), (30, "d"), (10, "e")]);
        let mut kept = given.clone();
        order_mx(&mut kept, None);
        assert_eq!(
            kept,
            hosts(&[(10, "b"), (10, "a"), (10, "e"), (20, "c"), (30, "d")])
        );
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 1..200u64 {
            let mut m = given.clone();
            order_mx(&mut m, Some(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            assert_eq!(&m[3..], &hosts(&[(20, "c"), (30, "d")])[..]);
            let mut best: Vec<&str> = m[..3].iter().map(|(_, h)| h.as_str()).collect();
            firsts.insert(best[0].to_string());
            best.sort();
            assert_eq!(best, ["a", "b", "e"]);
        }
        assert_eq!(firsts.len(), 3, "every best host comes first sometimes");
    }

    #[test]
    fn enhanced_codes_are_read_from_replies() {
        let r = |l: &str| PeerReply {
            code: 550,
            lines: vec![l.to_string()],
        };
        assert_eq!(status_of(&r("5.1.1 No such user"), "5.0.0"), "5.1.1");
        assert_eq!(status_of(&r("No such user"), "5.0.0"), "5.0.0");
        assert_eq!(status_of(&r("5.1 x"), "5.0.0"), "5.0.0");
        assert_eq!(status_of(&r("9.1.1 x"), "5.0.0"), "5.0.0");
    }
}
