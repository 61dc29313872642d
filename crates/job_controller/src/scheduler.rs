//! The job controller's view of the queues: for each channel, the waiting
//! messages ordered by when they are due, the ones a channel program is
//! delivering now, and how many programs run. Built from the queue
//! directories at start and on every rescan; the files stay the truth.
//! Pure apart from reading the directories.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use epistle_ipc::jobs::ChannelQueue;
use epistle_mta::compiled::MtaConfig;
use epistle_mta::queue::{QueueDir, QueueEntry};
use epistle_mta::queuefile::attempts_of;
use epistle_mta::retry::{Priority, RetrySchedule};

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

#[derive(Debug, Default)]
pub struct ChannelState {
    /// (due, path), earliest first.
    waiting: BTreeSet<(u64, String)>,
    due_of: HashMap<String, u64>,
    /// Paths handed to a program and not finished.
    pub active: HashSet<String>,
    pub held: usize,
    /// Programs running for this channel.
    pub jobs: usize,
}

impl ChannelState {
    fn insert(&mut self, path: String, due: u64) {
        if self.active.contains(&path) {
            return;
        }
        if let Some(old) = self.due_of.insert(path.clone(), due) {
            self.waiting.remove(&(old, path.clone()));
        }
        self.waiting.insert((due, path));
    }

    fn remove(&mut self, path: &str) {
        if let Some(due) = self.due_of.remove(path) {
            self.waiting.remove(&(due, path.to_string()));
        }
    }

    /// Waiting messages due at `now`.
    pub fn due_count(&self, now: u64) -> usize {
        self.due_count_at_most(now, usize::MAX)
    }

    /// [`ChannelState::due_count`], counting no further than `cap`.
    pub fn due_count_at_most(&self, now: u64, cap: usize) -> usize {
        self.waiting
            .range(..(now + 1, String::new()))
            .take(cap)
            .count()
    }
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

    /// When a file is due: at once when never tried, else its last
    /// attempt (the file's time) plus the channel's backoff for the
    /// attempts made.
    pub fn due_time(mta: &MtaConfig, channel: &str, e: &QueueEntry) -> u64 {
        Scheduler::due_after(mta, channel, e.name(), e.modified)
    }

    /// [`Scheduler::due_time`] from a file's name and time.
    fn due_after(mta: &MtaConfig, channel: &str, name: &str, modified: SystemTime) -> u64 {
        let attempts = attempts_of(name).unwrap_or(0);
        if attempts == 0 {
            return ms(modified);
        }
        let delay = mta
            .imta
            .channel(channel)
            .and_then(|c| RetrySchedule::for_channel(c, Priority::Normal).ok())
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
            for e in entries.iter().filter(|e| !e.held) {
                let path = e.path.display().to_string();
                if !state.due_of.contains_key(&path) && !state.active.contains(&path) {
                    let due = Scheduler::due_time(mta, &name, e);
                    state.insert(path, due);
                }
            }
        }
    }

    /// A file just written, due now.
    pub fn enqueued(&mut self, channel: &str, path: String) {
        self.channels
            .entry(channel.to_string())
            .or_default()
            .insert(path, now_ms());
    }

    /// The next due file of a channel, now marked active.
    pub fn take(&mut self, channel: &str) -> Option<String> {
        let state = self.channels.get_mut(channel)?;
        let now = now_ms();
        let (due, path) = state.waiting.first().cloned()?;
        if due > now {
            return None;
        }
        state.waiting.remove(&(due, path.clone()));
        state.due_of.remove(&path);
        state.active.insert(path.clone());
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
        state.active.remove(path);
        let Some(next) = requeued else {
            return;
        };
        let due = if next == path {
            now_ms() + BUSY_RETRY.as_millis() as u64
        } else {
            let p = std::path::Path::new(&next);
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match std::fs::metadata(p).and_then(|m| m.modified()) {
                Ok(modified) => Scheduler::due_after(mta, channel, name, modified),
                Err(_) => return, // already gone (deleted by an administrator)
            }
        };
        state.insert(next, due);
    }

    /// A program went away holding files: they wait again, due now (the
    /// disk says what is left of each).
    pub fn abandoned(&mut self, channel: &str, paths: &[String]) {
        if let Some(state) = self.channels.get_mut(channel) {
            for p in paths {
                if state.active.remove(p) && std::path::Path::new(p).exists() {
                    state.insert(p.clone(), now_ms());
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
            let paths: Vec<String> = state.due_of.keys().cloned().collect();
            for p in paths {
                state.insert(p, now);
            }
        }
    }

    pub fn summary(&self) -> Vec<ChannelQueue> {
        let now = now_ms();
        self.channels
            .iter()
            .map(|(name, s)| ChannelQueue {
                channel: name.clone(),
                waiting: s.waiting.len(),
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

    #[test]
    fn take_in_due_order_and_only_when_due() {
        let mut s = Scheduler::new();
        s.channels
            .entry("ims-ms".into())
            .or_default()
            .insert("/q/b".into(), now_ms() + 60_000);
        s.enqueued("ims-ms", "/q/a".into());
        assert_eq!(s.take("ims-ms").as_deref(), Some("/q/a"));
        assert_eq!(s.take("ims-ms"), None, "/q/b is not due yet");
        assert_eq!(s.channels["ims-ms"].active.len(), 1);
        s.abandoned("ims-ms", &["/q/a".into()]);
        // /q/a does not exist on disk, so it is not waited for again.
        assert_eq!(s.channels["ims-ms"].active.len(), 0);
        s.run_now(None);
        assert_eq!(s.take("ims-ms").as_deref(), Some("/q/b"));
        // A file being delivered is not made due again by a notice.
        s.enqueued("ims-ms", "/q/b".into());
        assert_eq!(s.take("ims-ms"), None);
    }
}
