//! The access tables' answers (original.md §2.4): what `PORT_ACCESS`,
//! `FROM_ACCESS`, `ORIG_SEND_ACCESS`, `SEND_ACCESS`, `ORIG_MAIL_ACCESS`
//! and `MAIL_ACCESS` say about a probe, read into one value, and what
//! `IP_ACCESS` says of an address an SMTP client is about to connect to.
//! Pure.
//!
//! A template may test the transaction's flags with `$:x` (the entry
//! applies only when flag x is set) and `$;x` (only when it is clear):
//! `A` SASL used, `T` TLS, `E` EHLO, `L` LMTP, `D`/`F`/`S` delay, failure
//! or success notices asked for. Its answer: `$Y` allow, `$N`/`$F`
//! refuse (the rest of the output is the reply, which may start with its
//! own code, `421 4.7.0 Not now`), and actions: `$B` to the bitbucket,
//! `$H` hold the message, `$V`/`$Z` discard every recipient. Arguments are
//! taken from the front of the output, `|`-separated, in this order: `$U`
//! a debug level, `$J` a new envelope From, `$K` a new `Sender:`, `$I` a
//! group check (`user|group`), `$<` text to log when the entry matches,
//! `$>` text to log when it refuses, `$D` a delay in hundredths of a
//! second (positive: every later command; negative: this once); what is
//! left is the reply text.

use crate::mapping::Mappings;

/// The flags an access probe is made with (`$:x` / `$;x`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessFlags {
    pub sasl: bool,
    pub tls: bool,
    pub esmtp: bool,
    pub lmtp: bool,
    pub notify_delay: bool,
    pub notify_failure: bool,
    pub notify_success: bool,
}

impl AccessFlags {
    /// The letters set, as `$:x` tests them.
    pub fn letters(&self) -> Vec<char> {
        [
            (self.sasl, 'A'),
            (self.tls, 'T'),
            (self.esmtp, 'E'),
            (self.lmtp, 'L'),
            (self.notify_delay, 'D'),
            (self.notify_failure, 'F'),
            (self.notify_success, 'S'),
        ]
        .into_iter()
        .filter_map(|(on, c)| on.then_some(c))
        .collect()
    }

    /// The flags a queued message's session had (its letters, as
    /// [`AccessFlags::letters`] wrote them) for a recipient with this
    /// NOTIFY.
    pub fn of_session(letters: &str, notify: Option<&str>) -> AccessFlags {
        let has = |c: char| letters.contains(c);
        let notify = notify
            .and_then(crate::smtp::Notify::parse)
            .unwrap_or_default();
        AccessFlags {
            sasl: has('A'),
            tls: has('T'),
            esmtp: has('E'),
            lmtp: has('L'),
            notify_delay: notify.delay,
            notify_failure: notify.failure,
            notify_success: notify.success,
        }
    }
}

/// A refusal: the SMTP reply the table asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The table's own 4xx or 5xx, if it wrote one (the caller has its
    /// default: 550 for a command, 421 at connect).
    pub code: Option<u16>,
    /// The table's own `x.y.z`, if it wrote one.
    pub enhanced: Option<String>,
    pub text: String,
}

/// What an access table said, with every action it asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessAnswer {
    pub refusal: Option<Refusal>,
    /// `$B`: to the bitbucket (this recipient, or every one from
    /// FROM_ACCESS).
    pub bitbucket: bool,
    /// `$H`: the message is held (`.HELD`) for an administrator.
    pub hold: bool,
    /// `$V` / `$Z`: every recipient of the message is discarded.
    pub discard_all: bool,
    /// `$J`: the envelope From becomes this.
    pub new_from: Option<String>,
    /// `$K`: the message's `Sender:` becomes this.
    pub new_sender: Option<String>,
    /// `$I`: a group check this MTA does not make; the answer refuses
    /// (temporarily) rather than let a check pass unmade.
    pub group_check: Option<String>,
    /// `$<`: logged when the entry matches.
    pub log_match: Option<String>,
    /// `$>`: logged when the entry refuses.
    pub log_reject: Option<String>,
    /// `$D` in hundredths of a second: positive slows every later
    /// command, negative this answer only.
    pub delay: Option<i32>,
}

