//! The watcher's protocol, spoken on `data/run/watcher.sock` by start-msg,
//! stop-msg, status-msg and the daemons the watcher starts. On the loopback
//! TCP port (`local.watcher.port`) only [`Request::Status`] is answered:
//! anyone on the host can reach a TCP port, while the socket's directory is
//! reserved to the mail system's user.

use serde::{Deserialize, Serialize};

/// Environment variable through which the watcher tells a daemon the
/// service name it was started as.
pub const SERVICE_ENV: &str = "EPISTLE_SERVICE";

/// One socket a daemon listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// `ip:port` as bound.
    pub addr: String,
    /// What is spoken there, for the probe: imap, imaps, pop3, pop3s, smtp,
    /// smtps, submission, http, https or tcp (connect only).
    pub protocol: String,
    /// The parameter (or file) that chose the port, for error messages.
    pub param: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start these services, in the order given; each answer is sent as it
    /// is known, then [`Reply::Done`].
    Start {
        services: Vec<String>,
    },
    /// Stop these services, in the order given (`force`: SIGKILL at once).
    Stop {
        services: Vec<String>,
        force: bool,
    },
    Status,
    /// Stop every service, then exit.
    Shutdown {
        force: bool,
    },
    /// From a daemon: it is listening and serving.
    Ready {
        service: String,
        pid: u32,
        listeners: Vec<Listener>,
    },
    /// From a daemon: it cannot start, and why.
    Failed {
        service: String,
        pid: u32,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Started {
        service: String,
        pid: u32,
        listeners: Vec<Listener>,
    },
    AlreadyRunning {
        service: String,
        pid: u32,
    },
    NotInstalled {
        service: String,
        program: String,
    },
    StartFailed {
        service: String,
        reason: String,
        log: String,
    },
    Stopped {
        service: String,
    },
    NotRunning {
        service: String,
    },
    Status(WatcherStatus),
    /// The end of the answers to one request.
    Done,
    Refused {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherStatus {
    pub watcher_pid: u32,
    pub ha: bool,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// starting, running, stopping, stopped, restarting, failed or given-up.
    pub state: String,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    pub listeners: Vec<Listener>,
    pub last_error: Option<String>,
}
