//! NAME
//!   stop-msg - stop the messaging services
//!
//! SYNOPSIS
//!   stop-msg [-f] [SERVICE ...]
//!
//! DESCRIPTION
//!   With no service, stops every service (last started first) and the
//!   watcher. Each service gets TERM and local.watcher.stoptimeout seconds
//!   to finish its work, then KILL; `-f` kills at once. Stopping a service
//!   that is not running says so and succeeds.

use std::process::ExitCode;

use epistle_config::services;
use epistle_ipc::watcher::{Reply, Request};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stop-msg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let force = args.iter().any(|a| a == "-f");
    args.retain(|a| a != "-f");
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: stop-msg [-f] [SERVICE ...]");
        return Ok(());
    }
    let base = msgctl::configured_base()?;
    let Some(mut stream) = msgctl::connect(&base) else {
        println!("The watcher is not running; no service is running.");
        return Ok(());
    };
    let request = if args.is_empty() {
        Request::Shutdown { force }
    } else {
        let mut list = services::resolve(&args).map_err(anyhow::Error::msg)?;
        list.reverse();
        Request::Stop {
            services: list.iter().map(|s| s.name.to_string()).collect(),
            force,
        }
    };
    msgctl::exchange(&mut stream, &request, |reply| match reply {
        Reply::Stopped { service } => println!("Stopping {service} server .... done"),
        Reply::NotRunning { service } => println!("{service} server is not running"),
        other => eprintln!("unexpected answer from the watcher: {other:?}"),
    })?;
    if matches!(request, Request::Shutdown { .. }) {
        // The watcher exits after answering; wait until its socket is gone.
        for _ in 0..200 {
            if msgctl::connect(&base).is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        println!("Stopping watcher .... done");
    }
    Ok(())
}