/// The longest delay a table may ask for (the client's timeouts are
/// minutes; a tar pit longer than this only holds a slot).
pub const MAX_DELAY_CENTIS: i32 = 60 * 100;

impl AccessAnswer {
    /// The text to log for this answer, if the table asked for one.
    pub fn log_line(&self) -> Option<&str> {
        match &self.refusal {
            Some(_) => self.log_reject.as_deref().or(self.log_match.as_deref()),
            None => self.log_match.as_deref(),
        }
    }

    /// The delay as a duration, capped.
    pub fn delay(&self) -> Option<std::time::Duration> {
        self.delay.map(|d| {
            let centis = d.unsigned_abs().min(MAX_DELAY_CENTIS as u32);
            std::time::Duration::from_millis(u64::from(centis) * 10)
        })
    }

    /// A positive `$D`: the session slows down from here on.
    pub fn slows_session(&self) -> bool {
        self.delay.is_some_and(|d| d > 0)
    }
}

/// Asks `table` about `probe` with `flags`; `None` when the table has no
/// entry for it (or does not exist).
pub fn ask(
    mappings: &Mappings,
    table: &str,
    probe: &str,
    flags: AccessFlags,
) -> Option<AccessAnswer> {
    let r = mappings.lookup_flagged(table, probe, &flags.letters())?;
    Some(answer(&r.flags, &r.output))
}

/// Reads a matched entry's flags and output.
pub fn answer(flags: &[char], output: &str) -> AccessAnswer {
    let has = |c: char| flags.contains(&c);
    let mut rest = output;
    let mut take = |on: bool| -> Option<String> {
        if !on {
            return None;
        }
        let (field, after) = rest.split_once('|').unwrap_or((rest, ""));
        rest = after;
        Some(field.to_string())
    };
    let _debug = take(has('U'));
    let new_from = take(has('J')).filter(|a| !a.trim().is_empty());
    let new_sender = take(has('K')).filter(|a| !a.trim().is_empty());
    let group_check = match (take(has('I')), has('I')) {
        (Some(user), true) => Some(format!("{user}|{}", take(true).unwrap_or_default())),
        _ => None,
    };
    let log_match = take(has('<'));
    let log_reject = take(has('>'));
    let delay = take(has('D')).and_then(|d| d.trim().parse::<i32>().ok());
    let text = rest.trim();
    let refused = has('N') || has('F') || group_check.is_some();
    let refusal = refused.then(|| {
        if group_check.is_some() && !(has('N') || has('F')) {
            return Refusal {
                code: Some(451),
                enhanced: Some("4.3.5".into()),
                text: "Group checks ($I) are not supported here; ask the postmaster".into(),
            };
        }
        refusal_of(text)
    });
    AccessAnswer {
        refusal,
        bitbucket: has('B'),
        hold: has('H'),
        discard_all: has('V') || has('Z'),
        new_from,
        new_sender,
        group_check,
        log_match,
        log_reject,
        delay,
    }
}

/// What `IP_ACCESS` (6.3) says of connecting out to one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpVerdict {
    /// Connect to this address (the one asked about, or the `$A`
    /// replacement).
    Connect(std::net::IpAddr),
    /// `$I`: go on to the next address.
    Skip,
    /// `$N` / `$F`: deliver to none of this destination's addresses; the
    /// text says why (the table's, or a default).
    Refuse(String),
}

/// Asks `IP_ACCESS` before the channel `channel` connects to `ip`, the
/// `index`th (from 1) of the `count` addresses of `host`. The probe is
/// `channel|index|count|ip|host`; no entry, or `$Y`, connects; an `$A`
/// output that is not an address is ignored, as an entry without effect.
pub fn ip_access(
    mappings: &Mappings,
    channel: &str,
    index: usize,
    count: usize,
    ip: std::net::IpAddr,
    host: &str,
) -> IpVerdict {
    let probe = format!("{channel}|{index}|{count}|{ip}|{host}");
    let Some(r) = mappings.lookup("IP_ACCESS", &probe) else {
        return IpVerdict::Connect(ip);
    };
    let text = r.output.trim();
    if r.no() {
        return IpVerdict::Refuse(match text.is_empty() {
            true => format!("connections to {ip} are refused by IP_ACCESS"),
            false => text.to_string(),
        });
    }
    if r.has('I') {
        return IpVerdict::Skip;
    }
    if r.has('A') {
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if let Ok(other) = bare.trim_start_matches("IPv6:").parse() {
            return IpVerdict::Connect(other);
        }
        tracing::warn!("IP_ACCESS answered {text:?} for {probe}: not an address; ignored");
    }
    IpVerdict::Connect(ip)
}

