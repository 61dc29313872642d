//! Queue files (original.md §11.3): one message waiting in a channel queue
//! `data/queue/<channel>/`, written durably before SMTP answers 250.
//!
//! A file holds envelope records, one a line (`KEY value`), then a line of
//! two Ctrl-A characters, then the message exactly as received. Names are
//! `ZZ<random>.00`: the first two letters count delivery attempts in
//! complemented base 36 (`ZZ` 0, `ZY` 1, `ZA` 25, `Z0` 35, `YZ` 36), and a
//! held message ends in `.HELD`. A file is written under a temporary name
//! starting with `$`, fsynced, renamed, and its directory fsynced, so a
//! file with a final name is always whole. Spent files are kept in a
//! [`SparePool`] and rewritten for later messages. Pure codec plus the
//! file mechanics.

use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::retry::Priority;

/// The line that ends the envelope.
pub const SEPARATOR: &[u8] = b"\x01\x01\n";
/// Largest envelope accepted when reading (the message itself is not
/// bounded here).
pub const MAX_ENVELOPE: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    pub address: String,
    /// DSN ORCPT (`rfc822;user@example.com`).
    pub orcpt: Option<String>,
    /// DSN NOTIFY (`SUCCESS,FAILURE`, `NEVER`).
    pub notify: Option<String>,
}

/// How a message came in by SMTP, for the access tables a later channel
/// asks on its behalf (reprocess expanding recipients an SMTP session
/// took unexpanded).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// `TCP|server-ip|server-port|client-ip|client-port|SMTP/helo`, as
    /// MAIL_ACCESS probes begin.
    pub transport: String,
    /// The session's access flag letters (`A` SASL, `T` TLS, `E` EHLO,
    /// `L` LMTP); a recipient's own NOTIFY gives the rest.
    pub flags: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The return path; empty for `<>`.
    pub from: String,
    pub recipients: Vec<Recipient>,
    /// DSN ENVID.
    pub envid: Option<String>,
    /// DSN RET (`FULL` or `HDRS`).
    pub ret: Option<String>,
    /// When the message was enqueued (seconds since the epoch).
    pub received: i64,
    pub source_channel: String,
    /// The SMTP session it came from, when it came by SMTP.
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue file: {0}")]
    Malformed(String),
    #[error("queue file I/O: {0}")]
    Io(String),
}

fn field_ok(s: &str) -> bool {
    !s.contains(['\n', '\r', '\t', '\x01'])
}

impl Envelope {
    /// The envelope lines and separator.
    pub fn encode(&self) -> Result<Vec<u8>, QueueError> {
        let mut fields = vec![self.from.as_str(), self.source_channel.as_str()];
        for r in &self.recipients {
            fields.push(&r.address);
            fields.extend(r.orcpt.as_deref());
            fields.extend(r.notify.as_deref());
        }
        fields.extend(self.envid.as_deref());
        fields.extend(self.ret.as_deref());
        if let Some(o) = &self.origin {
            fields.push(&o.transport);
            fields.push(&o.flags);
        }
        if let Some(bad) = fields.iter().find(|f| !field_ok(f)) {
            return Err(QueueError::Malformed(format!(
                "{bad:?} holds a line break, tab or Ctrl-A"
            )));
        }
        if self.recipients.is_empty() {
            return Err(QueueError::Malformed(
                "a queue file needs a recipient".into(),
            ));
        }
        let mut out = String::new();
        out.push_str(&format!("F {}\n", self.from));
        out.push_str(&format!("S {}\n", self.source_channel));
        out.push_str(&format!("D {}\n", self.received));
        if let Some(e) = &self.envid {
            out.push_str(&format!("E {e}\n"));
        }
        if let Some(r) = &self.ret {
            out.push_str(&format!("T {r}\n"));
        }
        if let Some(o) = &self.origin {
            out.push_str(&format!("O {}\t{}\n", o.transport, o.flags));
        }
        for r in &self.recipients {
            out.push_str(&format!(
                "R {}\t{}\t{}\n",
                r.address,
                r.orcpt.as_deref().unwrap_or(""),
                r.notify.as_deref().unwrap_or("")
            ));
        }
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(SEPARATOR);
        Ok(bytes)
    }

