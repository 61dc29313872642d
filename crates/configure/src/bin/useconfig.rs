//! NAME
//!   useconfig - use an existing configuration on shared disk
//!
//! SYNOPSIS
//!   useconfig [-force] install/configure_YYYYMMDDHHMMSS
//!   useconfig [-force] /shared/data/setup/configure_YYYYMMDDHHMMSS
//!
//! DESCRIPTION
//!   On a second node of a high-availability pair, links this
//!   installation's config, log and data to the configuration-and-data
//!   directory that configure created on the first node, as recorded in the
//!   saveState of that run, without running configure again. It does not
//!   upgrade or change the configuration. Links that already point
//!   elsewhere are replaced only with -force.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use configure::apply::relink;
use configure::state::Answers;
use epistle_config::MsgSvrBase;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("useconfig: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let force = args.iter().any(|a| a == "-force");
    args.retain(|a| a != "-force");
    let [arg] = args.as_slice() else {
        bail!("usage: useconfig [-force] install/configure_YYYYMMDDHHMMSS");
    };
    let base = MsgSvrBase::locate();
    let mut path = base.resolve(arg);
    if path.is_dir() {
        path = path.join("saveState");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let answers =
        Answers::from_state(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let data = answers.data_dir.clone();
    let config = data.join("config");
    if !config.join("msg.conf").exists() && !config.join("local.conf").exists() {
        bail!(
            "{} holds no configuration (no msg.conf or local.conf); is the shared disk mounted?",
            config.display()
        );
    }
    if nix::unistd::Uid::effective().is_root()
        && nix::unistd::User::from_name(&answers.system_user)?.is_none()
    {
        bail!(
            "system user {} does not exist on this node; create it as on the first node",
            answers.system_user
        );
    }
    for (link, target) in [
        ("data", data.clone()),
        ("config", config.clone()),
        ("log", data.join("log")),
    ] {
        let p = base.root().join(link);
        if let Ok(current) = std::fs::read_link(&p)
            && current != target
            && !force
        {
            bail!(
                "{} already points to {}; use -force to replace it",
                p.display(),
                current.display()
            );
        }
        relink(&p, &target)?;
    }
    std::fs::create_dir_all(base.install())?;
    let log = base
        .install()
        .join(format!("useconfig_{}.log", configure::stamp()));
    std::fs::write(
        &log,
        format!(
            "useconfig: linked {} to {}\n",
            base.root().display(),
            data.display()
        ),
    )?;
    println!(
        "{} now uses the configuration in {}",
        base.root().display(),
        data.display()
    );
    Ok(())
}
