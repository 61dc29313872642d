//! From an envelope recipient to the queues its copies go to: the rewrite
//! rules choose a channel; an address of the local channel `l` is then
//! looked up in the aliases file and the directory (original.md §1, §7) —
//! a user's mailbox goes to the store channel `ims-ms`, forwarding
//! addresses and group members are resolved again, `mailUserStatus: hold`
//! goes to the `hold` channel, and an address nobody has is refused.
//!
//! Errors are SMTP replies, so the SMTP server can answer RCPT with them
//! and a channel program can put them in a notice.

use std::collections::HashSet;

use epistle_directory::{Delivery, DirError, Directory, Recipient, model::DeliveryOption};

use crate::compiled::MtaConfig;
use crate::rewrite::{Context, Rewriter, Rewritten};
use crate::smtp::Reply;

/// The local channel, whose addresses the directory resolves.
pub const LOCAL_CHANNEL: &str = "l";
/// The message store's channel and the host part of its addresses.
pub const STORE_CHANNEL: &str = "ims-ms";
pub const STORE_HOST: &str = "ims-ms-daemon";
pub const HOLD_CHANNEL: &str = "hold";
/// Where discarded mail goes (the job controller empties it).
pub const BITBUCKET_CHANNEL: &str = "bitbucket";
/// Most alias, forwarding and group levels below an address.
pub const MAX_DEPTH: usize = 8;
/// Most queue recipients one address may become.
pub const MAX_ROUTES: usize = 10_000;

/// One recipient as queued: the channel and the address the channel
/// program delivers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub channel: String,
    pub address: String,
}

/// What an address became.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    pub routes: Vec<Route>,
    /// Addresses found below the one asked for (group members, alias
    /// targets) that lead nowhere, with why: logged, not refused, since
    /// the rest of the list still gets the message.
    pub dropped: Vec<(String, String)>,
}

/// The store address of a mailbox owner: `uid@ims-ms-daemon`, or
/// `uid%domain@ims-ms-daemon` outside the default domain.
pub fn store_address(owner: &str) -> String {
    match owner.rsplit_once('@') {
        Some((uid, domain)) => format!("{uid}%{domain}@{STORE_HOST}"),
        None => format!("{owner}@{STORE_HOST}"),
    }
}

/// The mailbox owner (a login: `uid` or `uid@domain`) of a store address,
/// and the folder of a `uid+folder` subaddress.
pub fn store_owner(address: &str) -> Option<(String, Option<String>)> {
    let (local, host) = address.rsplit_once('@')?;
    if !host.eq_ignore_ascii_case(STORE_HOST) || local.is_empty() {
        return None;
    }
    let (user, domain) = match local.rsplit_once('%') {
        Some((u, d)) => (u, Some(d)),
        None => (local, None),
    };
    let (uid, folder) = match user.split_once('+') {
        Some((u, f)) if !f.is_empty() => (u, Some(f.to_string())),
        _ => (user, None),
    };
    if uid.is_empty() {
        return None;
    }
    let owner = match domain {
        Some(d) => format!("{uid}@{d}"),
        None => uid.to_string(),
    };
    Some((owner, folder))
}

fn temporary(e: &DirError) -> Reply {
    if e.is_temporary() {
        Reply::new(
            451,
            "4.4.3",
            "Directory unavailable; try again later".to_string(),
        )
    } else {
        Reply::new(451, "4.3.0", format!("Directory error: {e}"))
    }
}

/// Resolves addresses against one configuration and directory.
pub struct Resolver<'a> {
    pub config: &'a MtaConfig,
    /// `None` where no directory is reachable (then local addresses are a
    /// temporary failure, never "unknown user").
    pub directory: Option<&'a Directory>,
}