    /// Reads the envelope at the start of a queue file; returns it and
    /// where the message begins.
    pub fn decode(data: &[u8]) -> Result<(Envelope, usize), QueueError> {
        let window = &data[..data.len().min(MAX_ENVELOPE)];
        let end = window
            .windows(SEPARATOR.len())
            .enumerate()
            .find(|(i, w)| *w == SEPARATOR && (*i == 0 || window[i - 1] == b'\n'))
            .map(|(i, _)| i)
            .ok_or_else(|| QueueError::Malformed("no end of envelope (cut short?)".into()))?;
        let text = std::str::from_utf8(&data[..end])
            .map_err(|_| QueueError::Malformed("envelope is not UTF-8".into()))?;
        let mut env = Envelope::default();
        let (mut has_from, mut has_date) = (false, false);
        for (n, line) in text.lines().enumerate() {
            let bad = |why: &str| QueueError::Malformed(format!("envelope line {}: {why}", n + 1));
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "F" => {
                    env.from = value.to_string();
                    has_from = true;
                }
                "S" => env.source_channel = value.to_string(),
                "D" => {
                    env.received = value.parse().map_err(|_| bad("bad date"))?;
                    has_date = true;
                }
                "E" => env.envid = Some(value.to_string()),
                "T" => env.ret = Some(value.to_string()),
                "O" => {
                    let (transport, flags) = value.split_once('\t').unwrap_or((value, ""));
                    env.origin = Some(Origin {
                        transport: transport.to_string(),
                        flags: flags.to_string(),
                    });
                }
                "R" => {
                    let mut parts = value.split('\t');
                    let address = parts.next().unwrap_or("").to_string();
                    if address.is_empty() {
                        return Err(bad("empty recipient"));
                    }
                    let opt = |s: Option<&str>| s.filter(|x| !x.is_empty()).map(str::to_string);
                    env.recipients.push(Recipient {
                        address,
                        orcpt: opt(parts.next()),
                        notify: opt(parts.next()),
                    });
                }
                _ => return Err(bad("unknown record")),
            }
        }
        if !has_from || !has_date || env.recipients.is_empty() {
            return Err(QueueError::Malformed(
                "the envelope lacks its return path, date or recipients".into(),
            ));
        }
        Ok((env, end + SEPARATOR.len()))
    }
}

const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The two letters that count `attempts` (0..=1295).
pub fn attempt_prefix(attempts: u32) -> String {
    let n = attempts.min(36 * 36 - 1) as usize;
    let (hi, lo) = (n / 36, n % 36);
    format!("{}{}", DIGITS[35 - hi] as char, DIGITS[35 - lo] as char)
}

/// Attempts counted by a queue file's name.
pub fn attempts_of(name: &str) -> Option<u32> {
    let b = name.as_bytes();
    let val = |c: u8| {
        DIGITS
            .iter()
            .position(|d| *d == c.to_ascii_uppercase())
            .map(|p| 35 - p as u32)
    };
    Some(val(*b.first()?)? * 36 + val(*b.get(1)?)?)
}

/// The same file's name after one more attempt.
pub fn next_attempt_name(name: &str) -> Option<String> {
    let n = attempts_of(name)?;
    Some(format!("{}{}", attempt_prefix(n + 1), &name[2..]))
}

/// A queue file written under its temporary `$` name and not yet
/// durable: [`Staged::commit`] makes it so alone, [`commit_batch`] with
/// others (group commit).
#[derive(Debug)]
pub struct Staged {
    pub tmp: PathBuf,
    /// The name it takes once durable.
    pub path: PathBuf,
    /// Still open from writing, for a commit of this file alone.
    file: File,
    /// The directory of both names, open: renames and syncs by handle,
    /// without walking the whole path each time.
    dir: Arc<File>,
    /// The message's priority on this file's channel, for the job
    /// controller (normal unless the writer says).
    pub priority: Priority,
}

/// The last part of a queue path (the queue makes every name it uses).
fn name_of(p: &Path) -> &std::ffi::OsStr {
    p.file_name().unwrap_or(p.as_os_str())
}

