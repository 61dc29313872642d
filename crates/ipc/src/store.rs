//! The store's protocol, spoken on `data/run/stored.sock` between `stored`
//! and every process that reads or changes mailboxes (imapd, popd,
//! mshttpd, ims_master, the store tools), and the client they use.
//!
//! Message bodies do not cross the socket: a writer stages the message in
//! a file next to the mailboxes (`StageDir`), then asks for `Append`; a
//! reader learns the mailbox's directory (`Open`, `MailboxDir`), names
//! files with [`message_file`] and reads the immutable files itself.
//! A session may `Watch` mailboxes: change events then arrive for it
//! between replies. One connection carries many sessions
//! ([`ClientFrame`], [`ServerFrame`]).

use serde::{Deserialize, Serialize};

/// The file of message `uid` in a mailbox's directory. Message files never
/// change once written; an expunged message's file goes away.
pub fn message_file(mailbox_dir: &std::path::Path, uid: u32) -> std::path::PathBuf {
    mailbox_dir.join(format!("{uid}.msg"))
}

/// Most index entries one `Messages` reply (or mailboxes one `List`
/// reply) carries, so that a reply stays well under the frame limit
/// whatever the store's size.
pub const INDEX_PAGE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    #[error("no such mailbox: {0}")]
    NoMailbox(String),
    #[error("mailbox already exists: {0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("not allowed: {0}")]
    Refused(String),
    /// The mailbox's owner is over quota (IMAP NO [OVERQUOTA]; the MTA
    /// keeps the message queued).
    #[error("over quota: {0}")]
    OverQuota(String),
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("store database error: {0}")]
    Db(String),
}

/// What folder.db held for one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxRecord {
    pub id: u64,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    pub messages: u32,
    pub unseen: u32,
    pub size: u64,
}

/// A mailbox as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxInfo {
    pub name: String,
    #[serde(flatten)]
    pub record: MailboxRecord,
}