impl<'a> Resolver<'a> {
    /// The rewrite rules' answer for an envelope recipient.
    pub fn rewrite(&self, address: &str, source_channel: &str) -> Result<Rewritten, Reply> {
        let ctx = Context {
            envelope: true,
            forward: true,
            source_channel,
        };
        Rewriter::new(&self.config.imta, &self.config.mappings)
            .rewrite(address, &ctx)
            .map_err(|e| Reply::new(553, "5.1.3", format!("Bad address {address}: {e}")))
    }

    /// Every queue recipient `address` becomes, for mail from `from`.
    pub async fn resolve(
        &self,
        address: &str,
        from: &str,
        source_channel: &str,
    ) -> Result<Resolution, Reply> {
        let mut out = Resolution::default();
        let mut seen_routes: HashSet<Route> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut work: Vec<(String, usize)> = vec![(address.to_string(), 0)];
        while let Some((addr, depth)) = work.pop() {
            if depth > MAX_DEPTH {
                return Err(Reply::new(
                    554,
                    "5.4.6",
                    format!("Aliases, forwarding or groups nest too deep below {address}"),
                ));
            }
            if !seen.insert(addr.to_lowercase()) {
                continue; // a loop, or reached twice
            }
            let top = depth == 0;
            let r = match self.rewrite(&addr, source_channel) {
                Ok(r) => r,
                Err(e) if top => return Err(e),
                Err(e) => {
                    out.dropped.push((addr, e.lines.join(" ")));
                    continue;
                }
            };
            let mut push = |route: Route| -> Result<(), Reply> {
                if seen_routes.insert(route.clone()) {
                    if out.routes.len() >= MAX_ROUTES {
                        return Err(Reply::new(
                            552,
                            "5.5.3",
                            format!("{address} expands to more than {MAX_ROUTES} recipients"),
                        ));
                    }
                    out.routes.push(route);
                }
                Ok(())
            };
            if r.channel != LOCAL_CHANNEL {
                push(Route {
                    channel: r.channel,
                    address: r.address,
                })?;
                continue;
            }
            let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
            if let Some(targets) = self.config.aliases.get(&r.address, &[domain]) {
                for t in targets.iter().rev() {
                    work.push((t.clone(), depth + 1));
                }
                continue;
            }
            let Some(dir) = self.directory else {
                return Err(Reply::new(
                    451,
                    "4.4.3",
                    "Directory unavailable; try again later".to_string(),
                ));
            };
            let found = dir.recipient(&r.address).await.map_err(|e| temporary(&e))?;
            match found {
                None if top => {
                    return Err(Reply::new(
                        550,
                        "5.1.1",
                        format!("{address}: unknown or illegal user"),
                    ));
                }
                None => out.dropped.push((addr, "unknown or illegal user".into())),
                Some(Recipient::User(u)) => match u.status.delivery() {
                    Delivery::Reject if top => {
                        return Err(Reply::new(
                            550,
                            "5.2.1",
                            format!("{address}: mailbox disabled"),
                        ));
                    }
                    Delivery::Reject => out.dropped.push((addr, "mailbox disabled".into())),
                    Delivery::TryLater if top => {
                        return Err(Reply::new(
                            450,
                            "4.2.1",
                            format!("{address}: mailbox temporarily unavailable"),
                        ));
                    }
                    Delivery::Hold => push(Route {
                        channel: HOLD_CHANNEL.into(),
                        address: r.address.clone(),
                    })?,
                    // Below a list, an inactive member's copy waits in the
                    // store channel, which checks again at delivery.
                    Delivery::Accept | Delivery::TryLater => {
                        let mailbox = Route {
                            channel: STORE_CHANNEL.into(),
                            address: store_address(&dir.store_owner(&u)),
                        };
                        let mut routed = false;
                        for opt in &u.delivery {
                            match opt {
                                DeliveryOption::Forward => {
                                    for f in u.forwarding.iter().rev() {
                                        work.push((f.clone(), depth + 1));
                                        routed = true;
                                    }
                                }
                                DeliveryOption::Hold => {
                                    push(Route {
                                        channel: HOLD_CHANNEL.into(),
                                        address: r.address.clone(),
                                    })?;
                                    routed = true;
                                }
                                DeliveryOption::Mailbox
                                | DeliveryOption::Native
                                | DeliveryOption::Unix
                                | DeliveryOption::Other(_) => {
                                    push(mailbox.clone())?;
                                    routed = true;
                                }
                                // Handled at delivery (autoreply) or not
                                // offered (program, file).
                                _ => {}
                            }
                        }
                        if !routed {
                            push(mailbox)?;
                        }
                    }
                },
                Some(Recipient::Group(g)) => {
                    match g.status.delivery() {
                        Delivery::Reject | Delivery::Hold if top => {
                            return Err(Reply::new(
                                550,
                                "5.2.1",
                                format!("{address}: group disabled"),
                            ));
                        }
                        Delivery::TryLater if top => {
                            return Err(Reply::new(
                                450,
                                "4.2.1",
                                format!("{address}: group temporarily unavailable"),
                            ));
                        }
                        Delivery::Accept => {}
                        _ => {
                            out.dropped.push((addr, "group disabled".into()));
                            continue;
                        }
                    }
                    if !self.may_broadcast(dir, &g, from).await? {
                        if top {
                            return Err(Reply::new(
                                550,
                                "5.7.1",
                                format!("{from} is not allowed to send to {address}"),
                            ));
                        }
                        out.dropped
                            .push((addr, format!("{from} may not send to it")));
                        continue;
                    }
                    let members = dir.expand(&g).await.map_err(|e| temporary(&e))?;
                    for m in members.into_iter().rev() {
                        work.push((m, depth + 1));
                    }
                }
            }
        }
        if out.routes.is_empty() {
            return Err(Reply::new(
                550,
                "5.1.1",
                format!("{address}: no deliverable recipients"),
            ));
        }
        Ok(out)
    }

