//! The MTA's configuration and policy, as pure code the SMTP server, the
//! job controller and `imsimta test` share.
//!
//! - [`mapping`]: the mappings file and its tables (access control,
//!   INTERNAL_IP, rewriting helpers).

pub mod mapping;

pub use mapping::{MappingResult, Mappings};
