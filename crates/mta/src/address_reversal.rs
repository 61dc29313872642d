//! What a message's addresses go through on their way into the queues, as
//! the original does it:
//!
//! - A header address without a domain (a short form, `joe`) gets one:
//!   the name the SMTP client gave in HELO/EHLO when the source channel
//!   has `remotehost`, the domain of its `defaulthost`, else the default
//!   domain (the original's `noremotehost` takes its host name; users'
//!   addresses here are in the default domain, as sendmail's are).
//! - Every header address then goes through the rewrite rules as a
//!   header address (`$B` rules apply, `$E` rules do not), forward or
//!   backward by its field (`$F`, `$R`), from the source channel (`$M`,
//!   `$N`); the address the rule makes replaces it, so a rule such as
//!   `host.example.com  $U%example.com@tcp_local-daemon$B` masquerades
//!   the host. A rule that only changes the case of the domain changes
//!   nothing. `$Q` and `$C` are not honoured here: the header is
//!   rewritten once for every destination.
//! - Address reversal: an address that is a user's `mailAlternateAddress`
//!   becomes the user's `mail`; then the REVERSE mapping, probed with the
//!   address, replaces it when the entry says `$Y` (`$N` leaves it).
//!   Header addresses are reversed, and the envelope From too unless
//!   option.dat says `REVERSE_ENVELOPE=0`. option.dat's
//!   `USE_REVERSE_DATABASE` (5) is a bit mask as in the original: 1 uses
//!   the REVERSE mapping, 4 reverses every header address rather than
//!   only those pointing back to the sender (From:, Sender:, Reply-To:
//!   …). A destination channel with `noreverse` gets the message
//!   unreversed.
//! - With `inner` on the source channel, the headers of enclosed messages
//!   are treated as the message's own.
//!
//! A directory that cannot be asked leaves an address as it is: a
//! message is never refused for its header.

use std::collections::HashMap;

use epistle_directory::{Directory, Recipient};

use crate::compiled::MtaConfig;
use crate::header_addresses::{BACKWARD_FIELDS, qualify, rewrite_addresses};
use crate::optionfile::int;
use crate::rewrite::{Context, Rewriter};

/// Most distinct addresses of one message looked up in the directory.
const MAX_LOOKUPS: usize = 100;
/// Most distinct addresses of one message put through the rewrite rules
/// (the rest are only completed): a header of a thousand long made-up
/// domains costs tens of milliseconds, not a quarter of a second.
const MAX_REWRITES: usize = 200;

/// How a source channel treats the addresses of the mail it brings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    /// The channel the mail comes in on (for the rules' `$M`, `$N`).
    pub source_channel: String,
    /// The domain a short-form address gets.
    pub short_form_domain: String,
    /// `inner`: enclosed messages' headers too.
    pub inner: bool,
}

impl AddressPolicy {
    /// For mail from `channel`, whose client said `helo`, in a site whose
    /// default domain is `default_domain`.
    pub fn of(mta: &MtaConfig, channel: &str, helo: Option<&str>, default_domain: &str) -> Self {
        let ch = mta.imta.channel(channel);
        let last = |group: &[&str]| ch.and_then(|c| c.last_of(group)).map(|k| k.name.clone());
        let remote = last(&["remotehost", "noremotehost"]).as_deref() == Some("remotehost");
        let default_host = match last(&["defaulthost", "nodefaulthost"]).as_deref() {
            Some("defaulthost") => ch.and_then(|c| c.arg("defaulthost")).map(str::to_string),
            _ => None,
        };
        // A name, or an address literal kept in its brackets.
        let helo = helo.map(str::trim).filter(|h| {
            let bare = h
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(h);
            !bare.is_empty() && h.len() <= 255 && bare.chars().all(is_domain_char)
        });
        let short_form_domain = match (remote, helo, default_host) {
            (true, Some(h), _) => h.to_string(),
            (_, _, Some(d)) => d,
            _ => default_domain.to_string(),
        };
        AddressPolicy {
            source_channel: channel.to_string(),
            short_form_domain,
            inner: last(&["inner", "noinner"]).as_deref() == Some("inner"),
        }
    }
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')
}

