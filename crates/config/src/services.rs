//! The service catalogue: what `start-msg` can start, in which order, from
//! which program, and which parameter enables it. The names are the
//! original's, so that administrators type what they know.

use crate::Config;

/// One supervised service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The name given to start-msg / stop-msg and used for its log directory.
    pub name: &'static str,
    /// The daemon under `msg_svr_base/lib`.
    pub program: &'static str,
    /// Parameter that must be true for start-msg (no argument) to start it.
    pub enable: &'static str,
    pub description: &'static str,
}

/// In start order: the store first, then the MTA, then the access servers.
/// stop-msg goes in the reverse order.
pub static SERVICES: &[Service] = &[
    Service {
        name: "store",
        program: "stored",
        enable: "local.store.enable",
        description: "message store server",
    },
    Service {
        name: "dispatcher",
        program: "dispatcher",
        enable: "local.imta.enable",
        description: "SMTP dispatcher",
    },
    Service {
        name: "job_controller",
        program: "job_controller",
        enable: "local.imta.enable",
        description: "MTA job controller",
    },
    Service {
        name: "imap",
        program: "imapd",
        enable: "service.imap.enable",
        description: "IMAP server",
    },
    Service {
        name: "pop",
        program: "popd",
        enable: "service.pop.enable",
        description: "POP server",
    },
    Service {
        name: "http",
        program: "mshttpd",
        enable: "service.http.enable",
        description: "Messenger Express (webmail)",
    },
    Service {
        name: "mmp",
        program: "mmp",
        enable: "local.mmp.enable",
        description: "Messaging Multiplexor",
    },
];

/// Names that stand for several services, as in the original.
const ALIASES: &[(&str, &[&str])] = &[
    ("mta", &["dispatcher", "job_controller"]),
    ("imta", &["dispatcher", "job_controller"]),
    ("smtp", &["dispatcher"]),
];

pub fn find(name: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.name == name)
}

/// The service a daemon program implements (`imapd` → imap).
pub fn by_program(program: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.program == program)
}

/// Expands the names given on a command line, in catalogue order.
pub fn resolve(names: &[String]) -> Result<Vec<&'static Service>, String> {
    let mut wanted = Vec::new();
    for n in names {
        let n = n.to_ascii_lowercase();
        if let Some((_, members)) = ALIASES.iter().find(|(a, _)| *a == n) {
            wanted.extend(members.iter().map(|m| m.to_string()));
        } else if find(&n).is_some() {
            wanted.push(n);
        } else {
            let known: Vec<_> = SERVICES
                .iter()
                .map(|s| s.name)
                .chain(ALIASES.iter().map(|a| a.0))
                .collect();
            return Err(format!(
                "unknown service {n:?}; known services: {}",
                known.join(", ")
            ));
        }
    }
    Ok(SERVICES
        .iter()
        .filter(|s| wanted.iter().any(|w| w == s.name))
        .collect())
}

/// The services start-msg starts with no argument.
pub fn enabled(cfg: &Config) -> Vec<&'static Service> {
    SERVICES.iter().filter(|s| cfg.get_bool(s.enable)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_expand_in_order() {
        let s = resolve(&["imap".into(), "mta".into()]).unwrap();
        let names: Vec<_> = s.iter().map(|s| s.name).collect();
        assert_eq!(names, ["dispatcher", "job_controller", "imap"]);
        assert!(
            resolve(&["nonsense".into()])
                .unwrap_err()
                .contains("known services")
        );
    }

    #[test]
    fn enable_parameters_are_declared() {
        for s in SERVICES {
            assert!(crate::params::lookup(s.enable).is_some(), "{}", s.enable);
        }
        let cfg = Config::defaults();
        let names: Vec<_> = enabled(&cfg).iter().map(|s| s.name).collect();
        assert!(!names.contains(&"mmp"));
    }
}