    /// `mgrpAllowedBroadcaster`: empty lets anyone send; `mailto:` URLs
    /// name senders; LDAP URLs name entries whose addresses may send.
    async fn may_broadcast(
        &self,
        dir: &Directory,
        group: &epistle_directory::Group,
        from: &str,
    ) -> Result<bool, Reply> {
        if group.allowed_broadcasters.is_empty() {
            return Ok(true);
        }
        if from.is_empty() {
            return Ok(false);
        }
        for b in &group.allowed_broadcasters {
            if let Some(addr) = b.strip_prefix("mailto:") {
                if addr.trim().eq_ignore_ascii_case(from) {
                    return Ok(true);
                }
                continue;
            }
            let Some((base, scope, filter)) = epistle_directory::lookup::parse_ldap_url(b) else {
                continue;
            };
            let hits = dir
                .backend()
                .search(&base, scope, &filter)
                .await
                .map_err(|e| temporary(&e))?;
            let sender = |a: &str| a.eq_ignore_ascii_case(from);
            if hits.iter().any(|e| {
                ["mail", "mailAlternateAddress", "mailEquivalentAddress"]
                    .iter()
                    .any(|attr| e.get_all(attr).iter().any(|a| sender(a)))
            }) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_addresses_round_trip() {
        assert_eq!(store_address("joe"), "joe@ims-ms-daemon");
        assert_eq!(
            store_address("joe@other.org"),
            "joe%other.org@ims-ms-daemon"
        );
        assert_eq!(store_owner("joe@ims-ms-daemon"), Some(("joe".into(), None)));
        assert_eq!(
            store_owner("joe%other.org@ims-ms-daemon"),
            Some(("joe@other.org".into(), None))
        );
        assert_eq!(
            store_owner("joe+Lists@ims-ms-daemon"),
            Some(("joe".into(), Some("Lists".into())))
        );
        assert_eq!(store_owner("joe@example.com"), None);
        assert_eq!(store_owner("@ims-ms-daemon"), None);
    }
}
