//! Dropping root after the privileged ports are bound: the daemon becomes
//! the configured system user and group, and nothing that reads client
//! bytes ever runs as root.

use std::path::PathBuf;

use anyhow::Context as _;
use nix::unistd::{Gid, Group, Uid, User, chown, setgid, setgroups, setuid};

/// Becomes `user`:`group` when the process is root; first hands `owned`
/// (the service's log and pid files) to that user so it can keep writing
/// them. Does nothing for an unprivileged process.
pub fn drop_to(user: &str, group: &str, owned: &[PathBuf]) -> anyhow::Result<()> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let u = User::from_name(user).ok().flatten().with_context(|| {
        format!("system user {user:?} (local.serveruid) does not exist; create it with useradd")
    })?;
    if u.uid.is_root() {
        return Ok(()); // configured to run as root: nothing to drop
    }
    let g = Group::from_name(group).ok().flatten().with_context(|| {
        format!("system group {group:?} (local.servergid) does not exist; create it with groupadd")
    })?;
    for p in owned {
        let _ = chown(p, Some(u.uid), Some(g.gid));
    }
    setgroups(&[g.gid]).context("setgroups")?;
    setgid(g.gid).context("setgid")?;
    setuid(u.uid).context("setuid")?;
    if setuid(Uid::from_raw(0)).is_ok() || Gid::effective() != g.gid {
        anyhow::bail!("privileges could not be dropped for good");
    }
    Ok(())
}