/// Renames `from` to `to`, both in the directory open as `dir`.
fn rename_in(dir: &File, from: &Path, to: &Path) -> std::io::Result<()> {
    nix::fcntl::renameat(dir, name_of(from), dir, name_of(to)).map_err(std::io::Error::from)
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> QueueError {
    QueueError::Io(format!("{what} {}: {e}", p.display()))
}

/// Writes a queue file's content under a temporary name in `dir`,
/// reusing a spare file from `spares` when one is free.
pub fn stage(
    dir: &Path,
    spares: &SparePool,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Staged, QueueError> {
    let mut handle = open_dir(dir, false).map_err(|e| io_err("cannot create", dir, e))?;
    let head = envelope.encode()?;
    let mut rnd = [0u8; 8];
    getrandom(&mut rnd);
    let id: String = rnd.iter().map(|b| format!("{b:02X}")).collect();
    let tmp_name = format!("${id}.tmp");
    let tmp = dir.join(&tmp_name);
    let path = dir.join(format!("{}{id}.00", attempt_prefix(0)));
    let create = |d: &File| match spares.take(d, &tmp_name) {
        Some(f) => Ok(f),
        None => create_in(d, &tmp_name),
    };
    let written = (|| -> std::io::Result<File> {
        let mut f = match create(&handle) {
            // The directory went away since it was opened (an
            // administrator cleaning up): made again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                handle = open_dir(dir, true)?;
                create(&handle)?
            }
            other => other?,
        };
        f.write_all(&head)?;
        f.write_all(message)?;
        // A reused file may have been longer.
        f.set_len((head.len() + message.len()) as u64)?;
        Ok(f)
    })();
    match written {
        Ok(file) => Ok(Staged {
            tmp,
            path,
            file,
            dir: handle,
            priority: Priority::Normal,
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io_err("cannot write", &tmp, e))
        }
    }
}

/// A new file `name` in the directory open as `dir`, for writing.
fn create_in(dir: &File, name: &str) -> std::io::Result<File> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )?;
    Ok(File::from(fd))
}

/// `dir`, made if need be and open, from this process's table of queue
/// directories (made and opened the first time it asks, or again when
/// `again`): a queue directory is written thousands of times a second,
/// and a handle spares every rename and sync the walk of its path.
fn open_dir(dir: &Path, again: bool) -> std::io::Result<Arc<File>> {
    type Open = std::collections::HashMap<PathBuf, Arc<File>>;
    static OPEN: OnceLock<Mutex<Open>> = OnceLock::new();
    let open = OPEN.get_or_init(Default::default);
    if !again && let Some(h) = open.lock().unwrap_or_else(|e| e.into_inner()).get(dir) {
        return Ok(h.clone());
    }
    fs::create_dir_all(dir)?;
    let handle = Arc::new(File::open(dir)?);
    let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
    // Each entry holds a file descriptor: a few hundred at most (a queue
    // has a directory per channel and its subdirs; dropped handles are
    // opened again when next needed).
    if open.len() >= OPEN_DIRS {
        open.clear();
    }
    open.insert(dir.to_path_buf(), handle.clone());
    Ok(handle)
}

/// Queue directories one process keeps open.
const OPEN_DIRS: usize = 256;

/// How many spent files the pool keeps at most: enough to take back a
/// backlog of a few seconds at full rate.
const SPARE_SLOTS: u64 = 4096;
/// Larger spent files are deleted, so the pool holds at most
/// SPARE_SLOTS × this much disk (256 MB) and usually far less.
const SPARE_MAX_SIZE: u64 = 64 << 10;
/// Slots tried before a spent file is deleted instead.
const SPARE_PROBES: usize = 4;
/// How long an empty pool is believed empty before it is listed again.
const EMPTY_POOL_RECHECK: Duration = Duration::from_millis(200);

/// Spent queue files kept for the next messages, in `<queue>/.spare/`.
///
/// A file that leaves the queue is renamed into the pool, and a new
/// message is written into a spare instead of a fresh file: no inode is
/// allocated or freed per message while delivery keeps up. That matters
/// at high rates: ext4 without a journal will not reuse an inode freed
/// within the last minute, so with a thousand creates and deletes a second
/// every allocation scans past thousands of recently freed inodes. The
/// pool is bounded by its slot names; a spent file that finds no free
/// slot (or is large) is deleted. Clones share one listing of the pool.
#[derive(Debug, Clone)]
pub struct SparePool {
    dir: PathBuf,
    slots: u64,
    listing: Arc<Mutex<Listing>>,
}

#[derive(Debug, Default)]
struct Listing {
    /// Spares seen at the last listing and not yet tried.
    names: Vec<std::ffi::OsString>,
    /// When a listing last found the pool empty.
    empty_at: Option<Instant>,
    /// The pool's directory, open once it exists.
    dir: Option<Arc<File>>,
}

