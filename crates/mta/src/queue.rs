//! The channel queues on disk: `data/queue/<channel>/<NNN>/` holding
//! queue files ([`crate::queuefile`]), `NNN` spreading a channel over its
//! `subdirs`. The job controller rebuilds its state from this tree at
//! start, and `imsimta qm` reads and changes it. Files whose name starts
//! with `$` are being written and are not yet in the queue; a held
//! message ends in `.HELD`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::queuefile::{self, Envelope, QueueError};

/// The suffix of a held message.
pub const HELD_SUFFIX: &str = ".HELD";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub channel: String,
    pub path: PathBuf,
    /// Delivery attempts so far, from the name.
    pub attempts: u32,
    pub held: bool,
    pub size: u64,
    pub modified: SystemTime,
}

impl QueueEntry {
    pub fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or("")
    }
}

#[derive(Debug, Clone)]
pub struct QueueDir {
    root: PathBuf,
    spares: queuefile::SparePool,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> QueueError {
    QueueError::Io(format!("{what} {}: {e}", p.display()))
}

/// A channel name usable as a directory: no separators, no dot names.
fn valid_channel(channel: &str) -> bool {
    !channel.is_empty()
        && !channel.starts_with('.')
        && channel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Whether a directory entry is a queue file (final name, right shape).
fn is_queue_file(name: &str) -> bool {
    let base = name.strip_suffix(HELD_SUFFIX).unwrap_or(name);
    !name.starts_with('$') && base.ends_with(".00") && queuefile::attempts_of(base).is_some()
}

impl QueueDir {
    pub fn new(root: impl Into<PathBuf>) -> QueueDir {
        let root = root.into();
        QueueDir {
            spares: queuefile::SparePool::new(&root),
            root,
        }
    }

    pub fn channel_dir(&self, channel: &str) -> Result<PathBuf, QueueError> {
        if !valid_channel(channel) {
            return Err(QueueError::Malformed(format!(
                "{channel:?} is not a channel name"
            )));
        }
        Ok(self.root.join(channel))
    }

    /// Puts a message durably into a channel's queue; spreads files over
    /// `subdirs` numbered directories (none when 0).
    pub fn enqueue(
        &self,
        channel: &str,
        subdirs: u32,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<PathBuf, QueueError> {
        self.stage(channel, subdirs, envelope, message)?.commit()
    }

    /// Writes a message into a channel's queue directory under its
    /// temporary name, for a group commit.
    pub fn stage(
        &self,
        channel: &str,
        subdirs: u32,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<queuefile::Staged, QueueError> {
        let mut dir = self.channel_dir(channel)?;
        if subdirs > 0 {
            let spread = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_micros())
                % subdirs;
            dir = dir.join(format!("{spread:03}"));
        }
        queuefile::stage(&dir, &self.spares, envelope, message)
    }

    /// Takes a finished file out of the queue (into the spare pool).
    pub fn retire(&self, path: &Path) -> std::io::Result<()> {
        self.spares.retire(path)
    }

    /// The channels that have a queue directory.
    pub fn channels(&self) -> Result<Vec<String>, QueueError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("cannot read", &self.root, e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) && valid_channel(&name) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The messages queued on a channel, oldest first.
    pub fn entries(&self, channel: &str) -> Result<Vec<QueueEntry>, QueueError> {
        let dir = self.channel_dir(channel)?;
        let mut out = Vec::new();
        let mut dirs = vec![dir.clone()];
        if let Ok(top) = fs::read_dir(&dir) {
            for e in top.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
        for d in dirs {
            let listing = match fs::read_dir(&d) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("cannot read", &d, e)),
            };
            for e in listing.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(meta) = e.metadata() else { continue };
                if !meta.is_file() || !is_queue_file(&name) {
                    continue;
                }
                out.push(QueueEntry {
                    channel: channel.to_string(),
                    attempts: queuefile::attempts_of(&name).unwrap_or(0),
                    held: name.ends_with(HELD_SUFFIX),
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    path: e.path(),
                });
            }
        }
        out.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then_with(|| a.path.cmp(&b.path))
        });
        Ok(out)
    }

    /// Holds a message: renamed to end in `.HELD`, so no delivery job
    /// takes it until it is released.
    pub fn hold(&self, entry: &QueueEntry) -> Result<PathBuf, QueueError> {
        if entry.held {
            return Ok(entry.path.clone());
        }
        let to = entry
            .path
            .with_file_name(format!("{}{HELD_SUFFIX}", entry.name()));
        rename_durably(&entry.path, &to)?;
        Ok(to)
    }

    /// Releases a held message back into its channel's queue.
    pub fn release(&self, entry: &QueueEntry) -> Result<PathBuf, QueueError> {
        let Some(base) = entry.name().strip_suffix(HELD_SUFFIX) else {
            return Ok(entry.path.clone());
        };
        let to = entry.path.with_file_name(base);
        rename_durably(&entry.path, &to)?;
        Ok(to)
    }
}

fn rename_durably(from: &Path, to: &Path) -> Result<(), QueueError> {
    fs::rename(from, to).map_err(|e| io("cannot rename", from, e))?;
    let dir = to.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queuefile::Recipient;

    fn envelope() -> Envelope {
        Envelope {
            from: "a@example.org".into(),
            recipients: vec![Recipient {
                address: "b@example.com".into(),
                ..Default::default()
            }],
            received: 1,
            source_channel: "tcp_local".into(),
            ..Default::default()
        }
    }

    #[test]
    fn enqueue_list_hold_release() {
        let root = std::env::temp_dir().join(format!("epistle-queue-{}", std::process::id()));
        let q = QueueDir::new(&root);
        assert!(
            q.channels().unwrap().is_empty(),
            "no queue directory yet is an empty queue"
        );
        let first = q
            .enqueue("ims-ms", 20, &envelope(), b"Subject: 1\r\n\r\nx\r\n")
            .unwrap();
        let second = q
            .enqueue("ims-ms", 0, &envelope(), b"Subject: 2\r\n\r\ny\r\n")
            .unwrap();
        q.enqueue("tcp_local", 0, &envelope(), b"z").unwrap();
        let sub = first
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(sub.len() == 3 && sub.parse::<u32>().unwrap() < 20, "{sub}");
        // A file being written is not in the queue.
        std::fs::write(second.with_file_name("$PARTIAL.tmp"), b"half").unwrap();
        std::fs::write(second.with_file_name("notes.txt"), b"not a queue file").unwrap();

        assert_eq!(q.channels().unwrap(), ["ims-ms", "tcp_local"]);
        let entries = q.entries("ims-ms").unwrap();
        let mut paths: Vec<_> = entries.iter().map(|e| e.path.clone()).collect();
        paths.sort();
        let mut expect = vec![first.clone(), second.clone()];
        expect.sort();
        assert_eq!(paths, expect);
        assert!(
            entries
                .iter()
                .all(|e| e.attempts == 0 && !e.held && e.size > 0)
        );

        let held = q.hold(&entries[0]).unwrap();
        assert!(held.to_string_lossy().ends_with(".00.HELD"));
        let now = q.entries("ims-ms").unwrap();
        let h = now.iter().find(|e| e.held).unwrap();
        assert_eq!(h.path, held);
        let back = q.release(h).unwrap();
        assert_eq!(back, entries[0].path);
        let (env, offset) = Envelope::decode(&std::fs::read(&back).unwrap()).unwrap();
        assert_eq!(env, envelope());
        assert!(offset > 0);

        assert!(q.entries("../etc").is_err());
        assert!(q.enqueue("a/b", 0, &envelope(), b"").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
