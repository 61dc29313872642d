//! Local IPC between Epistle's processes.
//!
//! Every local socket carries frames: a 4-byte big-endian length, then that
//! many bytes of JSON. Message bodies never travel here (DESIGN.md): they
//! travel as files. [`frame`] is the codec (pure, with blocking and tokio
//! helpers at the edge); [`watcher`] is the watcher's protocol; [`store`]
//! is the store's, and [`store_client`] the client every store user takes;
//! [`jobs`] is the job controller's, and [`handoff`] carries accepted
//! connections from the dispatcher to the SMTP server processes.

pub mod frame;
pub mod handoff;
pub mod jobs;
pub mod store;
pub mod store_client;
pub mod watcher;

pub use frame::{FrameError, MAX_FRAME};
