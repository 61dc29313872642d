//! NAME
//!   start-msg - start the messaging services
//!
//! SYNOPSIS
//!   start-msg [ha] [SERVICE ...]
//!
//! DESCRIPTION
//!   With no service, starts every enabled service in dependency order
//!   (store, dispatcher, job_controller, imap, pop, http, mmp; `mta` names
//!   the dispatcher and job controller). The watcher is launched first if it
//!   is not running; `ha` launches it in HA mode. Returns once each service
//!   accepts connections; a service that cannot start is named with the
//!   reason and its log, and the exit status is 1. Starting a running
//!   service says so and succeeds.

use std::process::ExitCode;

use epistle_config::services;
use epistle_ipc::watcher::{Reply, Request};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("start-msg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: start-msg [ha] [SERVICE ...]\nservices: {}, mta",
            names()
        );
        return Ok(true);
    }
    let ha = args.first().is_some_and(|a| a == "ha");
    if ha {
        args.remove(0);
    }
    let base = msgctl::configured_base()?;
    let cfg = base
        .config_files()
        .load()
        .map_err(|errs| anyhow::anyhow!("the configuration has errors: {}", errs[0]))?;
    let wanted = if args.is_empty() {
        services::enabled(&cfg)
    } else {
        services::resolve(&args).map_err(anyhow::Error::msg)?
    };

    println!("Connecting to watcher ...");
    let mut stream = match msgctl::connect(&base) {
        Some(s) => s,
        None => {
            let (s, pid) = msgctl::launch_watcher(&base, ha)?;
            println!("Launching watcher ... {pid}");
            s
        }
    };
    let request = Request::Start {
        services: wanted.iter().map(|s| s.name.to_string()).collect(),
    };
    let mut ok = true;
    msgctl::exchange(&mut stream, &request, |reply| match reply {
        Reply::Started {
            service,
            pid,
            listeners,
        } => {
            let ports: Vec<_> = listeners.iter().map(|l| l.addr.as_str()).collect();
            if ports.is_empty() {
                println!("Starting {service} server .... {pid}");
            } else {
                println!(
                    "Starting {service} server .... {pid} (listening on {})",
                    ports.join(", ")
                );
            }
        }
        Reply::AlreadyRunning { service, pid } => {
            println!("{service} server is already running, pid {pid}")
        }
        Reply::NotInstalled { service, program } => {
            println!("{service} server is not installed ({program} is missing); skipped")
        }
        Reply::StartFailed {
            service,
            reason,
            log,
        } => {
            ok = false;
            if log.is_empty() {
                eprintln!("Failed to start {service} server: {reason}");
            } else {
                eprintln!("Failed to start {service} server: {reason}\n  see {log}");
            }
        }
        other => eprintln!("unexpected answer from the watcher: {other:?}"),
    })?;
    Ok(ok)
}

fn names() -> String {
    services::SERVICES
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}