/// `421 4.7.0 Not now` → code, enhanced code, text; an empty text says
/// "Access denied".
fn refusal_of(text: &str) -> Refusal {
    let (code, after) = match text.split_once(' ') {
        Some((c, after)) if is_refusal_code(c) => (c.parse().ok(), after.trim_start()),
        _ if is_refusal_code(text) => (text.parse().ok(), ""),
        _ => (None, text),
    };
    let class = code.map_or(5, |c| c / 100);
    let (enhanced, text) = match after.split_once(' ') {
        Some((e, t)) if is_enhanced(e, class) => (Some(e.to_string()), t.trim_start()),
        _ if is_enhanced(after, class) => (Some(after.to_string()), ""),
        _ => (None, after),
    };
    let text = if text.is_empty() {
        "Access denied"
    } else {
        text
    };
    Refusal {
        code,
        enhanced,
        text: text.chars().filter(|c| !c.is_control()).take(400).collect(),
    }
}

fn is_refusal_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) && matches!(s.as_bytes()[0], b'4' | b'5')
}

/// `x.y.z` whose class matches the reply code's.
fn is_enhanced(s: &str, class: u16) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0] == class.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ip_access_connects_skips_replaces_or_refuses() {
        use super::{IpVerdict, ip_access};
        let m = crate::mapping::Mappings::parse(
            "IP_ACCESS\n\n  tcp_local|*|*|$(10.0.0.0/8)|*  $NNo$ private$ networks\n\
             \x20 tcp_local|1|*|192.0.2.1|*  $I\n\
             \x20 tcp_local|*|*|192.0.2.9|mx.example  $A198.51.100.7\n\
             \x20 tcp_local|*|*|192.0.2.8|*  $Anonsense\n\
             \x20 *|*|*|192.0.2.10|*  $N\n",
        )
        .unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let ask = |i, ch: &str, a: &str, host: &str| ip_access(&m, ch, i, 3, ip(a), host);
        assert_eq!(
            ask(2, "tcp_local", "10.1.2.3", "mx.example"),
            IpVerdict::Refuse("No private networks".into())
        );
        assert_eq!(
            ask(1, "tcp_intranet", "10.1.2.3", "x"),
            IpVerdict::Connect(ip("10.1.2.3")),
            "another channel"
        );
        assert_eq!(ask(1, "tcp_local", "192.0.2.1", "x"), IpVerdict::Skip);
        assert_eq!(
            ask(2, "tcp_local", "192.0.2.1", "x"),
            IpVerdict::Connect(ip("192.0.2.1")),
            "only the first address"
        );
        assert_eq!(
            ask(1, "tcp_local", "192.0.2.9", "mx.example"),
            IpVerdict::Connect(ip("198.51.100.7"))
        );
        assert_eq!(
            ask(1, "tcp_local", "192.0.2.8", "x"),
            IpVerdict::Connect(ip("192.0.2.8"))
        );
        assert!(
            matches!(ask(1, "tcp_local", "192.0.2.10", "x"), IpVerdict::Refuse(t) if t.contains("192.0.2.10"))
        );
    }

    use super::*;

    #[test]
    fn a_queued_sessions_flags_come_back_with_the_recipients_notify() {
        let session = AccessFlags {
            tls: true,
            esmtp: true,
            ..AccessFlags::default()
        };
        let letters: String = session.letters().into_iter().collect();
        let back = AccessFlags::of_session(&letters, Some("FAILURE,DELAY"));
        assert_eq!(
            back,
            AccessFlags {
                notify_failure: true,
                notify_delay: true,
                ..session
            }
        );
        assert_eq!(
            AccessFlags::of_session("", Some("bogus")),
            AccessFlags::default()
        );
    }

    fn tables(text: &str) -> Mappings {
        Mappings::parse(text).unwrap()
    }

    #[test]
    fn arguments_come_off_the_front_in_their_order() {
        // Flag order in the template is free; the fields are taken U, J,
        // K, I, <, >, D, then the text.
        let a = answer(
            &['N', 'D', 'J', '<'],
            "bounce@example.com|matched|30|Relaying not allowed",
        );
        assert_eq!(a.new_from.as_deref(), Some("bounce@example.com"));
        assert_eq!(a.log_match.as_deref(), Some("matched"));
        assert_eq!(a.delay, Some(30));
        let r = a.refusal.unwrap();
        assert_eq!((r.code, r.text.as_str()), (None, "Relaying not allowed"));
        assert_eq!(r.enhanced, None);
    }

    #[test]
    fn a_reply_may_bring_its_own_code() {
        let a = answer(&['N'], "421 4.7.0 Connection not accepted at this time");
        let r = a.refusal.unwrap();
        assert_eq!(r.code, Some(421));
        assert_eq!(r.enhanced.as_deref(), Some("4.7.0"));
        assert_eq!(r.text, "Connection not accepted at this time");
        let r = answer(&['N'], "").refusal.unwrap();
        assert_eq!((r.code, r.text.as_str()), (None, "Access denied"));
        // 250 is no refusal code; a 5.x.x after a 4xx is just text.
        let r = answer(&['N'], "250 fine").refusal.unwrap();
        assert_eq!((r.code, r.text.as_str()), (None, "250 fine"));
        let r = answer(&['N'], "451 5.7.1 odd").refusal.unwrap();
        assert_eq!(
            (r.code, r.enhanced, r.text.as_str()),
            (Some(451), None, "5.7.1 odd")
        );
        let r = answer(&['N'], "5.7.9 no code").refusal.unwrap();
        assert_eq!((r.code, r.enhanced.as_deref()), (None, Some("5.7.9")));
    }

    #[test]
    fn actions_and_an_unmade_group_check() {
        let a = answer(&['Y', 'B', 'H', 'K'], "editor@example.com");
        assert!(a.refusal.is_none() && a.bitbucket && a.hold && !a.discard_all);
        assert_eq!(a.new_sender.as_deref(), Some("editor@example.com"));
        let a = answer(&['Y', 'I'], "joe|staff");
        assert_eq!(a.group_check.as_deref(), Some("joe|staff"));
        assert_eq!(a.refusal.unwrap().code, Some(451));
        assert_eq!(answer(&['D'], "-150|").delay().unwrap().as_millis(), 1500);
        assert_eq!(answer(&['D'], "999999").delay().unwrap().as_secs(), 60);
        assert!(!answer(&['D'], "-5").slows_session());
    }

    #[test]
    fn flag_tests_choose_the_entry() {
        let m = tables(
            "FROM_ACCESS\n\n  TCP|*|*|*|*|*|*|  $:A$Y\n  TCP|*|*|*|*|*|*|*  $;T$NUse$ TLS\n  *  $Y\n",
        );
        let probe = "TCP|127.0.0.1|25|127.0.0.2|4000|SMTP/x|a@b.c|";
        let plain = AccessFlags::default();
        let sasl = AccessFlags {
            sasl: true,
            ..plain
        };
        let tls = AccessFlags { tls: true, ..plain };
        assert!(
            ask(&m, "FROM_ACCESS", probe, sasl)
                .unwrap()
                .refusal
                .is_none()
        );
        let r = ask(&m, "FROM_ACCESS", probe, plain)
            .unwrap()
            .refusal
            .unwrap();
        assert_eq!(r.text, "Use TLS");
        assert!(
            ask(&m, "FROM_ACCESS", probe, tls)
                .unwrap()
                .refusal
                .is_none()
        );
        assert!(ask(&m, "NO_SUCH_TABLE", probe, tls).is_none());
        assert_eq!(
            AccessFlags {
                esmtp: true,
                notify_failure: true,
                ..plain
            }
            .letters(),
            vec!['E', 'F']
        );
    }
}
