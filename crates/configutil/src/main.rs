//! NAME
//!   configutil - list, read and change configuration parameters
//!
//! SYNOPSIS
//!   configutil [-m] [-H]                 list every parameter
//!   configutil -p PREFIX [-m] [-H]       list the parameters under PREFIX
//!   configutil -o NAME [-m] [-H]         print one value (-H: its default)
//!   configutil -o NAME -v VALUE          set it (-v "" clears the site value)
//!   configutil -i FILE                   import name=value lines at once
//!
//! DESCRIPTION
//!   Shipped defaults come from the parameter registry (and are written to
//!   config/msg.conf.defaults); site values live in config/msg.conf, and
//!   local.* values in config/local.conf. Each value is checked against its
//!   declared type before anything is written; writes are locked and atomic.
//!   Daemons read a refreshable parameter again on HUP; others need a
//!   restart of the service.

use std::process::ExitCode;

use clap::Parser;
use epistle_config::conffile::{ConfDocument, quote};
use epistle_config::params::{self, Param};
use epistle_config::{ConfigFiles, MsgSvrBase};

#[derive(Parser)]
#[command(
    name = "configutil",
    version,
    about = "List, read and change configuration parameters"
)]
struct Args {
    /// Parameter to print or set.
    #[arg(short = 'o', value_name = "NAME")]
    option: Option<String>,
    /// New value for -o; an empty value clears the site value.
    #[arg(short = 'v', value_name = "VALUE", requires = "option")]
    value: Option<String>,
    /// List the parameters whose names start with PREFIX.
    #[arg(short = 'p', value_name = "PREFIX", conflicts_with = "option")]
    prefix: Option<String>,
    /// Show defaults instead of current values.
    #[arg(short = 'H')]
    defaults: bool,
    /// Mark each parameter [REFRESHABLE] or [NOT REFRESHABLE].
    #[arg(short = 'm')]
    mark: bool,
    /// Import name=value lines from FILE in one atomic update.
    #[arg(short = 'i', value_name = "FILE", conflicts_with_all = ["option", "prefix"])]
    import: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("configutil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let base = MsgSvrBase::locate();
    let files = base.config_files();
    if !files.dir().is_dir() {
        anyhow::bail!(
            "{} does not exist: run {}/sbin/configure first",
            files.dir().display(),
            base.root().display()
        );
    }
    if let Some(path) = &args.import {
        return import(&files, path);
    }
    if let Some(name) = &args.option {
        let p = declared(name)?;
        if let Some(value) = &args.value {
            files.update(&[(name.clone(), Some(value.clone()))])?;
            return Ok(());
        }
        let value = if args.defaults {
            p.default.to_string()
        } else {
            files
                .site_value(name)?
                .unwrap_or_else(|| p.default.to_string())
        };
        println!("{}{}", value, mark(p, args.mark));
        return Ok(());
    }
    list(&files, args.prefix.as_deref().unwrap_or(""), args)
}

fn declared(name: &str) -> anyhow::Result<&'static Param> {
    params::lookup(name).ok_or_else(|| {
        let s = params::suggestions(name);
        if s.is_empty() {
            anyhow::anyhow!("unknown parameter {name}")
        } else {
            anyhow::anyhow!("unknown parameter {name} (did you mean {}?)", s.join(", "))
        }
    })
}

fn mark(p: &Param, on: bool) -> &'static str {
    match (on, p.refreshable) {
        (false, _) => "",
        (true, true) => " [REFRESHABLE]",
        (true, false) => " [NOT REFRESHABLE]",
    }
}

/// Every declared parameter with a fixed name, plus every site value of a
/// patterned one (logfile.imap.loglevel), sorted by name.
fn list(files: &ConfigFiles, prefix: &str, args: &Args) -> anyhow::Result<()> {
    let site = files.site_entries()?;
    let mut rows: Vec<(String, String, &Param)> = Vec::new();
    for p in params::PARAMS.iter().filter(|p| !p.name.contains('*')) {
        let value = site
            .iter()
            .rev()
            .find(|(n, _)| n == p.name)
            .map(|(_, v)| v.clone())
            .filter(|_| !args.defaults)
            .unwrap_or_else(|| p.default.to_string());
        rows.push((p.name.to_string(), value, p));
    }
    for (name, value) in &site {
        if let Some(p) = params::lookup(name).filter(|p| p.name.contains('*')) {
            rows.retain(|(n, _, _)| n != name);
            let v = if args.defaults { p.default } else { value };
            rows.push((name.clone(), v.to_string(), p));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let prefix = prefix.to_ascii_lowercase();
    for (name, value, p) in rows.iter().filter(|r| r.0.starts_with(&prefix)) {
        println!("{name} = {}{}", quote(value), mark(p, args.mark));
    }
    Ok(())
}

fn import(files: &ConfigFiles, path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let doc = ConfDocument::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let changes: Vec<(String, Option<String>)> = doc
        .entries()
        .map(|(n, v)| (n.to_string(), Some(v.to_string())))
        .collect();
    files
        .update(&changes)
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was changed", path.display()))?;
    Ok(())
}
