//! `imsimta qm`, `process`, `run` and `cache -sync`: the queues as the
//! disk holds them, with what the job controller is doing to them.
//!
//! qm takes one command on its command line, or reads commands from
//! standard input (`qm.maint>` prompt) when given none:
//!   summarize            messages per channel: queued, held, due, being delivered
//!   directory [CHANNEL]  each message: name, size, attempts, age, sender, recipients
//!   delete ID...         remove messages (logged)
//!   hold ID...           keep messages from delivery (.HELD)
//!   release ID...        deliver held messages again, now
//!   return ID...         send messages back to their senders with a notice
//! An ID is a queue file name (`ZZ0A1B2C3D4E5F607.00`), optionally after
//! its channel (`tcp_local/ZZ…`).

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use epistle_config::MsgSvrBase;
use epistle_ipc::jobs::{ChannelQueue, JobReply, JobRequest, QueuedFile};
use epistle_mta::maillog::{Action, MailLog, Record};
use epistle_mta::queue::{QueueDir, QueueEntry};
use epistle_mta::queuefile::{Envelope, attempts_of};

const QM_HELP: &str = "commands: summarize | directory [CHANNEL] | delete ID... | hold ID... | \
                       release ID... | return ID... | help | exit";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// One request to the running job controller; `None` when it is down.
fn ask(base: &MsgSvrBase, req: &JobRequest) -> Option<JobReply> {
    runtime().block_on(epistle_mta::submit::ask(&base.job_controller_socket(), req))
}

pub fn qm(base: &MsgSvrBase, args: &[String]) -> anyhow::Result<()> {
    if !args.is_empty() {
        return qm_command(base, args);
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        print!("qm.maint> ");
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            println!();
            return Ok(());
        }
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match words.first().map(|w| w.to_ascii_lowercase()) {
            None => continue,
            Some(w) if w == "exit" || w == "quit" => return Ok(()),
            Some(_) => {
                if let Err(e) = qm_command(base, &words) {
                    eprintln!("qm: {e:#}");
                }
            }
        }
    }
}

fn qm_command(base: &MsgSvrBase, args: &[String]) -> anyhow::Result<()> {
    let queue = QueueDir::new(base.queue());
    let verb = args[0].to_ascii_lowercase();
    let rest = &args[1..];
    // The original accepts unique abbreviations: "sum", "dir".
    let is = |word: &str| word.starts_with(verb.as_str()) && verb.len() >= 3;
    if is("summarize") {
        summarize(base, &queue)
    } else if is("directory") {
        directory(&queue, rest.first().map(String::as_str))
    } else if is("delete") {
        for_each(&queue, rest, |e| delete(base, e))
    } else if is("hold") {
        for_each(&queue, rest, |e| {
            queue.hold(e)?;
            println!("held {}/{}", e.channel, e.name());
            Ok(())
        })
    } else if is("release") {
        let mut released = Vec::new();
        for_each(&queue, rest, |e| {
            let path = queue.release(e)?;
            println!("released {}/{}", e.channel, e.name());
            released.push(QueuedFile {
                channel: e.channel.clone(),
                path: path.display().to_string(),
                // The job controller reads it from the file.
                priority: None,
            });
            Ok(())
        })?;
        if !released.is_empty() && ask(base, &JobRequest::Enqueued { files: released }).is_none() {
            println!("(the job controller is not running; delivery starts when it is)");
        }
        Ok(())
    } else if is("return") {
        for_each(&queue, rest, |e| return_one(base, e))
    } else if verb == "help" || verb == "?" {
        println!("{QM_HELP}");
        Ok(())
    } else {
        bail!("unknown qm command {:?}; {QM_HELP}", args[0])
    }
}

