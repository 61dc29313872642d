//! `imsimta restart`, `start`, `stop`, `counters` and `purge`: the running
//! MTA's processes and its message log.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context as _, bail};
use epistle_config::MsgSvrBase;
use epistle_mta::maillog::MailLog;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The MTA's supervised parts, as start-msg names them.
const PARTS: &[&str] = &["dispatcher", "job_controller"];

fn parts(args: &[String]) -> anyhow::Result<Vec<String>> {
    if args.is_empty() {
        return Ok(PARTS.iter().map(|s| s.to_string()).collect());
    }
    for a in args {
        if !PARTS.contains(&a.as_str()) {
            bail!("unknown MTA component {a:?}; name dispatcher or job_controller");
        }
    }
    Ok(args.to_vec())
}

/// HUP to the dispatcher and the job controller: both load the compiled
/// configuration again. The dispatcher's SMTP servers finish their
/// sessions while new ones take new connections, so nothing is dropped.
pub fn restart(base: &MsgSvrBase, args: &[String]) -> anyhow::Result<()> {
    let mut signalled = 0;
    for part in parts(args)? {
        let pid_file = base.pid_file(&part);
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        match pid {
            Some(pid) if kill(Pid::from_raw(pid), None).is_ok() => {
                kill(Pid::from_raw(pid), Signal::SIGHUP)
                    .with_context(|| format!("cannot signal {part} (pid {pid})"))?;
                println!("{part} (pid {pid}) is taking the new configuration");
                signalled += 1;
            }
            _ => println!("{part} is not running; start-msg {part} starts it"),
        }
    }
    if signalled == 0 {
        bail!("no MTA process is running");
    }
    Ok(())
}

/// `imsimta start|stop [COMPONENT]`: start-msg / stop-msg for the MTA.
pub fn start_stop(base: &MsgSvrBase, command: &str, args: &[String]) -> anyhow::Result<()> {
    let tool = base.sbin().join(command);
    let status = Command::new(&tool)
        .args(parts(args)?)
        .status()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !status.success() {
        bail!("{command} reported a failure");
    }
    Ok(())
}

/// `imsimta counters [-show]`: messages per channel and action, counted
/// from `mail.log_current` (since its last roll-over).
pub fn counters(base: &MsgSvrBase) -> anyhow::Result<()> {
    let path = base.mail_log();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // channel → [enqueued, delivered, returned, requeued, rejected]
    let mut counts: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // date time source destination CODE ...
        let (Some(src), Some(dst), Some(code)) = (f.get(2), f.get(3), f.get(4)) else {
            continue;
        };
        let (channel, slot) = match code.chars().next() {
            Some('E') => (*dst, 0),
            Some('D') => (*dst, 1),
            Some('R') => (*dst, 2),
            Some('Q') => (*dst, 3),
            // A rejection has no destination: it counts for the source.
            Some('J') => (*src, 4),
            _ => continue,
        };
        counts.entry(channel.to_string()).or_default()[slot] += 1;
    }
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "Channel", "Enqueued", "Delivered", "Returned", "Deferred", "Rejected"
    );
    for (ch, c) in &counts {
        println!(
            "{ch:<20} {:>10} {:>10} {:>10} {:>10} {:>10}",
            c[0], c[1], c[2], c[3], c[4]
        );
    }
    if counts.is_empty() {
        println!("(no traffic recorded in {})", path.display());
    }
    Ok(())
}

/// `imsimta purge [-num=N]`: keeps the N newest rolled-over message logs
/// (5 unless told) and deletes the older ones.
pub fn purge(base: &MsgSvrBase, args: &[String]) -> anyhow::Result<()> {
    let mut keep = 5usize;
    for a in args {
        match a.strip_prefix("-num=").map(str::parse::<usize>) {
            Some(Ok(n)) => keep = n,
            _ => bail!("usage: imsimta purge [-num=N]"),
        }
    }
    let log = MailLog::new(base.mail_log());
    let rolled = log
        .rolled()
        .with_context(|| format!("cannot list {}", base.log().display()))?;
    let excess = rolled.len().saturating_sub(keep);
    for p in &rolled[..excess] {
        std::fs::remove_file(p).with_context(|| format!("cannot delete {}", p.display()))?;
        println!("deleted {}", p.display());
    }
    println!("{} message log(s) kept", rolled.len() - excess);
    Ok(())
}
