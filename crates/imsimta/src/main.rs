//! NAME
//!   imsimta - the MTA administrator's command
//!
//! SYNOPSIS
//!   imsimta cnbuild
//!   imsimta test -rewrite [-noimage_file] [-source_channel=NAME]
//!                         [-from] [-header] [ADDRESS ...]
//!   imsimta test -mapping [-noimage_file] [-table=NAME] [-flags=LETTERS] [INPUT ...]
//!   imsimta test -match PATTERN [INPUT ...]
//!   imsimta restart [dispatcher|job_controller]
//!   imsimta start|stop [dispatcher|job_controller]
//!   imsimta qm [summarize | directory [CHANNEL] | delete|hold|release|return ID...]
//!   imsimta process
//!   imsimta process_held [-uid=UID [-domain=DOMAIN]]
//!   imsimta run [CHANNEL]
//!   imsimta cache -sync
//!   imsimta counters [-show]
//!   imsimta purge [-num=N]
//!   imsimta version
//!
//! DESCRIPTION
//!   cnbuild checks imta.cnf (and its includes), mappings, option.dat,
//!   job_controller.cnf, dispatcher.cnf and aliases in config/ together
//!   and writes config/imta.compiled, which the MTA's programs read. An
//!   error names file and line, and the compiled configuration in force
//!   is left as it was.
//!
//!   test -rewrite shows the channel an address goes to and how it reads
//!   after the rewrite rules; -from and -header rewrite it as an envelope
//!   sender or a header address. test -mapping looks inputs up in a
//!   mapping table, with -flags setting the letters the templates' `$:x`
//!   and `$;x` test (A SASL, T TLS, E EHLO, L LMTP, D/F/S notices: as an
//!   access table sees a session); test -match tries one mapping pattern on strings and
//!   shows what its wildcards captured. Without -noimage_file both use the compiled
//!   configuration, as the running MTA does; with it, the text files.
//!   Without arguments they read one input a line from standard input.
//!
//!   restart makes the running dispatcher and job controller take the
//!   compiled configuration (after cnbuild) without dropping a connection
//!   or a message; start and stop are start-msg and stop-msg for the MTA.
//!   qm manages the queues (see queues.rs); process lists the MTA's
//!   processes; process_held routes the mail held for users (the hold
//!   channel's queue; all of it, or one user's) again through the
//!   reprocess channel, into the store once a user is no longer on hold;
//!   run tries waiting messages now, ignoring the backoff;
//!   cache -sync makes the job controller re-read the queue directories;
//!   counters counts messages per channel from log/mail.log_current; purge
//!   deletes rolled-over message logs beyond the newest N.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use epistle_config::MsgSvrBase;
use epistle_mta::compiled::{COMPILED_NAME, CompiledConfig, MtaConfig};
use epistle_mta::rewrite::{Context, Rewriter};

mod control;
mod queues;

const USAGE: &str = "usage: imsimta cnbuild | restart | start | stop | qm [command] | process | \
                     process_held [-uid=UID [-domain=DOMAIN]] | run [channel] | cache -sync | counters | purge [-num=N] | \
                     test -rewrite|-mapping|-match [options] [input ...] | version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imsimta: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let base = MsgSvrBase::locate();
    match args.first().map(String::as_str) {
        Some("cnbuild") => cnbuild(&base),
        Some("test") => test(&base, &args[1..]),
        Some("restart") => control::restart(&base, &args[1..]),
        Some(cmd @ ("start" | "stop")) => {
            let tool = if cmd == "start" {
                "start-msg"
            } else {
                "stop-msg"
            };
            control::start_stop(&base, tool, &args[1..])
        }
        Some("qm") => queues::qm(&base, &args[1..]),
        Some("process") => queues::process(&base),
        Some("process_held") => queues::process_held(&base, &args[1..]),
        Some("run") => queues::run_now(&base, args.get(1).map(String::as_str)),
        Some("cache") if args.get(1).is_some_and(|a| a == "-sync") => queues::cache_sync(&base),
        Some("counters") => control::counters(&base),
        Some("purge") => control::purge(&base, &args[1..]),
        Some("version") => {
            println!("Epistle MTA (imsimta) {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn cnbuild(base: &MsgSvrBase) -> anyhow::Result<()> {
    let compiled = CompiledConfig::build(&base.config(), now()).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nNothing was written; the compiled configuration in force is unchanged."
        )
    })?;
    let path = base.config().join(COMPILED_NAME);
    compiled.save(&path)?;
    let parsed = compiled.parse()?;
    println!(
        "Compiled {} rewrite rules, {} channels, {} mapping tables and {} aliases into {}",
        parsed.imta.rules.len(),
        parsed.imta.channels.len(),
        parsed.mappings.names().count(),
        parsed.aliases.len(),
        path.display()
    );
    println!("Run imsimta restart (or start-msg mta) for the running MTA to take it.");
    Ok(())
}

