//! The job controller's protocol, on `data/run/job_controller.sock`:
//! enqueue notices from whoever writes queue files (the SMTP server,
//! channel programs writing notices, sendmail), work requests from the
//! channel programs it starts, and questions from `imsimta`.
//!
//! The queue files on disk are the truth; these messages only tell the
//! job controller sooner than its periodic rescan would.

use serde::{Deserialize, Serialize};

/// A queue file just written, by its channel and full path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedFile {
    pub channel: String,
    pub path: String,
    /// The message's priority on this channel (`Priority:` lowered for
    /// size by the channel's `*blocklimit`): 0 urgent, 1 normal, 2
    /// non-urgent, 3 second class. When not said, the job controller
    /// reads it from the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum JobRequest {
    /// These files are new and due now.
    Enqueued { files: Vec<QueuedFile> },
    /// From a channel program: the next due message of `channel`, and
    /// the file it last took, which it is done with (one round trip per
    /// message).
    Take {
        channel: String,
        #[serde(default)]
        finished: Option<Finished>,
    },
    /// Every channel's queue as the job controller sees it.
    Queues,
    /// Reload the compiled configuration and rescan the queues from disk
    /// (`imsimta restart` of the job controller's view, `imsimta cache
    /// -sync`).
    Rebuild,
    /// Make every waiting message of `channel` (all channels when `None`)
    /// due now, ignoring backoff (`imsimta run`, `qm start`).
    RunNow { channel: Option<String> },
}

/// A channel program is done with `path`; what is left of the message
/// (deferred recipients), if anything, is at `requeued`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub path: String,
    pub requeued: Option<String>,
}

/// One channel's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelQueue {
    pub channel: String,
    /// Messages waiting (due or not), not counting those being delivered.
    pub waiting: usize,
    /// Of those, due now.
    pub due: usize,
    /// Messages a channel program is delivering now.
    pub active: usize,
    /// Channel programs running.
    pub jobs: usize,
    /// Held messages (`.HELD`), which are never delivered until released.
    pub held: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum JobReply {
    Ok,
    /// Deliver this queue file. `waiting`: how many more of the
    /// channel's messages are due now, counted only as far as could call
    /// for more delivery threads (`threaddepth` × `MAX_CLIENT_THREADS`).
    Job {
        path: String,
        #[serde(default)]
        waiting: usize,
    },
    /// Nothing due: the channel program may exit.
    Idle,
    Queues {
        channels: Vec<ChannelQueue>,
    },
    Error {
        message: String,
    },
}
