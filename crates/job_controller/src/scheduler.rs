//! The job controller's view of the queues: for each channel, the waiting
//! messages by priority and, within it, by when they are due; the ones a
//! channel program is delivering now, and how many programs run. Built
//! from the queue directories at start and on every rescan; the files
//! stay the truth. Pure apart from reading the directories and a file's
//! header where it matters (`Deferred-delivery:` on a `deferred` channel,
//! `Priority:` of a file whose writer did not tell it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use epistle_ipc::jobs::ChannelQueue;
use epistle_mta::compiled::MtaConfig;
use epistle_mta::header::field_value;
use epistle_mta::optionfile::int;
use epistle_mta::queue::QueueDir;
use epistle_mta::queuefile::{Envelope, attempts_of};
use epistle_mta::retry::{Priority, RetrySchedule, parse_duration};

/// A file another program holds locked is tried again after this.
pub const BUSY_RETRY: Duration = Duration::from_secs(30);

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The priorities due messages are handed out by, highest first
/// (`Priority::rank`: urgent, normal, non-urgent, second class).
const RANKS: usize = 4;

#[derive(Debug, Default)]
pub struct ChannelState {
    /// By priority, highest first: (due, path), earliest first.
    waiting: [BTreeSet<(u64, String)>; RANKS],
    /// Each waiting path's due time and priority.
    due_of: HashMap<String, (u64, u8)>,
    /// Paths handed to a program and not finished, with their priority.
    pub active: HashMap<String, u8>,
    pub held: usize,
    /// Programs running for this channel.
    pub jobs: usize,
}

impl ChannelState {
    fn insert(&mut self, path: String, due: u64, rank: u8) {
        if self.active.contains_key(&path) {
            return;
        }
        let rank = rank.min(RANKS as u8 - 1);
        if let Some((old, old_rank)) = self.due_of.insert(path.clone(), (due, rank)) {
            self.waiting[old_rank as usize].remove(&(old, path.clone()));
        }
        self.waiting[rank as usize].insert((due, path));
    }

    fn remove(&mut self, path: &str) {
        if let Some((due, rank)) = self.due_of.remove(path) {
            self.waiting[rank as usize].remove(&(due, path.to_string()));
        }
    }

    /// The next message to hand out at `now`: of those due, the one of the
    /// highest priority, earliest first within it.
    fn next_due(&self, now: u64) -> Option<(u64, String, u8)> {
        self.waiting.iter().enumerate().find_map(|(rank, set)| {
            let (due, path) = set.first()?;
            (*due <= now).then(|| (*due, path.clone(), rank as u8))
        })
    }

    /// Messages waiting, due or not.
    pub fn waiting_count(&self) -> usize {
        self.waiting.iter().map(BTreeSet::len).sum()
    }

    /// Waiting messages due at `now`.
    pub fn due_count(&self, now: u64) -> usize {
        self.due_count_at_most(now, usize::MAX)
    }

    /// [`ChannelState::due_count`], counting no further than `cap`.
    pub fn due_count_at_most(&self, now: u64, cap: usize) -> usize {
        let mut n = 0;
        for set in &self.waiting {
            n += set.range(..(now + 1, String::new())).take(cap - n).count();
            if n >= cap {
                break;
            }
        }
        n
    }
}

/// How often the queue directories are rescanned (job_controller.cnf
/// `SYNCH_TIME`, seconds; 30 when not set): the job controller's periodic
/// pass, which second-class messages wait for.
pub fn synch_time(mta: &MtaConfig) -> Duration {
    let secs = mta
        .job_controller
        .global("SYNCH_TIME")
        .and_then(int)
        .filter(|n| *n > 0)
        .unwrap_or(30);
    Duration::from_secs(secs as u64)
}

