//! Putting a message into the channel queues: one queue file per
//! destination channel holding that channel's recipients (one file per
//! recipient on a channel with the keyword `single`), each written
//! durably, then a word to the job controller so delivery starts at once
//! (its periodic rescan finds the files anyway if the word is lost).
//!
//! [`GroupCommit`] lets many sessions share their flushes: each writes
//! its files, then hands them to one committer thread, which makes every
//! file that arrived meanwhile durable with two `syncfs` calls in all,
//! tells the job controller of the whole batch in one notice over a
//! connection it keeps, and answers the sessions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use epistle_ipc::jobs::{JobReply, JobRequest, QueuedFile};

use crate::imtacnf::ImtaConfig;
use crate::queue::QueueDir;
use crate::queuefile::{self, Envelope, QueueError, Recipient, Staged};
use crate::retry::Priority;

/// A channel's `subdirs` (0 when absent).
fn subdirs(imta: &ImtaConfig, channel: &str) -> u32 {
    imta.channel(channel)
        .and_then(|c| c.arg("subdirs"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(1000)
}

/// Writes the message into the queue of each channel its recipients go
/// to. `envelope.recipients` is ignored; `recipients` pairs each with its
/// channel. Each file carries the message's priority on its channel
/// (`block_size`, option.dat's BLOCK_SIZE, sizes the `*blocklimit`s). On
/// an error, files already written are removed, so the message is either
/// queued for everyone or for no one.
pub fn enqueue(
    queue: &QueueDir,
    imta: &ImtaConfig,
    block_size: u64,
    envelope: &Envelope,
    recipients: &[(String, Recipient)],
    message: &[u8],
) -> Result<Vec<QueuedFile>, QueueError> {
    let staged = stage(queue, imta, block_size, envelope, recipients, message)?;
    let mut written: Vec<QueuedFile> = Vec::new();
    let mut staged = staged.into_iter();
    for (channel, s) in staged.by_ref() {
        let priority = Some(s.priority.rank());
        match s.commit() {
            Ok(path) => written.push(QueuedFile {
                channel,
                path: path.display().to_string(),
                priority,
            }),
            Err(e) => {
                for (_, rest) in staged {
                    rest.discard();
                }
                for f in &written {
                    let _ = std::fs::remove_file(&f.path);
                }
                return Err(e);
            }
        }
    }
    Ok(written)
}

/// Writes the files of [`enqueue`] under their temporary names, for
/// [`GroupCommit::commit`].
pub fn stage(
    queue: &QueueDir,
    imta: &ImtaConfig,
    block_size: u64,
    envelope: &Envelope,
    recipients: &[(String, Recipient)],
    message: &[u8],
) -> Result<Vec<(String, Staged)>, QueueError> {
    let mut channels: Vec<&str> = Vec::new();
    for (ch, _) in recipients {
        if !channels.contains(&ch.as_str()) {
            channels.push(ch);
        }
    }
    let mut staged: Vec<(String, Staged)> = Vec::new();
    for ch in channels {
        let size = message.len() as u64;
        let priority = Priority::of_message(message, size, imta.channel(ch), block_size);
        let mine: Vec<Recipient> = recipients
            .iter()
            .filter(|(c, _)| c == ch)
            .map(|(_, r)| r.clone())
            .collect();
        let groups: Vec<Vec<Recipient>> = if imta.channel(ch).is_some_and(|c| c.has("single")) {
            mine.into_iter().map(|r| vec![r]).collect()
        } else {
            vec![mine]
        };
        for group in groups {
            let env = Envelope {
                recipients: group,
                ..envelope.clone()
            };
            match queue.stage(ch, subdirs(imta, ch), &env, message) {
                Ok(mut s) => {
                    s.priority = priority;
                    staged.push((ch.to_string(), s))
                }
                Err(e) => {
                    for (_, s) in staged {
                        s.discard();
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(staged)
}

type CommitReply = tokio::sync::oneshot::Sender<Result<Vec<QueuedFile>, QueueError>>;

/// One thread that makes staged queue files durable in batches.
#[derive(Clone)]
pub struct GroupCommit {
    tx: std::sync::mpsc::Sender<(Vec<(String, Staged)>, CommitReply)>,
}

/// Most files in one batch.
const MAX_BATCH: usize = 512;

impl GroupCommit {
    /// The committer thread; it tells the job controller listening on
    /// `jobs_socket` of every file it commits.
    pub fn start(jobs_socket: PathBuf) -> GroupCommit {
        let (tx, rx) = std::sync::mpsc::channel::<(Vec<(String, Staged)>, CommitReply)>();
        let mut notices = JobNotices {
            socket: jobs_socket,
            conn: None,
        };
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                // Whatever arrived while the last batch was being flushed
                // goes into the next one.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    let mut files = batch[0].0.len();
                    while files < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(more) => {
                                files += more.0.len();
                                batch.push(more);
                            }
                            Err(_) => break,
                        }
                    }
                    commit_requests(batch, &mut notices);
                }
            })
            .expect("a group commit thread");
        GroupCommit { tx }
    }

    /// Makes one message's staged files durable, with whatever else is
    /// waiting; the files are discarded on failure.
    pub async fn commit(
        &self,
        staged: Vec<(String, Staged)>,
    ) -> Result<Vec<QueuedFile>, QueueError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Err(e) = self.tx.send((staged, reply)) {
            for (_, s) in e.0.0 {
                s.discard();
            }
            return Err(QueueError::Io("the group commit thread has stopped".into()));
        }
        answer
            .await
            .map_err(|_| QueueError::Io("the group commit thread has stopped".into()))?
    }
}

/// Commits a batch, tells the job controller of the files, then answers
/// each request. The notice goes first: once a session has its answer,
/// its process may end (a retired SMTP server exits with its last
/// session) and take an unsent notice with it.
fn commit_requests(batch: Vec<(Vec<(String, Staged)>, CommitReply)>, notices: &mut JobNotices) {
    let mut all: Vec<Staged> = Vec::new();
    // Each request's files by channel and priority, to answer it after.
    type Shape = (Vec<(String, Option<u8>)>, CommitReply);
    let mut shapes: Vec<Shape> = Vec::new();
    for (files, reply) in batch {
        let mut channels = Vec::new();
        for (ch, s) in files {
            channels.push((ch, Some(s.priority.rank())));
            all.push(s);
        }
        shapes.push((channels, reply));
    }
    match queuefile::commit_batch(all) {
        Ok(paths) => {
            let mut paths = paths.into_iter();
            let answers: Vec<(Vec<QueuedFile>, CommitReply)> = shapes
                .into_iter()
                .map(|(channels, reply)| {
                    let files = channels
                        .into_iter()
                        .zip(paths.by_ref())
                        .map(|((channel, priority), p)| QueuedFile {
                            channel,
                            path: p.display().to_string(),
                            priority,
                        })
                        .collect();
                    (files, reply)
                })
                .collect();
            notices.send(
                answers
                    .iter()
                    .flat_map(|(f, _)| f.iter().cloned())
                    .collect(),
            );
            for (files, reply) in answers {
                let _ = reply.send(Ok(files));
            }
        }
        Err(e) => {
            for (_, reply) in shapes {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The committer's word to the job controller: one `Enqueued` per batch
/// on a connection kept open (made again when it breaks). A job
/// controller that cannot be reached is not an error (it rescans the
/// queues when it starts).
struct JobNotices {
    socket: PathBuf,
    conn: Option<std::os::unix::net::UnixStream>,
}

/// How long the committer waits on the job controller: it answers a
/// notice at once, and the sessions of the batch wait meanwhile.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(2);

impl JobNotices {
    fn send(&mut self, files: Vec<QueuedFile>) {
        let Some(req) = enqueued_notice(files) else {
            return;
        };
        // A kept connection may have been closed by a restarted job
        // controller: one more try on a new one. A controller that does
        // not answer in time is not waited for again.
        for _ in 0..2 {
            if self.conn.is_none() {
                self.conn = self.connect();
            }
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            if epistle_ipc::frame::write_blocking(conn, &req).is_err() {
                self.conn = None;
                continue;
            }
            if !matches!(
                epistle_ipc::frame::read_blocking::<JobReply>(conn),
                Ok(JobReply::Ok)
            ) {
                self.conn = None;
            }
            return;
        }
    }

    fn connect(&self) -> Option<std::os::unix::net::UnixStream> {
        let conn = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        let limit = Some(NOTICE_TIMEOUT);
        conn.set_read_timeout(limit).ok()?;
        conn.set_write_timeout(limit).ok()?;
        Some(conn)
    }
}

/// Tells the job controller about new files; a job controller that is
/// down or slow is not an error (it rescans the queues when it starts).
pub async fn notify(socket: &Path, files: Vec<QueuedFile>) -> bool {
    let Some(req) = enqueued_notice(files) else {
        return true;
    };
    ask(socket, &req).await.is_some_and(|r| r == JobReply::Ok)
}

/// The notice of new files, without the held ones (a held file waits for
/// `qm release`, which tells the controller); `None` when none is left.
fn enqueued_notice(mut files: Vec<QueuedFile>) -> Option<JobRequest> {
    files.retain(|f| !f.path.ends_with(crate::queue::HELD_SUFFIX));
    (!files.is_empty()).then_some(JobRequest::Enqueued { files })
}

/// One request to the job controller on a fresh connection, with a
/// timeout; `None` when it cannot be reached.
pub async fn ask(socket: &Path, req: &JobRequest) -> Option<JobReply> {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
        epistle_ipc::frame::write(&mut s, req).await.ok()?;
        epistle_ipc::frame::read::<JobReply>(&mut s).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let q = QueueDir::new(dir.path());
        let imta = ImtaConfig::parse(
            "imta.cnf",
            "a.example $U@tcp_local-daemon\n\nl\nmail.example\n\ntcp_local subdirs 3\ntcp_local-daemon\n\nims-ms\nims-ms-daemon\n",
            &mut |_| Err("no includes".into()),
        )
        .unwrap();
        let r = |a: &str| Recipient {
            address: a.into(),
            ..Default::default()
        };
        let env = Envelope {
            from: "x@example.org".into(),
            ..Default::default()
        };
        let files = enqueue(
            &q,
            &imta,
            1024,
            &env,
            &[
                ("ims-ms".into(), r("a@ims-ms-daemon")),
                ("tcp_local".into(), r("b@else.org")),
                ("ims-ms".into(), r("c@ims-ms-daemon")),
            ],
            b"Subject: t\r\n\r\nhi\r\n",
        )
        .unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].channel, "ims-ms");
        let data = std::fs::read(&files[0].path).unwrap();
        let (back, at) = Envelope::decode(&data).unwrap();
        assert_eq!(back.recipients.len(), 2);
        assert_eq!(&data[at..], b"Subject: t\r\n\r\nhi\r\n");
        // tcp_local spreads over numbered subdirectories.
        assert!(files[1].path.contains("/tcp_local/00"), "{}", files[1].path);

        // `single`: a file per recipient.
        let imta = ImtaConfig::parse(
            "imta.cnf",
            "\nl\nmail.example\n\nims-ms single\nims-ms-daemon\n",
            &mut |_| Err("no includes".into()),
        )
        .unwrap();
        let files = enqueue(
            &q,
            &imta,
            1024,
            &env,
            &[
                ("ims-ms".into(), r("a@ims-ms-daemon")),
                ("ims-ms".into(), r("c@ims-ms-daemon")),
            ],
            b"x\r\n",
        )
        .unwrap();
        assert_eq!(files.len(), 2);
        let to: Vec<String> = files
            .iter()
            .map(|f| {
                let (e, _) = Envelope::decode(&std::fs::read(&f.path).unwrap()).unwrap();
                assert_eq!(e.recipients.len(), 1);
                e.recipients[0].address.clone()
            })
            .collect();
        assert_eq!(to, ["a@ims-ms-daemon", "c@ims-ms-daemon"]);
    }
}
