//! The channel option files, `config/<channel>_option` (the original's
//! `tcp_local_option` and the like): what the SMTP server, the SMTP client
//! and the delivery programs read from them, with their defaults, and the
//! check `imsimta cnbuild` makes of their values. Pure.
//!
//! As in the original, an SMTP server reads the options of its service's
//! own channel (the dispatcher's `PARAMETER=CHANNEL=…`, else tcp_local)
//! and no other: a session that `switchchannel` moves keeps them. An SMTP
//! client reads those of the channel it delivers for. Times are minutes,
//! and may have a fraction (`0.5` is 30 seconds).

use std::time::Duration;

use crate::compiled::MtaConfig;
use crate::optionfile::{OptionFile, int};

/// Recipients one transaction may name when the file does not say; RFC
/// 5321 §4.5.3.1.8 asks a server to take at least 100.
pub const DEFAULT_RECIPIENTS_PER_TRANSACTION: usize = 1000;
const MIN_RECIPIENTS_PER_TRANSACTION: usize = 100;
/// RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for a command.
const DEFAULT_COMMAND_RECEIVE_TIME: Duration = Duration::from_secs(5 * 60);
/// Waiting for more message text: the 10 minutes §4.5.3.2.6 gives a
/// client for the final reply, so a slow link is never cut first here.
const DEFAULT_DATA_RECEIVE_TIME: Duration = Duration::from_secs(10 * 60);
/// The longest any of the times may be set to.
const MAX_TIME: Duration = Duration::from_secs(24 * 3600);

/// What an option's value must be.
#[derive(Clone, Copy)]
enum Kind {
    /// A count of at least 1 (decimal or `b%v`).
    Count,
    /// Minutes, more than 0 and at most a day.
    Minutes,
    /// Text on one line without `|` (it goes into replies as it is).
    Text,
    /// Hundredths of a second, 0 (off) to a minute.
    Centiseconds,
}

/// The options Epistle reads, and what their values must be. Other names
/// (the original has many more) are kept but not read, so a file brought
/// from an old installation still builds.
const KNOWN: &[(&str, Kind)] = &[
    ("ALLOW_ETRNS_PER_SESSION", Kind::Count),
    ("ALLOW_RECIPIENTS_PER_TRANSACTION", Kind::Count),
    ("ALLOW_REJECTIONS_BEFORE_DEFERRAL", Kind::Count),
    ("ALLOW_TRANSACTIONS_PER_SESSION", Kind::Count),
    ("BANNER_ADDITION", Kind::Text),
    ("BANNER_HOST", Kind::Text),
    ("BANNER_PURGE_DELAY", Kind::Centiseconds),
    ("COMMAND_RECEIVE_TIME", Kind::Minutes),
    ("COMMAND_TRANSMIT_TIME", Kind::Minutes),
    ("DATA_RECEIVE_TIME", Kind::Minutes),
    ("DATA_TRANSMIT_TIME", Kind::Minutes),
    ("MAX_CLIENT_THREADS", Kind::Count),
];

/// Checks the values of the options Epistle reads; the error names the
/// option and says what it must be.
pub fn check(file: &OptionFile) -> Result<(), String> {
    for (name, kind) in KNOWN {
        let Some(value) = file.global(name) else {
            continue;
        };
        let ok = match kind {
            Kind::Count => count(value).is_some(),
            Kind::Minutes => minutes(value).is_some(),
            Kind::Text => text(value).is_some(),
            Kind::Centiseconds => centiseconds(value).is_some(),
        };
        if !ok {
            let want = match kind {
                Kind::Count => "a whole number of at least 1",
                Kind::Minutes => "a number of minutes above 0 and at most 1440 (0.5 is 30 seconds)",
                Kind::Text => "text without \"|\"",
                Kind::Centiseconds => "hundredths of a second from 0 to 6000",
            };
            return Err(format!("{name}={value} is not {want}"));
        }
    }
    Ok(())
}

fn count(v: &str) -> Option<usize> {
    int(v)
        .filter(|n| *n >= 1)
        .and_then(|n| usize::try_from(n).ok())
}

/// Minutes, whole (`b%v` too) or with a fraction, as a duration of at
/// least a second.
pub fn minutes(v: &str) -> Option<Duration> {
    let m = match int(v) {
        Some(n) => n as f64,
        None => v.trim().parse::<f64>().ok()?,
    };
    if !m.is_finite() || m <= 0.0 {
        return None;
    }
    let d = Duration::from_secs_f64(m * 60.0).max(Duration::from_secs(1));
    (d <= MAX_TIME).then_some(d)
}