/// When a file never tried is first due, given when it was queued: the
/// channel's `after` delay later, and on a `deferred` channel not before
/// the date in the message's `Deferred-delivery:` field (RFC 2156). A
/// date that cannot be read delays nothing.
fn first_due(mta: &MtaConfig, channel: &str, path: &Path, queued: u64) -> u64 {
    let Some(c) = mta.imta.channel(channel) else {
        return queued;
    };
    let after = c
        .arg("after")
        .and_then(parse_duration)
        .map_or(0, |d| d.as_millis() as u64);
    let mut due = queued.saturating_add(after);
    let deferred = c
        .last_of(&["deferred", "nodeferred"])
        .is_some_and(|k| k.name == "deferred");
    if deferred && let Some(at) = deferred_delivery(path) {
        due = due.max(at);
    }
    due
}

/// The `Deferred-delivery:` date of a queued message, in milliseconds.
fn deferred_delivery(path: &Path) -> Option<u64> {
    let head = MessageHead::read(path)?;
    let date = field_value(head.header(), "Deferred-delivery")?;
    let at = chrono::DateTime::parse_from_rfc2822(&date).ok()?;
    u64::try_from(at.timestamp_millis()).ok()
}

/// The start of a queued message, for the header fields that decide when
/// it is tried.
struct MessageHead {
    bytes: Vec<u8>,
    /// Where the message starts, after the envelope.
    start: usize,
    /// The whole message's size.
    size: u64,
}

impl MessageHead {
    /// Reads a chunk at a time until the header section has ended (a
    /// rescan may read thousands of files; their bodies are not needed).
    fn read(path: &Path) -> Option<MessageHead> {
        use std::io::Read;
        const CHUNK: usize = 8 << 10;
        // The envelope and the header section fit in this much in
        // practice; a field beyond it is not seen.
        const MOST: usize = 256 << 10;
        let mut file = std::fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let mut bytes = Vec::new();
        loop {
            let had = bytes.len();
            (&mut file)
                .take(CHUNK as u64)
                .read_to_end(&mut bytes)
                .ok()?;
            let at_end = bytes.len() < had + CHUNK || bytes.len() >= MOST;
            if let Ok((_, start)) = Envelope::decode(&bytes) {
                let body = &bytes[start..];
                let header_ended = body.starts_with(b"\r\n")
                    || body.starts_with(b"\n")
                    || body.windows(2).any(|w| w == b"\n\n" || w == b"\n\r");
                if header_ended || at_end {
                    return Some(MessageHead {
                        size: len.saturating_sub(start as u64),
                        bytes,
                        start,
                    });
                }
            }
            if at_end {
                return None;
            }
        }
    }

