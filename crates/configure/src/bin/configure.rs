//! NAME
//!   configure - create the initial runtime configuration
//!
//! SYNOPSIS
//!   configure [-nodisplay] [-noconsole] [-force]
//!   configure -nodisplay -noconsole -state /full/path/saveState [-force]
//!
//! DESCRIPTION
//!   Asks the guide's questions (configuration-and-data directory, host
//!   name, components, system user and group, configuration and user/group
//!   directories, postmaster, administrator password, default domain,
//!   organization DN) or reads the answers from a saveState file, checks
//!   them all, then creates the data directory and the config, log and data
//!   links, msg.conf and local.conf, the configuration files from
//!   lib/config-templates, and a self-signed certificate when none is
//!   given. It writes install/configure_YYYYMMDDHHMMSS.log and a new
//!   saveState under install/configure_YYYYMMDDHHMMSS/ and data/setup/.
//!   An existing configuration is not overwritten without -force.

use std::io::IsTerminal;
use std::process::ExitCode;

use configure::apply::{self, ConfigureLog};
use configure::interactive::Prompter;
use configure::state::Answers;
use epistle_config::MsgSvrBase;

struct Flags {
    nodisplay: bool,
    noconsole: bool,
    state: Option<String>,
    force: bool,
}

fn parse_flags() -> Result<Flags, String> {
    let mut f = Flags {
        nodisplay: false,
        noconsole: false,
        state: None,
        force: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-nodisplay" => f.nodisplay = true,
            "-noconsole" => f.noconsole = true,
            "-force" => f.force = true,
            "-state" => {
                f.state = Some(
                    args.next()
                        .ok_or("-state needs the path of a saveState file")?,
                )
            }
            "-h" | "--help" => {
                println!(
                    "usage: configure [-nodisplay] [-noconsole] [-force]\n       configure -nodisplay -noconsole -state /full/path/saveState [-force]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if f.state.is_some() && !(f.nodisplay && f.noconsole) {
        return Err("-state must be used with -nodisplay and -noconsole".into());
    }
    Ok(f)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("configure: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let flags = parse_flags().map_err(anyhow::Error::msg)?;
    let base = MsgSvrBase::locate();
    let stamp = configure::stamp();
    let mut answers = match &flags.state {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read state file {path}: {e}"))?;
            Answers::from_state(&text).map_err(|e| anyhow::anyhow!("state file {path}: {e}"))?
        }
        None => {
            println!(
                "Epistle Messaging Server {} - initial runtime configuration",
                env!("CARGO_PKG_VERSION")
            );
            println!("Installation: {}\n", base.root().display());
            let (user, group) = default_accounts();
            let defaults = Answers::defaults_for(&configure::detect_fqdn(), &user, &group);
            let stdin = std::io::stdin();
            let tty = stdin.is_terminal();
            Prompter::new(stdin.lock(), tty).run(defaults)?
        }
    };
    answers.overwrite |= flags.force;
    let warnings = match answers.validate() {
        Ok(w) => w,
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::bail!(
                "the answers have errors; nothing was changed:\n{}",
                lines.join("\n")
            );
        }
    };
    let mut warnings = warnings;
    warnings.extend(apply::preflight(&base, &answers)?);
    let mut log = ConfigureLog::create(&base, &stamp)?;
    for w in &warnings {
        log.step(&format!("Warning: {w}"));
    }
    apply::apply(&base, &answers, &stamp, &mut log)?;
    println!("Log: {}", log.path.display());
    println!(
        "Saved answers: {}",
        base.install()
            .join(format!("configure_{stamp}/saveState"))
            .display()
    );
    Ok(())
}

/// mailsrv:mail for root (the guide's example), else the running user.
fn default_accounts() -> (String, String) {
    use nix::unistd::{Group, Uid, User};
    if Uid::effective().is_root() {
        return ("mailsrv".into(), "mail".into());
    }
    let user = User::from_uid(Uid::effective()).ok().flatten();
    let name = user.as_ref().map(|u| u.name.clone()).unwrap_or_default();
    let group = user
        .and_then(|u| Group::from_gid(u.gid).ok().flatten())
        .map(|g| g.name)
        .unwrap_or_default();
    (name, group)
}