fn centiseconds(v: &str) -> Option<Duration> {
    let n = int(v).filter(|n| (0..=6000).contains(n))?;
    Some(Duration::from_millis(n as u64 * 10))
}

fn text(v: &str) -> Option<&str> {
    let v = v.trim();
    (!v.is_empty() && !v.contains('|')).then_some(v)
}

/// An SMTP server's options: those of its service's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServerOptions {
    /// `ALLOW_RECIPIENTS_PER_TRANSACTION`: more get 452 (never fewer than
    /// 100).
    pub recipients_per_transaction: usize,
    /// `ALLOW_REJECTIONS_BEFORE_DEFERRAL`: once this many recipients of a
    /// session were refused, every later one is deferred (4xx), good or
    /// bad, so an address harvester learns nothing more. No limit when
    /// unset.
    pub rejections_before_deferral: Option<usize>,
    /// `ALLOW_TRANSACTIONS_PER_SESSION`: messages one connection may
    /// send (with the channel's `transactionlimit`, the lower counts). No
    /// limit when unset.
    pub transactions_per_session: Option<usize>,
    /// `ALLOW_ETRNS_PER_SESSION` (1 when unset).
    pub etrns_per_session: usize,
    /// `BANNER_HOST`: the name in the greeting instead of the host's.
    pub banner_host: Option<String>,
    /// `BANNER_ADDITION`: text added to the end of the greeting.
    pub banner_addition: Option<String>,
    /// `BANNER_PURGE_DELAY` (hundredths of a second): the greeting waits
    /// this long, and whatever the client sent meanwhile is thrown away.
    /// A client that talks before it is greeted (a spam engine, not a
    /// mail server) loses its first commands. Zero when not set: off.
    pub banner_purge_delay: Duration,
    /// `COMMAND_RECEIVE_TIME`: how long a command is waited for.
    pub command_timeout: Duration,
    /// `DATA_RECEIVE_TIME`: how long more message text is waited for.
    pub data_timeout: Duration,
}

impl SmtpServerOptions {
    pub fn of(mta: &MtaConfig, channel: &str) -> SmtpServerOptions {
        let get = |name: &str| mta.channel_option(channel, name);
        SmtpServerOptions {
            recipients_per_transaction: get("ALLOW_RECIPIENTS_PER_TRANSACTION")
                .and_then(count)
                .unwrap_or(DEFAULT_RECIPIENTS_PER_TRANSACTION)
                .max(MIN_RECIPIENTS_PER_TRANSACTION),
            rejections_before_deferral: get("ALLOW_REJECTIONS_BEFORE_DEFERRAL").and_then(count),
            transactions_per_session: get("ALLOW_TRANSACTIONS_PER_SESSION").and_then(count),
            etrns_per_session: get("ALLOW_ETRNS_PER_SESSION").and_then(count).unwrap_or(1),
            banner_host: get("BANNER_HOST").and_then(text).map(str::to_string),
            banner_addition: get("BANNER_ADDITION").and_then(text).map(str::to_string),
            banner_purge_delay: get("BANNER_PURGE_DELAY")
                .and_then(centiseconds)
                .unwrap_or_default(),
            command_timeout: get("COMMAND_RECEIVE_TIME")
                .and_then(minutes)
                .unwrap_or(DEFAULT_COMMAND_RECEIVE_TIME),
            data_timeout: get("DATA_RECEIVE_TIME")
                .and_then(minutes)
                .unwrap_or(DEFAULT_DATA_RECEIVE_TIME),
        }
    }
}

/// An SMTP (or LMTP) client's options: those of the channel it delivers
/// for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmtpClientOptions {
    /// `BANNER_HOST`: the name said in EHLO/LHLO instead of the host's.
    pub banner_host: Option<String>,
    /// `COMMAND_TRANSMIT_TIME`: the most a command and its reply may take.
    pub command_time: Option<Duration>,
    /// `DATA_TRANSMIT_TIME`: the most one block of message text may take
    /// to send.
    pub data_time: Option<Duration>,
}

