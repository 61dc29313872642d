//! Local IPC between Epistle's processes.
//!
//! Every local socket carries frames: a 4-byte big-endian length, then that
//! many bytes of JSON. Message bodies never travel here (DESIGN.md): they
//! travel as files. [`frame`] is the codec (pure, with blocking and tokio
//! helpers at the edge); [`watcher`] is the watcher's protocol.

pub mod frame;
pub mod watcher;

pub use frame::{FrameError, MAX_FRAME};
