//! `log/mail.log_current` (original.md §11.1): one line per message event
//! from every MTA process —
//! `dd-Mon-yyyy hh:mm:ss.cc src-chan dst-chan CODE size from orig-to
//! active-to diagnostic`. Each record is one `write` to a file opened for
//! appending, so records from many processes never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The action letter of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Enqueued.
    Enqueue,
    /// Dequeued: delivered or relayed.
    Dequeue,
    /// Returned to the sender (permanent failure on dequeue).
    Return,
    /// Refused at enqueue (RCPT refused, access mapping).
    Reject,
    /// Temporary failure; stays queued.
    Requeue,
    /// A delay warning was sent.
    Warning,
}

impl Action {
    pub fn letter(self) -> char {
        match self {
            Action::Enqueue => 'E',
            Action::Dequeue => 'D',
            Action::Return => 'R',
            Action::Reject => 'J',
            Action::Requeue => 'Q',
            Action::Warning => 'W',
        }
    }
}

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub source_channel: &'a str,
    pub dest_channel: &'a str,
    pub action: Action,
    /// Modifier letters after the action (`E` ESMTP, `S` SMTP, `L` LMTP,
    /// `C` CHUNKING, `A` SASL, `T` TLS).
    pub modifiers: &'a str,
    /// Bytes; written in 1 KB blocks, rounded up.
    pub size: u64,
    /// The envelope sender; the null sender is written `<>`.
    pub from: &'a str,
    pub original_to: &'a str,
    pub active_to: &'a str,
    pub diagnostic: &'a str,
}

/// A field as one token: no spaces or line breaks inside.
fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

impl Record<'_> {
    /// The line, without its newline, for a time given as
    /// `dd-Mon-yyyy hh:mm:ss.cc`.
    pub fn format(&self, time: &str) -> String {
        let blocks = self.size.div_ceil(1024);
        let diagnostic: String = self
            .diagnostic
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(1000)
            .collect();
        format!(
            "{time} {:<12} {:<12} {}{:<3} {blocks:>6} {} {} {} {diagnostic}",
            token(self.source_channel),
            token(self.dest_channel),
            self.action.letter(),
            self.modifiers,
            if self.from.is_empty() {
                "<>".to_string()
            } else {
                token(self.from)
            },
            token(self.original_to),
            token(self.active_to),
        )
        .trim_end()
        .to_string()
    }
}

/// The message log of one installation.
#[derive(Debug, Clone)]
pub struct MailLog {
    path: PathBuf,
    /// The file last written, kept open while it is still the one at
    /// `path` (a roll-over renames it away): a `stat` per write instead
    /// of an open and a close. Shared by clones.
    open: Arc<Mutex<Option<OpenLog>>>,
}

/// An open `mail.log_current` and the inode it is.
#[derive(Debug)]
struct OpenLog {
    file: File,
    dev: u64,
    ino: u64,
}

impl MailLog {
    pub fn new(path: impl Into<PathBuf>) -> MailLog {
        MailLog {
            path: path.into(),
            open: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rolls `mail.log_current` over to `mail.log_YYYYMMDD` (the day of
    /// its last record) once a day has ended; returns the new name. The
    /// job controller calls it periodically; `imsimta purge` expires the
    /// rolled files.
    pub fn roll_over_daily(&self) -> std::io::Result<Option<PathBuf>> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let last: chrono::DateTime<chrono::Local> = meta.modified()?.into();
        let today = chrono::Local::now().date_naive();
        if meta.len() == 0 || last.date_naive() >= today {
            return Ok(None);
        }
        let mut target = self
            .path
            .with_file_name(format!("mail.log_{}", last.format("%Y%m%d")));
        let mut n = 1;
        while target.exists() {
            target = self
                .path
                .with_file_name(format!("mail.log_{}.{n}", last.format("%Y%m%d")));
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        Ok(Some(target))
    }

    /// Rolled-over logs (`mail.log_*` except the current one), oldest
    /// first.
    pub fn rolled(&self) -> std::io::Result<Vec<PathBuf>> {
        let Some(dir) = self.path.parent() else {
            return Ok(Vec::new());
        };
        let mut out: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("mail.log_") && e.path() != self.path {
                out.push((e.metadata()?.modified()?, e.path()));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, p)| p).collect())
    }

    /// Appends records; a log that cannot be written is reported on
    /// stderr (the daemon's own log) and never stops mail.
    pub fn write(&self, records: &[Record<'_>]) {
        if records.is_empty() {
            return;
        }
        let now = chrono::Local::now();
        let time = format!(
            "{}.{:02}",
            now.format("%d-%b-%Y %H:%M:%S"),
            now.timestamp_subsec_millis() / 10
        );
        let mut text = String::new();
        for r in records {
            text.push_str(&r.format(&time));
            text.push('\n');
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let written = self
            .current(&mut open)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            *open = None;
            eprintln!("cannot write {}: {e}", self.path.display());
        }
    }

    /// The file at `path` now: the one kept open if it still is, else
    /// opened (created) again.
    fn current<'a>(&self, open: &'a mut Option<OpenLog>) -> std::io::Result<&'a File> {
        use std::os::unix::fs::MetadataExt;
        let still = match (std::fs::metadata(&self.path), open.as_ref()) {
            (Ok(m), Some(o)) => m.dev() == o.dev && m.ino() == o.ino,
            _ => false,
        };
        if !still {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let m = file.metadata()?;
            *open = Some(OpenLog {
                file,
                dev: m.dev(),
                ino: m.ino(),
            });
        }
        match open {
            Some(o) => Ok(&o.file),
            None => Err(std::io::Error::other("the log is not open")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_as_the_original() {
        let r = Record {
            source_channel: "tcp_local",
            dest_channel: "ims-ms",
            action: Action::Enqueue,
            modifiers: "E",
            size: 2049,
            from: "joe@example.org",
            original_to: "rfc822;ann@example.com",
            active_to: "ann@ims-ms-daemon",
            diagnostic: "",
        };
        assert_eq!(
            r.format("01-Dec-2026 10:00:00.00"),
            "01-Dec-2026 10:00:00.00 tcp_local    ims-ms       EE        3 \
             joe@example.org rfc822;ann@example.com ann@ims-ms-daemon"
        );
        let bad = Record {
            from: "a b\nc",
            diagnostic: "550 5.1.1\r\nno",
            ..r
        };
        let line = bad.format("t");
        assert!(!line.contains('\n') && line.contains("a_b_c"), "{line}");
    }

    #[test]
    fn records_after_a_roll_over_go_to_a_new_current_file() {
        let dir = std::env::temp_dir().join(format!("maillog-roll-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = MailLog::new(dir.join("mail.log_current"));
        let record = |to| Record {
            source_channel: "tcp_local",
            dest_channel: "ims-ms",
            action: Action::Enqueue,
            modifiers: "",
            size: 1,
            from: "a@example.org",
            original_to: "",
            active_to: to,
            diagnostic: "",
        };
        log.write(&[record("one@example.com")]);
        // A clone shares the open file, and writes after it.
        log.clone().write(&[record("two@example.com")]);
        std::fs::rename(log.path(), dir.join("mail.log_20261201")).unwrap();
        log.write(&[record("three@example.com")]);
        let old = std::fs::read_to_string(dir.join("mail.log_20261201")).unwrap();
        let new = std::fs::read_to_string(log.path()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(old.contains("one@") && old.contains("two@"), "{old}");
        assert!(!old.contains("three@"), "{old}");
        assert!(new.contains("three@") && !new.contains("one@"), "{new}");
    }
}
