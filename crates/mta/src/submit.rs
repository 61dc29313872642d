//! Putting a message into the channel queues: one queue file per
//! destination channel holding that channel's recipients, each written
//! durably, then a word to the job controller so delivery starts at once
//! (its periodic rescan finds the files anyway if the word is lost).

use std::path::Path;
use std::time::Duration;

use epistle_ipc::jobs::{JobReply, JobRequest, QueuedFile};

use crate::imtacnf::ImtaConfig;
use crate::queue::QueueDir;
use crate::queuefile::{Envelope, QueueError, Recipient};

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
/// channel. On an error, files already written are removed, so the
/// message is either queued for everyone or for no one.
pub fn enqueue(
    queue: &QueueDir,
    imta: &ImtaConfig,
    envelope: &Envelope,
    recipients: &[(String, Recipient)],
    message: &[u8],
) -> Result<Vec<QueuedFile>, QueueError> {
    let mut channels: Vec<&str> = Vec::new();
    for (ch, _) in recipients {
        if !channels.contains(&ch.as_str()) {
            channels.push(ch);
        }
    }
    let mut written: Vec<QueuedFile> = Vec::new();
    for ch in channels {
        let env = Envelope {
            recipients: recipients
                .iter()
                .filter(|(c, _)| c == ch)
                .map(|(_, r)| r.clone())
                .collect(),
            ..envelope.clone()
        };
        match queue.enqueue(ch, subdirs(imta, ch), &env, message) {
            Ok(path) => written.push(QueuedFile {
                channel: ch.to_string(),
                path: path.display().to_string(),
            }),
            Err(e) => {
                for f in &written {
                    let _ = std::fs::remove_file(&f.path);
                }
                return Err(e);
            }
        }
    }
    Ok(written)
}

/// Tells the job controller about new files; a job controller that is
/// down or slow is not an error (it rescans the queues when it starts).
pub async fn notify(socket: &Path, files: Vec<QueuedFile>) -> bool {
    if files.is_empty() {
        return true;
    }
    ask(socket, &JobRequest::Enqueued { files })
        .await
        .is_some_and(|r| r == JobReply::Ok)
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
    }
}