impl SmtpClientOptions {
    pub fn of(mta: &MtaConfig, channel: &str) -> SmtpClientOptions {
        let get = |name: &str| mta.channel_option(channel, name);
        SmtpClientOptions {
            banner_host: get("BANNER_HOST").and_then(text).map(str::to_string),
            command_time: get("COMMAND_TRANSMIT_TIME").and_then(minutes),
            data_time: get("DATA_TRANSMIT_TIME").and_then(minutes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiled::CompiledConfig;

    fn config(files: &[(&str, &str)]) -> MtaConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("imta.cnf"),
            "a b\n\nl\nlocalhost\n\ntcp_local smtp\ntcp-daemon\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("mappings"), "").unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        CompiledConfig::build(dir.path(), 0)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn minutes_may_be_whole_based_or_fractional() {
        assert_eq!(minutes("10"), Some(Duration::from_secs(600)));
        assert_eq!(minutes("16%a"), Some(Duration::from_secs(600)));
        assert_eq!(minutes("0.5"), Some(Duration::from_secs(30)));
        assert_eq!(
            minutes("0.001"),
            Some(Duration::from_secs(1)),
            "a second at least"
        );
        for bad in ["0", "-1", "ten", "NaN", "inf", "1441", ""] {
            assert_eq!(minutes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn server_options_come_from_the_channels_own_file_with_defaults() {
        let mta = config(&[(
            "tcp_local_option",
            "ALLOW_RECIPIENTS_PER_TRANSACTION=20\nALLOW_REJECTIONS_BEFORE_DEFERRAL=3\n\
             ALLOW_TRANSACTIONS_PER_SESSION=8%12\nBANNER_HOST=mx.example.com\n\
             BANNER_ADDITION=No UCE\nCOMMAND_RECEIVE_TIME=2\nDATA_RECEIVE_TIME=0.25\n\
             BANNER_PURGE_DELAY=50\n",
        )]);
        let o = SmtpServerOptions::of(&mta, "tcp_local");
        assert_eq!(o.recipients_per_transaction, 100, "RFC 5321's 100 at least");
        assert_eq!(o.rejections_before_deferral, Some(3));
        assert_eq!(o.transactions_per_session, Some(10));
        assert_eq!(o.etrns_per_session, 1);
        assert_eq!(o.banner_host.as_deref(), Some("mx.example.com"));
        assert_eq!(o.banner_addition.as_deref(), Some("No UCE"));
        assert_eq!(o.command_timeout, Duration::from_secs(120));
        assert_eq!(o.data_timeout, Duration::from_secs(15));
        assert_eq!(o.banner_purge_delay, Duration::from_millis(500));

        let other = SmtpServerOptions::of(&mta, "tcp_submit");
        assert_eq!(
            other.recipients_per_transaction,
            DEFAULT_RECIPIENTS_PER_TRANSACTION
        );
        assert_eq!(other.rejections_before_deferral, None);
        assert_eq!(other.transactions_per_session, None);
        assert_eq!(other.banner_host, None);
        assert_eq!(other.command_timeout, DEFAULT_COMMAND_RECEIVE_TIME);
        assert_eq!(other.data_timeout, DEFAULT_DATA_RECEIVE_TIME);
        assert_eq!(other.banner_purge_delay, Duration::ZERO);
    }

    #[test]
    fn client_options_name_the_ehlo_host_and_the_times() {
        let mta = config(&[(
            "tcp_local_option",
            "BANNER_HOST=out.example.com\nCOMMAND_TRANSMIT_TIME=1\nDATA_TRANSMIT_TIME=3\n",
        )]);
        let o = SmtpClientOptions::of(&mta, "TCP_LOCAL");
        assert_eq!(o.banner_host.as_deref(), Some("out.example.com"));
        assert_eq!(o.command_time, Some(Duration::from_secs(60)));
        assert_eq!(o.data_time, Some(Duration::from_secs(180)));
        assert_eq!(
            SmtpClientOptions::of(&mta, "tcp_intranet"),
            SmtpClientOptions::default()
        );
    }

    #[test]
    fn cnbuild_refuses_a_value_it_cannot_use_and_keeps_unknown_options() {
        let check_text = |t: &str| check(&OptionFile::parse(t).unwrap());
        assert!(check_text("TRACE_LEVEL=1\nCOMMAND_RECEIVE_TIME=5\n").is_ok());
        let e = check_text("COMMAND_RECEIVE_TIME=soon\n").unwrap_err();
        assert!(
            e.contains("COMMAND_RECEIVE_TIME=soon") && e.contains("minutes"),
            "{e}"
        );
        let e = check_text("ALLOW_ETRNS_PER_SESSION=0\n").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        assert!(check_text("BANNER_PURGE_DELAY=0\n").is_ok());
        let e = check_text("BANNER_PURGE_DELAY=6001\n").unwrap_err();
        assert!(e.contains("hundredths"), "{e}");
        let e = check_text("BANNER_ADDITION=a|b\n").unwrap_err();
        assert!(e.contains("\"|\""), "{e}");
    }
}
