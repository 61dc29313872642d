//! Site configuration on disk and the effective configuration read from it.
//!
//! Shipped defaults live in the registry ([`crate::params`]) and are written
//! out as `msg.conf.defaults` for reading only. Site values live in
//! `config/msg.conf`, except `local.*` values, which live in
//! `config/local.conf` (as in 6.0, where `local.*` stayed on the host).
//! Every change is made under an exclusive lock and written to a temporary
//! file that is fsynced and renamed over the old one, so concurrent
//! `configutil` runs lose nothing and a crash leaves the old or the new file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::conffile::{ConfDocument, SyntaxError, quote};
use crate::params::{self, InvalidValue, PARAMS, Param};

pub const MSG_CONF: &str = "msg.conf";
pub const LOCAL_CONF: &str = "local.conf";
pub const DEFAULTS_FILE: &str = "msg.conf.defaults";
const LOCK_FILE: &str = ".config.lock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Syntax { path: PathBuf, source: SyntaxError },
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: InvalidValue },
    #[error("unknown parameter {name}{}", hint(.suggestions))]
    Unknown {
        name: String,
        suggestions: Vec<&'static str>,
    },
}

fn hint(s: &[&str]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", s.join(", "))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The configuration files of one installation (`msg_svr_base/config`).
#[derive(Debug, Clone)]
pub struct ConfigFiles {
    dir: PathBuf,
}

impl ConfigFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfigFiles { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `name`'s site value.
    pub fn file_for(&self, name: &str) -> PathBuf {
        if name.to_ascii_lowercase().starts_with("local.") {
            self.dir.join(LOCAL_CONF)
        } else {
            self.dir.join(MSG_CONF)
        }
    }

    fn read_doc(path: &Path) -> Result<ConfDocument, ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(path)(e)),
        };
        ConfDocument::parse(&text).map_err(|source| ConfigError::Syntax {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks `name` and `value` against the registry; the value to store.
    pub fn check(name: &str, value: &str) -> Result<(&'static Param, String), ConfigError> {
        let p = params::lookup(name).ok_or_else(|| ConfigError::Unknown {
            name: name.to_string(),
            suggestions: params::suggestions(name),
        })?;
        let v = p
            .validate(name, value)
            .map_err(|source| ConfigError::Invalid {
                path: PathBuf::from("value"),
                source,
            })?;
        Ok((p, v))
    }

    /// Sets (or with `None` clears) several parameters in one locked update.
    /// Every value is checked before anything is written.
    pub fn update(&self, changes: &[(String, Option<String>)]) -> Result<(), ConfigError> {
        let mut checked = Vec::with_capacity(changes.len());
        for (name, value) in changes {
            let p = params::lookup(name).ok_or_else(|| ConfigError::Unknown {
                name: name.clone(),
                suggestions: params::suggestions(name),
            })?;
            let value = match value {
                Some(v) if !v.is_empty() => {
                    Some(p.validate(name, v).map_err(|source| ConfigError::Invalid {
                        path: self.file_for(name),
                        source,
                    })?)
                }
                _ => None,
            };
            checked.push((name.to_ascii_lowercase(), value));
        }
        let _lock = self.lock()?;
        let mut docs: BTreeMap<PathBuf, ConfDocument> = BTreeMap::new();
        for (name, value) in &checked {
            let path = self.file_for(name);
            if !docs.contains_key(&path) {
                let doc = Self::read_doc(&path)?;
                docs.insert(path.clone(), doc);
            }
            docs.get_mut(&path)
                .expect("inserted above")
                .set(name, value.as_deref());
        }
        for (path, doc) in docs {
            write_atomically(&path, doc.render().as_bytes(), 0o640)?;
        }
        Ok(())
    }

    /// Holds the configuration lock until dropped.
    fn lock(&self) -> Result<File, ConfigError> {
        let path = self.dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.lock().map_err(io_err(&path))?;
        Ok(f)
    }

    /// Writes `msg.conf.defaults` from the registry.
    pub fn write_defaults(&self) -> Result<(), ConfigError> {
        let mut out = String::from(
            "# msg.conf.defaults: the shipped default of every parameter.\n\
             # Generated from the parameter registry; never edit it. Change a\n\
             # value with `configutil -o NAME -v VALUE`, which writes msg.conf\n\
             # (or local.conf for local.* parameters).\n",
        );
        for p in PARAMS {
            out.push_str(&format!(
                "\n# {} ({}{})\n",
                p.description,
                p.ty,
                refresh_tag(p)
            ));
            out.push_str(&format!("{} = {}\n", p.name, quote(p.default)));
        }
        let path = self.dir.join(DEFAULTS_FILE);
        write_atomically(&path, out.as_bytes(), 0o644)
    }

    /// Reads the site files into the effective configuration, checking every
    /// value. All problems are reported, not just the first.
    pub fn load(&self) -> Result<Config, Vec<ConfigError>> {
        let mut site = BTreeMap::new();
        let mut unknown = Vec::new();
        let mut errors = Vec::new();
        for file in [MSG_CONF, LOCAL_CONF] {
            let path = self.dir.join(file);
            let doc = match Self::read_doc(&path) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            for (name, value) in doc.entries() {
                match params::lookup(name) {
                    None => unknown.push(name.to_string()),
                    Some(p) => match p.validate(name, value) {
                        Ok(v) => {
                            site.insert(name.to_ascii_lowercase(), v);
                        }
                        Err(source) => errors.push(ConfigError::Invalid {
                            path: path.clone(),
                            source,
                        }),
                    },
                }
            }
        }
        if errors.is_empty() {
            Ok(Config { site, unknown })
        } else {
            Err(errors)
        }
    }

    /// The raw site value of one parameter, without checking the others.
    pub fn site_value(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let doc = Self::read_doc(&self.file_for(name))?;
        Ok(doc.get(name).map(str::to_string))
    }

    /// Every site entry as written, for listing (no checks).
    pub fn site_entries(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        for file in [MSG_CONF, LOCAL_CONF] {
            let doc = Self::read_doc(&self.dir.join(file))?;
            for (n, v) in doc.entries() {
                out.push((n.to_ascii_lowercase(), v.to_string()));
            }
        }
        Ok(out)
    }
}

fn refresh_tag(p: &Param) -> &'static str {
    if p.refreshable { ", refreshable" } else { "" }
}

