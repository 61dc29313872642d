//! A service's log file, `log/<service>/<service>`, rolled over and expired
//! as the `logfile.<service>.*` parameters say.
//!
//! The current file keeps its plain name so `tail -f` works; a rolled file
//! is renamed `<service>.<YYYYMMDDHHMMSS>`. After each roll-over the oldest
//! rolled files are removed past `maxlogfiles`, past `maxlogsize` bytes in
//! all, or past `expirytime` seconds of age.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use epistle_config::Config;

/// Roll-over and expiry limits of one service's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPolicy {
    pub max_file_size: u64,
    pub rollover_time: Option<Duration>,
    pub max_files: usize,
    pub max_total_size: u64,
    pub expiry_time: Option<Duration>,
}

impl LogPolicy {
    pub fn from_config(cfg: &Config, service: &str) -> Self {
        let secs = |opt: &str| {
            let n = cfg
                .log_param(service, opt)
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
            (n > 0).then(|| Duration::from_secs(n))
        };
        let size = |opt: &str| {
            epistle_config::params::parse_size(cfg.log_param(service, opt)).unwrap_or(0)
        };
        LogPolicy {
            max_file_size: size("maxlogfilesize").max(4096),
            rollover_time: secs("rollovertime"),
            max_files: cfg
                .log_param(service, "maxlogfiles")
                .trim()
                .parse()
                .unwrap_or(10)
                .max(1),
            max_total_size: size("maxlogsize"),
            expiry_time: secs("expirytime"),
        }
    }
}

pub struct LogFile {
    dir: PathBuf,
    name: String,
    policy: LogPolicy,
    file: File,
    size: u64,
    opened: SystemTime,
}

impl LogFile {
    /// Opens (appending) `dir/name`, creating the directory.
    pub fn open(dir: &Path, name: &str, policy: LogPolicy) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let meta = file.metadata()?;
        let opened = meta
            .created()
            .or_else(|_| meta.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Ok(LogFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            policy,
            file,
            size: meta.len(),
            opened,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    pub fn set_policy(&mut self, policy: LogPolicy) {
        self.policy = policy;
    }

    /// Appends one record, rolling over first when the record would push
    /// the file past its size or the file is past its age.
    pub fn write_record(&mut self, record: &str) -> io::Result<()> {
        let too_big = self.size > 0 && self.size + record.len() as u64 > self.policy.max_file_size;
        let too_old = self
            .policy
            .rollover_time
            .is_some_and(|t| self.opened.elapsed().unwrap_or_default() >= t && self.size > 0);
        if too_big || too_old {
            self.roll_over()?;
        }
        self.file.write_all(record.as_bytes())?;
        self.size += record.len() as u64;
        Ok(())
    }

    fn roll_over(&mut self) -> io::Result<()> {
        let stamp = chrono::Local::now().format("%Y%m%d%H%M%S").to_string();
        let mut target = self.dir.join(format!("{}.{stamp}", self.name));
        let mut n = 1;
        while target.exists() {
            target = self.dir.join(format!("{}.{stamp}.{n}", self.name));
            n += 1;
        }
        fs::rename(self.path(), &target)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path())?;
        self.size = 0;
        self.opened = SystemTime::now();
        self.expire()
    }

    /// Removes rolled files past the count, total size and age limits,
    /// oldest first.
    pub fn expire(&self) -> io::Result<()> {
        let prefix = format!("{}.", self.name);
        let mut rolled: Vec<(PathBuf, u64, SystemTime)> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                m.is_file().then(|| {
                    (
                        e.path(),
                        m.len(),
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    )
                })
            })
            .collect();
        rolled.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.0.cmp(&a.0))); // newest first
        let mut total = 0u64;
        for (i, (path, len, mtime)) in rolled.iter().enumerate() {
            total += len;
            let expired = self
                .policy
                .expiry_time
                .is_some_and(|t| mtime.elapsed().unwrap_or_default() > t);
            let over_size = self.policy.max_total_size > 0 && total > self.policy.max_total_size;
            if i >= self.policy.max_files || over_size || expired {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LogPolicy {
        LogPolicy {
            max_file_size: 4096,
            rollover_time: None,
            max_files: 3,
            max_total_size: 0,
            expiry_time: None,
        }
    }

    #[test]
    fn rolls_over_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), "imap", policy()).unwrap();
        let line = format!("{}\n", "x".repeat(1000));
        for _ in 0..40 {
            log.write_record(&line).unwrap();
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "current + 3 rolled: {names:?}");
        assert!(fs::metadata(log.path()).unwrap().len() <= 4096);
    }

    #[test]
    fn total_size_limit_removes_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = policy();
        p.max_files = 100;
        p.max_total_size = 8192;
        let mut log = LogFile::open(dir.path(), "pop", p).unwrap();
        let line = format!("{}\n", "y".repeat(1000));
        for _ in 0..40 {
            log.write_record(&line).unwrap();
        }
        let rolled: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "pop")
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(rolled <= 8192, "{rolled}");
    }
}