/// Whether the queue of `channel` takes reversed addresses (`reverse`,
/// the default, or `noreverse`).
pub fn reverses(mta: &MtaConfig, channel: &str) -> bool {
    mta.imta
        .channel(channel)
        .and_then(|c| c.last_of(&["reverse", "noreverse"]))
        .is_none_or(|k| k.name == "reverse")
}

/// A message's addresses once treated: what changed, for each kind of
/// destination channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Treated {
    /// The message with short forms completed and the rewrite rules
    /// applied (for `noreverse` channels); `None` when that changed
    /// nothing.
    pub plain: Option<Vec<u8>>,
    /// The message with its addresses also reversed (for the others);
    /// `None` when reversal changed nothing further.
    pub reversed: Option<Vec<u8>>,
    /// The envelope From reversed, when that changed it.
    pub from: Option<String>,
}

/// option.dat's `USE_REVERSE_DATABASE` (5 when not set): bit 0 turns the
/// REVERSE mapping on; bit 2 reverses every header address, not only
/// those that point back to the sender (From:, Sender:, Reply-To: …).
struct ReversalBits {
    table: bool,
    all_fields: bool,
}

impl ReversalBits {
    fn of(mta: &MtaConfig) -> ReversalBits {
        let bits = mta
            .options
            .global("USE_REVERSE_DATABASE")
            .and_then(int)
            .unwrap_or(5);
        ReversalBits {
            table: bits & 1 != 0,
            all_fields: bits & 4 != 0,
        }
    }
}

/// Treats `message` (and the envelope `from`) as the module says.
pub async fn treat(
    mta: &MtaConfig,
    directory: Option<&Directory>,
    policy: &AddressPolicy,
    message: &[u8],
    from: &str,
) -> Treated {
    let bits = ReversalBits::of(mta);
    let reversible = |field: &str| bits.all_fields || BACKWARD_FIELDS.contains(&field);
    let forward = |field: &str| !BACKWARD_FIELDS.contains(&field);
    let rewriter = Rewriter::new(&mta.imta, &mta.mappings);
    // Every address as it reads completed and rewritten, by the address
    // and whether its field points forward (the rules may tell the two
    // apart); those reversal may change apart.
    let mut qualified: HashMap<(String, bool), String> = HashMap::new();
    let mut candidates: Vec<String> = Vec::new();
    rewrite_addresses(message, policy.inner, &mut |field, a| {
        let key = (a.to_string(), forward(field));
        let q = match qualified.get(&key) {
            Some(q) => q.clone(),
            None => {
                let q = qualify(a, &policy.short_form_domain).unwrap_or_else(|| a.to_string());
                let q = match qualified.len() < MAX_REWRITES {
                    true => by_rules(&rewriter, &q, key.1, &policy.source_channel).unwrap_or(q),
                    false => q,
                };
                qualified.insert(key, q.clone());
                q
            }
        };
        if reversible(field) {
            candidates.push(q);
        }
        None
    });
    let reverse_envelope = mta.options.global("REVERSE_ENVELOPE").and_then(int) != Some(0);
    if reverse_envelope && !from.is_empty() {
        candidates.push(from.to_string());
    }
    candidates.sort_unstable();
    candidates.dedup();
    let mut reversed: HashMap<String, String> = HashMap::new();
    for address in candidates.into_iter().take(MAX_LOOKUPS) {
        if let Some(r) = reverse(mta, directory, &address, bits.table).await {
            reversed.insert(address, r);
        }
    }
    // The usual message has neither short forms nor addresses to
    // reverse: it is not walked again.
    let treated = |field: &str, a: &str| qualified.get(&(a.to_string(), forward(field)));
    let plain = match qualified.iter().any(|((a, _), q)| a != q) {
        true => rewrite_addresses(message, policy.inner, &mut |field, a| {
            treated(field, a).cloned()
        }),
        false => None,
    };
    let reversed_text = if reversed.is_empty() {
        None
    } else {
        rewrite_addresses(message, policy.inner, &mut |field, a| {
            let q = treated(field, a)?;
            match reversible(field) {
                true => Some(reversed.get(q).unwrap_or(q).clone()),
                false => Some(q.clone()),
            }
        })
        .filter(|r| Some(r) != plain.as_ref())
    };
    Treated {
        plain,
        reversed: reversed_text,
        from: reversed.get(from).filter(|_| reverse_envelope).cloned(),
    }
}

