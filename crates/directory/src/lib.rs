//! The Directory: who a user is, where their mail goes, whether their
//! password is right — answered from an LDAP server or from the embedded
//! LDIF directory, through one interface.
//!
//! Pure building blocks: [`dn`], [`entry`], [`filter`] (RFC 4515, with
//! escaping and evaluation), [`ldif`] (RFC 2849) and [`password`] (every
//! `userPassword` scheme a migrated directory holds).

pub mod dn;
pub mod entry;
pub mod filter;
pub mod ldif;
pub mod password;

pub use dn::Dn;
pub use entry::Entry;
pub use filter::Filter;