    fn header(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// The priority of a queued message on `channel`, read from its file
/// (normal when the file cannot be read).
fn priority(mta: &MtaConfig, channel: &str, path: &Path) -> Priority {
    let block = epistle_mta::retry::block_size(&mta.options);
    MessageHead::read(path).map_or(Priority::Normal, |h| {
        Priority::of_message(h.header(), h.size, mta.imta.channel(channel), block)
    })
}

pub struct Scheduler {
    pub channels: BTreeMap<String, ChannelState>,
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler {
            channels: BTreeMap::new(),
        }
    }

    /// When a file of `priority` is due: when never tried, as
    /// [`first_due`] says, else its last attempt (the file's time) plus
    /// the channel's backoff for the priority and the attempts made.
    fn due_after(
        mta: &MtaConfig,
        channel: &str,
        path: &Path,
        modified: SystemTime,
        priority: Priority,
    ) -> u64 {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let attempts = attempts_of(name).unwrap_or(0);
        if attempts == 0 {
            return first_due(mta, channel, path, ms(modified));
        }
        let delay = mta
            .imta
            .channel(channel)
            .and_then(|c| RetrySchedule::for_channel(c, priority).ok())
            .map_or(Duration::from_secs(3600), |s| s.delay_after(attempts));
        ms(modified) + delay.as_millis() as u64
    }

    /// Re-reads every channel directory: new files are added, files gone
    /// from disk are forgotten, files being delivered are left alone.
    pub fn rescan(&mut self, queue: &QueueDir, mta: &MtaConfig) {
        let names = match queue.channels() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot read the queue directory: {e}");
                return;
            }
        };
        for name in names {
            let entries = match queue.entries(&name) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!("cannot read the queue of {name}: {e}");
                    continue;
                }
            };
            let state = self.channels.entry(name.clone()).or_default();
            state.held = entries.iter().filter(|e| e.held).count();
            let on_disk: HashSet<String> = entries
                .iter()
                .filter(|e| !e.held)
                .map(|e| e.path.display().to_string())
                .collect();
            let gone: Vec<String> = state
                .due_of
                .keys()
                .filter(|p| !on_disk.contains(*p))
                .cloned()
                .collect();
            for p in gone {
                state.remove(&p);
            }
            // A file found here (at start, or one nobody told of) has
            // waited for this periodic pass, second class or not.
            for e in entries.iter().filter(|e| !e.held) {
                let path = e.path.display().to_string();
                if !state.due_of.contains_key(&path) && !state.active.contains_key(&path) {
                    let p = priority(mta, &name, &e.path);
                    let due = Scheduler::due_after(mta, &name, &e.path, e.modified, p);
                    state.insert(path, due, p.rank());
                }
            }
        }
    }

    /// A file just written, of the priority its writer gave (read from
    /// the file when not given): due now, unless the channel delays it or
    /// it is second class, which waits for the next periodic pass.
    pub fn enqueued(&mut self, mta: &MtaConfig, channel: &str, path: String, priority: Option<u8>) {
        let p = match priority {
            Some(rank) => Priority::from_rank(rank),
            None => self::priority(mta, channel, Path::new(&path)),
        };
        let now = now_ms();
        let mut due = first_due(mta, channel, Path::new(&path), now);
        if p == Priority::SecondClass {
            due = due.max(now + synch_time(mta).as_millis() as u64);
        }
        self.channels
            .entry(channel.to_string())
            .or_default()
            .insert(path, due, p.rank());
    }

    /// The next due file of a channel (the highest priority first), now
    /// marked active.
    pub fn take(&mut self, channel: &str) -> Option<String> {
        let state = self.channels.get_mut(channel)?;
        let (_, path, rank) = state.next_due(now_ms())?;
        state.remove(&path);
        state.active.insert(path.clone(), rank);
        Some(path)
    }

    /// A program is done with `path`; `requeued` holds what is left, due
    /// by the backoff (or soon, when the file was busy elsewhere).
    pub fn finished(
        &mut self,
        mta: &MtaConfig,
        channel: &str,
        path: &str,
        requeued: Option<String>,
    ) {
        let state = self.channels.entry(channel.to_string()).or_default();
        let rank = state.active.remove(path).unwrap_or(Priority::Normal.rank());
        let Some(next) = requeued else {
            return;
        };
        let due = if next == path {
            now_ms() + BUSY_RETRY.as_millis() as u64
        } else {
            let p = Path::new(&next);
            let priority = Priority::from_rank(rank);
            match std::fs::metadata(p).and_then(|m| m.modified()) {
                Ok(modified) => Scheduler::due_after(mta, channel, p, modified, priority),
                Err(_) => return, // already gone (deleted by an administrator)
            }
        };
        state.insert(next, due, rank);
    }

    /// A program went away holding files: they wait again, due now (the
    /// disk says what is left of each).
    pub fn abandoned(&mut self, channel: &str, paths: &[String]) {
        if let Some(state) = self.channels.get_mut(channel) {
            for p in paths {
                if let Some(rank) = state.active.remove(p)
                    && std::path::Path::new(p).exists()
                {
                    state.insert(p.clone(), now_ms(), rank);
                }
            }
        }
    }

    /// `imsimta run`: everything waiting becomes due now.
    pub fn run_now(&mut self, channel: Option<&str>) {
        let now = now_ms();
        for (name, state) in self.channels.iter_mut() {
            if channel.is_some_and(|c| c != name) {
                continue;
            }
            let paths: Vec<(String, u8)> = state
                .due_of
                .iter()
                .map(|(p, (_, rank))| (p.clone(), *rank))
                .collect();
            for (p, rank) in paths {
                state.insert(p, now, rank);
            }
        }
    }

    pub fn summary(&self) -> Vec<ChannelQueue> {
        let now = now_ms();
        self.channels
            .iter()
            .map(|(name, s)| ChannelQueue {
                channel: name.clone(),
                waiting: s.waiting_count(),
                due: s.due_count(now),
                active: s.active.len(),
                jobs: s.jobs,
                held: s.held,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use epistle_mta::compiled::CompiledConfig;
    use epistle_mta::queuefile::Recipient;

    fn mta(imta_cnf: &str) -> MtaConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("imta.cnf"), imta_cnf).unwrap();
        std::fs::write(dir.path().join("mappings"), "").unwrap();
        CompiledConfig::build(dir.path(), 0)
            .unwrap()
            .parse()
            .unwrap()
    }

    fn queue_file(dir: &Path, name: &str, message: &str) -> String {
        let env = Envelope {
            from: "a@example.org".into(),
            recipients: vec![Recipient {
                address: "b@example.com".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut bytes = env.encode().unwrap();
        bytes.extend_from_slice(message.as_bytes());
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    fn due_of(s: &Scheduler, channel: &str, path: &str) -> u64 {
        s.channels[channel].due_of[path].0
    }

    #[test]
    fn after_delays_the_first_attempt_and_deferred_honours_the_header() {
        let m = mta(
            "\n\nl\nlocalhost\n\nims-ms after PT10M\nims-ms-daemon\n\nlater deferred\nlater-daemon\n\nplain\nplain-daemon\n",
        );
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("later");
        std::fs::create_dir(&dir).unwrap();
        let soon = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc2822();
        let past = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc2822();
        let future = queue_file(
            &dir,
            "ZZ1.00",
            &format!("Subject: x\r\nDeferred-Delivery:\r\n {soon}\r\n\r\nbody\r\n"),
        );
        let old = queue_file(
            &dir,
            "ZZ2.00",
            &format!("Deferred-delivery: {past}\r\n\r\n"),
        );
        let bad = queue_file(&dir, "ZZ3.00", "Deferred-delivery: soon\r\n\r\n");
        let in_body = queue_file(
            &dir,
            "ZZ4.00",
            &format!("Subject: x\r\n\r\nDeferred-delivery: {soon}\r\n"),
        );
        let mut s = Scheduler::new();
        let t0 = now_ms();
        s.enqueued(&m, "ims-ms", "/q/a".into(), Some(1));
        let due = due_of(&s, "ims-ms", "/q/a");
        assert!(due >= t0 + 600_000 && due <= now_ms() + 600_000, "{due}");
        assert_eq!(s.take("ims-ms"), None, "not before ten minutes");

        for p in [&future, &old, &bad, &in_body] {
            s.enqueued(&m, "later", p.clone(), None);
            s.enqueued(&m, "plain", p.clone(), None);
        }
        let two_hours = now_ms() + 7_000_000;
        assert!(due_of(&s, "later", &future) > two_hours);
        assert!(
            due_of(&s, "plain", &future) <= now_ms(),
            "nodeferred by default"
        );
        for p in [&old, &bad, &in_body] {
            assert!(due_of(&s, "later", p) <= now_ms(), "{p}");
        }
        let mut taken = Vec::new();
        while let Some(p) = s.take("later") {
            taken.push(p);
        }
        assert_eq!(taken.len(), 3);
        assert!(!taken.contains(&future));

        // A job controller that starts again finds the same dates on disk.
        let mut again = Scheduler::new();
        again.rescan(&QueueDir::new(root.path()), &m);
        assert!(due_of(&again, "later", &future) > two_hours);
        assert!(due_of(&again, "later", &old) <= now_ms());
    }

    #[test]
    fn retries_follow_the_backoff_of_the_messages_priority() {
        let m = mta(
            "\n\nl\nlocalhost\n\nims-ms urgentbackoff \"PT1M\" backoff \"PT10M\" nonurgentbackoff \"PT1H\" normalblocklimit 1\nims-ms-daemon\n",
        );
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ims-ms");
        std::fs::create_dir(&dir).unwrap();
        let urgent = queue_file(&dir, "ZY1.00", "Priority: urgent\r\n\r\nhi\r\n");
        let normal = queue_file(&dir, "ZY2.00", "Subject: x\r\n\r\nhi\r\n");
        let big = format!("Subject: x\r\n\r\n{}\r\n", "x".repeat(2000));
        let big = queue_file(&dir, "ZY3.00", &big);
        let low = queue_file(&dir, "ZY4.00", "Priority: non-urgent\r\n\r\nhi\r\n");
        let mut s = Scheduler::new();
        s.rescan(&QueueDir::new(root.path()), &m);
        let delay = |p: &str| {
            let modified = std::fs::metadata(p).unwrap().modified().unwrap();
            due_of(&s, "ims-ms", p) - ms(modified)
        };
        assert_eq!(delay(&urgent), 60_000);
        assert_eq!(delay(&normal), 600_000);
        assert_eq!(delay(&big), 3_600_000, "past normalblocklimit: non-urgent");
        assert_eq!(delay(&low), 3_600_000);
    }

    #[test]
    fn take_in_due_order_and_only_when_due() {
        let m = mta("\n\nl\nlocalhost\n\nims-ms\nims-ms-daemon\n");
        let mut s = Scheduler::new();
        s.channels
            .entry("ims-ms".into())
            .or_default()
            .insert("/q/b".into(), now_ms() + 60_000, 1);
        s.enqueued(&m, "ims-ms", "/q/a".into(), Some(1));
        assert_eq!(s.take("ims-ms").as_deref(), Some("/q/a"));
        assert_eq!(s.take("ims-ms"), None, "/q/b is not due yet");
        assert_eq!(s.channels["ims-ms"].active.len(), 1);
        s.abandoned("ims-ms", &["/q/a".into()]);
        // /q/a does not exist on disk, so it is not waited for again.
        assert_eq!(s.channels["ims-ms"].active.len(), 0);
        s.run_now(None);
        assert_eq!(s.take("ims-ms").as_deref(), Some("/q/b"));
        // A file being delivered is not made due again by a notice.
        s.enqueued(&m, "ims-ms", "/q/b".into(), None);
        assert_eq!(s.take("ims-ms"), None);
    }

    #[test]
    fn due_messages_go_out_by_priority_and_second_class_waits_a_pass() {
        let m = mta("\n\nl\nlocalhost\n\nims-ms\nims-ms-daemon\n");
        let mut s = Scheduler::new();
        let t0 = now_ms();
        s.enqueued(
            &m,
            "ims-ms",
            "/q/low".into(),
            Some(Priority::NonUrgent.rank()),
        );
        s.enqueued(
            &m,
            "ims-ms",
            "/q/normal".into(),
            Some(Priority::Normal.rank()),
        );
        s.enqueued(
            &m,
            "ims-ms",
            "/q/big".into(),
            Some(Priority::SecondClass.rank()),
        );
        s.enqueued(
            &m,
            "ims-ms",
            "/q/urgent".into(),
            Some(Priority::Urgent.rank()),
        );
        assert_eq!(s.channels["ims-ms"].due_count(now_ms()), 3);
        assert_eq!(s.channels["ims-ms"].waiting_count(), 4);
        let big_due = due_of(&s, "ims-ms", "/q/big");
        assert!(
            big_due >= t0 + 30_000,
            "second class waits SYNCH_TIME: {big_due}"
        );
        let order: Vec<String> = std::iter::from_fn(|| s.take("ims-ms")).collect();
        assert_eq!(order, ["/q/urgent", "/q/normal", "/q/low"]);
        // A retry keeps its priority; `imsimta run` makes the big one due.
        s.finished(&m, "ims-ms", "/q/urgent", Some("/q/urgent".into()));
        assert_eq!(
            s.channels["ims-ms"].due_of["/q/urgent"].1,
            Priority::Urgent.rank()
        );
        s.run_now(Some("ims-ms"));
        assert_eq!(s.take("ims-ms").as_deref(), Some("/q/urgent"));
        assert_eq!(s.take("ims-ms").as_deref(), Some("/q/big"));
    }
}
