//! Logging in the original's format, to `log/<service>/<service>`:
//!
//! `[30/Nov/2026:20:28:29 +0000] host imapd[1234]: Account Notice: message`
//!
//! The category is the event's tracing target when it is one of the
//! original's (General, Account, Protocol, Stats, Store, Network, LDAP),
//! else General. tracing levels map to the original's: ERROR → Error
//! (Critical with a `critical = true` field), WARN → Warning, INFO →
//! Notice, DEBUG → Information, TRACE → Debug. `logfile.<service>.loglevel`
//! is re-read on HUP.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use epistle_config::Config;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::logfile::{LogFile, LogPolicy};

const CATEGORIES: &[&str] = &[
    "General", "Account", "Protocol", "Stats", "Store", "Network", "LDAP",
];

/// Severity on the original's scale, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Severity {
    Nolog = 0,
    Critical,
    Error,
    Warning,
    Notice,
    Information,
    Debug,
}

impl Severity {
    pub fn parse(s: &str) -> Severity {
        match s.trim().to_ascii_lowercase().as_str() {
            "nolog" => Severity::Nolog,
            "critical" => Severity::Critical,
            "error" => Severity::Error,
            "warning" => Severity::Warning,
            "information" => Severity::Information,
            "debug" => Severity::Debug,
            _ => Severity::Notice,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Severity::Nolog => "Nolog",
            Severity::Critical => "Critical",
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Notice => "Notice",
            Severity::Information => "Information",
            Severity::Debug => "Debug",
        }
    }
    fn of(level: &Level, critical: bool) -> Severity {
        match *level {
            Level::ERROR if critical => Severity::Critical,
            Level::ERROR => Severity::Error,
            Level::WARN => Severity::Warning,
            Level::INFO => Severity::Notice,
            Level::DEBUG => Severity::Information,
            _ => Severity::Debug,
        }
    }
}

/// Handle kept by the daemon to apply a new configuration on HUP.
#[derive(Clone)]
pub struct LogHandle {
    service: String,
    threshold: Arc<AtomicU8>,
    file: Arc<Mutex<LogFile>>,
}

impl LogHandle {
    pub fn reconfigure(&self, cfg: &Config) {
        let level = Severity::parse(cfg.log_param(&self.service, "loglevel"));
        self.threshold.store(level as u8, Ordering::Relaxed);
        if let Ok(mut f) = self.file.lock() {
            f.set_policy(LogPolicy::from_config(cfg, &self.service));
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.file.lock().map(|f| f.path()).unwrap_or_default()
    }
}

struct ServiceLogLayer {
    process: String,
    host: String,
    threshold: Arc<AtomicU8>,
    file: Arc<Mutex<LogFile>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    critical: bool,
}

impl Visit for Fields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "critical" {
            self.critical = value;
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for ServiceLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let severity = Severity::of(event.metadata().level(), fields.critical);
        if severity as u8 > self.threshold.load(Ordering::Relaxed) {
            return;
        }
        let target = event.metadata().target();
        let category = CATEGORIES
            .iter()
            .find(|c| **c == target)
            .copied()
            .unwrap_or("General");
        let record = format!(
            "[{}] {} {}[{}]: {} {}: {}{}\n",
            chrono::Local::now().format("%d/%b/%Y:%H:%M:%S %z"),
            self.host,
            self.process,
            std::process::id(),
            category,
            severity.name(),
            fields.message.replace('\n', " "),
            fields.rest,
        );
        if let Ok(mut f) = self.file.lock() {
            // A full disk must not take the service down with it; the record
            // is lost and the next one tries again.
            let _ = f.write_record(&record);
        }
    }
}

/// Sends this process's tracing events to its service log.
pub fn init(
    base: &epistle_config::MsgSvrBase,
    cfg: &Config,
    service: &str,
    process: &str,
) -> std::io::Result<LogHandle> {
    let dir = base.service_log_dir(cfg, service);
    let file = LogFile::open(&dir, service, LogPolicy::from_config(cfg, service))?;
    let file = Arc::new(Mutex::new(file));
    let threshold = Arc::new(AtomicU8::new(
        Severity::parse(cfg.log_param(service, "loglevel")) as u8,
    ));
    let host = match cfg.get("local.hostname") {
        "" => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        h => h.to_string(),
    };
    let layer = ServiceLogLayer {
        process: process.to_string(),
        host,
        threshold: threshold.clone(),
        file: file.clone(),
    };
    // A second init in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer).try_init();
    let handle = LogHandle {
        service: service.to_string(),
        threshold,
        file,
    };
    tracing::info!(target: "General", "Log opened ({})", chrono::Utc::now().timestamp());
    Ok(handle)
}
