//! The MTA's configuration and policy, as pure code the SMTP server, the
//! job controller and `imsimta test` share.
//!
//! - [`aliases`]: the aliases file.
//! - [`compiled`]: the compiled configuration `imsimta cnbuild` writes.
//! - [`imtacnf`]: imta.cnf, its rewrite rules and channel blocks.
//! - [`mapping`]: the mappings file and its tables (access control,
//!   INTERNAL_IP, rewriting helpers).
//! - [`optionfile`]: the `OPTION=value` files (dispatcher.cnf,
//!   job_controller.cnf, option.dat, imta_tailor).
//! - [`queue`]: the channel queue directories (enqueue, list, hold,
//!   release).
//! - [`queuefile`]: the on-disk message queue file (envelope + message)
//!   and its retry naming.
//! - [`rewrite`]: the rewrite-rule engine: address to channel.
//! - [`retry`]: `backoff` and `notices`: when to retry, warn and return.
//! - [`smtp`]: the SMTP/LMTP codec: commands, replies, the DATA reader.

pub mod aliases;
pub mod compiled;
pub mod imtacnf;
pub mod mapping;
pub mod optionfile;
pub mod queue;
pub mod queuefile;
pub mod retry;
pub mod rewrite;
pub mod smtp;

pub use mapping::{MappingResult, Mappings};
pub use optionfile::OptionFile;