/// Writes `data` to `path` so that readers see the old or the new content,
/// never a mix: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), ConfigError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// The effective configuration: site values over registry defaults.
#[derive(Debug, Clone, Default)]
pub struct Config {
    site: BTreeMap<String, String>,
    unknown: Vec<String>,
}

impl Config {
    /// A configuration with only the shipped defaults.
    pub fn defaults() -> Self {
        Config::default()
    }

    /// Overrides a value in memory (tests and command-line overrides).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.site
            .insert(name.to_ascii_lowercase(), value.to_string());
        self
    }

    /// Names found in the site files that no declaration covers: probably
    /// typing mistakes, worth a warning at start-up.
    pub fn unknown(&self) -> &[String] {
        &self.unknown
    }

    /// The value of a declared parameter: the site's, or the default.
    pub fn get(&self, name: &str) -> &str {
        let declared = params::lookup(name);
        debug_assert!(
            declared.is_some(),
            "parameter {name} is not declared in params.rs"
        );
        match self.site.get(&name.to_ascii_lowercase()) {
            Some(v) => v,
            None => declared.map(|p| p.default).unwrap_or(""),
        }
    }

    /// The site's names that a patterned declaration covers
    /// (`store.partition.*.path` → every configured partition).
    pub fn names_matching(&self, pattern: &str) -> Vec<String> {
        let Some(p) = params::PARAMS.iter().find(|p| p.name == pattern) else {
            return Vec::new();
        };
        self.site.keys().filter(|n| p.matches(n)).cloned().collect()
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.site.contains_key(&name.to_ascii_lowercase())
    }

    pub fn get_bool(&self, name: &str) -> bool {
        params::parse_bool(self.get(name)).unwrap_or(false)
    }

    pub fn get_int(&self, name: &str) -> i64 {
        self.get(name).trim().parse().unwrap_or(0)
    }

    pub fn get_u64(&self, name: &str) -> u64 {
        u64::try_from(self.get_int(name)).unwrap_or(0)
    }

    pub fn get_port(&self, name: &str) -> u16 {
        self.get(name).trim().parse().unwrap_or(0)
    }

    pub fn get_size(&self, name: &str) -> u64 {
        params::parse_size(self.get(name)).unwrap_or(0)
    }

    /// `logfile.<service>.<option>`, the per-service logging settings.
    pub fn log_param(&self, service: &str, option: &str) -> &str {
        self.get(&format!("logfile.{service}.{option}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_service_values_go_to_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = ConfigFiles::new(dir.path());
        files
            .update(&[
                ("service.imap.port".into(), Some("1143".into())),
                ("local.hostname".into(), Some("mail.example.com".into())),
            ])
            .unwrap();
        let msg = fs::read_to_string(dir.path().join(MSG_CONF)).unwrap();
        let local = fs::read_to_string(dir.path().join(LOCAL_CONF)).unwrap();
        assert_eq!(msg, "service.imap.port = 1143\n");
        assert_eq!(local, "local.hostname = mail.example.com\n");
        let cfg = files.load().unwrap();
        assert_eq!(cfg.get_port("service.imap.port"), 1143);
        assert_eq!(cfg.get_port("service.pop.port"), 110);
    }

    #[test]
    fn bad_values_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let files = ConfigFiles::new(dir.path());
        let err = files
            .update(&[
                ("service.imap.port".into(), Some("1143".into())),
                ("service.pop.port".into(), Some("99999".into())),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("service.pop.port"), "{err}");
        assert!(!dir.path().join(MSG_CONF).exists());
        let err = files
            .update(&[("service.imap.prot".into(), Some("1".into()))])
            .unwrap_err();
        assert!(
            err.to_string().contains("did you mean service.imap.port"),
            "{err}"
        );
    }

    #[test]
    fn load_reports_every_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(MSG_CONF),
            "service.imap.port = x\nservice.pop.port = y\nservice.imap.typo = 1\n",
        )
        .unwrap();
        let errs = ConfigFiles::new(dir.path()).load().unwrap_err();
        assert_eq!(errs.len(), 2);
    }
}