/// A header address as the rewrite rules make it, when they change more
/// than the case of its domain (the rules match domains in lower case).
fn by_rules(rewriter: &Rewriter, address: &str, forward: bool, source: &str) -> Option<String> {
    let ctx = Context {
        envelope: false,
        forward,
        source_channel: source,
    };
    let made = rewriter.rewrite(address, &ctx).ok()?.address;
    let same = match (made.rsplit_once('@'), address.rsplit_once('@')) {
        (Some((l1, d1)), Some((l2, d2))) => l1 == l2 && d1.eq_ignore_ascii_case(d2),
        _ => made == address,
    };
    (!same).then_some(made)
}

/// One address reversed: by the directory, then the REVERSE mapping.
async fn reverse(
    mta: &MtaConfig,
    directory: Option<&Directory>,
    address: &str,
    use_table: bool,
) -> Option<String> {
    let mut current = address.to_string();
    if let (Some(dir), Some((_, _))) = (directory, address.rsplit_once('@')) {
        match dir.recipient(address).await {
            Ok(Some(Recipient::User(u))) => {
                let alternate = u.alternates.iter().any(|a| a.eq_ignore_ascii_case(address));
                if let (true, Some(mail)) = (alternate, &u.mail) {
                    current = mail.clone();
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("address reversal of {address} skipped: {e}"),
        }
    }
    if use_table
        && let Some(r) = mta.mappings.lookup("REVERSE", &current)
        && r.yes()
        && !r.output.trim().is_empty()
    {
        current = r.output.trim().to_string();
    }
    (current != address).then_some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiled::CompiledConfig;

    fn config(imta: &str, mappings: &str, options: &str) -> MtaConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("imta.cnf"), imta).unwrap();
        std::fs::write(dir.path().join("mappings"), mappings).unwrap();
        std::fs::write(dir.path().join("option.dat"), options).unwrap();
        CompiledConfig::build(dir.path(), 0)
            .unwrap()
            .parse()
            .unwrap()
    }

    const IMTA: &str = "a b\n\nl\nlocalhost\n\n\
        tcp_local smtp remotehost inner\ntcp-daemon\n\n\
        tcp_intranet smtp noreverse defaulthost corp.example\ntcp_intranet-daemon\n\n\
        tcp_submit smtp\ntcp_submit-daemon\n";

    #[test]
    fn short_forms_take_the_channels_domain() {
        let mta = config(IMTA, "", "");
        let p = |ch: &str, helo: Option<&str>| AddressPolicy::of(&mta, ch, helo, "example.com");
        assert_eq!(
            p("tcp_local", Some("client.example.org")).short_form_domain,
            "client.example.org"
        );
        assert!(p("tcp_local", None).inner);
        assert_eq!(
            p("tcp_local", Some("bad host")).short_form_domain,
            "example.com",
            "not a name"
        );
        assert_eq!(
            p("tcp_local", Some("[192.0.2.7]")).short_form_domain,
            "[192.0.2.7]",
            "an address literal keeps its brackets"
        );
        assert_eq!(p("tcp_local", Some("[]")).short_form_domain, "example.com");
        assert_eq!(
            p("tcp_intranet", Some("x.example")).short_form_domain,
            "corp.example"
        );
        assert_eq!(
            p("tcp_submit", Some("x.example")).short_form_domain,
            "example.com"
        );
        assert!(!p("tcp_submit", None).inner);
        assert!(!reverses(&mta, "tcp_intranet") && reverses(&mta, "tcp_submit"));
    }

    #[tokio::test]
    async fn header_addresses_go_through_the_rewrite_rules() {
        let rules = "host.example.com  $U%example.com@tcp-daemon$B$R\n\
            host.example.com  $U%$D@tcp-daemon\n\
            other.example  $U%$D@tcp-daemon\n\
            elsewhere.example  $U%example.net@tcp-daemon$Mtcp_intranet\n\
            elsewhere.example  $U%$D@tcp-daemon\n";
        let mta = config(&IMTA.replacen("a b\n", rules, 1), "", "");
        let policy = AddressPolicy::of(&mta, "tcp_submit", None, "host.example.com");
        let m = b"From: Joe <joe@HOST.example.com>\r\nTo: ann@host.example.com, eve\r\n\
            Cc: bob@OTHER.example, amy@elsewhere.example\r\n\r\nbody\r\n";
        let t = treat(&mta, None, &policy, m, "joe@host.example.com").await;
        // Backward only ($R); the short form is completed first and then
        // rewritten as the To: it is in; a case-only change is none.
        assert_eq!(
            t.plain.as_deref(),
            Some(&b"From: Joe <joe@example.com>\r\nTo: ann@host.example.com, eve@host.example.com\r\n\
                Cc: bob@OTHER.example, amy@elsewhere.example\r\n\r\nbody\r\n"[..])
        );
        assert_eq!(t.reversed, None);
        assert_eq!(t.from, None, "header rules ($B) leave the envelope alone");
        // $M: only for mail from that channel.
        let intranet = AddressPolicy::of(&mta, "tcp_intranet", None, "host.example.com");
        let t = treat(
            &mta,
            None,
            &intranet,
            b"To: amy@elsewhere.example\r\n\r\n",
            "",
        )
        .await;
        assert_eq!(
            t.plain.as_deref(),
            Some(&b"To: amy@example.net\r\n\r\n"[..])
        );
    }

    #[tokio::test]
    async fn the_reverse_mapping_replaces_on_y_only_and_can_be_turned_off() {
        let mappings = "REVERSE\n\n  *@host1.example.com  $0@example.com$Y\n  *@host2.example.com  $0@elsewhere$N\n";
        let mta = config(IMTA, mappings, "");
        let policy = AddressPolicy::of(&mta, "tcp_submit", None, "example.com");
        let m = b"From: Joe <joe@host1.example.com>\r\nTo: ann@host2.example.com, bob\r\nCc: eve@host1.example.com\r\n\r\nbody\r\n";
        let t = treat(&mta, None, &policy, m, "joe@host1.example.com").await;
        assert_eq!(
            t.plain.as_deref(),
            Some(&b"From: Joe <joe@host1.example.com>\r\nTo: ann@host2.example.com, bob@example.com\r\nCc: eve@host1.example.com\r\n\r\nbody\r\n"[..])
        );
        assert_eq!(
            t.reversed.as_deref(),
            Some(&b"From: Joe <joe@example.com>\r\nTo: ann@host2.example.com, bob@example.com\r\nCc: eve@example.com\r\n\r\nbody\r\n"[..])
        );
        assert_eq!(t.from.as_deref(), Some("joe@example.com"));
        // Bit 2 clear: only the addresses pointing back to the sender.
        let backward = config(IMTA, mappings, "USE_REVERSE_DATABASE=1\n");
        let t = treat(&backward, None, &policy, m, "joe@host1.example.com").await;
        assert_eq!(
            t.reversed.as_deref(),
            Some(&b"From: Joe <joe@example.com>\r\nTo: ann@host2.example.com, bob@example.com\r\nCc: eve@host1.example.com\r\n\r\nbody\r\n"[..])
        );

        let off = config(IMTA, mappings, "USE_REVERSE_DATABASE=0\n");
        let t = treat(&off, None, &policy, m, "joe@host1.example.com").await;
        assert_eq!(t.reversed, None);
        assert_eq!(t.from, None);
        let no_envelope = config(IMTA, mappings, "REVERSE_ENVELOPE=0\n");
        let t = treat(&no_envelope, None, &policy, m, "joe@host1.example.com").await;
        assert!(t.reversed.is_some());
        assert_eq!(t.from, None);
        // Nothing to do: nothing copied.
        let t = treat(
            &mta,
            None,
            &policy,
            b"From: ann@example.org\r\n\r\n",
            "ann@example.org",
        )
        .await;
        assert_eq!(t, Treated::default());
    }
}