impl SparePool {
    /// The pool of the queue rooted at `queue_root`.
    pub fn new(queue_root: &Path) -> SparePool {
        SparePool::with_slots(queue_root, SPARE_SLOTS)
    }

    fn with_slots(queue_root: &Path, slots: u64) -> SparePool {
        SparePool {
            dir: queue_root.join(".spare"),
            slots: slots.max(1),
            listing: Arc::default(),
        }
    }

    /// Moves a spare to `tmp` in the directory open as `dir` and opens it
    /// for rewriting; `None` when the pool has none (the caller creates a
    /// file).
    fn take(&self, dir: &File, tmp: &str) -> Option<File> {
        let mut listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        let mut misses = 0u32;
        loop {
            let Some(name) = listing.names.pop() else {
                if listing
                    .empty_at
                    .is_some_and(|t| t.elapsed() < EMPTY_POOL_RECHECK)
                {
                    return None;
                }
                // Opened with each listing, so the names are the
                // handle's even if the directory was made anew.
                listing.dir = File::open(&self.dir).ok().map(Arc::new);
                listing.names = fs::read_dir(&self.dir)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                // Every SMTP server process lists the same pool: each
                // takes in its own order, or they would all reach for the
                // same spare and all but one miss.
                let n = listing.names.len();
                for i in (1..n).rev() {
                    listing
                        .names
                        .swap(i, (random_u64() % (i as u64 + 1)) as usize);
                }
                if listing.names.is_empty() {
                    listing.empty_at = Some(Instant::now());
                    return None;
                }
                listing.empty_at = None;
                continue;
            };
            use nix::fcntl::{OFlag, openat, renameat};
            use nix::sys::stat::Mode;
            let pool = listing.dir.clone()?;
            match renameat(&*pool, name.as_os_str(), dir, tmp) {
                Ok(()) => {
                    let opened =
                        openat(dir, tmp, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty());
                    return match opened {
                        Ok(fd) => Some(File::from(fd)),
                        // Not ours to write (left by another user): drop it.
                        Err(_) => {
                            let _ = nix::unistd::unlinkat(
                                dir,
                                tmp,
                                nix::unistd::UnlinkatFlags::NoRemoveDir,
                            );
                            None
                        }
                    };
                }
                // Taken by another process since the listing — or the
                // target directory is gone (removed by an administrator):
                // looked at now and then, so a removed directory never
                // keeps this loop going.
                Err(nix::errno::Errno::ENOENT) => {
                    use std::os::unix::fs::MetadataExt;
                    misses += 1;
                    if misses.is_multiple_of(16) && dir.metadata().map_or(true, |m| m.nlink() == 0)
                    {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Takes a spent queue file out of the queue at once: into a free
    /// slot of the pool, or deleted when none of the probed slots is free.
    /// Not fsynced (see the channel programs' settle).
    pub fn retire(&self, path: &Path) -> std::io::Result<()> {
        use nix::errno::Errno;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        if fs::metadata(path)?.len() > SPARE_MAX_SIZE {
            return fs::remove_file(path);
        }
        for _ in 0..SPARE_PROBES {
            let slot = self.dir.join(format!("{:04}", random_u64() % self.slots));
            match renameat2(
                AT_FDCWD,
                path,
                AT_FDCWD,
                &slot,
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => return Ok(()),
                Err(Errno::EEXIST) => continue,
                Err(Errno::ENOENT) if !path.exists() => return Err(Errno::ENOENT.into()),
                // The pool's directory is not there yet.
                Err(Errno::ENOENT) => {
                    fs::create_dir_all(&self.dir)?;
                }
                Err(_) => break,
            }
        }
        fs::remove_file(path)
    }
}

impl Staged {
    /// Makes this one file durable: fsync, rename, directory fsync.
    pub fn commit(self) -> Result<PathBuf, QueueError> {
        let done = (|| -> std::io::Result<()> {
            self.file.sync_all()?;
            rename_in(&self.dir, &self.tmp, &self.path)?;
            self.dir.sync_all()
        })();
        match done {
            Ok(()) => Ok(self.path),
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                Err(io_err("cannot write", &self.path, e))
            }
        }
    }

    /// Takes the held name (`.HELD`): committed, it waits for an
    /// administrator (`imsimta qm release`) instead of a delivery job.
    pub fn held(mut self) -> Staged {
        let mut name = self.path.clone().into_os_string();
        name.push(crate::queue::HELD_SUFFIX);
        self.path = name.into();
        self
    }

    pub fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Makes many staged files durable together: one `syncfs` puts every
/// file's content on disk, then each takes its name, then a second
/// `syncfs` makes the names durable. Two flushes for the whole batch
/// instead of two per file; the order still guarantees that a final
/// name never shows an incomplete file. On failure nothing keeps a final
/// name.
pub fn commit_batch(mut batch: Vec<Staged>) -> Result<Vec<PathBuf>, QueueError> {
    // Alone, a file's own fsyncs cost less than flushing the filesystem.
    if batch.len() == 1 {
        return batch.pop().map(Staged::commit).into_iter().collect();
    }
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let anchor = first.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let fs_of_batch = first.dir.clone();
    let sync = || nix::unistd::syncfs(&*fs_of_batch).map_err(std::io::Error::from);
    let mut renamed: Vec<PathBuf> = Vec::new();
    let done = (|| -> std::io::Result<()> {
        sync()?;
        for s in &batch {
            rename_in(&s.dir, &s.tmp, &s.path)?;
            renamed.push(s.path.clone());
        }
        sync()
    })();
    match done {
        Ok(()) => Ok(renamed),
        Err(e) => {
            for p in &renamed {
                let _ = fs::remove_file(p);
            }
            for s in batch {
                s.discard();
            }
            Err(io_err("cannot commit queue files under", &anchor, e))
        }
    }
}

/// Writes a queue file into `dir` durably; returns its path.
pub fn write(
    dir: &Path,
    spares: &SparePool,
    envelope: &Envelope,
    message: &[u8],
) -> Result<PathBuf, QueueError> {
    stage(dir, spares, envelope, message)?.commit()
}

/// Cheap per-process randomness for choosing slots and orders (not for
/// names, never for secrets).
pub fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = KEYS.get_or_init(Default::default).build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Randomness for file names from the kernel (one open per process).
fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    static URANDOM: OnceLock<std::io::Result<File>> = OnceLock::new();
    let filled = match URANDOM.get_or_init(|| File::open("/dev/urandom")) {
        Ok(f) => (&*f).read_exact(buf).is_ok(),
        Err(_) => false,
    };
    if !filled {
        // A unique enough fallback: time and process.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64
            ^ u64::from(std::process::id()) << 32;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 8) * 8)) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            from: "joe@example.com".into(),
            recipients: vec![
                Recipient {
                    address: "ann@example.org".into(),
                    orcpt: Some("rfc822;ann@example.org".into()),
                    notify: Some("FAILURE".into()),
                },
                Recipient {
                    address: "bob@example.net".into(),
                    ..Default::default()
                },
            ],
            envid: Some("QQ314159".into()),
            ret: Some("HDRS".into()),
            received: 1_796_070_509,
            source_channel: "tcp_local".into(),
            origin: Some(Origin {
                transport: "TCP|127.0.0.1|25|192.0.2.7|40000|SMTP/client.example".into(),
                flags: "TE".into(),
            }),
        }
    }

