//! The POP3 codec, pure: a client's bytes are cut into lines
//! ([`LineFramer`]), parsed into [`Command`] values, and multi-line
//! answers (RETR, TOP, LIST, UIDL, CAPA) are written with dot-stuffing by
//! [`multiline`]. popd's session state machine sits on top; nothing here
//! touches a socket, a clock or a file.

mod command;
mod framer;
mod message;

pub use command::{BadCommand, Command};
pub use framer::{Line, LineFramer};
pub use message::{DotStuffer, multiline, top};
