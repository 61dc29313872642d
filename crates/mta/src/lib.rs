//! The MTA's configuration and policy the SMTP server, the job controller,
//! the channel programs and `imsimta` share. Pure, except `resolve` (the
//! directory), `submit` and `queue` (the queue files), `dns`, `ident` and
//! `maillog`.
//!
//! - [`access`]: the access tables' answers: refusals, actions, delays.
//! - [`address_reversal`]: short-form header addresses completed, address
//!   reversal (directory, REVERSE), `reverse`/`noreverse`, `inner`.
//! - [`aliases`]: the aliases file.
//! - [`channel_options`]: the channel option files (`tcp_local_option`):
//!   SMTP server and client limits, times and names.
//! - [`compiled`]: the compiled configuration `imsimta cnbuild` writes.
//! - [`dispatcher_cnf`]: dispatcher.cnf's services, typed.
//! - [`job_cnf`]: job_controller.cnf's pools and channel programs.
//! - [`dns`]: the resolver, and an SMTP client's name (`ident*`).
//! - [`header`]: reading header fields, and the MTA's own edits.
//! - [`header_addresses`]: the addresses of From:, To: and the other
//!   address fields, rewritten in place (short forms, REVERSE).
//! - [`ident`]: IDENT (RFC 1413) queries for `identtcp*` channels.
//! - [`imtacnf`]: imta.cnf, its rewrite rules and channel blocks.
//! - [`maillog`]: `mail.log_current` records.
//! - [`mapping`]: the mappings file and its tables (access control,
//!   INTERNAL_IP, rewriting helpers).
//! - [`optionfile`]: the `OPTION=value` files (dispatcher.cnf,
//!   job_controller.cnf, option.dat, imta_tailor).
//! - [`partial`]: `message/partial` parts and their reassembly
//!   (`defragment`).
//! - [`queue`]: the channel queue directories (enqueue, list, hold,
//!   release).
//! - [`queuefile`]: the on-disk message queue file (envelope + message)
//!   and its retry naming.
//! - [`resolve`]: recipient to queues: rewriting, aliases, the directory
//!   (users, forwarding, groups, hold).
//! - [`rewrite`]: the rewrite-rule engine: address to channel.
//! - [`retry`]: `backoff` and `notices`: when to retry, warn and return.
//! - [`smtp`]: the SMTP/LMTP codec: commands, replies, the DATA reader.
//! - [`submit`]: writing a message into its channels' queues durably
//!   (group commit) and telling the job controller.

pub mod access;
pub mod address_reversal;
pub mod aliases;
pub mod channel_options;
pub mod compiled;
pub mod dispatcher_cnf;
pub mod dns;
pub mod header;
pub mod header_addresses;
pub mod ident;
pub mod imtacnf;
pub mod job_cnf;
pub mod maillog;
pub mod mapping;
pub mod optionfile;
pub mod partial;
pub mod queue;
pub mod queuefile;
pub mod resolve;
pub mod retry;
pub mod rewrite;
pub mod smtp;
pub mod submit;

pub use mapping::{MappingResult, Mappings};
pub use optionfile::OptionFile;
