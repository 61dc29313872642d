//! NAME
//!   status-msg - show the state of the messaging services
//!
//! SYNOPSIS
//!   status-msg
//!
//! DESCRIPTION
//!   One line per service: state, pid, uptime, how often the watcher has
//!   restarted it, and the addresses it listens on; then the last error of
//!   any service that has one. Exit status 0 when every enabled service is
//!   running, 1 otherwise, 3 when the watcher is not running (as an init
//!   script's status expects).

use std::process::ExitCode;

use epistle_config::services;
use epistle_ipc::watcher::{Reply, Request};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("status-msg: {e:#}");
            ExitCode::from(4)
        }
    }
}

fn run() -> anyhow::Result<u8> {
    let base = msgctl::configured_base()?;
    let cfg = base
        .config_files()
        .load()
        .map_err(|errs| anyhow::anyhow!("the configuration has errors: {}", errs[0]))?;
    let Some(mut stream) = msgctl::connect(&base) else {
        println!("watcher is not running");
        return Ok(3);
    };
    let mut status = None;
    msgctl::exchange(&mut stream, &Request::Status, |r| {
        if let Reply::Status(s) = r {
            status = Some(s.clone());
        }
    })?;
    let status = status.ok_or_else(|| anyhow::anyhow!("the watcher sent no status"))?;
    println!(
        "{:<15} {:<13} {:>7} {:>12} {:>8}  LISTENING",
        "SERVICE", "STATE", "PID", "UPTIME", "RESTARTS"
    );
    let port = cfg.get_port("local.watcher.port");
    let watcher_listen = if port == 0 {
        String::new()
    } else {
        format!("127.0.0.1:{port}")
    };
    println!(
        "{:<15} {:<13} {:>7} {:>12} {:>8}  {}",
        "watcher",
        if status.ha { "running/ha" } else { "running" },
        status.watcher_pid,
        "-",
        "-",
        watcher_listen
    );
    let enabled = services::enabled(&cfg);
    let mut all_up = true;
    for s in &status.services {
        let is_enabled = enabled.iter().any(|e| e.name == s.name);
        if s.state == "stopped" && !is_enabled && s.restarts == 0 {
            continue; // neither enabled nor started by hand
        }
        let installed =
            services::find(&s.name).is_some_and(|svc| base.lib().join(svc.program).is_file());
        let state = if installed {
            s.state.as_str()
        } else {
            "not installed"
        };
        all_up &= s.state == "running" || !is_enabled || !installed;
        let listening: Vec<_> = s
            .listeners
            .iter()
            .map(|l| format!("{} ({})", l.addr, l.protocol))
            .collect();
        println!(
            "{:<15} {:<13} {:>7} {:>12} {:>8}  {}",
            s.name,
            state,
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s.uptime_secs
                .map(msgctl::format_uptime)
                .unwrap_or_else(|| "-".into()),
            s.restarts,
            listening.join(", ")
        );
    }
    for s in status.services.iter().filter(|s| s.state != "running") {
        if let Some(e) = &s.last_error {
            println!("{}: {e}", s.name);
        }
    }
    Ok(if all_up { 0 } else { 1 })
}
