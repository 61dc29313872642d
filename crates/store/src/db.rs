//! The store database (redb) and the message files it points at.
//!
//! Only `stored` opens this. Every operation is one write transaction;
//! a message file is written, fsynced and renamed into place, and its
//! directory fsynced, *before* the transaction that makes it visible
//! commits, and files of expunged messages are removed only *after* the
//! transaction that forgets them commits. So a crash at any point leaves
//! either the old or the new state, plus at worst a file nobody points at
//! (which `reconstruct` finds).
//!
//! How much is on disk before a reply is the [`SyncLevel`]: by default
//! only flag changes and expunges may wait (up to a second, for the next
//! [`Store::sync_pending`]); nothing that adds a message ever waits.
//!
//! Tables: `mailboxes` (name → record; folder.db), `mailbox_ids`,
//! `messages` ((mailbox id, uid) → record; the index), `subscriptions`
//! ((user, name); subscr.db), `quota` (user → bytes, messages; quota.db),
//! `users` (user → partition), `meta` (counters).

use epistle_ipc::store::message_file;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use epistle_ipc::store::{
    FlagOp, MailboxInfo, MailboxRecord, MessageInfo, MessageRecord, StoreError,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::group::GroupCommit;
use crate::names::{MailboxName, user_dir};

const MAILBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("mailboxes");
const MAILBOX_IDS: TableDefinition<u64, &str> = TableDefinition::new("mailbox_ids");
const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
const SUBSCRIPTIONS: TableDefinition<(&str, &str), ()> = TableDefinition::new("subscriptions");
const QUOTA: TableDefinition<&str, (u64, u64)> = TableDefinition::new("quota");
const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const QUOTA_WARNED: TableDefinition<&str, ()> = TableDefinition::new("quota_warned");
/// User → when an addition was first refused for quota (seconds).
const QUOTA_OVER: TableDefinition<&str, i64> = TableDefinition::new("quota_over");
/// (mailbox id, user, uid): messages a user other than the owner has seen
/// in a shared mailbox (peruser.db).
const PERUSER: TableDefinition<(u64, &str, u32), ()> = TableDefinition::new("peruser");
/// Mailbox id → access control list (lright.db).
const ACLS: TableDefinition<u64, &[u8]> = TableDefinition::new("acls");
/// (mailbox id, uid) → the parsed structure of the message.
const STRUCTURES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("structures");
/// RFC 6154 special-use attributes by mailbox id (kept across renames).
const SPECIAL_USE: TableDefinition<u64, &str> = TableDefinition::new("special_use");

/// Errors of the database layer, turned into the protocol's StoreError.
/// (A trait of our own: StoreError belongs to the IPC crate.)
trait IntoStore {
    fn into_store(self) -> StoreError;
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl IntoStore for $t {
            fn into_store(self) -> StoreError {
                StoreError::Db(self.to_string())
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    postcard::Error
);

impl IntoStore for StoreError {
    fn into_store(self) -> StoreError {
        self
    }
}

impl IntoStore for crate::names::NameError {
    fn into_store(self) -> StoreError {
        StoreError::Invalid(self.to_string())
    }
}

// A local type may convert into a foreign one.
impl From<crate::names::NameError> for StoreError {
    fn from(e: crate::names::NameError) -> Self {
        e.into_store()
    }
}

trait Db<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T, E: IntoStore> Db<T> for Result<T, E> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(IntoStore::into_store)
    }
}

fn io(what: &str, p: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", p.display()))
}

/// A user's limits (None: unlimited) and the percentage of either at
/// which one warning message is sent (0 or 100 and more: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    pub bytes: Option<u64>,
    pub messages: Option<u64>,
    pub warn_percent: u8,
}

impl Quota {
    pub const UNLIMITED: Quota = Quota {
        bytes: None,
        messages: None,
        warn_percent: 0,
    };

    /// Would `add` bytes in `add_count` messages on top of `used` exceed it?
    fn check(&self, user: &str, used: (u64, u64), add: (u64, u64)) -> Result<(), StoreError> {
        if let Some(l) = self.bytes
            && used.0 + add.0 > l
        {
            return Err(StoreError::OverQuota(format!(
                "{user} holds {} of {l} bytes",
                used.0
            )));
        }
        if let Some(l) = self.messages
            && used.1 + add.1 > l
        {
            return Err(StoreError::OverQuota(format!(
                "{user} holds {} of {l} messages",
                used.1
            )));
        }
        Ok(())
    }

    /// The highest share of a limit `used` reaches, in percent.
    fn percent(&self, used: (u64, u64)) -> u64 {
        let share = |u: u64, l: Option<u64>| match l {
            Some(0) | None => 0,
            Some(l) => u.saturating_mul(100) / l,
        };
        share(used.0, self.bytes).max(share(used.1, self.messages))
    }
}

/// What an aging run did: report lines, and the UIDs removed per mailbox.
pub type Expired = (Vec<String>, Vec<(String, Vec<u32>)>);

/// Sent once each time a user's usage crosses the warning threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWarning {
    pub used: (u64, u64),
    pub quota: Quota,
    pub percent: u64,
}

pub const SEEN: &str = "\\Seen";
pub const DELETED: &str = "\\Deleted";

/// Flags in canonical form: system flags with their usual capitals,
/// keywords as given, sorted, without repeats; `\Recent` is per session
/// and never stored.
pub fn normalize_flags(flags: &[String]) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let f = match f.to_ascii_lowercase().as_str() {
            "\\seen" => "\\Seen".to_string(),
            "\\answered" => "\\Answered".to_string(),
            "\\flagged" => "\\Flagged".to_string(),
            "\\deleted" => "\\Deleted".to_string(),
            "\\draft" => "\\Draft".to_string(),
            "\\recent" => continue,
            _ if f.starts_with('\\') => {
                return Err(StoreError::Invalid(format!("unknown system flag {f}")));
            }
            _ if f.is_empty()
                || f.len() > 128
                || f.chars()
                    .any(|c| c.is_control() || " (){%*\"\\]".contains(c)) =>
            {
                return Err(StoreError::Invalid(format!("{f:?} is not a keyword")));
            }
            _ => f.clone(),
        };
        if !out.iter().any(|x| x.eq_ignore_ascii_case(&f)) {
            out.push(f);
        }
    }
    out.sort();
    Ok(out)
}

fn has(flags: &[String], f: &str) -> bool {
    flags.iter().any(|x| x == f)
}

/// How much of a change is on disk when the store answers
/// (`local.store.synclevel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncLevel {
    /// What adds or keeps a message (appends, copies, mailboxes) is
    /// durable before the reply; flag changes and expunges are committed
    /// at once, so every session sees them, and made durable by the next
    /// [`Store::sync_pending`] (stored runs it every second). A power
    /// failure can undo the last second's flag changes and expunges, never
    /// lose a message: an expunged message's file goes only once its
    /// expunge is durable. This is what Dovecot's default
    /// `mail_fsync=optimized` promises too.
    Messages,
    /// Every change is durable before its reply.
    #[default]
    All,
}

impl std::str::FromStr for SyncLevel {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "messages" => Ok(SyncLevel::Messages),
            "all" => Ok(SyncLevel::All),
            other => Err(StoreError::Invalid(format!(
                "unknown sync level {other:?}: say messages or all"
            ))),
        }
    }
}

/// Committed changes not yet durable (SyncLevel::Messages).
#[derive(Default)]
struct Unsynced {
    changes: bool,
    /// Files of expunged messages, removed once the expunge is durable.
    unlinks: Vec<PathBuf>,
}

/// The store.
pub struct Store {
    db: Database,
    /// Partition name → root directory.
    partitions: BTreeMap<String, PathBuf>,
    default_partition: String,
    /// Concurrent appends share their flushes and their transaction.
    appends: GroupCommit<AppendArgs, AppendResult>,
    sync_level: SyncLevel,
    unsynced: std::sync::Mutex<Unsynced>,
    /// Held through a whole `sync_pending`, so a caller that returns from
    /// it knows every change before its call is durable and its files gone.
    syncing: std::sync::Mutex<()>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.sync_pending() {
            tracing::error!(target: "Store", "cannot make the last changes durable: {e}");
        }
    }
}

/// One append waiting for its batch: [`Store::append_as`]'s arguments.
#[derive(Debug, Clone)]
pub struct AppendArgs {
    pub name: String,
    /// The file's name in the account's staging directory.
    pub staged: String,
    pub flags: Vec<String>,
    pub internal_date: i64,
    pub quota: Quota,
    /// A UID to keep (imsrestore); the mailbox's next otherwise.
    pub want_uid: Option<u32>,
}

/// What an append gives: the new message, the mailbox after, and a quota
/// warning to send when the account crossed its threshold.
pub type AppendResult = Result<(MessageInfo, MailboxInfo, Option<QuotaWarning>), StoreError>;

/// An append checked and read, ready for the batch's transaction.
struct Prepared {
    n: MailboxName,
    key: String,
    part: String,
    src: PathBuf,
    size: u64,
    structure: Vec<u8>,
    flags: Vec<String>,
    internal_date: i64,
    quota: Quota,
    want_uid: Option<u32>,
}

impl Store {
    /// Opens (creating) the database at `db_path`; `partitions` maps names
    /// to directories, and new users go to `default_partition`.
    pub fn open(
        db_path: &Path,
        partitions: BTreeMap<String, PathBuf>,
        default_partition: &str,
    ) -> Result<Store, StoreError> {
        if !partitions.contains_key(default_partition) {
            return Err(StoreError::Invalid(format!(
                "no partition named {default_partition}"
            )));
        }
        if let Some(dir) = db_path.parent() {
            fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        }
        for root in partitions.values() {
            fs::create_dir_all(root.join("stage")).map_err(|e| io("cannot create", root, e))?;
        }
        let db = Database::create(db_path).db()?;
        let tx = db.begin_write().db()?;
        {
            // Create every table, so readers never meet a missing one.
            tx.open_table(MAILBOXES).db()?;
            tx.open_table(MAILBOX_IDS).db()?;
            tx.open_table(MESSAGES).db()?;
            tx.open_table(SUBSCRIPTIONS).db()?;
            tx.open_table(QUOTA).db()?;
            tx.open_table(USERS).db()?;
            tx.open_table(META).db()?;
            tx.open_table(QUOTA_WARNED).db()?;
            tx.open_table(ACLS).db()?;
            tx.open_table(QUOTA_OVER).db()?;
            tx.open_table(PERUSER).db()?;
            tx.open_table(STRUCTURES).db()?;
            tx.open_table(SPECIAL_USE).db()?;
        }
        tx.commit().db()?;
        Ok(Store {
            db,
            partitions,
            default_partition: default_partition.to_string(),
            appends: GroupCommit::default(),
            sync_level: SyncLevel::default(),
            unsynced: Default::default(),
            syncing: Default::default(),
        })
    }

    /// The store with another [`SyncLevel`] (the default is `All`).
    pub fn with_sync_level(mut self, level: SyncLevel) -> Store {
        self.sync_level = level;
        self
    }

    /// Commits a flag change or an expunge (whose message files are
    /// `unlinks`): durable now at SyncLevel::All, else at the next
    /// `sync_pending`. Either way every reader sees it from now on.
    fn commit_change(
        &self,
        mut tx: WriteTransaction,
        unlinks: Vec<PathBuf>,
    ) -> Result<(), StoreError> {
        if self.sync_level == SyncLevel::All {
            tx.commit().db()?;
            remove_files(unlinks);
            return Ok(());
        }
        tx.set_durability(Durability::None).db()?;
        tx.commit().db()?;
        let mut u = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
        u.changes = true;
        u.unlinks.extend(unlinks);
        Ok(())
    }