    #[test]
    fn round_trip_and_message_offset() {
        let mut data = env().encode().unwrap();
        data.extend_from_slice(b"Subject: x\r\n\r\nbody\r\n");
        let (back, at) = Envelope::decode(&data).unwrap();
        assert_eq!(back, env());
        assert_eq!(&data[at..], b"Subject: x\r\n\r\nbody\r\n");
        let bounce = Envelope {
            from: String::new(),
            ..env()
        };
        assert_eq!(
            Envelope::decode(&bounce.encode().unwrap()).unwrap().0.from,
            "",
            "<> is kept"
        );
        let local = Envelope {
            origin: None,
            ..env()
        };
        let text = local.encode().unwrap();
        assert!(!text.starts_with(b"O ") && !text.windows(3).any(|w| w == b"\nO "));
        assert_eq!(
            Envelope::decode(&text).unwrap().0,
            local,
            "no origin, none read"
        );
    }

    #[test]
    fn bad_fields_and_cut_files_are_refused() {
        let evil = Envelope {
            from: "a@b\nR injected@x".into(),
            ..env()
        };
        assert!(evil.encode().is_err());
        assert!(
            Envelope {
                recipients: vec![],
                ..env()
            }
            .encode()
            .is_err()
        );
        let data = env().encode().unwrap();
        assert!(Envelope::decode(&data[..data.len() - 2]).is_err());
        assert!(Envelope::decode(b"X what\n\x01\x01\n").is_err());
    }