/// One message of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// System flags (`\Seen`…) and keywords, sorted, no repeats.
    pub flags: Vec<String>,
    /// Seconds since the epoch (IMAP INTERNALDATE).
    pub internal_date: i64,
    pub size: u64,
    pub modseq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub uid: u32,
    #[serde(flatten)]
    pub record: MessageRecord,
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum StoreRequest {
    /// Mailboxes whose names start with `prefix`.
    /// Mailboxes named `prefix...`, in name order, after `after` (paging:
    /// at most [`INDEX_PAGE`] a reply).
    List {
        prefix: String,
        #[serde(default)]
        after: String,
    },
    Create {
        name: String,
        partition: Option<String>,
        /// imsrestore: keep the backed-up mailbox's UIDVALIDITY.
        #[serde(default)]
        uidvalidity: Option<u32>,
    },
    Delete {
        name: String,
    },
    /// Every mailbox of an account.
    DeleteUser {
        user: String,
    },
    Rename {
        old: String,
        new: String,
    },
    Subscribe {
        user: String,
        name: String,
        on: bool,
    },
    Subscriptions {
        user: String,
    },
    Status {
        name: String,
    },
    /// Where to stage a message for `name` (a directory).
    StageDir {
        name: String,
    },
    Append {
        name: String,
        staged: String,
        flags: Vec<String>,
        internal_date: i64,
        /// imsrestore: keep the backed-up UID (not below UIDNEXT).
        #[serde(default)]
        uid: Option<u32>,
    },
    /// The index, in UID order: entries with UIDs above `after`, at most
    /// [`INDEX_PAGE`] of them (a client pages through large mailboxes).
    Messages {
        name: String,
        #[serde(default)]
        after: u32,
    },
    /// The directory holding a mailbox's message files (see
    /// [`message_file`]).
    MailboxDir {
        name: String,
    },
    StoreFlags {
        name: String,
        uids: Vec<u32>,
        op: FlagOp,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        from: String,
        uids: Vec<u32>,
        to: String,
    },
    Move {
        from: String,
        uids: Vec<u32>,
        to: String,
    },
    /// Removes `\Deleted` messages (only among `uids` when given).
    Expunge {
        name: String,
        uids: Option<Vec<u32>>,
    },
    /// Removes the given messages whatever their flags, in one
    /// transaction (POP3's update state: the DELEs of a session apply at
    /// QUIT all together or not at all).
    Remove {
        name: String,
        uids: Vec<u32>,
    },
    QuotaUsage {
        user: String,
    },
    /// Rebuild the mailbox list, index and quota usage from the message
    /// files (`quotas_only`: just the quota usage); `dry_run` reports only.
    Reconstruct {
        dry_run: bool,
        quotas_only: bool,
    },
    /// From now on, check every request of this session against what
    /// `user` may do (the IMAP, POP and webmail servers send it after a
    /// login); a session that never sends it acts for the system.
    ActAs {
        user: String,
    },
    GetAcl {
        name: String,
    },
    /// Rights as RFC 4314 letters, `+`/`-` to add or take; `None` removes
    /// the identifier.
    SetAcl {
        name: String,
        identifier: String,
        rights: Option<String>,
    },
    /// What the acting user may do with a mailbox.
    MyRights {
        name: String,
    },
    /// Move every mailbox of an account to another partition.
    MoveUser {
        user: String,
        partition: String,
    },
    /// The parsed structures of messages, in the order asked. When they
    /// are many or large the answer covers the first of them only, and
    /// the client asks again for the rest.
    Structures {
        name: String,
        uids: Vec<u32>,
    },
    /// A session opens a mailbox: its status, the first page of its index
    /// and the directory of its message files, in one answer. With
    /// `watch`, the session watches this mailbox alone from then on —
    /// from before the index is read, so no change made meanwhile is
    /// missed (an event may repeat what the index already says).
    Open {
        name: String,
        watch: bool,
    },
    /// Apply the aging rules of config/store.expirerule now.
    Expire {
        dry_run: bool,
    },
    /// Sets a mailbox's RFC 6154 special-use attributes (`\Sent`…,
    /// space-separated; empty removes them).
    SetSpecialUse {
        name: String,
        attrs: String,
    },
    /// Other accounts' mailboxes `user` may see (answered as
    /// `Mailboxes`).
    SharedWith {
        user: String,
    },
    /// The special-use attributes of the mailboxes named `prefix...`.
    SpecialUses {
        prefix: String,
    },
    /// Start or stop receiving change events for a mailbox on this
    /// session.
    Watch {
        name: String,
        on: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum StoreReply {
    Done,
    Mailbox {
        mailbox: MailboxInfo,
    },
    Mailboxes {
        mailboxes: Vec<MailboxInfo>,
        /// Where the next page starts (`List { after }`), when there is one.
        #[serde(default)]
        next: Option<String>,
    },
    Names {
        names: Vec<String>,
    },
    Path {
        path: String,
    },
    Appended {
        uid: u32,
        mailbox: MailboxInfo,
    },
    Messages {
        messages: Vec<MessageInfo>,
    },
    Flags {
        changed: Vec<MessageInfo>,
        refused: Vec<u32>,
        mailbox: MailboxInfo,
    },
    Copied {
        pairs: Vec<(u32, u32)>,
    },
    Expunged {
        uids: Vec<u32>,
    },
    Quota {
        bytes: u64,
        messages: u64,
        /// When an addition to this account was first refused for quota,
        /// since it last fitted (seconds): the MTA bounces instead of
        /// deferring once `store.quotagraceperiod` hours have passed.
        #[serde(default)]
        over_since: Option<i64>,
        /// The limits that apply (none: unlimited, or not enforced).
        #[serde(default)]
        limit_bytes: Option<u64>,
        #[serde(default)]
        limit_messages: Option<u64>,
    },
    Acl {
        acl: Vec<(String, String)>,
    },
    /// One per UID asked, in order, for a prefix of them; `None` for a
    /// message that is not there (expunged).
    Structures {
        structures: Vec<Option<MessageStructure>>,
    },
    Opened {
        mailbox: MailboxInfo,
        /// The first page of the index (see [`StoreRequest::Messages`]).
        messages: Vec<MessageInfo>,
        /// See [`message_file`].
        dir: String,
    },
    Rights {
        rights: String,
    },
    /// Mailbox names and their special-use attributes.
    Attributes {
        pairs: Vec<(String, String)>,
    },
    Error {
        error: StoreError,
    },
}

/// What changed in a watched mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StoreEvent {
    /// New messages (append, copy, move, delivery): their index entries
    /// as the owner sees them (at most [`INDEX_PAGE`] an event), and
    /// `after`, the highest UID in the mailbox below them when they came.
    Exists {
        mailbox: String,
        #[serde(default)]
        after: u32,
        messages: Vec<MessageInfo>,
        status: MailboxRecord,
    },
    Flags {
        mailbox: String,
        messages: Vec<MessageInfo>,
        status: MailboxRecord,
    },
    Expunged {
        mailbox: String,
        uids: Vec<u32>,
    },
    /// The mailbox was deleted or renamed away.
    Gone {
        mailbox: String,
    },
}

impl StoreEvent {
    pub fn mailbox(&self) -> &str {
        match self {
            StoreEvent::Exists { mailbox, .. }
            | StoreEvent::Flags { mailbox, .. }
            | StoreEvent::Expunged { mailbox, .. }
            | StoreEvent::Gone { mailbox } => mailbox,
        }
    }
}

/// What a client sends. One connection carries many sessions (every
/// IMAP login of an imapd shares a few connections), each named by a
/// number the client picks; stored keeps a session's acting user and
/// watched mailboxes until it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClientFrame {
    /// `seq` comes back with the reply, so a reply to a request its
    /// caller gave up on is known for what it is.
    Request {
        session: u32,
        seq: u32,
        request: StoreRequest,
    },
    /// The session is over: its state and watches go.
    End { session: u32 },
}