    /// Makes every committed change durable, then removes the files of
    /// the messages expunged meanwhile. Cheap when nothing waits.
    pub fn sync_pending(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let lock = || self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
        // Taken before the durable commit begins, so every change taken
        // committed before it and is made durable by it.
        let taken = std::mem::take(&mut *lock());
        if !taken.changes {
            return Ok(());
        }
        let durable = self.db.begin_write().db().and_then(|tx| tx.commit().db());
        if let Err(e) = durable {
            let mut u = lock();
            u.changes = true;
            u.unlinks.extend(taken.unlinks);
            return Err(e);
        }
        remove_files(taken.unlinks);
        Ok(())
    }

    /// Where clients write message files before an append: same file
    /// system as the mailboxes, so the append is a rename.
    pub fn stage_dir(&self, partition: &str) -> Option<PathBuf> {
        self.partitions.get(partition).map(|p| p.join("stage"))
    }

    pub fn partitions(&self) -> &BTreeMap<String, PathBuf> {
        &self.partitions
    }

    /// The partition of a user (assigned at their first mailbox).
    pub fn user_partition(&self, user: &str) -> Result<String, StoreError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(USERS).db()?;
        Ok(t.get(user)
            .db()?
            .map(|v| v.value().to_string())
            .unwrap_or_else(|| self.default_partition.clone()))
    }

    fn user_root(&self, partition: &str, user: &str) -> Result<PathBuf, StoreError> {
        let root = self
            .partitions
            .get(partition)
            .ok_or_else(|| StoreError::Invalid(format!("unknown partition {partition}")))?;
        Ok(root.join(user_dir(user)))
    }

    fn mailbox_dir(&self, partition: &str, user: &str, id: u64) -> Result<PathBuf, StoreError> {
        Ok(self.user_root(partition, user)?.join(id.to_string()))
    }

    /// The file of one message.
    pub fn message_path(&self, name: &str, uid: u32) -> Result<PathBuf, StoreError> {
        Ok(message_file(&self.mailbox_files(name)?, uid))
    }

    /// The directory of a mailbox's message files.
    pub fn mailbox_files(&self, name: &str) -> Result<PathBuf, StoreError> {
        let n = MailboxName::parse(name)?;
        let rec = self
            .mailbox(name)
            .db()?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        let part = self.user_partition(n.owner())?;
        self.mailbox_dir(&part, n.owner(), rec.record.id).db()
    }

    pub fn mailbox(&self, name: &str) -> Result<Option<MailboxInfo>, StoreError> {
        let n = MailboxName::parse(name)?.to_string();
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(MAILBOXES).db()?;
        match t.get(n.as_str()).db()? {
            Some(v) => Ok(Some(MailboxInfo {
                name: n.clone(),
                record: postcard::from_bytes(v.value()).db()?,
            })),
            None => Ok(None),
        }
    }

    /// Every mailbox whose name starts with `prefix` (`user/joe/` lists
    /// one account; `` every mailbox), in name order.
    pub fn list(&self, prefix: &str) -> Result<Vec<MailboxInfo>, StoreError> {
        self.list_after(prefix, "", usize::MAX)
    }

    /// At most `limit` mailboxes named `prefix...` that sort after `after`.
    pub fn list_after(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<MailboxInfo>, StoreError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(MAILBOXES).db()?;
        let mut out = Vec::new();
        let start = if after > prefix { after } else { prefix };
        for item in t.range(start..).db()? {
            let (k, v) = item.db()?;
            if !k.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            if k.value() == after {
                continue;
            }
            out.push(MailboxInfo {
                name: k.value().to_string(),
                record: postcard::from_bytes(v.value()).db()?,
            });
        }
        Ok(out)
    }

    /// Creates a mailbox (and the user's partition assignment on the
    /// first one). UIDVALIDITY is the creation time, made unique.
    pub fn create_mailbox(
        &self,
        name: &str,
        partition: Option<&str>,
    ) -> Result<MailboxInfo, StoreError> {
        self.create_mailbox_as(name, partition, None)
    }

    /// Creates a mailbox with a given UIDVALIDITY (imsrestore), or a new one.
    pub fn create_mailbox_as(
        &self,
        name: &str,
        partition: Option<&str>,
        uidvalidity: Option<u32>,
    ) -> Result<MailboxInfo, StoreError> {
        let n = MailboxName::parse(name)?;
        let key = n.to_string();
        // Most creates at login find the INBOX there: a read says so
        // without waiting for the writer.
        if self.mailbox(&key)?.is_some() {
            return Err(StoreError::Exists(key));
        }
        let tx = self.db.begin_write().db()?;
        let info = {
            let mut boxes = tx.open_table(MAILBOXES).db()?;
            if boxes.get(key.as_str()).db()?.is_some() {
                return Err(StoreError::Exists(key));
            }
            let mut users = tx.open_table(USERS).db()?;
            let existing = users.get(n.owner()).db()?.map(|v| v.value().to_string());
            let part = match existing {
                Some(p) => p,
                None => {
                    let p = partition.unwrap_or(&self.default_partition).to_string();
                    if !self.partitions.contains_key(&p) {
                        return Err(StoreError::Invalid(format!("unknown partition {p}")));
                    }
                    users.insert(n.owner(), p.as_str()).db()?;
                    p
                }
            };
            let mut meta = tx.open_table(META).db()?;
            let id = meta
                .get("next_mailbox_id")
                .db()?
                .map(|v| v.value())
                .unwrap_or(1);
            meta.insert("next_mailbox_id", id + 1).db()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let last = meta
                .get("last_uidvalidity")
                .db()?
                .map(|v| v.value())
                .unwrap_or(0);
            let uidvalidity = match uidvalidity {
                Some(v) if v > 0 => v,
                _ => {
                    let v = (now as u32).max(last as u32 + 1);
                    meta.insert("last_uidvalidity", u64::from(v)).db()?;
                    v
                }
            };
            let record = MailboxRecord {
                id,
                uidvalidity,
                uidnext: 1,
                highest_modseq: 1,
                messages: 0,
                unseen: 0,
                size: 0,
            };
            boxes
                .insert(
                    key.as_str(),
                    postcard::to_allocvec(&record).db()?.as_slice(),
                )
                .db()?;
            tx.open_table(MAILBOX_IDS)
                .db()?
                .insert(id, key.as_str())
                .db()?;
            let dir = self.mailbox_dir(&part, n.owner(), id)?;
            fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
            write_meta(&dir, &key, uidvalidity)?;
            sync_dir(dir.parent().unwrap_or(&dir))?;
            MailboxInfo {
                name: key.clone(),
                record,
            }
        };
        tx.commit().db()?;
        Ok(info)
    }

    /// Deletes one mailbox and its messages (not its children). INBOX can
    /// only go with the whole account ([`Store::delete_user`]).
    pub fn delete_mailbox(&self, name: &str) -> Result<(), StoreError> {
        let n = MailboxName::parse(name)?;
        if n.is_inbox() {
            return Err(StoreError::Refused(
                "INBOX cannot be deleted; delete the account instead".into(),
            ));
        }
        self.remove_mailboxes(&[n])
    }

    /// Deletes every mailbox of a user, their files and quota record.
    pub fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        let names: Vec<MailboxName> = self
            .list(&format!("user/{user}/"))
            .db()?
            .into_iter()
            .filter_map(|m| MailboxName::parse(&m.name).ok())
            .collect();
        let count = names.len();
        self.remove_mailboxes(&names)?;
        let part = self.user_partition(user)?;
        let tx = self.db.begin_write().db()?;
        tx.open_table(QUOTA).db()?.remove(user).db()?;
        tx.open_table(USERS).db()?.remove(user).db()?;
        {
            let mut subs = tx.open_table(SUBSCRIPTIONS).db()?;
            subs.retain(|(u, _), _| u != user).db()?;
        }
        tx.commit().db()?;
        let root = self.user_root(&part, user)?;
        let _ = fs::remove_dir_all(&root);
        Ok(count)
    }

    fn remove_mailboxes(&self, names: &[MailboxName]) -> Result<(), StoreError> {
        let mut dirs = Vec::new();
        let tx = self.db.begin_write().db()?;
        {
            let mut boxes = tx.open_table(MAILBOXES).db()?;
            let mut ids = tx.open_table(MAILBOX_IDS).db()?;
            let mut msgs = tx.open_table(MESSAGES).db()?;
            let mut quota = tx.open_table(QUOTA).db()?;
            let users = tx.open_table(USERS).db()?;
            for n in names {
                let key = n.to_string();
                let rec: MailboxRecord = match boxes.remove(key.as_str()).db()? {
                    Some(v) => postcard::from_bytes(v.value()).db()?,
                    None => return Err(StoreError::NoMailbox(key)),
                };
                ids.remove(rec.id).db()?;
                tx.open_table(ACLS).db()?.remove(rec.id).db()?;
                tx.open_table(SPECIAL_USE).db()?.remove(rec.id).db()?;
                tx.open_table(PERUSER)
                    .db()?
                    .retain_in(
                        (rec.id, "", 0)..=(rec.id, "\u{10FFFF}", u32::MAX),
                        |_, _| false,
                    )
                    .db()?;
                msgs.retain_in((rec.id, 0)..=(rec.id, u32::MAX), |_, _| false)
                    .db()?;
                tx.open_table(STRUCTURES)
                    .db()?
                    .retain_in((rec.id, 0)..=(rec.id, u32::MAX), |_, _| false)
                    .db()?;
                let (bytes, count) = quota
                    .get(n.owner())
                    .db()?
                    .map(|v| v.value())
                    .unwrap_or((0, 0));
                quota
                    .insert(
                        n.owner(),
                        (
                            bytes.saturating_sub(rec.size),
                            count.saturating_sub(u64::from(rec.messages)),
                        ),
                    )
                    .db()?;
                let part = users
                    .get(n.owner())
                    .db()?
                    .map(|v| v.value().to_string())
                    .unwrap_or_else(|| self.default_partition.clone());
                dirs.push(self.mailbox_dir(&part, n.owner(), rec.id)?);
            }
        }
        tx.commit().db()?;
        for d in dirs {
            let _ = fs::remove_dir_all(&d);
        }
        Ok(())
    }

    /// Renames a mailbox and the mailboxes below it. Renaming INBOX moves
    /// its messages into the new mailbox and leaves INBOX empty (RFC 3501).
    pub fn rename_mailbox(&self, old: &str, new: &str) -> Result<(), StoreError> {
        let (o, n) = (MailboxName::parse(old)?, MailboxName::parse(new)?);
        if o.owner() != n.owner() {
            return Err(StoreError::Refused(
                "a mailbox moves to another account with mboxutil, not rename".into(),
            ));
        }
        if n.is_below(&o) || n == o {
            return Err(StoreError::Invalid(format!(
                "cannot rename {o} to itself or below itself"
            )));
        }
        if o.is_inbox() {
            self.create_mailbox(&n.to_string(), None)?;
            let uids: Vec<u32> = self
                .messages(&o.to_string())
                .db()?
                .iter()
                .map(|m| m.uid)
                .collect();
            self.copy(&o.to_string(), &uids, &n.to_string(), &Quota::UNLIMITED)?;
            self.expunge_uids(&o.to_string(), &uids, false)?;
            return Ok(());
        }
        let tx = self.db.begin_write().db()?;
        {
            let mut boxes = tx.open_table(MAILBOXES).db()?;
            let mut ids = tx.open_table(MAILBOX_IDS).db()?;
            if boxes.get(n.to_string().as_str()).db()?.is_some() {
                return Err(StoreError::Exists(n.to_string()));
            }
            let prefix = format!("{o}/");
            let mut moves: Vec<(String, String, Vec<u8>)> = Vec::new();
            for item in boxes.range(o.to_string().as_str()..).db()? {
                let (k, v) = item.db()?;
                let k = k.value().to_string();
                if k == o.to_string() {
                    moves.push((k, n.to_string(), v.value().to_vec()));
                } else if let Some(rest) = k.strip_prefix(&prefix) {
                    moves.push((k.clone(), format!("{n}/{rest}"), v.value().to_vec()));
                } else if !k.starts_with(&o.to_string()) {
                    break;
                }
            }
            if moves.is_empty() {
                return Err(StoreError::NoMailbox(o.to_string()));
            }
            for (from, to, v) in &moves {
                MailboxName::parse(to)?;
                if boxes.get(to.as_str()).db()?.is_some() {
                    return Err(StoreError::Exists(to.clone()));
                }
                boxes.remove(from.as_str()).db()?;
                boxes.insert(to.as_str(), v.as_slice()).db()?;
                let rec: MailboxRecord = postcard::from_bytes(v).db()?;
                ids.insert(rec.id, to.as_str()).db()?;
                let part = self.user_partition(o.owner())?;
                write_meta(
                    &self.mailbox_dir(&part, o.owner(), rec.id)?,
                    to,
                    rec.uidvalidity,
                )?;
            }
        }
        tx.commit().db()?;
        Ok(())
    }

    pub fn subscribe(&self, user: &str, name: &str, on: bool) -> Result<(), StoreError> {
        let n = MailboxName::parse(name)?.to_string();
        let tx = self.db.begin_write().db()?;
        {
            let mut t = tx.open_table(SUBSCRIPTIONS).db()?;
            if on {
                t.insert((user, n.as_str()), ()).db()?;
            } else {
                t.remove((user, n.as_str())).db()?;
            }
        }
        tx.commit().db()?;
        Ok(())
    }

    pub fn subscriptions(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(SUBSCRIPTIONS).db()?;
        let mut out = Vec::new();
        for item in t.range((user, "")..).db()? {
            let (k, _) = item.db()?;
            let (u, name) = k.value();
            if u != user {
                break;
            }
            out.push(name.to_string());
        }
        Ok(out)
    }

    /// Adds a message whose file the client staged under
    /// [`Store::stage_dir`]. Returns the new UID and the mailbox after.
    pub fn append(
        &self,
        name: &str,
        staged: &str,
        flags: &[String],
        internal_date: i64,
        quota: &Quota,
    ) -> Result<(MessageInfo, MailboxInfo, Option<QuotaWarning>), StoreError> {
        self.append_as(name, staged, flags, internal_date, quota, None)
    }

    /// Notes when an account was first refused for quota (kept until an
    /// addition fits again).
    fn note_over_quota(&self, user: &str) {
        let note = || -> Result<(), StoreError> {
            let tx = self.db.begin_write().db()?;
            {
                let mut t = tx.open_table(QUOTA_OVER).db()?;
                if t.get(user).db()?.is_none() {
                    t.insert(user, chrono::Utc::now().timestamp()).db()?;
                }
            }
            tx.commit().db()
        };
        let _ = note();
    }

    /// When the account was first refused for quota, if it is still over.
    pub fn over_quota_since(&self, user: &str) -> Result<Option<i64>, StoreError> {
        let tx = self.db.begin_read().db()?;
        Ok(tx
            .open_table(QUOTA_OVER)
            .db()?
            .get(user)
            .db()?
            .map(|v| v.value()))
    }

    /// [`Store::append`] with a chosen UID (imsrestore keeps UIDs): it must
    /// not be below the mailbox's UIDNEXT.
    pub fn append_as(
        &self,
        name: &str,
        staged: &str,
        flags: &[String],
        internal_date: i64,
        quota: &Quota,
        want_uid: Option<u32>,
    ) -> Result<(MessageInfo, MailboxInfo, Option<QuotaWarning>), StoreError> {
        let args = AppendArgs {
            name: name.to_string(),
            staged: staged.to_string(),
            flags: flags.to_vec(),
            internal_date,
            quota: *quota,
            want_uid,
        };
        self.appends.run(
            args,
            |batch| self.append_many(batch),
            || Err(StoreError::Io("the append failed unexpectedly".into())),
        )
    }

    /// Appends that arrived together, as one batch (see
    /// [`Store::append_batch`]); one result per append, in order. For a
    /// caller that gathers its own batches, as stored's appending thread
    /// does; [`Store::append_as`] gathers concurrent callers itself.
    pub fn append_many(&self, batch: Vec<AppendArgs>) -> Vec<AppendResult> {
        let owners: Vec<Option<String>> = batch
            .iter()
            .map(|a| {
                MailboxName::parse(&a.name)
                    .ok()
                    .map(|n| n.owner().to_string())
            })
            .collect();
        let results = self.append_batch(batch);
        for (r, owner) in results.iter().zip(owners) {
            if let (Err(StoreError::OverQuota(_)), Some(owner)) = (r, owner) {
                self.note_over_quota(&owner);
            }
        }
        results
    }

    /// Appends a batch: alone, as [`Store::append_inner`] does; together,
    /// with one `syncfs` for every staged file, one transaction for every
    /// index change and one more `syncfs` for every rename before it
    /// commits — the same order of durability, a flush per batch instead
    /// of three per message.
    fn append_batch(&self, batch: Vec<AppendArgs>) -> Vec<AppendResult> {
        if batch.len() == 1 {
            return batch
                .into_iter()
                .map(|a| {
                    self.append_inner(
                        &a.name,
                        &a.staged,
                        &a.flags,
                        a.internal_date,
                        &a.quota,
                        a.want_uid,
                    )
                })
                .collect();
        }
        let mut results: Vec<Option<AppendResult>> = batch.iter().map(|_| None).collect();
        let mut ready: Vec<(usize, Prepared)> = Vec::new();
        for (i, a) in batch.into_iter().enumerate() {
            match self.prepare_append(a) {
                Ok(p) => ready.push((i, p)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !ready.is_empty() {
            match self.commit_appends(&ready) {
                Ok(done) => {
                    for ((i, _), r) in ready.iter().zip(done) {
                        results[*i] = Some(r);
                    }
                }
                Err(e) => {
                    for (i, _) in &ready {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Io("append not done".into()))))
            .collect()
    }

    /// What can be done for one append outside the transaction: checks,
    /// the parse, the internal date on the file.
    fn prepare_append(&self, a: AppendArgs) -> Result<Prepared, StoreError> {
        let n = MailboxName::parse(&a.name)?;
        if a.staged.is_empty() || a.staged.contains('/') || a.staged.starts_with('.') {
            return Err(StoreError::Invalid(format!(
                "{:?} is not a staged file name",
                a.staged
            )));
        }
        let flags = normalize_flags(&a.flags)?;
        let part = self.user_partition(n.owner())?;
        let src = self
            .stage_dir(&part)
            .ok_or_else(|| StoreError::Invalid(format!("unknown partition {part}")))?
            .join(&a.staged);
        let raw = fs::read(&src).map_err(|e| io("cannot read the staged message", &src, e))?;
        let structure = postcard::to_allocvec(&crate::structure::parse(&raw)).db()?;
        fs::OpenOptions::new()
            .write(true)
            .open(&src)
            .and_then(|f| {
                f.set_modified(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(a.internal_date.max(0) as u64),
                )
            })
            .map_err(|e| io("cannot date", &src, e))?;
        Ok(Prepared {
            key: n.to_string(),
            n,
            part,
            src,
            size: raw.len() as u64,
            structure,
            flags,
            internal_date: a.internal_date,
            quota: a.quota,
            want_uid: a.want_uid,
        })
    }

    /// The batch's transaction. A refusal (no mailbox, over quota, a bad
    /// UID) fails its own append before it changes anything; an I/O or
    /// database error fails the batch and puts every moved file back.
    fn commit_appends(&self, ready: &[(usize, Prepared)]) -> Result<Vec<AppendResult>, StoreError> {
        let mut anchors: Vec<PathBuf> = Vec::new();
        for (_, p) in ready {
            let dir = p.src.parent().map(Path::to_path_buf).unwrap_or_default();
            if !anchors.contains(&dir) {
                anchors.push(dir);
            }
        }
        let sync_all = |dirs: &[PathBuf]| -> Result<(), StoreError> {
            for d in dirs {
                let f = File::open(d).map_err(|e| io("cannot open", d, e))?;
                nix::unistd::syncfs(&f)
                    .map_err(|e| io("cannot sync the file system of", d, e.into()))?;
            }
            Ok(())
        };
        // Every staged file on disk before any takes its place.
        sync_all(&anchors)?;
        let tx = self.db.begin_write().db()?;
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let undo = |moved: &[(PathBuf, PathBuf)]| {
            for (src, dest) in moved {
                let _ = fs::rename(dest, src);
            }
        };
        let mut out: Vec<AppendResult> = Vec::new();
        let body = (|| -> Result<(), StoreError> {
            for (_, p) in ready {
                let mut boxes = tx.open_table(MAILBOXES).db()?;
                let mut rec: MailboxRecord = match boxes.get(p.key.as_str()).db()? {
                    Some(v) => postcard::from_bytes(v.value()).db()?,
                    None => {
                        out.push(Err(StoreError::NoMailbox(p.key.clone())));
                        continue;
                    }
                };
                let uid = match p.want_uid {
                    None => rec.uidnext,
                    Some(u) if u >= rec.uidnext && u < u32::MAX => u,
                    Some(u) => {
                        out.push(Err(StoreError::Invalid(format!(
                            "UID {u} is below UIDNEXT {} of {}",
                            rec.uidnext, p.key
                        ))));
                        continue;
                    }
                };
                let warning = match charge(&tx, p.n.owner(), &p.quota, (p.size, 1)) {
                    Ok(w) => w,
                    Err(e @ StoreError::OverQuota(_)) => {
                        out.push(Err(e));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let dir = self.mailbox_dir(&p.part, p.n.owner(), rec.id)?;
                let dest = message_file(&dir, uid);
                fs::rename(&p.src, &dest)
                    .map_err(|e| io("cannot move the message into", &dir, e))?;
                moved.push((p.src.clone(), dest));
                if !anchors.contains(&dir) {
                    anchors.push(dir);
                }
                let m = index_message(
                    &tx,
                    &mut rec,
                    uid,
                    p.flags.clone(),
                    p.internal_date,
                    p.size,
                    &p.structure,
                )?;
                boxes
                    .insert(p.key.as_str(), postcard::to_allocvec(&rec).db()?.as_slice())
                    .db()?;
                out.push(Ok((
                    MessageInfo { uid, record: m },
                    MailboxInfo {
                        name: p.key.clone(),
                        record: rec,
                    },
                    warning,
                )));
            }
            // Every rename on disk before the index that points at it.
            sync_all(&anchors)
        })();
        if let Err(e) = body {
            undo(&moved);
            return Err(e);
        }
        if let Err(e) = tx.commit() {
            undo(&moved);
            return Err(e.into_store());
        }
        Ok(out)
    }

    fn append_inner(
        &self,
        name: &str,
        staged: &str,
        flags: &[String],
        internal_date: i64,
        quota: &Quota,
        want_uid: Option<u32>,
    ) -> Result<(MessageInfo, MailboxInfo, Option<QuotaWarning>), StoreError> {
        let n = MailboxName::parse(name)?;
        if staged.is_empty() || staged.contains('/') || staged.starts_with('.') {
            return Err(StoreError::Invalid(format!(
                "{staged:?} is not a staged file name"
            )));
        }
        let flags = normalize_flags(flags)?;
        let key = n.to_string();
        let part = self.user_partition(n.owner())?;
        let src = self
            .stage_dir(&part)
            .ok_or_else(|| StoreError::Invalid(format!("unknown partition {part}")))?
            .join(staged);
        // Parsed once, here, so that FETCH never parses the message again.
        // The file's modification time keeps the internal date, so
        // reconstruct can restore it from the file alone; it is synced
        // before the transaction, which holds the store's one writer.
        let (size, structure) = (|| -> std::io::Result<(u64, Vec<u8>)> {
            use std::io::Read;
            let mut f = fs::OpenOptions::new().read(true).write(true).open(&src)?;
            let mut raw = Vec::new();
            f.read_to_end(&mut raw)?;
            let when =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(internal_date.max(0) as u64);
            f.set_modified(when)?;
            f.sync_all()?;
            let structure = postcard::to_allocvec(&crate::structure::parse(&raw))
                .map_err(std::io::Error::other)?;
            Ok((raw.len() as u64, structure))
        })()
        .map_err(|e| io("cannot read and sync the staged message", &src, e))?;
        let tx = self.db.begin_write().db()?;
        let (msg, info, dest, warning) = {
            let mut boxes = tx.open_table(MAILBOXES).db()?;
            let mut rec: MailboxRecord = match boxes.get(key.as_str()).db()? {
                Some(v) => postcard::from_bytes(v.value()).db()?,
                None => return Err(StoreError::NoMailbox(key)),
            };
            // Checked before the file moves: a refused message stays staged.
            let warning = charge(&tx, n.owner(), quota, (size, 1))?;
            let uid = match want_uid {
                None => rec.uidnext,
                Some(u) if u >= rec.uidnext && u < u32::MAX => u,
                Some(u) => {
                    return Err(StoreError::Invalid(format!(
                        "UID {u} is below UIDNEXT {} of {key}",
                        rec.uidnext
                    )));
                }
            };
            let dir = self.mailbox_dir(&part, n.owner(), rec.id)?;
            let dest = message_file(&dir, uid);
            // The rename and the directory fsync make the synced file
            // durable in its place before commit.
            fs::rename(&src, &dest).map_err(|e| io("cannot move the message into", &dir, e))?;
            sync_dir(&dir)?;
            let m = index_message(&tx, &mut rec, uid, flags, internal_date, size, &structure)?;
            boxes
                .insert(key.as_str(), postcard::to_allocvec(&rec).db()?.as_slice())
                .db()?;
            (
                MessageInfo { uid, record: m },
                MailboxInfo {
                    name: key,
                    record: rec,
                },
                dest,
                warning,
            )
        };
        if let Err(e) = tx.commit() {
            let _ = fs::remove_file(&dest);
            return Err(e.into_store());
        }
        Ok((msg, info, warning))
    }

    /// The message index of a mailbox, in UID order.
    pub fn messages(&self, name: &str) -> Result<Vec<MessageInfo>, StoreError> {
        self.messages_after(name, 0, usize::MAX)
    }

    /// New messages as their mailbox's watchers learn of them: the index
    /// entries of `uids` (ascending, from one commit) and the highest UID
    /// below the first of them — a watcher whose view ends there can add
    /// them as they are, any other reads the index.
    pub fn arrivals(
        &self,
        name: &str,
        uids: &[u32],
    ) -> Result<(u32, Vec<MessageInfo>), StoreError> {
        let (Some(&first), Some(&last)) = (uids.first(), uids.last()) else {
            return Ok((0, Vec::new()));
        };
        let info = self
            .mailbox(name)?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        let id = info.record.id;
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(MESSAGES).db()?;
        let after = match t.range((id, 0)..(id, first)).db()?.next_back() {
            Some(item) => item.db()?.0.value().1,
            None => 0,
        };
        let mut out = Vec::with_capacity(uids.len());
        for item in t.range((id, first)..=(id, last)).db()? {
            let (k, v) = item.db()?;
            let uid = k.value().1;
            if uids.binary_search(&uid).is_ok() {
                out.push(MessageInfo {
                    uid,
                    record: postcard::from_bytes(v.value()).db()?,
                });
            }
        }
        Ok((after, out))
    }

    /// At most `limit` index entries with UIDs above `after`.
    pub fn messages_after(
        &self,
        name: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<MessageInfo>, StoreError> {
        let info = self
            .mailbox(name)
            .db()?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(MESSAGES).db()?;
        let id = info.record.id;
        let mut out = Vec::new();
        if after == u32::MAX {
            return Ok(out);
        }
        for item in t.range((id, after + 1)..=(id, u32::MAX)).db()?.take(limit) {
            let (k, v) = item.db()?;
            out.push(MessageInfo {
                uid: k.value().1,
                record: postcard::from_bytes(v.value()).db()?,
            });
        }
        Ok(out)
    }

    /// Changes flags of the given UIDs (absent ones are skipped). With
    /// `unchanged_since` (CONDSTORE), messages modified after it are left
    /// alone and reported. Returns the messages changed, the UIDs refused,
    /// and the mailbox after.
    pub fn store_flags(
        &self,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageInfo>, Vec<u32>, MailboxInfo), StoreError> {
        let key = MailboxName::parse(name)?.to_string();
        let flags = normalize_flags(flags)?;
        let tx = self.db.begin_write().db()?;
        let result = {
            let mut boxes = tx.open_table(MAILBOXES).db()?;
            let mut rec: MailboxRecord = match boxes.get(key.as_str()).db()? {
                Some(v) => postcard::from_bytes(v.value()).db()?,
                None => return Err(StoreError::NoMailbox(key)),
            };
            let mut msgs = tx.open_table(MESSAGES).db()?;
            let (mut changed, mut refused) = (Vec::new(), Vec::new());
            for &uid in uids {
                let Some(v) = msgs.get((rec.id, uid)).db()? else {
                    continue;
                };
                let mut m: MessageRecord = postcard::from_bytes(v.value()).db()?;
                drop(v);
                if unchanged_since.is_some_and(|u| m.modseq > u) {
                    refused.push(uid);
                    continue;
                }
                let was_seen = has(&m.flags, SEEN);
                let new: Vec<String> = match op {
                    FlagOp::Replace => flags.clone(),
                    FlagOp::Add => normalize_flags(&[m.flags.clone(), flags.clone()].concat())?,
                    FlagOp::Remove => m
                        .flags
                        .iter()
                        .filter(|f| !flags.contains(f))
                        .cloned()
                        .collect(),
                };
                if new == m.flags {
                    continue;
                }
                rec.highest_modseq += 1;
                m.flags = new;
                m.modseq = rec.highest_modseq;
                match (was_seen, has(&m.flags, SEEN)) {
                    (true, false) => rec.unseen += 1,
                    (false, true) => rec.unseen = rec.unseen.saturating_sub(1),
                    _ => {}
                }
                msgs.insert((rec.id, uid), postcard::to_allocvec(&m).db()?.as_slice())
                    .db()?;
                changed.push(MessageInfo { uid, record: m });
            }
            boxes
                .insert(key.as_str(), postcard::to_allocvec(&rec).db()?.as_slice())
                .db()?;
            (
                changed,
                refused,
                MailboxInfo {
                    name: key,
                    record: rec,
                },
            )
        };
        self.commit_change(tx, Vec::new())?;
        Ok(result)
    }

    /// Copies messages (flags and internal dates kept) into `to`; returns
    /// (source UID, new UID) pairs. Files are hard-linked when both
    /// mailboxes share a partition: message files never change.
    pub fn copy(
        &self,
        from: &str,
        uids: &[u32],
        to: &str,
        quota: &Quota,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let (f, t) = (MailboxName::parse(from)?, MailboxName::parse(to)?);
        let src_info = self
            .mailbox(from)
            .db()?
            .ok_or_else(|| StoreError::NoMailbox(from.to_string()))?;
        let (src_part, dst_part) = (
            self.user_partition(f.owner())?,
            self.user_partition(t.owner())?,
        );
        let src_dir = self.mailbox_dir(&src_part, f.owner(), src_info.record.id)?;
        let tkey = t.to_string();
        let tx = self.db.begin_write().db()?;
        let mut made = Vec::new();
        let pairs = {
            let mut boxes = tx.open_table(MAILBOXES).db()?;
            let mut rec: MailboxRecord = match boxes.get(tkey.as_str()).db()? {
                Some(v) => postcard::from_bytes(v.value()).db()?,
                None => return Err(StoreError::NoMailbox(tkey)),
            };
            let dst_dir = self.mailbox_dir(&dst_part, t.owner(), rec.id)?;
            let mut msgs = tx.open_table(MESSAGES).db()?;
            let mut pairs = Vec::new();
            // Charge the whole copy to the target's owner before any file
            // is linked: a refused copy leaves nothing behind.
            let mut total = (0u64, 0u64);
            for &uid in uids {
                if let Some(v) = msgs.get((src_info.record.id, uid)).db()? {
                    let m: MessageRecord = postcard::from_bytes(v.value()).db()?;
                    total = (total.0 + m.size, total.1 + 1);
                }
            }
            charge(&tx, t.owner(), quota, total)?;
            for &uid in uids {
                let Some(v) = msgs.get((src_info.record.id, uid)).db()? else {
                    continue;
                };
                let m: MessageRecord = postcard::from_bytes(v.value()).db()?;
                drop(v);
                let new_uid = rec.uidnext;
                let (a, b) = (message_file(&src_dir, uid), message_file(&dst_dir, new_uid));
                let _ = fs::remove_file(&b); // an orphan of a crashed append
                if fs::hard_link(&a, &b).is_err() {
                    fs::copy(&a, &b).map_err(|e| io("cannot copy", &a, e))?;
                    File::open(&b)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| io("cannot sync", &b, e))?;
                }
                made.push(b);
                rec.uidnext += 1;
                rec.highest_modseq += 1;
                rec.messages += 1;
                rec.size += m.size;
                if !has(&m.flags, SEEN) {
                    rec.unseen += 1;
                }
                let copy = MessageRecord {
                    modseq: rec.highest_modseq,
                    ..m
                };
                msgs.insert(
                    (rec.id, new_uid),
                    postcard::to_allocvec(&copy).db()?.as_slice(),
                )
                .db()?;
                let mut structures = tx.open_table(STRUCTURES).db()?;
                let parsed = structures
                    .get((src_info.record.id, uid))
                    .db()?
                    .map(|v| v.value().to_vec());
                if let Some(bytes) = parsed {
                    structures
                        .insert((rec.id, new_uid), bytes.as_slice())
                        .db()?;
                }
                pairs.push((uid, new_uid));
            }
            sync_dir(&dst_dir)?;
            boxes
                .insert(tkey.as_str(), postcard::to_allocvec(&rec).db()?.as_slice())
                .db()?;
            pairs
        };
        if let Err(e) = tx.commit() {
            for p in made {
                let _ = fs::remove_file(p);
            }
            return Err(e.into_store());
        }
        Ok(pairs)
    }

    /// EXPUNGE: removes every `\Deleted` message (only those among `uids`
    /// when given: UID EXPUNGE). Returns the UIDs removed.
    pub fn expunge(&self, name: &str, uids: Option<&[u32]>) -> Result<Vec<u32>, StoreError> {
        let all: Vec<u32> = match uids {
            Some(u) => u.to_vec(),
            None => self.messages(name)?.iter().map(|m| m.uid).collect(),
        };
        self.expunge_uids(name, &all, true)
    }

    /// Removes the given messages (`require_deleted`: only those flagged
    /// `\Deleted`); files go after the commit.
    pub fn expunge_uids(
        &self,
        name: &str,
        uids: &[u32],
        require_deleted: bool,
    ) -> Result<Vec<u32>, StoreError> {
        let n = MailboxName::parse(name)?;
        let key = n.to_string();
        let part = self.user_partition(n.owner())?;
        let tx = self.db.begin_write().db()?;
        let (gone, dir) = {
            let mut boxes = tx.open_table(MAILBOXES).db()?;
            let mut rec: MailboxRecord = match boxes.get(key.as_str()).db()? {
                Some(v) => postcard::from_bytes(v.value()).db()?,
                None => return Err(StoreError::NoMailbox(key)),
            };
            let mut msgs = tx.open_table(MESSAGES).db()?;
            let mut gone = Vec::new();
            let mut freed = (0u64, 0u64);
            for &uid in uids {
                let Some(v) = msgs.get((rec.id, uid)).db()? else {
                    continue;
                };
                let m: MessageRecord = postcard::from_bytes(v.value()).db()?;
                drop(v);
                if require_deleted && !has(&m.flags, DELETED) {
                    continue;
                }
                msgs.remove((rec.id, uid)).db()?;
                tx.open_table(STRUCTURES).db()?.remove((rec.id, uid)).db()?;
                rec.messages = rec.messages.saturating_sub(1);
                rec.size = rec.size.saturating_sub(m.size);
                if !has(&m.flags, SEEN) {
                    rec.unseen = rec.unseen.saturating_sub(1);
                }
                freed = (freed.0 + m.size, freed.1 + 1);
                gone.push(uid);
            }
            if !gone.is_empty() {
                let set: std::collections::HashSet<u32> = gone.iter().copied().collect();
                tx.open_table(PERUSER)
                    .db()?
                    .retain_in(
                        (rec.id, "", 0)..=(rec.id, "\u{10FFFF}", u32::MAX),
                        |(_, _, u), _| !set.contains(&u),
                    )
                    .db()?;
                rec.highest_modseq += 1;
                boxes
                    .insert(key.as_str(), postcard::to_allocvec(&rec).db()?.as_slice())
                    .db()?;
                let mut quota = tx.open_table(QUOTA).db()?;
                let (b, c) = quota
                    .get(n.owner())
                    .db()?
                    .map(|v| v.value())
                    .unwrap_or((0, 0));
                quota
                    .insert(
                        n.owner(),
                        (b.saturating_sub(freed.0), c.saturating_sub(freed.1)),
                    )
                    .db()?;
            }
            (gone, self.mailbox_dir(&part, n.owner(), rec.id)?)
        };
        let files = gone.iter().map(|uid| message_file(&dir, *uid)).collect();
        self.commit_change(tx, files)?;
        Ok(gone)
    }

    /// Moves every mailbox of `user` to another partition (`mboxutil -r
    /// user/U/INBOX user/U/INBOX PART`). Other writes wait while the files
    /// are copied; the old copies are removed once the move has committed.
    pub fn move_user(&self, user: &str, partition: &str) -> Result<(), StoreError> {
        self.sync_pending()?;
        crate::names::validate_userid(user).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let to_root = self.user_root(partition, user)?;
        let from_part = self.user_partition(user)?;
        if from_part == partition {
            return Err(StoreError::Invalid(format!(
                "{user} is on partition {partition} already"
            )));
        }
        let from_root = self.user_root(&from_part, user)?;
        let tx = self.db.begin_write().db()?;
        if to_root.exists() {
            let _ = fs::remove_dir_all(&to_root); // leftovers of an interrupted move
        }
        copy_tree(&from_root, &to_root)?;
        tx.open_table(USERS).db()?.insert(user, partition).db()?;
        tx.commit().db()?;
        let _ = fs::remove_dir_all(&from_root);
        Ok(())
    }

    /// Rebuilds the mailbox list and the message index from the message
    /// files on the partitions (`reconstruct -m`): a mailbox directory the
    /// list lacks is added back from its `mailbox.meta`, a message file the
    /// index lacks is added (internal date from the file, no flags), an
    /// index entry whose file is gone is dropped, and counts and quota
    /// usage are recomputed. With `dry_run` nothing is written. Returns one
    /// line per change.
    pub fn reconstruct(&self, dry_run: bool) -> Result<Vec<String>, StoreError> {
        // Files of expunges not yet durable would look like messages the
        // index lacks.
        self.sync_pending()?;
        let mut report = Vec::new();
        let mut found: Vec<(String, PathBuf, MailboxMeta, u64)> = Vec::new();
        for (part, root) in &self.partitions {
            for dir in mailbox_dirs(&root.join("=user")) {
                let Some(id) = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                match read_meta(&dir) {
                    Some(meta) if MailboxName::parse(&meta.name).is_ok() => {
                        found.push((part.clone(), dir, meta, id))
                    }
                    _ => report.push(format!(
                        "{}: no readable {META_FILE}; left alone",
                        dir.display()
                    )),
                }
            }
        }
        for (part, dir, meta, id) in found {
            let n = MailboxName::parse(&meta.name)?;
            let key = n.to_string();
            let mut files: BTreeMap<u32, (u64, i64)> = BTreeMap::new();
            for e in fs::read_dir(&dir)
                .map_err(|e| io("cannot read", &dir, e))?
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(uid) = name
                    .strip_suffix(".msg")
                    .and_then(|u| u.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(m) = e.metadata() else { continue };
                let date = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                files.insert(uid, (m.len(), date));
            }
            let tx = self.db.begin_write().db()?;
            {
                let mut boxes = tx.open_table(MAILBOXES).db()?;
                let mut msgs = tx.open_table(MESSAGES).db()?;
                let existing: Option<MailboxRecord> = match boxes.get(key.as_str()).db()? {
                    Some(v) => Some(postcard::from_bytes(v.value()).db()?),
                    None => None,
                };
                let mut rec = match existing {
                    Some(r) if r.id != id => {
                        report.push(format!(
                            "{key}: the list names directory {} but {} holds it too; left alone",
                            r.id,
                            dir.display()
                        ));
                        continue;
                    }
                    Some(r) => r,
                    None => {
                        report.push(format!("{key}: added back to the mailbox list"));
                        tx.open_table(MAILBOX_IDS)
                            .db()?
                            .insert(id, key.as_str())
                            .db()?;
                        let mut users = tx.open_table(USERS).db()?;
                        if users.get(n.owner()).db()?.is_none() {
                            users.insert(n.owner(), part.as_str()).db()?;
                        }
                        let mut m = tx.open_table(META).db()?;
                        let next = m
                            .get("next_mailbox_id")
                            .db()?
                            .map(|v| v.value())
                            .unwrap_or(1);
                        m.insert("next_mailbox_id", next.max(id + 1)).db()?;
                        MailboxRecord {
                            id,
                            uidvalidity: meta.uidvalidity,
                            uidnext: 1,
                            highest_modseq: 1,
                            messages: 0,
                            unseen: 0,
                            size: 0,
                        }
                    }
                };
                let mut indexed: BTreeMap<u32, MessageRecord> = BTreeMap::new();
                for item in msgs.range((id, 0)..=(id, u32::MAX)).db()? {
                    let (k, v) = item.db()?;
                    indexed.insert(k.value().1, postcard::from_bytes(v.value()).db()?);
                }
                for (uid, (size, date)) in &files {
                    if !indexed.contains_key(uid) {
                        report.push(format!("{key}: message {uid} added from its file"));
                        rec.highest_modseq += 1;
                        let m = MessageRecord {
                            flags: Vec::new(),
                            internal_date: *date,
                            size: *size,
                            modseq: rec.highest_modseq,
                        };
                        msgs.insert((id, *uid), postcard::to_allocvec(&m).db()?.as_slice())
                            .db()?;
                        if let Ok(raw) = fs::read(message_file(&dir, *uid)) {
                            let parsed =
                                postcard::to_allocvec(&crate::structure::parse(&raw)).db()?;
                            tx.open_table(STRUCTURES)
                                .db()?
                                .insert((id, *uid), parsed.as_slice())
                                .db()?;
                        }
                        indexed.insert(*uid, m);
                    }
                }
                let lost: Vec<u32> = indexed
                    .keys()
                    .filter(|u| !files.contains_key(u))
                    .copied()
                    .collect();
                for uid in lost {
                    report.push(format!(
                        "{key}: message {uid} has no file; dropped from the index"
                    ));
                    msgs.remove((id, uid)).db()?;
                    tx.open_table(STRUCTURES).db()?.remove((id, uid)).db()?;
                    indexed.remove(&uid);
                    rec.highest_modseq += 1;
                }
                let counts = (
                    indexed.len() as u32,
                    indexed.values().filter(|m| !has(&m.flags, SEEN)).count() as u32,
                    indexed.values().map(|m| m.size).sum::<u64>(),
                );
                if (rec.messages, rec.unseen, rec.size) != counts {
                    report.push(format!("{key}: counts corrected"));
                    (rec.messages, rec.unseen, rec.size) = counts;
                }
                rec.uidnext = rec
                    .uidnext
                    .max(indexed.keys().next_back().map_or(1, |u| u + 1));
                boxes
                    .insert(key.as_str(), postcard::to_allocvec(&rec).db()?.as_slice())
                    .db()?;
            }
            if dry_run {
                tx.abort().db()?;
            } else {
                tx.commit().db()?;
            }
        }
        if !dry_run {
            report.extend(self.recount_quotas()?);
        }
        Ok(report)
    }

    /// Applies aging rules to every mailbox they match; returns one report
    /// line per mailbox changed and the UIDs removed from each.
    pub fn expire(
        &self,
        rules: &[crate::expire::ExpireRule],
        now: i64,
        dry_run: bool,
    ) -> Result<Expired, StoreError> {
        let mut report = Vec::new();
        let mut removed = Vec::new();
        for m in self.list("")? {
            if !rules
                .iter()
                .any(|r| crate::expire::matches(&r.folder_pattern, &m.name))
            {
                continue;
            }
            let uids = crate::expire::select(rules, &m.name, &self.messages(&m.name)?, now);
            if uids.is_empty() {
                continue;
            }
            let gone = if dry_run {
                uids
            } else {
                self.expunge_uids(&m.name, &uids, false)?
            };
            report.push(format!(
                "{}: {} message(s) {}",
                m.name,
                gone.len(),
                if dry_run { "would expire" } else { "expired" }
            ));
            removed.push((m.name, gone));
        }
        Ok((report, removed))
    }

    /// Recomputes every user's quota usage from the mailbox records
    /// (`reconstruct -q`).
    pub fn recount_quotas(&self) -> Result<Vec<String>, StoreError> {
        let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for m in self.list("")? {
            if let Ok(n) = MailboxName::parse(&m.name) {
                let t = totals.entry(n.owner().to_string()).or_default();
                *t = (t.0 + m.record.size, t.1 + u64::from(m.record.messages));
            }
        }
        let mut report = Vec::new();
        let tx = self.db.begin_write().db()?;
        {
            let mut q = tx.open_table(QUOTA).db()?;
            let mut stale = Vec::new();
            for item in q.iter().db()? {
                let (k, v) = item.db()?;
                if !totals.contains_key(k.value()) {
                    stale.push((k.value().to_string(), v.value()));
                }
            }
            for (user, _) in stale {
                q.remove(user.as_str()).db()?;
            }
            for (user, t) in &totals {
                let had = q.get(user.as_str()).db()?.map(|v| v.value());
                if had != Some(*t) {
                    report.push(format!("quota of {user}: {} bytes, {} messages", t.0, t.1));
                    q.insert(user.as_str(), *t).db()?;
                }
            }
        }
        tx.commit().db()?;
        Ok(report)
    }

    /// The index as `reader` sees it: in a mailbox they do not own,
    /// `\Seen` is their own (peruser.db), not the owner's.
    pub fn messages_for(
        &self,
        name: &str,
        after: u32,
        limit: usize,
        reader: &str,
    ) -> Result<Vec<MessageInfo>, StoreError> {
        let mut msgs = self.messages_after(name, after, limit)?;
        if let Some(seen) = self.seen_by(name, reader)? {
            for m in &mut msgs {
                m.record.flags.retain(|f| f != SEEN);
                if seen.contains(&m.uid) {
                    m.record.flags.push(SEEN.to_string());
                    m.record.flags.sort();
                }
            }
        }
        Ok(msgs)
    }

    /// The mailbox as `reader` sees it (their own unseen count).
    pub fn mailbox_for(&self, name: &str, reader: &str) -> Result<Option<MailboxInfo>, StoreError> {
        let Some(mut info) = self.mailbox(name)? else {
            return Ok(None);
        };
        if let Some(seen) = self.seen_by(name, reader)? {
            info.record.unseen = info.record.messages.saturating_sub(seen.len() as u32);
        }
        Ok(Some(info))
    }

    /// The UIDs `reader` has seen, when the mailbox is someone else's.
    fn seen_by(
        &self,
        name: &str,
        reader: &str,
    ) -> Result<Option<std::collections::BTreeSet<u32>>, StoreError> {
        let n = MailboxName::parse(name)?;
        if n.owner() == reader {
            return Ok(None);
        }
        let info = self
            .mailbox(name)?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        let id = info.record.id;
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(PERUSER).db()?;
        let mut seen = std::collections::BTreeSet::new();
        for item in t.range((id, reader, 0)..=(id, reader, u32::MAX)).db()? {
            seen.insert(item.db()?.0.value().2);
        }
        Ok(Some(seen))
    }

    /// Changes `\Seen` for a reader who does not own the mailbox (their
    /// own state); other flags change for everyone. Returns the messages
    /// as the reader sees them after, the UIDs refused and the mailbox.
    pub fn store_flags_for(
        &self,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: Option<u64>,
        reader: &str,
    ) -> Result<(Vec<MessageInfo>, Vec<u32>, MailboxInfo), StoreError> {
        let n = MailboxName::parse(name)?;
        if n.owner() == reader {
            return self.store_flags(name, uids, op, flags, unchanged_since);
        }
        let flags = normalize_flags(flags)?;
        let wants_seen = has(&flags, SEEN);
        let shared: Vec<String> = flags.iter().filter(|f| *f != SEEN).cloned().collect();
        let (_, refused, info) = if shared.is_empty() && op != FlagOp::Replace {
            (
                Vec::new(),
                Vec::new(),
                self.mailbox(name)?
                    .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?,
            )
        } else {
            self.store_flags(name, uids, op, &shared, unchanged_since)?
        };
        let id = info.record.id;
        let present: std::collections::BTreeSet<u32> =
            self.messages(name)?.iter().map(|m| m.uid).collect();
        let tx = self.db.begin_write().db()?;
        {
            let mut t = tx.open_table(PERUSER).db()?;
            for &uid in uids
                .iter()
                .filter(|u| present.contains(u) && !refused.contains(u))
            {
                let set = match op {
                    FlagOp::Add => wants_seen.then_some(true),
                    FlagOp::Remove => wants_seen.then_some(false),
                    FlagOp::Replace => Some(wants_seen),
                };
                match set {
                    Some(true) => {
                        t.insert((id, reader, uid), ()).db()?;
                    }
                    Some(false) => {
                        t.remove((id, reader, uid)).db()?;
                    }
                    None => {}
                }
            }
        }
        self.commit_change(tx, Vec::new())?;
        let view = self.messages_for(name, 0, usize::MAX, reader)?;
        let changed = view
            .into_iter()
            .filter(|m| uids.contains(&m.uid) && !refused.contains(&m.uid))
            .collect();
        let info = self
            .mailbox_for(name, reader)?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        Ok((changed, refused, info))
    }

    /// The parsed structures of messages (ENVELOPE, BODYSTRUCTURE,
    /// offsets), in the order asked, `None` for a message not in the
    /// mailbox; a message stored before the cache existed is parsed now.
    /// Stops early, after at least one, once the structures read pass
    /// `budget` bytes in their stored form.
    pub fn structures(
        &self,
        name: &str,
        uids: &[u32],
        budget: usize,
    ) -> Result<Vec<Option<epistle_ipc::store::MessageStructure>>, StoreError> {
        let info = self
            .mailbox(name)?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        let id = info.record.id;
        let tx = self.db.begin_read().db()?;
        let messages = tx.open_table(MESSAGES).db()?;
        let cached = tx.open_table(STRUCTURES).db()?;
        let mut out = Vec::with_capacity(uids.len().min(1024));
        let mut used = 0;
        for &uid in uids {
            if used > budget {
                break;
            }
            if messages.get((id, uid)).db()?.is_none() {
                out.push(None);
                continue;
            }
            // A form stored by an older version does not decode: the
            // message is parsed again.
            let decoded = cached.get((id, uid)).db()?.and_then(|v| {
                postcard::from_bytes(v.value())
                    .ok()
                    .map(|s| (v.value().len(), s))
            });
            let structure = match decoded {
                Some((len, s)) => {
                    used += len;
                    s
                }
                None => {
                    let path = self.message_path(name, uid)?;
                    let raw = fs::read(&path).map_err(|e| io("cannot read", &path, e))?;
                    used += raw.len() / 4;
                    crate::structure::parse(&raw)
                }
            };
            out.push(Some(structure));
        }
        Ok(out)
    }

    /// Other accounts' mailboxes `user` may see (the `l` right, given to
    /// them or to anyone), in name order. Only mailboxes with an access
    /// control list are looked at.
    pub fn shared_with(&self, user: &str) -> Result<Vec<MailboxInfo>, StoreError> {
        let tx = self.db.begin_read().db()?;
        let acls = tx.open_table(ACLS).db()?;
        let ids = tx.open_table(MAILBOX_IDS).db()?;
        let mut names = Vec::new();
        for item in acls.iter().db()? {
            let (id, v) = item.db()?;
            let acl: Vec<(String, String)> = postcard::from_bytes(v.value()).db()?;
            let granted: String = acl
                .iter()
                .filter(|(who, _)| who == user || who == "anyone")
                .map(|(_, r)| r.as_str())
                .collect();
            if !crate::acl::normalize(&granted)?.contains('l') {
                continue;
            }
            if let Some(name) = ids.get(id.value()).db()? {
                let name = name.value().to_string();
                if MailboxName::parse(&name).is_ok_and(|n| n.owner() != user) {
                    names.push(name);
                }
            }
        }
        drop((acls, ids, tx));
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(m) = self.mailbox_for(&name, user)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The access control list of a mailbox (RFC 4314): identifier and
    /// rights, the owner's implicit full rights not included.
    pub fn get_acl(&self, name: &str) -> Result<Vec<(String, String)>, StoreError> {
        let info = self
            .mailbox(name)?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(ACLS).db()?;
        match t.get(info.record.id).db()? {
            Some(v) => postcard::from_bytes(v.value()).db(),
            None => Ok(Vec::new()),
        }
    }

    /// Sets a mailbox's special-use attributes; empty removes them.
    pub fn set_special_use(&self, name: &str, attrs: &str) -> Result<(), StoreError> {
        let info = self
            .mailbox(name)?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        if attrs.len() > 200 || attrs.chars().any(|c| c.is_control()) {
            return Err(StoreError::Invalid("bad special-use attributes".into()));
        }
        let tx = self.db.begin_write().db()?;
        {
            let mut t = tx.open_table(SPECIAL_USE).db()?;
            if attrs.is_empty() {
                t.remove(info.record.id).db()?;
            } else {
                t.insert(info.record.id, attrs).db()?;
            }
        }
        tx.commit().db()
    }

    /// The special-use attributes of the mailboxes named `prefix...`.
    pub fn special_uses(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let boxes = self.list(prefix)?;
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(SPECIAL_USE).db()?;
        let mut out = Vec::new();
        for b in boxes {
            if let Some(v) = t.get(b.record.id).db()? {
                out.push((b.name, v.value().to_string()));
            }
        }
        Ok(out)
    }

    /// Sets (or with `None` removes) an identifier's rights on a mailbox.
    /// Rights are RFC 4314 letters; `+`/`-` prefixes add to or take from
    /// what the identifier has.
    pub fn set_acl(
        &self,
        name: &str,
        identifier: &str,
        rights: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let info = self
            .mailbox(name)?
            .ok_or_else(|| StoreError::NoMailbox(name.to_string()))?;
        if identifier.is_empty()
            || identifier.starts_with('-')
            || identifier.len() > 255
            || identifier.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(StoreError::Invalid(format!(
                "{identifier:?} is not an identifier (negative rights are not supported)"
            )));
        }
        let tx = self.db.begin_write().db()?;
        let acl = {
            let mut t = tx.open_table(ACLS).db()?;
            let mut acl: Vec<(String, String)> = match t.get(info.record.id).db()? {
                Some(v) => postcard::from_bytes(v.value()).db()?,
                None => Vec::new(),
            };
            let current = acl
                .iter()
                .find(|(i, _)| i == identifier)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            let new = match rights {
                None => String::new(),
                Some(r) => {
                    let (mode, letters) = match r.chars().next() {
                        Some('+') => ('+', &r[1..]),
                        Some('-') => ('-', &r[1..]),
                        _ => ('=', r),
                    };
                    let letters = crate::acl::normalize(letters)?;
                    match mode {
                        '+' => crate::acl::normalize(&format!("{current}{letters}"))?,
                        '-' => current.chars().filter(|c| !letters.contains(*c)).collect(),
                        _ => letters,
                    }
                }
            };
            acl.retain(|(i, _)| i != identifier);
            if !new.is_empty() {
                acl.push((identifier.to_string(), new));
                acl.sort();
            }
            t.insert(info.record.id, postcard::to_allocvec(&acl).db()?.as_slice())
                .db()?;
            acl
        };
        tx.commit().db()?;
        Ok(acl)
    }

    /// What `user` may do with a mailbox: all rights for its owner, else
    /// the union of the user's entry and `anyone`'s.
    pub fn rights(&self, name: &str, user: &str) -> Result<String, StoreError> {
        let n = MailboxName::parse(name)?;
        if n.owner() == user {
            return Ok(crate::acl::ALL.to_string());
        }
        let acl = self.get_acl(name)?;
        let mut r = String::new();
        for (id, rights) in acl {
            if id == user || id == "anyone" {
                r.push_str(&rights);
            }
        }
        crate::acl::normalize(&r)
    }

    /// Bytes and messages a user holds (quota.db).
    pub fn quota_usage(&self, user: &str) -> Result<(u64, u64), StoreError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(QUOTA).db()?;
        Ok(t.get(user).db()?.map(|v| v.value()).unwrap_or((0, 0)))
    }
}

/// Adds `add` (bytes, messages) to a user's usage within `tx`, refusing
/// what the quota does not allow; returns a warning when the usage has
/// just crossed the warning threshold (once per crossing).
fn charge(
    tx: &redb::WriteTransaction,
    user: &str,
    quota: &Quota,
    add: (u64, u64),
) -> Result<Option<QuotaWarning>, StoreError> {
    let mut table = tx.open_table(QUOTA).db()?;
    let used = table.get(user).db()?.map(|v| v.value()).unwrap_or((0, 0));
    quota.check(user, used, add)?;
    tx.open_table(QUOTA_OVER).db()?.remove(user).db()?;
    let after = (used.0 + add.0, used.1 + add.1);
    table.insert(user, after).db()?;
    let mut warned = tx.open_table(QUOTA_WARNED).db()?;
    let threshold = u64::from(quota.warn_percent);
    let percent = quota.percent(after);
    if threshold == 0 || threshold >= 100 || percent < threshold {
        warned.remove(user).db()?;
        return Ok(None);
    }
    if warned.get(user).db()?.is_some() {
        return Ok(None);
    }
    warned.insert(user, ()).db()?;
    Ok(Some(QuotaWarning {
        used: after,
        quota: *quota,
        percent,
    }))
}

/// Adds one appended message to the index in `tx`: its record, its
/// structure and the mailbox's counters (the caller stores `rec`).
fn index_message(
    tx: &redb::WriteTransaction,
    rec: &mut MailboxRecord,
    uid: u32,
    flags: Vec<String>,
    internal_date: i64,
    size: u64,
    structure: &[u8],
) -> Result<MessageRecord, StoreError> {
    rec.uidnext = uid + 1;
    rec.highest_modseq += 1;
    rec.messages += 1;
    rec.size += size;
    if !has(&flags, SEEN) {
        rec.unseen += 1;
    }
    let m = MessageRecord {
        flags,
        internal_date,
        size,
        modseq: rec.highest_modseq,
    };
    tx.open_table(MESSAGES)
        .db()?
        .insert((rec.id, uid), postcard::to_allocvec(&m).db()?.as_slice())
        .db()?;
    tx.open_table(STRUCTURES)
        .db()?
        .insert((rec.id, uid), structure)
        .db()?;
    Ok(m)
}

/// Copies a user's directory (mailbox directories of immutable files),
/// fsyncing every file and directory.
fn copy_tree(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(to).map_err(|e| io("cannot create", to, e))?;
    if !from.exists() {
        return Ok(());
    }
    for e in fs::read_dir(from)
        .map_err(|e| io("cannot read", from, e))?
        .flatten()
    {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).map_err(|e| io("cannot copy", &src, e))?;
            File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("cannot sync", &dst, e))?;
        }
    }
    sync_dir(to)?;
    if let Some(p) = to.parent() {
        sync_dir(p)?;
    }
    Ok(())
}

/// Mailbox directories under `<partition>/=user`: `h1/h2/=user/<id>`.
fn mailbox_dirs(users: &Path) -> Vec<PathBuf> {
    let sub = |p: &Path| -> Vec<PathBuf> {
        fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for h1 in sub(users) {
        for h2 in sub(&h1) {
            for user in sub(&h2) {
                out.extend(sub(&user));
            }
        }
    }
    out.sort();
    out
}

/// `mailbox.meta` in a mailbox's directory: its name and UIDVALIDITY, so
/// `reconstruct` can rebuild the mailbox list from the partitions alone.
#[derive(Serialize, Deserialize)]
struct MailboxMeta {
    name: String,
    uidvalidity: u32,
}

const META_FILE: &str = "mailbox.meta";

fn write_meta(dir: &Path, name: &str, uidvalidity: u32) -> Result<(), StoreError> {
    let text = serde_json::to_vec(&MailboxMeta {
        name: name.to_string(),
        uidvalidity,
    })
    .map_err(|e| StoreError::Io(e.to_string()))?;
    let tmp = dir.join(".mailbox.meta.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &text)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(META_FILE))
    };
    write().map_err(|e| io("cannot write", &dir.join(META_FILE), e))?;
    sync_dir(dir)
}

fn read_meta(dir: &Path) -> Option<MailboxMeta> {
    serde_json::from_slice(&fs::read(dir.join(META_FILE)).ok()?).ok()
}

/// Removes files whose messages are gone for good (a file already gone
/// is no error: its mailbox may have been deleted since).
fn remove_files(files: Vec<PathBuf>) {
    for f in files {
        let _ = fs::remove_file(f);
    }
}

/// fsync of a directory, so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut parts = BTreeMap::new();
        parts.insert("primary".to_string(), dir.path().join("partition/primary"));
        parts.insert("second".to_string(), dir.path().join("partition/second"));
        let s = Store::open(&dir.path().join("mboxlist/store.redb"), parts, "primary").unwrap();
        (dir, s)
    }

    /// Appends `body` as a new message without flags, date or quota.
    fn append_plain(
        s: &Store,
        mailbox: &str,
        user: &str,
        body: &str,
    ) -> (MessageInfo, MailboxInfo, Option<QuotaWarning>) {
        s.append(mailbox, &stage(s, user, body), &[], 0, &Quota::UNLIMITED)
            .unwrap()
    }

    fn stage(s: &Store, user: &str, body: &str) -> String {
        let part = s.user_partition(user).unwrap();
        let name = format!(
            "t{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        std::fs::write(s.stage_dir(&part).unwrap().join(&name), body).unwrap();
        name
    }

    fn flags(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn append_index_flags_expunge() {
        let (_d, s) = store();
        s.create_mailbox("user/joe/INBOX", None).unwrap();
        assert!(matches!(
            s.create_mailbox("user/joe/inbox", None),
            Err(StoreError::Exists(_))
        ));
        let (m1, info, _) = s
            .append(
                "user/joe/INBOX",
                &stage(&s, "joe", "Subject: one\r\n\r\nbody\r\n"),
                &[],
                1_700_000_000,
                &Quota::UNLIMITED,
            )
            .unwrap();
        assert_eq!(m1.uid, 1);
        assert_eq!(
            (
                info.record.messages,
                info.record.unseen,
                info.record.uidnext
            ),
            (1, 1, 2)
        );
        let (m2, _, _) = s
            .append(
                "user/joe/INBOX",
                &stage(&s, "joe", "two"),
                &flags(&["\\seen", "$Label1", "$label1"]),
                0,
                &Quota::UNLIMITED,
            )
            .unwrap();
        assert_eq!(m2.record.flags, ["$Label1", "\\Seen"]);
        assert_eq!(
            std::fs::read_to_string(s.message_path("user/joe/INBOX", 1).unwrap()).unwrap(),
            "Subject: one\r\n\r\nbody\r\n"
        );
        assert_eq!(s.quota_usage("joe").unwrap(), (25, 2));

        // CONDSTORE: a message changed since the given modseq is refused.
        let before = s
            .mailbox("user/joe/INBOX")
            .unwrap()
            .unwrap()
            .record
            .highest_modseq;
        let (changed, refused, after) = s
            .store_flags(
                "user/joe/INBOX",
                &[1],
                FlagOp::Add,
                &flags(&["\\Deleted", "\\Seen"]),
                None,
            )
            .unwrap();
        assert_eq!(changed.len(), 1);
        assert!(refused.is_empty());
        assert_eq!(after.record.unseen, 0);
        assert!(after.record.highest_modseq > before);
        let (_, refused, _) = s
            .store_flags(
                "user/joe/INBOX",
                &[1, 2],
                FlagOp::Remove,
                &flags(&["\\Seen"]),
                Some(before),
            )
            .unwrap();
        assert_eq!(refused, [1]);

        assert_eq!(s.expunge("user/joe/INBOX", None).unwrap(), [1]);
        assert!(
            !s.message_path("user/joe/INBOX", 1).unwrap().exists(),
            "file of an expunged message left"
        );
        let idx = s.messages("user/joe/INBOX").unwrap();
        assert_eq!(idx.iter().map(|m| m.uid).collect::<Vec<_>>(), [2]);
        assert_eq!(s.quota_usage("joe").unwrap(), (3, 1));
        // UIDs are never reused.
        let (m3, _, _) = append_plain(&s, "user/joe/INBOX", "joe", "three");
        assert_eq!(m3.uid, 3);
        assert!(matches!(
            normalize_flags(&flags(&["\\Bogus"])),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn sync_level_messages_defers_only_flags_and_expunges() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mboxlist/store.redb");
        let parts = BTreeMap::from([("primary".to_string(), dir.path().join("p"))]);
        let s = Store::open(&db, parts.clone(), "primary")
            .unwrap()
            .with_sync_level(SyncLevel::Messages);
        s.create_mailbox("user/joe/INBOX", None).unwrap();
        append_plain(&s, "user/joe/INBOX", "joe", "one");
        append_plain(&s, "user/joe/INBOX", "joe", "two");
        s.store_flags(
            "user/joe/INBOX",
            &[1, 2],
            FlagOp::Add,
            &flags(&["\\Deleted"]),
            None,
        )
        .unwrap();
        s.store_flags(
            "user/joe/INBOX",
            &[2],
            FlagOp::Add,
            &flags(&["\\Seen"]),
            None,
        )
        .unwrap();
        assert_eq!(s.expunge_uids("user/joe/INBOX", &[1], true).unwrap(), [1]);
        // Seen by every reader at once...
        let left = s.messages("user/joe/INBOX").unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].record.flags, flags(&["\\Deleted", "\\Seen"]));
        // ...but the file stays until the expunge is durable.
        let file = s.message_path("user/joe/INBOX", 1).unwrap();
        assert!(file.exists(), "file removed before the expunge was durable");
        s.sync_pending().unwrap();
        assert!(!file.exists(), "file of a durable expunge left");
        s.sync_pending().unwrap();
        // A store closed with changes pending makes them durable first.
        s.store_flags(
            "user/joe/INBOX",
            &[2],
            FlagOp::Remove,
            &flags(&["\\Seen"]),
            None,
        )
        .unwrap();
        drop(s);
        let s = Store::open(&db, parts, "primary").unwrap();
        let left = s.messages("user/joe/INBOX").unwrap();
        assert_eq!(left[0].record.flags, flags(&["\\Deleted"]));
        assert!("sometimes".parse::<SyncLevel>().is_err());
    }

    #[test]
    fn copy_move_rename_delete() {
        let (_d, s) = store();
        s.create_mailbox("user/joe/INBOX", None).unwrap();
        s.create_mailbox("user/joe/Lists", None).unwrap();
        s.create_mailbox("user/joe/Lists/rust", None).unwrap();
        for body in ["a", "bb", "ccc"] {
            append_plain(&s, "user/joe/INBOX", "joe", body);
        }
        let pairs = s
            .copy(
                "user/joe/INBOX",
                &[1, 3, 99],
                "user/joe/Lists/rust",
                &Quota::UNLIMITED,
            )
            .unwrap();
        assert_eq!(pairs, [(1, 1), (3, 2)]);
        assert_eq!(
            std::fs::read_to_string(s.message_path("user/joe/Lists/rust", 2).unwrap()).unwrap(),
            "ccc"
        );
        assert_eq!(s.quota_usage("joe").unwrap(), (10, 5));
        // MOVE = copy + expunge of those messages.
        s.copy("user/joe/INBOX", &[2], "user/joe/Lists", &Quota::UNLIMITED)
            .unwrap();
        s.expunge_uids("user/joe/INBOX", &[2], false).unwrap();
        assert_eq!(s.messages("user/joe/INBOX").unwrap().len(), 2);

        s.rename_mailbox("user/joe/Lists", "user/joe/Archive")
            .unwrap();
        let names: Vec<String> = s
            .list("user/joe/")
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "user/joe/Archive",
                "user/joe/Archive/rust",
                "user/joe/INBOX"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(s.message_path("user/joe/Archive/rust", 2).unwrap()).unwrap(),
            "ccc"
        );
        assert!(
            s.rename_mailbox("user/joe/Archive", "user/joe/Archive/x")
                .is_err()
        );
        assert!(
            s.rename_mailbox("user/joe/Archive", "user/ann/Archive")
                .is_err()
        );

        // Renaming INBOX moves its messages and leaves it empty.
        s.rename_mailbox("user/joe/INBOX", "user/joe/Old").unwrap();
        assert_eq!(s.messages("user/joe/INBOX").unwrap().len(), 0);
        assert_eq!(s.messages("user/joe/Old").unwrap().len(), 2);

        assert!(matches!(
            s.delete_mailbox("user/joe/INBOX"),
            Err(StoreError::Refused(_))
        ));
        s.delete_mailbox("user/joe/Archive/rust").unwrap();
        assert_eq!(s.quota_usage("joe").unwrap().1, 3);
        s.subscribe("joe", "user/joe/Old", true).unwrap();
        assert_eq!(s.subscriptions("joe").unwrap(), ["user/joe/Old"]);
        assert_eq!(s.delete_user("joe").unwrap(), 3);
        assert!(s.list("user/joe/").unwrap().is_empty());
        assert_eq!(s.quota_usage("joe").unwrap(), (0, 0));
        assert!(s.subscriptions("joe").unwrap().is_empty());
    }

    #[test]
    fn users_stay_on_their_partition() {
        let (d, s) = store();
        s.create_mailbox("user/ann/INBOX", Some("second")).unwrap();
        s.create_mailbox("user/ann/Sent", Some("primary")).unwrap();
        assert_eq!(s.user_partition("ann").unwrap(), "second");
        append_plain(&s, "user/ann/Sent", "ann", "x");
        assert!(
            s.message_path("user/ann/Sent", 1)
                .unwrap()
                .starts_with(d.path().join("partition/second"))
        );
        // Copies across users on different partitions copy the file.
        s.create_mailbox("user/joe/INBOX", None).unwrap();
        s.copy("user/ann/Sent", &[1], "user/joe/INBOX", &Quota::UNLIMITED)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(s.message_path("user/joe/INBOX", 1).unwrap()).unwrap(),
            "x"
        );
        assert!(matches!(
            s.append(
                "user/ann/Sent",
                "../../etc/passwd",
                &[],
                0,
                &Quota::UNLIMITED
            ),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn quotas_refuse_and_warn_once_per_crossing() {
        let (_d, s) = store();
        s.create_mailbox("user/joe/INBOX", None).unwrap();
        let q = Quota {
            bytes: Some(100),
            messages: Some(5),
            warn_percent: 80,
        };
        let (_, _, w) = s
            .append(
                "user/joe/INBOX",
                &stage(&s, "joe", &"a".repeat(50)),
                &[],
                0,
                &q,
            )
            .unwrap();
        assert!(w.is_none());
        let (_, _, w) = s
            .append(
                "user/joe/INBOX",
                &stage(&s, "joe", &"b".repeat(35)),
                &[],
                0,
                &q,
            )
            .unwrap();
        assert_eq!(w.map(|w| w.percent), Some(85), "crossing 80% warns");
        let (_, _, w) = s
            .append("user/joe/INBOX", &stage(&s, "joe", "c"), &[], 0, &q)
            .unwrap();
        assert!(w.is_none(), "one warning per crossing");
        let staged = stage(&s, "joe", &"d".repeat(20));
        assert!(matches!(
            s.append("user/joe/INBOX", &staged, &[], 0, &q),
            Err(StoreError::OverQuota(_))
        ));
        assert!(
            s.stage_dir("primary").unwrap().join(&staged).exists(),
            "a refused message must stay staged"
        );
        assert!(
            s.over_quota_since("joe").unwrap().is_some(),
            "the refusal starts the grace period"
        );
        assert_eq!(s.quota_usage("joe").unwrap(), (86, 3));
        // Below the threshold again, then over it: a new warning.
        s.store_flags(
            "user/joe/INBOX",
            &[1],
            FlagOp::Add,
            &flags(&["\\Deleted"]),
            None,
        )
        .unwrap();
        s.expunge("user/joe/INBOX", None).unwrap();
        let (_, _, w) = s
            .append("user/joe/INBOX", &stage(&s, "joe", "e"), &[], 0, &q)
            .unwrap();
        assert!(w.is_none());
        let (_, _, w) = s
            .append(
                "user/joe/INBOX",
                &stage(&s, "joe", &"f".repeat(50)),
                &[],
                0,
                &q,
            )
            .unwrap();
        assert!(w.is_some());
        assert!(
            s.over_quota_since("joe").unwrap().is_none(),
            "fitting again ends the grace period"
        );
        // A copy is charged whole, before anything is linked.
        s.create_mailbox("user/joe/Copy", None).unwrap();
        let all: Vec<u32> = s
            .messages("user/joe/INBOX")
            .unwrap()
            .iter()
            .map(|m| m.uid)
            .collect();
        assert!(matches!(
            s.copy("user/joe/INBOX", &all, "user/joe/Copy", &q),
            Err(StoreError::OverQuota(_))
        ));
        assert!(s.messages("user/joe/Copy").unwrap().is_empty());
        let zero = Quota {
            bytes: Some(0),
            ..Quota::UNLIMITED
        };
        assert!(
            matches!(
                s.append("user/joe/INBOX", &stage(&s, "joe", "x"), &[], 0, &zero),
                Err(StoreError::OverQuota(_))
            ),
            "mailQuota 0 allows nothing"
        );
    }

    #[test]
    fn reconstruct_brings_everything_back_after_losing_the_database() {
        let (d, s) = store();
        s.create_mailbox("user/joe/INBOX", None).unwrap();
        s.create_mailbox("user/joe/Lists", None).unwrap();
        s.rename_mailbox("user/joe/Lists", "user/joe/Archive")
            .unwrap();
        s.append(
            "user/joe/INBOX",
            &stage(&s, "joe", "one"),
            &[],
            1_600_000_000,
            &Quota::UNLIMITED,
        )
        .unwrap();
        s.append(
            "user/joe/INBOX",
            &stage(&s, "joe", "two!"),
            &[],
            1_600_000_100,
            &Quota::UNLIMITED,
        )
        .unwrap();
        append_plain(&s, "user/joe/Archive", "joe", "three");
        let validity = s
            .mailbox("user/joe/INBOX")
            .unwrap()
            .unwrap()
            .record
            .uidvalidity;
        let mut parts = BTreeMap::new();
        parts.insert("primary".to_string(), d.path().join("partition/primary"));
        parts.insert("second".to_string(), d.path().join("partition/second"));
        drop(s);
        std::fs::remove_file(d.path().join("mboxlist/store.redb")).unwrap();
        let s = Store::open(&d.path().join("mboxlist/store.redb"), parts, "primary").unwrap();
        assert!(s.list("").unwrap().is_empty());
        assert!(!s.reconstruct(true).unwrap().is_empty());
        assert!(
            s.list("").unwrap().is_empty(),
            "a dry run changed the store"
        );
        let report = s.reconstruct(false).unwrap();
        assert!(
            report
                .iter()
                .any(|l| l.contains("user/joe/Archive: added back")),
            "{report:?}"
        );
        let names: Vec<String> = s.list("").unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["user/joe/Archive", "user/joe/INBOX"]);
        let inbox = s.mailbox("user/joe/INBOX").unwrap().unwrap().record;
        assert_eq!(
            (inbox.uidvalidity, inbox.uidnext, inbox.messages, inbox.size),
            (validity, 3, 2, 7)
        );
        let idx = s.messages("user/joe/INBOX").unwrap();
        assert_eq!(
            idx.iter()
                .map(|m| m.record.internal_date)
                .collect::<Vec<_>>(),
            [1_600_000_000, 1_600_000_100]
        );
        assert_eq!(s.quota_usage("joe").unwrap(), (12, 3));
        // New mail goes on after the highest UID found.
        let (m, _, _) = append_plain(&s, "user/joe/INBOX", "joe", "four");
        assert_eq!(m.uid, 3);
        // A lost file is dropped from the index; a second run finds nothing to do.
        std::fs::remove_file(s.message_path("user/joe/INBOX", 1).unwrap()).unwrap();
        let report = s.reconstruct(false).unwrap();
        assert!(
            report.iter().any(|l| l.contains("message 1 has no file")),
            "{report:?}"
        );
        assert!(s.reconstruct(false).unwrap().is_empty());
    }

    #[test]
    fn lists_and_indexes_come_in_pages() {
        let (_d, s) = store();
        for f in ["a", "b", "c", "d", "e"] {
            s.create_mailbox(&format!("user/joe/{f}"), None).unwrap();
        }
        let page1 = s.list_after("user/joe/", "", 2).unwrap();
        let page2 = s.list_after("user/joe/", &page1[1].name, 2).unwrap();
        let page3 = s.list_after("user/joe/", &page2[1].name, 2).unwrap();
        let names: Vec<String> = [page1, page2, page3]
            .concat()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "user/joe/a",
                "user/joe/b",
                "user/joe/c",
                "user/joe/d",
                "user/joe/e"
            ]
        );
        for n in 0..5 {
            s.append(
                "user/joe/a",
                &stage(&s, "joe", &n.to_string()),
                &[],
                0,
                &Quota::UNLIMITED,
            )
            .unwrap();
        }
        let uids = |after, limit| {
            s.messages_after("user/joe/a", after, limit)
                .unwrap()
                .iter()
                .map(|m| m.uid)
                .collect::<Vec<_>>()
        };
        assert_eq!(uids(0, 2), [1, 2]);
        assert_eq!(uids(2, 2), [3, 4]);
        assert_eq!(uids(4, 2), [5]);
        assert!(uids(u32::MAX, 2).is_empty());
    }

    #[test]
    fn a_user_moves_to_another_partition() {
        let (d, s) = store();
        s.create_mailbox("user/joe/INBOX", None).unwrap();
        s.create_mailbox("user/joe/Sent", None).unwrap();
        s.append(
            "user/joe/Sent",
            &stage(&s, "joe", "kept"),
            &["\\Seen".into()],
            5,
            &Quota::UNLIMITED,
        )
        .unwrap();
        let old = s.message_path("user/joe/Sent", 1).unwrap();
        s.move_user("joe", "second").unwrap();
        let new = s.message_path("user/joe/Sent", 1).unwrap();
        assert!(
            new.starts_with(d.path().join("partition/second")),
            "{}",
            new.display()
        );
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "kept");
        assert!(!old.exists());
        assert_eq!(
            s.messages("user/joe/Sent").unwrap()[0].record.flags,
            ["\\Seen"]
        );
        append_plain(&s, "user/joe/INBOX", "joe", "after");
        assert!(s.move_user("joe", "second").is_err());
        assert!(s.move_user("joe", "nowhere").is_err());
    }

    #[test]
    fn seen_is_per_user_in_shared_mailboxes() {
        let (_d, s) = store();
        s.create_mailbox("user/joe/Shared", None).unwrap();
        for b in ["a", "b", "c"] {
            append_plain(&s, "user/joe/Shared", "joe", b);
        }
        s.store_flags_for(
            "user/joe/Shared",
            &[1],
            FlagOp::Add,
            &flags(&["\\Seen", "$Shared"]),
            None,
            "ann",
        )
        .unwrap();
        let ann = s.messages_for("user/joe/Shared", 0, 10, "ann").unwrap();
        assert_eq!(ann[0].record.flags, ["$Shared", "\\Seen"]);
        let joe = s.messages("user/joe/Shared").unwrap();
        assert_eq!(
            joe[0].record.flags,
            ["$Shared"],
            "ann's \\Seen is hers alone; keywords are shared"
        );
        assert_eq!(
            s.mailbox_for("user/joe/Shared", "ann")
                .unwrap()
                .unwrap()
                .record
                .unseen,
            2
        );
        assert_eq!(
            s.mailbox("user/joe/Shared").unwrap().unwrap().record.unseen,
            3
        );
        // The owner's own \Seen does not show for ann.
        s.store_flags_for(
            "user/joe/Shared",
            &[2],
            FlagOp::Add,
            &flags(&["\\Seen"]),
            None,
            "joe",
        )
        .unwrap();
        assert!(
            !s.messages_for("user/joe/Shared", 0, 10, "ann").unwrap()[1]
                .record
                .flags
                .contains(&"\\Seen".to_string())
        );
        s.store_flags(
            "user/joe/Shared",
            &[1],
            FlagOp::Add,
            &flags(&["\\Deleted"]),
            None,
        )
        .unwrap();
        s.expunge("user/joe/Shared", None).unwrap();
        assert_eq!(
            s.mailbox_for("user/joe/Shared", "ann")
                .unwrap()
                .unwrap()
                .record
                .unseen,
            2
        );
    }
}