    #[test]
    fn attempt_counting() {
        assert_eq!(attempt_prefix(0), "ZZ");
        assert_eq!(attempt_prefix(1), "ZY");
        assert_eq!(attempt_prefix(25), "ZA");
        assert_eq!(attempt_prefix(35), "Z0");
        assert_eq!(attempt_prefix(36), "YZ");
        assert_eq!(attempts_of("YZ0123.00"), Some(36));
        assert_eq!(next_attempt_name("ZZ0A1B.00").unwrap(), "ZY0A1B.00");
        for n in [0, 7, 35, 36, 100, 1295] {
            assert_eq!(attempts_of(&attempt_prefix(n)), Some(n));
        }
    }

    #[test]
    fn written_files_are_whole() {
        let dir = std::env::temp_dir().join(format!("epistle-queue-test-{}", std::process::id()));
        let p = write(&dir, &SparePool::new(&dir), &env(), b"message").unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("ZZ") && name.ends_with(".00"), "{name}");
        let data = fs::read(&p).unwrap();
        let (e, at) = Envelope::decode(&data).unwrap();
        assert_eq!((e, &data[at..]), (env(), &b"message"[..]));
        assert!(
            fs::read_dir(&dir).unwrap().all(|f| !f
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('$'))
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn spent_files_are_reused_whole() {
        use std::os::unix::fs::MetadataExt;
        let root = std::env::temp_dir().join(format!("epistle-spare-test-{}", std::process::id()));
        let dir = root.join("ims-ms");
        // The SMTP server writes, a channel program retires: two processes.
        let writer = || SparePool::with_slots(&root, 1);
        let retirer = SparePool::with_slots(&root, 1);
        let long = write(&dir, &writer(), &env(), &[b'x'; 9000]).unwrap();
        let inode = fs::metadata(&long).unwrap().ino();
        retirer.retire(&long).unwrap();
        assert!(!long.exists());
        // The next message goes into the same inode, cut to its length.
        let short = write(&dir, &writer(), &env(), b"short").unwrap();
        assert_eq!(fs::metadata(&short).unwrap().ino(), inode);
        let data = fs::read(&short).unwrap();
        let (e, at) = Envelope::decode(&data).unwrap();
        assert_eq!((e, &data[at..]), (env(), &b"short"[..]));
        // With the pool empty a file is created.
        let fresh = write(&dir, &writer(), &env(), b"fresh").unwrap();
        assert_ne!(fs::metadata(&fresh).unwrap().ino(), inode);
        // A full pool deletes the spent file; it leaves the queue all the same.
        retirer.retire(&short).unwrap();
        retirer.retire(&fresh).unwrap();
        assert!(!short.exists() && !fresh.exists());
        let spare = fs::read_dir(root.join(".spare"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(spare.metadata().unwrap().ino(), inode);
        // A large file is not kept.
        let pool = SparePool::with_slots(&root.join("other"), 8);
        let big = write(&dir, &pool, &env(), &vec![b'x'; 70_000]).unwrap();
        pool.retire(&big).unwrap();
        assert!(!big.exists() && !root.join("other/.spare").exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_queue_directory_removed_under_a_writer_is_made_again() {
        let root = std::env::temp_dir().join(format!("epistle-gone-test-{}", std::process::id()));
        let dir = root.join("tcp_local/003");
        let pool = SparePool::with_slots(&root, 64);
        let first = write(&dir, &pool, &env(), b"one").unwrap();
        for _ in 0..40 {
            pool.retire(&write(&dir, &pool, &env(), b"spare").unwrap())
                .unwrap();
        }
        // An administrator clears the channel's queue; this process still
        // holds the old directory open, and the pool has spares to offer.
        fs::remove_dir_all(root.join("tcp_local")).unwrap();
        std::thread::sleep(EMPTY_POOL_RECHECK); // the pool is listed again
        let again = write(&dir, &pool, &env(), b"two").unwrap();
        let data = fs::read(&again).unwrap();
        let (_, at) = Envelope::decode(&data).unwrap();
        assert_eq!(&data[at..], b"two");
        assert!(!first.exists());
        let _ = fs::remove_dir_all(&root);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Envelope::decode(&bytes);
            let _ = attempts_of(&String::from_utf8_lossy(&bytes));
        }
    }
}
