//! Where stored gets each user's quota: `mailQuota` / `mailMsgQuota` from
//! the directory (absent: `store.defaultmailboxquota` /
//! `store.defaultmessagequota`), enforced when `store.quotaenforcement`
//! is on, with a warning at `store.quotawarn` percent. A directory that
//! cannot be reached does not stop mail: the append goes through and the
//! failure is logged.

use epistle_config::{Config, MsgSvrBase};
use epistle_directory::{Directory, Limit};
use epistle_store::db::{Quota, QuotaWarning};

pub struct Quotas {
    directory: Option<Directory>,
    enforce: bool,
    warn_percent: u8,
    default_bytes: Limit,
    default_messages: Limit,
}

fn limit(l: Limit) -> Option<u64> {
    match l {
        Limit::Unlimited => None,
        Limit::Max(n) => Some(n),
    }
}

impl Quotas {
    pub async fn from_config(base: &MsgSvrBase, cfg: &Config) -> Quotas {
        let directory = match epistle_directory::open(base, cfg).await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(target: "LDAP", "quotas cannot be read from the directory ({e}); defaults apply");
                None
            }
        };
        Quotas {
            directory,
            enforce: cfg.get_bool("store.quotaenforcement"),
            warn_percent: u8::try_from(cfg.get_int("store.quotawarn").clamp(0, 100)).unwrap_or(90),
            default_bytes: Limit::parse(None, cfg.get("store.defaultmailboxquota")),
            default_messages: Limit::parse(None, cfg.get("store.defaultmessagequota")),
        }
    }

    /// The quota of the store user `user` (a uid, or uid@domain).
    pub async fn of(&self, user: &str) -> Quota {
        let (bytes, messages) = match &self.directory {
            None => (self.default_bytes, self.default_messages),
            Some(d) => match d.user_by_login(user).await {
                Ok(Some(u)) => (u.disk_quota, u.message_quota),
                Ok(None) => (self.default_bytes, self.default_messages),
                Err(e) => {
                    tracing::warn!(target: "LDAP", "quota of {user} unknown ({e}); not enforced for this message");
                    return Quota {
                        warn_percent: 0,
                        ..Quota::UNLIMITED
                    };
                }
            },
        };
        if !self.enforce {
            // Usage is still kept and warned about; nothing is refused.
            return Quota {
                bytes: None,
                messages: None,
                warn_percent: 0,
            };
        }
        Quota {
            bytes: limit(bytes),
            messages: limit(messages),
            warn_percent: self.warn_percent,
        }
    }
}

/// The warning message a user gets when crossing the threshold.
pub fn warning_message(user: &str, w: &QuotaWarning, from: &str, host: &str) -> String {
    let now = chrono::Local::now();
    let mut lines = vec![
        format!("Your mailbox has reached {}% of its quota.", w.percent),
        String::new(),
    ];
    if let Some(b) = w.quota.bytes {
        lines.push(format!("Size: {} of {} KB.", w.used.0 / 1024, b / 1024));
    }
    if let Some(m) = w.quota.messages {
        lines.push(format!("Messages: {} of {m}.", w.used.1));
    }
    lines.push(String::new());
    lines.push("Delete messages you no longer need (and empty the Trash), or new mail".into());
    lines.push("will be held back and eventually returned to its senders.".into());
    format!(
        "From: Mail Administrator <{from}>\r\nTo: {user}\r\nSubject: Your mailbox is nearly full\r\nDate: {}\r\n\
         Message-ID: <quota.{}.{user}@{host}>\r\nAuto-Submitted: auto-generated\r\n\
         Content-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n\r\n{}\r\n",
        now.to_rfc2822(),
        now.timestamp_nanos_opt().unwrap_or_default(),
        lines.join("\r\n")
    )
}