/// What stored sends: a reply to a session's request, or an event for a
/// session watching the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServerFrame {
    Reply {
        session: u32,
        seq: u32,
        reply: StoreReply,
    },
    Event {
        session: u32,
        event: StoreEvent,
    },
}

/// An event serialized once and framed for each session that watches its
/// mailbox: a shared mailbox may have thousands, and each frame differs
/// only in the session number. `frame_for(s)` is byte for byte what
/// `frame::encode(&ServerFrame::Event { session: s, event })` gives.
pub struct EventFrames {
    event: Vec<u8>,
}

impl EventFrames {
    const HEAD: &'static [u8] = br#"{"kind":"event","session":"#;
    const MIDDLE: &'static [u8] = br#","event":"#;

    pub fn new(event: &StoreEvent) -> Result<EventFrames, crate::frame::FrameError> {
        let event = serde_json::to_vec(event)?;
        // The longest frame it can make: a ten-digit session number.
        let body = Self::HEAD.len() + 10 + Self::MIDDLE.len() + event.len() + 1;
        if body > crate::frame::MAX_FRAME {
            return Err(crate::frame::FrameError::TooLarge(body));
        }
        Ok(EventFrames { event })
    }

    pub fn frame_for(&self, session: u32) -> Vec<u8> {
        let session = session.to_string();
        let len = Self::HEAD.len() + session.len() + Self::MIDDLE.len() + self.event.len() + 1;
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&u32::try_from(len).expect("bounded in new").to_be_bytes());
        out.extend_from_slice(Self::HEAD);
        out.extend_from_slice(session.as_bytes());
        out.extend_from_slice(Self::MIDDLE);
        out.extend_from_slice(&self.event);
        out.push(b'}');
        out
    }
}

/// The parsed structure of a message, kept by the store at append time so
/// that IMAP FETCH (ENVELOPE, BODYSTRUCTURE, sections) never parses a
/// message again. Offsets are bytes into the message file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageStructure {
    pub size: u32,
    /// Bytes of the top-level header, with its blank line.
    pub header_size: u32,
    pub envelope: Envelope,
    pub body: BodyPart,
    /// RFC 8474 EMAILID: from the message's content, so a copy or a moved
    /// message keeps it (empty on enclosed messages).
    #[serde(default)]
    pub email_id: String,
}

/// A mailbox's RFC 8474 MAILBOXID, from the id it keeps across renames.
pub fn mailbox_object_id(id: u64) -> String {
    format!("F{id}")
}

/// RFC 3501 ENVELOPE fields. Date, subject and the ids are the header
/// values as written (unfolded); names in addresses are decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Envelope {
    pub date: Option<String>,
    pub subject: Option<String>,
    pub from: Vec<EnvelopeAddress>,
    pub sender: Vec<EnvelopeAddress>,
    pub reply_to: Vec<EnvelopeAddress>,
    pub to: Vec<EnvelopeAddress>,
    pub cc: Vec<EnvelopeAddress>,
    pub bcc: Vec<EnvelopeAddress>,
    pub in_reply_to: Option<String>,
    pub message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EnvelopeAddress {
    pub name: Option<String>,
    pub mailbox: Option<String>,
    pub host: Option<String>,
    /// Set on the addresses of an RFC 5322 group.
    pub group: Option<String>,
}

/// One MIME part (RFC 3501 BODYSTRUCTURE), with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BodyPart {
    /// Lower-case type and subtype.
    pub media_type: String,
    pub media_subtype: String,
    pub params: Vec<(String, String)>,
    pub id: Option<String>,
    pub description: Option<String>,
    pub encoding: String,
    pub offset_header: u32,
    pub offset_body: u32,
    pub offset_end: u32,
    /// Lines of the body, for text parts and message/rfc822.
    pub lines: u32,
    pub md5: Option<String>,
    pub disposition: Option<(String, Vec<(String, String)>)>,
    pub language: Vec<String>,
    pub location: Option<String>,
    /// Children of a multipart.
    pub parts: Vec<BodyPart>,
    /// The enclosed message of a message/rfc822 part.
    pub message: Option<Box<MessageStructure>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_framed_once_per_session_equals_the_encoded_frame() {
        let events = [
            StoreEvent::Gone {
                mailbox: "user/joe/\"odd\" name\u{e9}".into(),
            },
            StoreEvent::Expunged {
                mailbox: "user/joe/INBOX".into(),
                uids: vec![1, 7, 9],
            },
        ];
        for event in events {
            let once = EventFrames::new(&event).unwrap();
            for session in [0, 1, 4242, u32::MAX] {
                let frame = crate::frame::encode(&ServerFrame::Event {
                    session,
                    event: event.clone(),
                })
                .unwrap();
                assert_eq!(once.frame_for(session), frame);
            }
        }
    }
}
