//! The imsbackup stream: what imsrestore reads back, through a file or a
//! pipe (`imsbackup -f - / | imsrestore -f -`). Pure codec.
//!
//! ```text
//! EPISTLE-BACKUP 1
//! {"kind":"mailbox","name":"user/joe/INBOX","uidvalidity":1700000000,"uidnext":3}
//! {"kind":"message","uid":1,"flags":["\\Seen"],"internal_date":1700000000,"size":5}
//! hello
//! {"kind":"end","mailboxes":1,"messages":1}
//! ```
//!
//! Each record is one JSON line; a message record is followed by exactly
//! `size` bytes of the message and a newline. The end record lets a reader
//! tell a complete stream from a cut one.

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

pub const MAGIC: &str = "EPISTLE-BACKUP 1";
/// Longest record line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest message accepted.
pub const MAX_MESSAGE: u64 = 2 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Mailbox {
        name: String,
        uidvalidity: u32,
        uidnext: u32,
    },
    Message {
        uid: u32,
        flags: Vec<String>,
        internal_date: i64,
        size: u64,
    },
    End {
        mailboxes: u64,
        messages: u64,
    },
}

pub struct BackupWriter<W: Write> {
    out: W,
    mailboxes: u64,
    messages: u64,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        writeln!(out, "{MAGIC}")?;
        Ok(BackupWriter {
            out,
            mailboxes: 0,
            messages: 0,
        })
    }

    fn record(&mut self, r: &Record) -> io::Result<()> {
        let line = serde_json::to_string(r).map_err(io::Error::other)?;
        writeln!(self.out, "{line}")
    }

    pub fn mailbox(&mut self, name: &str, uidvalidity: u32, uidnext: u32) -> io::Result<()> {
        self.mailboxes += 1;
        self.record(&Record::Mailbox {
            name: name.into(),
            uidvalidity,
            uidnext,
        })
    }

    pub fn message(
        &mut self,
        uid: u32,
        flags: &[String],
        internal_date: i64,
        body: &[u8],
    ) -> io::Result<()> {
        self.messages += 1;
        self.record(&Record::Message {
            uid,
            flags: flags.to_vec(),
            internal_date,
            size: body.len() as u64,
        })?;
        self.out.write_all(body)?;
        self.out.write_all(b"\n")
    }

    pub fn finish(mut self) -> io::Result<(u64, u64)> {
        let (m, n) = (self.mailboxes, self.messages);
        self.record(&Record::End {
            mailboxes: m,
            messages: n,
        })?;
        self.out.flush()?;
        Ok((m, n))
    }
}

pub struct BackupReader<R: BufRead> {
    input: R,
    line: usize,
    ended: bool,
}

fn bad(line: usize, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("backup stream, line {line}: {reason}"),
    )
}

impl<R: BufRead> BackupReader<R> {
    pub fn new(mut input: R) -> io::Result<Self> {
        let mut first = String::new();
        input.by_ref().take(MAX_LINE as u64).read_line(&mut first)?;
        if first.trim_end() != MAGIC {
            return Err(bad(1, "not an Epistle backup stream"));
        }
        Ok(BackupReader {
            input,
            line: 1,
            ended: false,
        })
    }

    /// The next record; a message comes with its body. `None` after the
    /// end record; a stream cut before it is an error.
    pub fn next_record(&mut self) -> io::Result<Option<(Record, Vec<u8>)>> {
        if self.ended {
            return Ok(None);
        }
        let mut text = String::new();
        self.line += 1;
        let n = self
            .input
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut text)?;
        if n == 0 {
            return Err(bad(
                self.line,
                "the stream ends before its end record (cut short?)",
            ));
        }
        if n > MAX_LINE {
            return Err(bad(self.line, "record line too long"));
        }
        if !text.ends_with('\n') {
            return Err(bad(
                self.line,
                "the stream ends in the middle of a record (cut short?)",
            ));
        }
        let rec: Record = serde_json::from_str(text.trim_end()).map_err(|e| bad(self.line, e))?;
        let body = match &rec {
            Record::Message { size, .. } => {
                if *size > MAX_MESSAGE {
                    return Err(bad(self.line, "message too large"));
                }
                let mut body = Vec::new();
                self.input.by_ref().take(*size).read_to_end(&mut body)?;
                if body.len() as u64 != *size {
                    return Err(bad(self.line, "message cut short"));
                }
                let mut nl = [0u8; 1];
                self.input.read_exact(&mut nl)?;
                if nl[0] != b'\n' {
                    return Err(bad(self.line, "no newline after the message"));
                }
                self.line += 1 + body.iter().filter(|b| **b == b'\n').count();
                body
            }
            Record::End { .. } => {
                self.ended = true;
                Vec::new()
            }
            Record::Mailbox { .. } => Vec::new(),
        };
        Ok(Some((rec, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        let mut w = BackupWriter::new(&mut buf).unwrap();
        w.mailbox("user/joe/INBOX", 7, 3).unwrap();
        w.message(
            1,
            &["\\Seen".into()],
            1_700_000_000,
            b"line one\nline two\n",
        )
        .unwrap();
        w.message(2, &[], 0, b"").unwrap();
        assert_eq!(w.finish().unwrap(), (1, 2));
        let mut r = BackupReader::new(&buf[..]).unwrap();
        let mut got = Vec::new();
        while let Some(x) = r.next_record().unwrap() {
            got.push(x);
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].1, b"line one\nline two\n");
        assert!(matches!(got[3].0, Record::End { messages: 2, .. }));
    }

    #[test]
    fn cut_and_foreign_streams_are_errors() {
        assert!(BackupReader::new(&b"tar file"[..]).is_err());
        let mut buf = Vec::new();
        let mut w = BackupWriter::new(&mut buf).unwrap();
        w.mailbox("user/joe/INBOX", 7, 3).unwrap();
        w.message(1, &[], 0, b"hello").unwrap();
        let cut = &buf[..buf.len() - 3];
        let mut r = BackupReader::new(cut).unwrap();
        assert!(r.next_record().is_ok());
        assert!(r.next_record().is_err());
    }

    proptest::proptest! {
        #[test]
        fn reading_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut input = b"EPISTLE-BACKUP 1\n".to_vec();
            input.extend(bytes);
            if let Ok(mut r) = BackupReader::new(&input[..]) {
                for _ in 0..50 {
                    match r.next_record() {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
        }
    }
}
