//! The IMAP codec, pure: bytes from a client are cut into whole commands
//! ([`framer`]), parsed into [`command::Command`] values, and the server's
//! answers are written with the helpers of [`response`]. Mailbox names
//! travel in modified UTF-7 unless the client enabled UTF8=ACCEPT
//! ([`utf7`]). imapd's session state machine sits on top; nothing here
//! touches a socket, a clock or a file.

pub mod command;
pub mod framer;
mod parser;
pub mod response;
pub mod search;
pub mod sequence;
pub mod utf7;

pub use command::{Command, CommandBody, ParseError};
pub use framer::{Frame, Framer, Limits};
pub use sequence::{SeqNum, SequenceSet};
