//! The `msg_svr_base` layout (the guide's Table 5-1 and DESIGN.md).

use std::path::{Path, PathBuf};

use crate::store::ConfigFiles;

/// Where the installer puts the suite unless told otherwise.
pub const DEFAULT_BASE: &str = "/opt/epistle";
/// Where configure puts configuration and data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/opt/epistle";
/// Environment variable naming msg_svr_base, set by the watcher for the
/// daemons it starts and honoured by every command.
pub const BASE_ENV: &str = "MSG_SVR_BASE";

/// One installation's directory tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgSvrBase {
    root: PathBuf,
}

impl MsgSvrBase {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MsgSvrBase { root: root.into() }
    }

    /// The installation this program belongs to: `$MSG_SVR_BASE`, else the
    /// directory above the `sbin/` or `lib/` holding the running executable,
    /// else the default.
    pub fn locate() -> Self {
        if let Some(b) = std::env::var_os(BASE_ENV).filter(|b| !b.is_empty()) {
            return MsgSvrBase::new(b);
        }
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            let leaf = dir.file_name().and_then(|n| n.to_str());
            if matches!(leaf, Some("sbin" | "lib"))
                && let Some(base) = dir.parent()
            {
                return MsgSvrBase::new(base);
            }
        }
        MsgSvrBase::new(DEFAULT_BASE)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn sbin(&self) -> PathBuf {
        self.root.join("sbin")
    }
    pub fn lib(&self) -> PathBuf {
        self.root.join("lib")
    }
    pub fn templates(&self) -> PathBuf {
        self.root.join("lib/config-templates")
    }
    pub fn install(&self) -> PathBuf {
        self.root.join("install")
    }
    /// `config`, a link to `<data dir>/config` once configured.
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }
    /// `log`, a link to `<data dir>/log`.
    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }
    /// `data`, a link to the configuration-and-data directory itself.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// Sockets and pid files.
    pub fn run(&self) -> PathBuf {
        self.root.join("data/run")
    }
    pub fn setup(&self) -> PathBuf {
        self.root.join("data/setup")
    }
    pub fn config_files(&self) -> ConfigFiles {
        ConfigFiles::new(self.config())
    }
    /// Has configure (or useconfig) set this installation up?
    pub fn is_configured(&self) -> bool {
        self.config().join(crate::store::MSG_CONF).exists()
            || self.config().join(crate::store::LOCAL_CONF).exists()
    }
    /// A path from a parameter: absolute as given, else relative to the base.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }
    /// The log directory of one service.
    pub fn service_log_dir(&self, cfg: &crate::Config, service: &str) -> PathBuf {
        match cfg.log_param(service, "logdir") {
            "" => self.log().join(service),
            dir => self.resolve(dir),
        }
    }
    /// The MTA's channel queues, `data/queue/<channel>/`.
    pub fn queue(&self) -> PathBuf {
        self.root.join("data/queue")
    }
    /// The store server's socket.
    pub fn store_socket(&self) -> PathBuf {
        self.run().join("stored.sock")
    }
    /// The job controller's socket (enqueue notices, channel programs, qm).
    pub fn job_controller_socket(&self) -> PathBuf {
        self.run().join("job_controller.sock")
    }
    /// The MTA's message log, `log/mail.log_current`.
    pub fn mail_log(&self) -> PathBuf {
        self.log().join("mail.log_current")
    }
    pub fn watcher_socket(&self) -> PathBuf {
        self.run().join("watcher.sock")
    }
    pub fn pid_file(&self, service: &str) -> PathBuf {
        self.run().join(format!("{service}.pid"))
    }
}
