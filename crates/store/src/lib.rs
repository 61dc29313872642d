//! The message store: mailboxes, the message index, flags, subscriptions
//! and quota usage in a redb database owned by `stored`, and one immutable
//! file per message on a partition.
//!
//! - [`names`]: mailbox names, user directories, `hashdir` (pure).
//! - [`db`]: the database and the file discipline behind every operation.

pub mod acl;
pub mod backup;
pub mod db;
pub mod expire;
pub mod group;
pub mod import;
pub mod names;
pub mod structure;

pub use db::{AppendArgs, AppendResult, FlagOp, MailboxInfo, MessageInfo, Store, StoreError};
pub use names::MailboxName;
