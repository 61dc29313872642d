//! What start-msg, stop-msg and status-msg share: finding the installation,
//! reaching (or launching) the watcher, and printing its answers.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use epistle_config::MsgSvrBase;
use epistle_ipc::frame;
use epistle_ipc::watcher::{Reply, Request};

/// The installation, refusing one that configure has not set up.
pub fn configured_base() -> anyhow::Result<MsgSvrBase> {
    let base = MsgSvrBase::locate();
    if !base.is_configured() {
        anyhow::bail!(
            "{} is not configured: run {}/sbin/configure first",
            base.root().display(),
            base.root().display()
        );
    }
    Ok(base)
}

/// A connection to the running watcher, if there is one.
pub fn connect(base: &MsgSvrBase) -> Option<UnixStream> {
    let s = UnixStream::connect(base.watcher_socket()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3600))).ok()?;
    Some(s)
}

/// Starts the watcher in its own session and waits for its socket.
pub fn launch_watcher(base: &MsgSvrBase, ha: bool) -> anyhow::Result<(UnixStream, u32)> {
    let program = base.lib().join("watcher");
    let log_dir = base.log().join("watcher");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("watcher.console"))?;
    let mut cmd = Command::new(&program);
    if ha {
        cmd.arg("--ha");
    }
    cmd.env(epistle_config::paths::BASE_ENV, base.root())
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = connect(base) {
            // The watcher outlives us and is re-parented to init.
            drop(child);
            return Ok((s, pid));
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the watcher exited ({status}) at start; see {} and {}",
                log_dir.join("watcher").display(),
                log_dir.join("watcher.console").display()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the watcher did not open {} within 15 s",
                base.watcher_socket().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one request and collects the replies up to `Done`, handing each
/// to `each` as it arrives.
pub fn exchange(
    stream: &mut UnixStream,
    req: &Request,
    mut each: impl FnMut(&Reply),
) -> anyhow::Result<()> {
    frame::write_blocking(stream, req).context("cannot talk to the watcher")?;
    loop {
        let reply: Reply = frame::read_blocking(stream).context("the watcher did not answer")?;
        if reply == Reply::Done {
            return Ok(());
        }
        each(&reply);
    }
}

/// `1d 02:03:04` style.
pub fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}