/// Finds each ID among the queue files and applies `f`.
fn for_each(
    queue: &QueueDir,
    ids: &[String],
    mut f: impl FnMut(&QueueEntry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if ids.is_empty() {
        bail!("name at least one message (a queue file name, as qm directory shows)");
    }
    let all = all_entries(queue)?;
    for id in ids {
        let (channel, name) = match id.rsplit_once('/') {
            Some((c, n)) => (Some(c.rsplit('/').next().unwrap_or(c)), n),
            None => (None, id.as_str()),
        };
        let name = name.trim_end_matches(epistle_mta::queue::HELD_SUFFIX);
        let found: Vec<&QueueEntry> = all
            .iter()
            .filter(|e| channel.is_none_or(|c| e.channel == c))
            .filter(|e| e.name().trim_end_matches(epistle_mta::queue::HELD_SUFFIX) == name)
            .collect();
        match found.as_slice() {
            [] => bail!("no queued message {id}"),
            [e] => f(e)?,
            _ => bail!("{id} is in several channels; write CHANNEL/{name}"),
        }
    }
    Ok(())
}

fn all_entries(queue: &QueueDir) -> anyhow::Result<Vec<QueueEntry>> {
    let mut out = Vec::new();
    for ch in queue.channels()? {
        out.extend(queue.entries(&ch)?);
    }
    Ok(out)
}

fn summarize(base: &MsgSvrBase, queue: &QueueDir) -> anyhow::Result<()> {
    let live: Option<Vec<ChannelQueue>> = match ask(base, &JobRequest::Queues) {
        Some(JobReply::Queues { channels }) => Some(channels),
        _ => None,
    };
    println!(
        "{:<20} {:>8} {:>6} {:>6} {:>8} {:>5}",
        "Channel", "Queued", "Held", "Due", "Active", "Jobs"
    );
    let (mut queued, mut held) = (0, 0);
    for ch in queue.channels()? {
        let entries = queue.entries(&ch)?;
        let h = entries.iter().filter(|e| e.held).count();
        let q = entries.len() - h;
        let state = live
            .as_ref()
            .and_then(|l| l.iter().find(|c| c.channel == ch));
        let (due, active, jobs) = match state {
            Some(s) => (s.due.to_string(), s.active.to_string(), s.jobs.to_string()),
            None => ("-".into(), "-".into(), "-".into()),
        };
        if q + h == 0 && state.is_none_or(|s| s.jobs == 0) {
            continue;
        }
        println!("{ch:<20} {q:>8} {h:>6} {due:>6} {active:>8} {jobs:>5}");
        queued += q;
        held += h;
    }
    println!("{:<20} {queued:>8} {held:>6}", "Total");
    if live.is_none() {
        println!("(the job controller is not running: due, active and jobs are unknown)");
    }
    Ok(())
}

fn age(t: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn read_envelope(path: &Path) -> Option<Envelope> {
    let data = std::fs::read(path).ok()?;
    Envelope::decode(&data).ok().map(|(e, _)| e)
}

fn directory(queue: &QueueDir, channel: Option<&str>) -> anyhow::Result<()> {
    let channels = match channel {
        Some(c) => vec![c.to_string()],
        None => queue.channels()?,
    };
    let mut total = 0;
    for ch in channels {
        let entries = queue.entries(&ch)?;
        if entries.is_empty() {
            continue;
        }
        println!("Channel: {ch}");
        // Oldest first, as they came in.
        let mut entries: Vec<_> = entries
            .into_iter()
            .map(|e| (read_envelope(&e.path), e))
            .collect();
        entries.sort_by_key(|(env, e)| (env.as_ref().map_or(0, |v| v.received), e.modified));
        for (env, e) in entries {
            total += 1;
            let received = env
                .as_ref()
                .and_then(|v| chrono::DateTime::from_timestamp(v.received, 0))
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%d-%b-%Y %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
            println!(
                "  {:<24} {:>6} KB  attempts {:<3} {}{}  last try {} ago",
                e.name(),
                e.size.div_ceil(1024),
                attempts_of(e.name()).unwrap_or(0),
                received,
                if e.held { "  HELD" } else { "" },
                age(e.modified)
            );
            match env {
                Some(env) => {
                    let from = if env.from.is_empty() { "<>" } else { &env.from };
                    println!("    from: {from}");
                    for r in &env.recipients {
                        println!("    to:   {}", r.address);
                    }
                }
                None => println!("    (unreadable queue file)"),
            }
        }
    }
    if total == 0 {
        println!("No messages are queued.");
    }
    Ok(())
}

fn delete(base: &MsgSvrBase, e: &QueueEntry) -> anyhow::Result<()> {
    let env = read_envelope(&e.path);
    std::fs::remove_file(&e.path).with_context(|| format!("cannot delete {}", e.path.display()))?;
    if let Some(env) = env {
        let records: Vec<Record> = env
            .recipients
            .iter()
            .map(|r| Record {
                source_channel: &env.source_channel,
                dest_channel: &e.channel,
                action: Action::Dequeue,
                modifiers: "",
                size: e.size,
                from: &env.from,
                original_to: r.orcpt.as_deref().unwrap_or(""),
                active_to: &r.address,
                diagnostic: "deleted by the administrator (imsimta qm)",
            })
            .collect();
        MailLog::new(base.mail_log()).write(&records);
    }
    println!("deleted {}/{}", e.channel, e.name());
    Ok(())
}

fn return_one(base: &MsgSvrBase, e: &QueueEntry) -> anyhow::Result<()> {
    let cfg = base
        .config_files()
        .load()
        .map_err(|errs| anyhow::anyhow!("the configuration has errors: {}", errs[0]))?;
    let rt = runtime();
    let done = rt.block_on(async {
        let ctx = epistle_channels::master::Context::load(&e.channel, base.clone(), cfg).await?;
        epistle_channels::master::return_to_sender(
            &ctx,
            &e.path,
            "returned to the sender by the postmaster",
        )
        .await
    })?;
    if done {
        println!("returned {}/{}", e.channel, e.name());
        Ok(())
    } else {
        bail!("{} is being delivered right now; try again", e.name())
    }
}

/// `imsimta process_held [-uid=UID [-domain=DOMAIN]]`: the mail held for
/// users (the hold channel's queue, where `mailUserStatus: hold` and
/// `mailDeliveryOption: hold` send it) goes to the reprocess channel,
/// which routes each recipient again: into the store once its user is no
/// longer on hold, back into the hold queue while it is. With `-uid`,
/// only the recipients that are that user's addresses (`mail`,
/// alternates, equivalents; `-domain` when the user is not in the
/// default domain); a file held by `qm hold` stays held. Each file's
/// reprocess copy is durable before its hold copy goes, so a crash may
/// route a message twice, never lose it.
pub fn process_held(base: &MsgSvrBase, args: &[String]) -> anyhow::Result<()> {
    use epistle_mta::resolve::HOLD_CHANNEL;
    const REPROCESS: &str = "reprocess";
    let (mut uid, mut domain) = (None, None);
    for a in args {
        match a.split_once('=') {
            Some(("-uid", v)) if !v.is_empty() => uid = Some(v.to_string()),
            Some(("-domain", v)) if !v.is_empty() => domain = Some(v.to_string()),
            _ => {
                bail!("unknown option {a}; usage: imsimta process_held [-uid=UID [-domain=DOMAIN]]")
            }
        }
    }
    if domain.is_some() && uid.is_none() {
        bail!("-domain needs -uid: name the user whose held mail to process");
    }
    let cfg = base
        .config_files()
        .load()
        .map_err(|errs| anyhow::anyhow!("the configuration has errors: {}", errs[0]))?;
    let rt = runtime();
    let ctx = rt.block_on(epistle_channels::master::Context::load(
        HOLD_CHANNEL,
        base.clone(),
        cfg,
    ))?;
    if ctx.mta.imta.channel(REPROCESS).is_none() {
        bail!(
            "imta.cnf has no {REPROCESS} channel; add its block (see lib/config-templates/imta.cnf), run imsimta cnbuild, then try again"
        );
    }
    // The user's addresses, lower case.
    let addresses: Option<Vec<String>> = match &uid {
        None => None,
        Some(uid) => {
            let Some(dir) = ctx.directory.as_deref() else {
                bail!(
                    "the directory cannot be opened, so {uid} cannot be looked up; check its settings (configutil -o local.directory.backend)"
                );
            };
            let login = match &domain {
                Some(d) => format!("{uid}@{d}"),
                None => uid.clone(),
            };
            let user = rt
                .block_on(dir.user_by_login(&login))
                .with_context(|| format!("cannot look up {login}"))?
                .ok_or_else(|| anyhow::anyhow!("the directory has no user {login}"))?;
            let all = user
                .mail
                .iter()
                .chain(&user.alternates)
                .chain(&user.equivalents);
            Some(all.map(|a| a.to_ascii_lowercase()).collect())
        }
    };
    let chosen = |address: &str| {
        addresses
            .as_ref()
            .is_none_or(|mine| mine.contains(&address.to_ascii_lowercase()))
    };
    let block = epistle_mta::retry::block_size(&ctx.mta.options);
    let (mut files, mut recipients) = (0, 0);
    for e in ctx.queue.entries(HOLD_CHANNEL)? {
        if e.held {
            continue;
        }
        let data = match std::fs::read(&e.path) {
            Ok(d) => d,
            // Gone since the listing (another process_held).
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", e.path.display()));
            }
        };
        let (env, at) = Envelope::decode(&data)
            .map_err(|err| anyhow::anyhow!("{}: {err}", e.path.display()))?;
        let (mine, rest): (Vec<_>, Vec<_>) = env
            .recipients
            .iter()
            .cloned()
            .partition(|r| chosen(&r.address));
        if mine.is_empty() {
            continue;
        }
        let message = data[at..].to_vec();
        let bare = Envelope {
            recipients: Vec::new(),
            ..env.clone()
        };
        let onward = mine
            .iter()
            .map(|r| (REPROCESS.to_string(), r.clone()))
            .collect();
        rt.block_on(epistle_channels::master::queue_on(
            &ctx,
            bare.clone(),
            onward,
            message.clone(),
            "released from the hold queue (imsimta process_held)",
        ))
        .map_err(|why| anyhow::anyhow!("cannot queue {} for reprocessing: {why}", e.name()))?;
        if !rest.is_empty() {
            // The others stay held, in a file of their own.
            let kept: Vec<_> = rest
                .into_iter()
                .map(|r| (HOLD_CHANNEL.to_string(), r))
                .collect();
            epistle_mta::submit::enqueue(&ctx.queue, &ctx.mta.imta, block, &bare, &kept, &message)
                .with_context(|| format!("cannot write the rest of {} back", e.name()))?;
        }
        std::fs::remove_file(&e.path)
            .with_context(|| format!("cannot remove {}", e.path.display()))?;
        println!("{}: {} recipient(s) to reprocess", e.name(), mine.len());
        files += 1;
        recipients += mine.len();
    }
    match (files, &uid) {
        (0, Some(uid)) => println!("no held mail for {uid}"),
        (0, None) => println!("no held mail"),
        _ => println!("{recipients} recipient(s) of {files} message(s) routed again"),
    }
    Ok(())
}

/// `imsimta process`: the MTA's processes now running, and the channels
/// the job controller is delivering.
pub fn process(base: &MsgSvrBase) -> anyhow::Result<()> {
    const PROGRAMS: &[&str] = &[
        "dispatcher",
        "tcp_smtp_server",
        "job_controller",
        "ims_master",
        "tcp_smtp_client",
        "tcp_lmtp_server",
        "tcp_lmtp_client",
    ];
    let lib = base.lib().canonicalize().unwrap_or(base.lib());
    println!("{:>8}  {:<18} ARGUMENTS", "PID", "PROGRAM");
    let mut found = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        let mut rows: Vec<(u32, String, String)> = Vec::new();
        for d in dir.flatten() {
            let Ok(pid) = d.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(exe) = std::fs::read_link(d.path().join("exe")) else {
                continue;
            };
            let Some(name) = exe.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if exe.parent() != Some(lib.as_path()) || !PROGRAMS.contains(&name) {
                continue;
            }
            let args = std::fs::read(d.path().join("cmdline"))
                .map(|c| {
                    c.split(|b| *b == 0)
                        .skip(1)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            rows.push((pid, name.to_string(), args));
        }
        rows.sort();
        for (pid, name, args) in rows {
            println!("{pid:>8}  {name:<18} {args}");
            found += 1;
        }
    }
    if found == 0 {
        println!("No MTA processes are running.");
    }
    if let Some(JobReply::Queues { channels }) = ask(base, &JobRequest::Queues) {
        let busy: Vec<&ChannelQueue> = channels.iter().filter(|c| c.jobs > 0).collect();
        if !busy.is_empty() {
            println!();
            for c in busy {
                println!(
                    "channel {}: {} job(s), {} message(s) being delivered, {} due",
                    c.channel, c.jobs, c.active, c.due
                );
            }
        }
    }
    Ok(())
}

/// `imsimta run [CHANNEL]`: waiting messages are tried now.
pub fn run_now(base: &MsgSvrBase, channel: Option<&str>) -> anyhow::Result<()> {
    let req = JobRequest::RunNow {
        channel: channel.map(str::to_string),
    };
    match ask(base, &req) {
        Some(JobReply::Ok) => {
            println!("Delivery of waiting messages started.");
            Ok(())
        }
        _ => bail!("the job controller is not running; start it with start-msg job_controller"),
    }
}

/// `imsimta cache -sync`: the job controller re-reads the queues.
pub fn cache_sync(base: &MsgSvrBase) -> anyhow::Result<()> {
    match ask(base, &JobRequest::Rebuild) {
        Some(JobReply::Ok) => {
            println!("The job controller has re-read the queue directories.");
            Ok(())
        }
        _ => bail!("the job controller is not running; start it with start-msg job_controller"),
    }
}