/// The configuration a test runs against.
fn load(base: &MsgSvrBase, image: bool) -> anyhow::Result<MtaConfig> {
    let compiled = if image {
        let path = base.config().join(COMPILED_NAME);
        if !path.exists() {
            bail!(
                "{} does not exist; run imsimta cnbuild, or use -noimage_file",
                path.display()
            );
        }
        CompiledConfig::load(&path)?
    } else {
        CompiledConfig::build(&base.config(), now())?
    };
    Ok(compiled.parse()?)
}

/// The inputs: the arguments, else standard input a line at a time.
fn inputs(given: Vec<String>, prompt: &str) -> anyhow::Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("{prompt}");
    }
    let mut out = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("cannot read standard input")?;
        if !line.trim().is_empty() {
            out.push(line.trim().to_string());
        }
    }
    Ok(out)
}

fn test(base: &MsgSvrBase, args: &[String]) -> anyhow::Result<()> {
    let mut mode = None;
    let mut image = true;
    let mut source = "tcp_local".to_string();
    let mut table = None;
    let mut set_flags: Vec<char> = Vec::new();
    let (mut from, mut header) = (false, false);
    let mut rest = Vec::new();
    for a in args {
        match a.split_once('=').unwrap_or((a, "")) {
            ("-rewrite", _) => mode = Some("rewrite"),
            ("-mapping", _) => mode = Some("mapping"),
            ("-match", _) => mode = Some("match"),
            ("-noimage_file", _) => image = false,
            ("-image_file", _) => image = true,
            ("-source_channel", v) if !v.is_empty() => source = v.to_string(),
            ("-table", v) if !v.is_empty() => table = Some(v.to_string()),
            ("-flags", v) => set_flags = v.chars().map(|c| c.to_ascii_uppercase()).collect(),
            ("-from", _) => from = true,
            ("-header", _) => header = true,
            (opt, _) if opt.starts_with('-') => bail!("unknown or incomplete option {a}\n{USAGE}"),
            _ => rest.push(a.clone()),
        }
    }
    if mode == Some("match") {
        return test_match(rest);
    }
    let config = load(base, image)?;
    match mode {
        Some("rewrite") => {
            let rewriter = Rewriter::new(&config.imta, &config.mappings);
            let ctx = Context {
                envelope: !header,
                forward: !from,
                source_channel: &source,
            };
            let mut failed = false;
            for address in inputs(rest, "Address: ")? {
                println!("Address: {address}");
                match rewriter.rewrite(&address, &ctx) {
                    Ok(r) => {
                        let channel = config
                            .imta
                            .channel(&r.channel)
                            .expect("the rewriter names channels that exist");
                        println!("  channel = {}", r.channel);
                        println!("  channel tag = {}", channel.tag);
                        if let Some(host) = &channel.official_host {
                            println!("  channel official host = {host}");
                        }
                        let keywords: Vec<String> = channel
                            .keywords
                            .iter()
                            .map(|k| {
                                std::iter::once(k.name.clone())
                                    .chain(k.args.iter().cloned())
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .collect();
                        println!("  channel keywords = {}", keywords.join(" "));
                        println!("  address = {}", r.address);
                        println!("  rules applied = {}", r.trace.join(", "));
                    }
                    Err(e) => {
                        failed = true;
                        println!("  error = {e}");
                    }
                }
            }
            if failed {
                bail!("some addresses could not be rewritten");
            }
            Ok(())
        }
        Some("mapping") => {
            let table = match table {
                Some(t) => t,
                None => bail!(
                    "say which table with -table=NAME (tables: {})",
                    config.mappings.names().collect::<Vec<_>>().join(", ")
                ),
            };
            if config.mappings.table(&table).is_none() {
                bail!("the mappings file has no table {table}");
            }
            for input in inputs(rest, "Input string: ")? {
                println!("Input string: {input}");
                match config.mappings.lookup_flagged(&table, &input, &set_flags) {
                    Some(r) => {
                        println!("Output string: {}", r.output);
                        let flags: String = r.flags.iter().map(|f| format!("${f}")).collect();
                        println!("Output flags: [{flags}]");
                    }
                    None => println!("No match"),
                }
            }
            Ok(())
        }
        _ => bail!("test needs -rewrite, -mapping or -match\n{USAGE}"),
    }
}

/// `test -match PATTERN [INPUT ...]`: one mapping pattern against strings.
fn test_match(mut args: Vec<String>) -> anyhow::Result<()> {
    if args.is_empty() {
        bail!("test -match needs a pattern\n{USAGE}");
    }
    let pattern = args.remove(0);
    for input in inputs(args, "Input string: ")? {
        println!("Input string: {input}");
        match epistle_mta::mapping::match_pattern(&pattern, &input) {
            Err(e) => bail!("bad pattern {pattern:?}: {e}"),
            Ok(None) => println!("No match"),
            Ok(Some(captures)) => {
                println!("Match");
                for (n, c) in captures.iter().enumerate() {
                    println!("  ${n} = {c}");
                }
            }
        }
    }
    Ok(())
}
