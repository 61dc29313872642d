//! NAME
//!   mboxutil - list, create, delete and rename mailboxes
//!
//! SYNOPSIS
//!   mboxutil -l [-p pattern] [-s | -x]
//!   mboxutil -c mailbox ...
//!   mboxutil -d mailbox ...        (user/UID/INBOX deletes the account)
//!   mboxutil -r old new
//!   mboxutil -r user/UID/INBOX user/UID/INBOX PARTITION   (move the account)
//!   mboxutil -o                    (mailboxes of accounts the directory lacks)
//!   mboxutil -q user ...           (quota usage)
//!
//! DESCRIPTION
//!   Works through the running store server (start-msg store). Mailbox
//!   names are user/UID/FOLDER; -p takes an IMAP pattern where * matches
//!   anything and % anything but a /. -l prints each mailbox with its
//!   message count, size, UIDVALIDITY and UIDNEXT; -s names only; -x adds
//!   the partition path of its files.

use std::process::ExitCode;

use epistle_ipc::store::{StoreReply, StoreRequest};

fn main() -> ExitCode {
    storetools::main_with("mboxutil", run)
}

/// IMAP LIST wildcards: `*` anything, `%` anything but the separator.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'%', rest)) => {
            let stop = name.iter().position(|c| *c == b'/').unwrap_or(name.len());
            (0..=stop).any(|i| matches(rest, &name[i..]))
        }
        Some((c, rest)) => name.first() == Some(c) && matches(rest, &name[1..]),
    }
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let client = storetools::connect("mboxutil").await?;
    let flag = args.first().map(String::as_str).unwrap_or("");
    let rest = &args[args.len().min(1)..];
    match flag {
        "-l" => {
            let pattern = rest
                .iter()
                .position(|a| a == "-p")
                .and_then(|i| rest.get(i + 1))
                .cloned()
                .unwrap_or_else(|| "*".into());
            if pattern.len() > 1024
                || pattern.bytes().filter(|b| *b == b'*' || *b == b'%').count() > 16
            {
                anyhow::bail!("-p: pattern too long or too many wildcards");
            }
            let names_only = rest.iter().any(|a| a == "-s");
            let with_path = rest.iter().any(|a| a == "-x");
            for m in client.list("").await? {
                if !matches(pattern.as_bytes(), m.name.as_bytes()) {
                    continue;
                }
                if names_only {
                    println!("{}", m.name);
                    continue;
                }
                let r = &m.record;
                print!(
                    "{}  messages={} size={} uidvalidity={} uidnext={}",
                    m.name, r.messages, r.size, r.uidvalidity, r.uidnext
                );
                if with_path {
                    let dir = client.mailbox_dir(&m.name).await?;
                    print!("  path={}", dir.display());
                }
                println!();
            }
        }
        "-c" => {
            for name in rest {
                client.create(name).await?;
                println!("created {name}");
            }
        }
        "-d" => {
            for name in rest {
                let n = epistle_store::MailboxName::parse(name)?;
                if n.is_inbox() {
                    client
                        .request(StoreRequest::DeleteUser {
                            user: n.owner().to_string(),
                        })
                        .await?;
                    println!("deleted the account {}", n.owner());
                } else {
                    client
                        .request(StoreRequest::Delete { name: name.clone() })
                        .await?;
                    println!("deleted {name}");
                }
            }
        }
        "-r" => match rest {
            [old, new] => {
                client
                    .request(StoreRequest::Rename {
                        old: old.clone(),
                        new: new.clone(),
                    })
                    .await?;
                println!("renamed {old} to {new}");
            }
            // The original's way to move an account: name its INBOX twice
            // and the partition.
            [old, new, partition] if old == new => {
                let n = epistle_store::MailboxName::parse(old)?;
                client
                    .request(StoreRequest::MoveUser {
                        user: n.owner().to_string(),
                        partition: partition.clone(),
                    })
                    .await?;
                println!("moved the account {} to partition {partition}", n.owner());
            }
            _ => anyhow::bail!(
                "usage: mboxutil -r old new | mboxutil -r user/UID/INBOX user/UID/INBOX PARTITION"
            ),
        },
        "-o" => {
            // Mailboxes whose owner the directory no longer knows.
            let base = epistle_config::MsgSvrBase::locate();
            let cfg = base
                .config_files()
                .load()
                .map_err(|e| anyhow::anyhow!("the configuration has errors: {}", e[0]))?;
            let dir = epistle_directory::open(&base, &cfg).await?;
            let mut known: std::collections::BTreeMap<String, bool> =
                std::collections::BTreeMap::new();
            for m in client.list("").await? {
                let owner = epistle_store::MailboxName::parse(&m.name)?
                    .owner()
                    .to_string();
                let exists = match known.get(&owner) {
                    Some(e) => *e,
                    None => {
                        let e = dir.user_by_login(&owner).await?.is_some();
                        known.insert(owner.clone(), e);
                        e
                    }
                };
                if !exists {
                    println!("{}", m.name);
                }
            }
        }
        "-q" => {
            for user in rest {
                if let StoreReply::Quota {
                    bytes, messages, ..
                } = client
                    .request(StoreRequest::QuotaUsage { user: user.clone() })
                    .await?
                {
                    println!("{user}  bytes={bytes} messages={messages}");
                }
            }
        }
        _ => anyhow::bail!(
            "usage: mboxutil -l [-p pattern] [-s|-x] | -c mbox | -d mbox | -r old new [partition] | -o | -q user"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches(b"user/joe/*", b"user/joe/Lists/rust"));
        assert!(!matches(b"user/joe/%", b"user/joe/Lists/rust"));
        assert!(matches(b"user/%/INBOX", b"user/ann/INBOX"));
        assert!(matches(b"*", b""));
    }
}
