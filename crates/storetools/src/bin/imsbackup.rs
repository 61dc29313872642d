//! NAME
//!   imsbackup - back up mailboxes to a file or a pipe
//!
//! SYNOPSIS
//!   imsbackup -f FILE|- [-u userfile] [-d yyyymmdd[:hhmmss]] [name ...]
//!
//! DESCRIPTION
//!   Writes the named mailboxes, with their UIDVALIDITY, UIDs, flags and
//!   internal dates, as one stream (see epistle_store::backup) to FILE or
//!   to standard output (-f -), for imsrestore. A name is / (everything),
//!   user/UID (an account), user/UID/FOLDER (one mailbox), optionally
//!   after a partition (/primary/user/UID). -u reads account ids from a
//!   file, one a line. -d keeps only messages with an internal date on or
//!   after that time (an incremental backup). Needs the store running.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use epistle_ipc::store::message_file;
use epistle_store::backup::BackupWriter;
use storetools::Progress;

fn main() -> ExitCode {
    storetools::main_with("imsbackup", run)
}

/// yyyymmdd[:hhmmss] in local time → seconds since the epoch.
fn parse_date(s: &str) -> anyhow::Result<i64> {
    use chrono::{Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
    let (d, t) = s.split_once(':').unwrap_or((s, "000000"));
    let date = NaiveDate::parse_from_str(d, "%Y%m%d")
        .map_err(|_| anyhow::anyhow!("-d {s}: expected yyyymmdd[:hhmmss]"))?;
    let time = NaiveTime::parse_from_str(t, "%H%M%S")
        .map_err(|_| anyhow::anyhow!("-d {s}: expected yyyymmdd[:hhmmss]"))?;
    Local
        .from_local_datetime(&NaiveDateTime::new(date, time))
        .single()
        .map(|t| t.timestamp())
        .ok_or_else(|| anyhow::anyhow!("-d {s}: no such local time"))
}

/// The mailbox-name prefix or exact name a command-line name selects.
fn selector(name: &str) -> (String, bool) {
    let mut n = name.trim_end_matches('/').to_string();
    if n.is_empty() {
        return (String::new(), false); // "/": everything
    }
    // "/primary/user/joe" names the partition first; the store knows where
    // each user lives, so the partition part only has to be dropped.
    if let Some(rest) = n.strip_prefix('/') {
        n = match rest.split_once("/user/") {
            Some((_, r)) => format!("user/{r}"),
            None => rest.to_string(),
        };
    }
    match n.matches('/').count() {
        0 | 1 => (format!("{n}/"), false),
        _ => (n, true),
    }
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let mut file = None;
    let mut since = None;
    let mut names: Vec<String> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" => {
                file = Some(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("-f needs a file or -"))?,
                )
            }
            "-d" => {
                since = Some(parse_date(
                    &it.next()
                        .ok_or_else(|| anyhow::anyhow!("-d needs a date"))?,
                )?)
            }
            "-u" => {
                let path = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("-u needs a file"))?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("-u {path}: {e}"))?;
                names.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(|u| format!("user/{u}")),
                );
            }
            s if s.starts_with('-') && s != "-" => anyhow::bail!("unknown option {s}"),
            _ => names.push(a),
        }
    }
    let file = file.ok_or_else(|| {
        anyhow::anyhow!("usage: imsbackup -f FILE|- [-u userfile] [-d date] [name ...]")
    })?;
    if names.is_empty() {
        names.push("/".into());
    }
    let client = storetools::connect("imsbackup").await?;
    let out: Box<dyn Write> = if file == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&file)
                .map_err(|e| anyhow::anyhow!("cannot create {file}: {e}"))?,
        )
    };
    let mut w = BackupWriter::new(BufWriter::new(out))?;
    let mut progress = Progress::new();
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        let (sel, exact) = selector(name);
        for m in client.list(&sel).await? {
            if (exact && m.name != sel) || !seen.insert(m.name.clone()) {
                continue;
            }
            w.mailbox(&m.name, m.record.uidvalidity, m.record.uidnext)?;
            let open = client.open(&m.name, false).await?;
            for msg in open.messages {
                if since.is_some_and(|t| msg.record.internal_date < t) {
                    continue;
                }
                let path = message_file(&open.dir, msg.uid);
                let body = match std::fs::read(&path) {
                    Ok(b) => b,
                    // Expunged since the index was read.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
                };
                w.message(msg.uid, &msg.record.flags, msg.record.internal_date, &body)?;
                progress.tick(&m.name);
            }
        }
    }
    let (mailboxes, messages) = w.finish()?;
    progress.done();
    if file != "-" {
        println!("{mailboxes} mailboxes, {messages} messages written to {file}");
    }
    Ok(())
}
