//! Aging rules (`config/store.expirerule`), as imexpire reads them:
//!
//! ```text
//! Trash.folderpattern: user/*/Trash
//! Trash.messagedays: 7
//! Big.folderpattern: user/*/INBOX
//! Big.messagesize: 10000000
//! Big.messagesizedays: 30
//! Lists.folderpattern: user/*/Lists/*
//! Lists.messagecount: 500
//! ```
//!
//! A message is removed when a rule whose pattern matches its mailbox says
//! so: older than `messagedays`; beyond the newest `messagecount`; larger
//! than `messagesize` and older than `messagesizedays`. `deleted: yes`
//! limits a rule to messages flagged `\Deleted`. Patterns use `*` (any
//! text) and `%` (any text without `/`). Pure: parsing and selection.

use crate::db::{DELETED, MessageInfo};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpireRule {
    pub name: String,
    pub folder_pattern: String,
    pub message_days: Option<u64>,
    pub message_count: Option<usize>,
    pub message_size: Option<u64>,
    pub message_size_days: Option<u64>,
    pub deleted_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store.expirerule line {line}: {reason}")]
pub struct RuleError {
    pub line: usize,
    pub reason: String,
}

/// Reads the rule file; every rule needs a folder pattern and a limit.
pub fn parse_rules(text: &str) -> Result<Vec<ExpireRule>, RuleError> {
    let mut rules: Vec<ExpireRule> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let err = |reason: &str| RuleError {
            line,
            reason: reason.to_string(),
        };
        let (key, value) = t
            .split_once(':')
            .ok_or_else(|| err("expected rule.attribute: value"))?;
        let (name, attr) = key
            .trim()
            .rsplit_once('.')
            .ok_or_else(|| err("expected rule.attribute"))?;
        let value = value.trim();
        let idx = match rules.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                rules.push(ExpireRule {
                    name: name.to_string(),
                    ..Default::default()
                });
                rules.len() - 1
            }
        };
        let r = &mut rules[idx];
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| err(&format!("{attr} takes a whole number")))
        };
        match attr.to_ascii_lowercase().as_str() {
            "folderpattern" => r.folder_pattern = value.to_string(),
            "messagedays" => r.message_days = Some(num(value)?),
            "messagecount" => r.message_count = Some(num(value)? as usize),
            "messagesize" => r.message_size = Some(num(value)?),
            "messagesizedays" => r.message_size_days = Some(num(value)?),
            "deleted" => {
                r.deleted_only = epistle_config::params::parse_bool(value)
                    .ok_or_else(|| err("deleted takes yes or no"))?
            }
            other => return Err(err(&format!("unknown attribute {other}"))),
        }
    }
    for r in &rules {
        if r.folder_pattern.is_empty() {
            return Err(RuleError {
                line: 0,
                reason: format!("rule {} has no folderpattern", r.name),
            });
        }
        if r.message_days.is_none() && r.message_count.is_none() && r.message_size.is_none() {
            return Err(RuleError {
                line: 0,
                reason: format!("rule {} sets no limit", r.name),
            });
        }
    }
    Ok(rules)
}

/// IMAP-style wildcard match: `*` anything, `%` anything but `/`.
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((b'%', rest)) => {
                let stop = n.iter().position(|c| *c == b'/').unwrap_or(n.len());
                (0..=stop).any(|i| go(rest, &n[i..]))
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The UIDs the rules remove from `mailbox` at time `now` (seconds).
pub fn select(rules: &[ExpireRule], mailbox: &str, messages: &[MessageInfo], now: i64) -> Vec<u32> {
    let day = 86_400i64;
    let mut out: Vec<u32> = Vec::new();
    for r in rules.iter().filter(|r| matches(&r.folder_pattern, mailbox)) {
        let eligible: Vec<&MessageInfo> = messages
            .iter()
            .filter(|m| !r.deleted_only || m.record.flags.iter().any(|f| f == DELETED))
            .collect();
        let older = |m: &MessageInfo, days: u64| now - m.record.internal_date > days as i64 * day;
        for m in &eligible {
            let by_age = r.message_days.is_some_and(|d| older(m, d));
            let by_size = r.message_size.is_some_and(|s| {
                m.record.size > s && r.message_size_days.is_none_or(|d| older(m, d))
            });
            if by_age || by_size {
                out.push(m.uid);
            }
        }
        if let Some(keep) = r.message_count
            && eligible.len() > keep
        {
            let mut by_date = eligible.clone();
            by_date.sort_by_key(|m| (m.record.internal_date, m.uid));
            out.extend(by_date[..by_date.len() - keep].iter().map(|m| m.uid));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::MessageRecord;

    fn msg(uid: u32, age_days: i64, size: u64, flags: &[&str]) -> MessageInfo {
        MessageInfo {
            uid,
            record: MessageRecord {
                flags: flags.iter().map(|s| s.to_string()).collect(),
                internal_date: 1_000_000_000 - age_days * 86_400 - 1,
                size,
                modseq: 1,
            },
        }
    }

    #[test]
    fn rules_select_by_age_count_size_and_deleted() {
        let rules = parse_rules(
            "# aging\nTrash.folderpattern: user/%/Trash\nTrash.messagedays: 7\n\
             Lists.folderpattern: user/*/Lists/*\nLists.messagecount: 2\n\
             Big.folderpattern: user/%/INBOX\nBig.messagesize: 1000\nBig.messagesizedays: 30\n\
             Del.folderpattern: user/%/Junk\nDel.messagedays: 0\nDel.deleted: yes\n",
        )
        .unwrap();
        let now = 1_000_000_000;
        let trash = [msg(1, 10, 5, &[]), msg(2, 3, 5, &[])];
        assert_eq!(select(&rules, "user/joe/Trash", &trash, now), [1]);
        assert!(
            select(&rules, "user/joe/Old/Trash", &trash, now).is_empty(),
            "% stops at /"
        );
        let list = [msg(1, 1, 5, &[]), msg(2, 3, 5, &[]), msg(3, 2, 5, &[])];
        assert_eq!(
            select(&rules, "user/joe/Lists/rust", &list, now),
            [2],
            "keeps the newest two"
        );
        let inbox = [
            msg(1, 40, 5000, &[]),
            msg(2, 10, 5000, &[]),
            msg(3, 40, 10, &[]),
        ];
        assert_eq!(select(&rules, "user/joe/INBOX", &inbox, now), [1]);
        let junk = [msg(1, 5, 5, &["\\Deleted"]), msg(2, 5, 5, &[])];
        assert_eq!(select(&rules, "user/joe/Junk", &junk, now), [1]);
    }

    #[test]
    fn bad_rules_are_named() {
        assert_eq!(
            parse_rules("a.folderpattern: x\na.messagedays: many\n")
                .unwrap_err()
                .line,
            2
        );
        assert!(
            parse_rules("a.folderpattern: x\n")
                .unwrap_err()
                .reason
                .contains("no limit")
        );
        assert!(parse_rules("a.colour: red\n").is_err());
    }
}
