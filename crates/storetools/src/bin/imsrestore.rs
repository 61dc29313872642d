//! NAME
//!   imsrestore - restore mailboxes from an imsbackup stream
//!
//! SYNOPSIS
//!   imsrestore -f FILE|- [-n] [-m mapfile]
//!
//! DESCRIPTION
//!   Reads a stream written by imsbackup from FILE or standard input and
//!   puts its mailboxes back with their UIDVALIDITY, UIDs, flags and
//!   internal dates. A mailbox that does not exist is created as it was;
//!   into one that exists, messages already there (same UIDVALIDITY and
//!   UID) are skipped, so running a restore twice duplicates nothing.
//!   -n restores into a new mailbox NAME.yyyymmdd instead of an existing
//!   one. -m reads old=new lines mapping account ids (joe=ann, or
//!   joe@example.com=joe@example.org). Needs the store running.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::process::ExitCode;

use epistle_ipc::store::StoreError;
use epistle_store::MailboxName;
use epistle_store::backup::{BackupReader, Record};
use storetools::Progress;

fn main() -> ExitCode {
    storetools::main_with("imsrestore", run)
}

struct Target {
    name: String,
    /// UIDs may be kept (same UIDVALIDITY as the backup).
    keep_uids: bool,
    present: HashSet<u32>,
    uidnext: u32,
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let (mut file, mut new_names, mut map) = (None, false, BTreeMap::new());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" => {
                file = Some(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("-f needs a file or -"))?,
                )
            }
            "-n" => new_names = true,
            "-m" => {
                let path = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("-m needs a file"))?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("-m {path}: {e}"))?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (old, new) = line.split_once('=').ok_or_else(|| {
                        anyhow::anyhow!("-m {path} line {}: expected old=new", n + 1)
                    })?;
                    map.insert(old.trim().to_string(), new.trim().to_string());
                }
            }
            other => anyhow::bail!(
                "unknown option {other}; usage: imsrestore -f FILE|- [-n] [-m mapfile]"
            ),
        }
    }
    let file =
        file.ok_or_else(|| anyhow::anyhow!("usage: imsrestore -f FILE|- [-n] [-m mapfile]"))?;
    let input: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&file).map_err(|e| anyhow::anyhow!("cannot open {file}: {e}"))?,
        ))
    };
    let mut reader = BackupReader::new(input)?;
    let client = storetools::connect("imsrestore").await?;
    let stamp = chrono::Local::now().format("%Y%m%d").to_string();
    let mut target: Option<Target> = None;
    let mut progress = Progress::new();
    let (mut restored, mut skipped) = (0u64, 0u64);
    while let Some((rec, body)) = reader.next_record()? {
        match rec {
            Record::Mailbox {
                name,
                uidvalidity,
                uidnext: _,
            } => {
                let n = MailboxName::parse(&name)?;
                let owner = map
                    .get(n.owner())
                    .cloned()
                    .unwrap_or_else(|| n.owner().to_string());
                let mut dest = MailboxName::new(&owner, n.folder())?.to_string();
                let existing = match client.status(&dest).await {
                    Ok(m) => Some(m),
                    Err(StoreError::NoMailbox(_)) => None,
                    Err(e) => return Err(e.into()),
                };
                let existing = match existing {
                    Some(_) if new_names => {
                        dest = format!("{dest}.{stamp}");
                        client.status(&dest).await.ok()
                    }
                    other => other,
                };
                let info = match existing {
                    Some(m) => m,
                    None => match client
                        .request(epistle_ipc::store::StoreRequest::Create {
                            name: dest.clone(),
                            partition: None,
                            uidvalidity: Some(uidvalidity),
                        })
                        .await?
                    {
                        epistle_ipc::store::StoreReply::Mailbox { mailbox } => mailbox,
                        other => anyhow::bail!("unexpected answer {other:?}"),
                    },
                };
                let present = client
                    .messages(&dest)
                    .await?
                    .into_iter()
                    .map(|m| m.uid)
                    .collect();
                target = Some(Target {
                    name: dest,
                    keep_uids: info.record.uidvalidity == uidvalidity,
                    present,
                    uidnext: info.record.uidnext,
                });
            }
            Record::Message {
                uid,
                flags,
                internal_date,
                size: _,
            } => {
                let t = target
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("a message before any mailbox in the stream"))?;
                if t.keep_uids && t.present.contains(&uid) {
                    skipped += 1;
                    continue;
                }
                let want = (t.keep_uids && uid >= t.uidnext).then_some(uid);
                let (new_uid, info) = client
                    .append_as(&t.name, &body, &flags, internal_date, want)
                    .await?;
                t.present.insert(new_uid);
                t.uidnext = info.record.uidnext;
                restored += 1;
                progress.tick(&t.name);
            }
            Record::End { .. } => {}
        }
    }
    progress.done();
    println!("{restored} messages restored, {skipped} already present");
    Ok(())
}
