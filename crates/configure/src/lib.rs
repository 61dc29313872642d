//! Epistle's initial runtime configuration (the guide's `configure`) and
//! `useconfig`, which points a second HA node at an existing one.
//!
//! - [`state`]: the answers, their rules and the saveState format (pure).
//! - [`interactive`]: the questions, asked on the terminal.
//! - [`apply`]: what configure does on disk once the answers are good.

pub mod apply;
pub mod interactive;
pub mod state;

/// `YYYYMMDDHHMMSS`, naming this run's log and saveState directory.
pub fn stamp() -> String {
    chrono::Local::now().format("%Y%m%d%H%M%S").to_string()
}

/// This host's fully qualified name as best known: the system host name if
/// it has a dot, else the first dotted name on its line in /etc/hosts.
pub fn detect_fqdn() -> String {
    let short = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    if short.contains('.') {
        return short;
    }
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for line in hosts.lines() {
        let names: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .collect();
        if names.contains(&short.as_str())
            && let Some(fq) = names.iter().find(|n| n.contains('.'))
        {
            return fq.to_string();
        }
    }
    short
}
