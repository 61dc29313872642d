//! POP3 commands (RFC 1939, RFC 2449, RFC 2595, RFC 5034): one line each,
//! a keyword of three or four letters in any case and its arguments.

use crate::framer::strip_line_end;

/// Longest argument accepted: RFC 2449 says 40 octets, but passwords and
/// SASL responses are longer, so those are limited by the line length.
const MAX_ARG: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    /// The rest of the line, spaces included (RFC 1939 §7 allows it).
    Pass(String),
    Apop {
        name: String,
        /// 32 lower-case hexadecimal digits.
        digest: String,
    },
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Quit,
    Top {
        msg: u32,
        lines: u32,
    },
    Uidl(Option<u32>),
    Capa,
    Stls,
    /// `AUTH` alone lists the mechanisms (a common extension); with a
    /// mechanism, an optional initial response (RFC 5034 §4).
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
}

/// Why a line is not a command, as the text of the `-ERR` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCommand {
    #[error("Unknown command")]
    Unknown,
    #[error("Missing argument")]
    MissingArgument,
    #[error("Too many arguments")]
    TooManyArguments,
    #[error("Invalid message number")]
    BadNumber,
    #[error("Argument too long")]
    TooLong,
    #[error("Invalid characters in the command")]
    BadBytes,
}

impl Command {
    /// Parses one line (its CRLF or LF may be present).
    pub fn parse(line: &[u8]) -> Result<Command, BadCommand> {
        let line = strip_line_end(line);
        if line.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(BadCommand::BadBytes);
        }
        let line = std::str::from_utf8(line).map_err(|_| BadCommand::BadBytes)?;
        let (keyword, rest) = match line.split_once(' ') {
            Some((k, r)) => (k, Some(r)),
            None => (line, None),
        };
        if keyword.len() > 4 {
            return Err(BadCommand::Unknown);
        }
        let args: Vec<&str> = rest
            .map(|r| r.split(' ').filter(|a| !a.is_empty()).collect())
            .unwrap_or_default();
        let cmd = match keyword.to_ascii_uppercase().as_str() {
            "USER" => {
                let [name] = exactly::<1>(&args)?;
                Command::User(short(name)?.to_string())
            }
            "PASS" => match rest {
                Some(p) if !p.is_empty() => Command::Pass(p.to_string()),
                _ => return Err(BadCommand::MissingArgument),
            },
            "APOP" => {
                let [name, digest] = exactly::<2>(&args)?;
                Command::Apop {
                    name: short(name)?.to_string(),
                    digest: short(digest)?.to_ascii_lowercase(),
                }
            }
            "STAT" => none(&args, Command::Stat)?,
            "LIST" => Command::List(optional_number(&args)?),
            "RETR" => Command::Retr(number(exactly::<1>(&args)?[0])?),
            "DELE" => Command::Dele(number(exactly::<1>(&args)?[0])?),
            "NOOP" => none(&args, Command::Noop)?,
            "RSET" => none(&args, Command::Rset)?,
            "QUIT" => none(&args, Command::Quit)?,
            "TOP" => {
                let [msg, lines] = exactly::<2>(&args)?;
                Command::Top {
                    msg: number(msg)?,
                    lines: count(lines)?,
                }
            }
            "UIDL" => Command::Uidl(optional_number(&args)?),
            "CAPA" => none(&args, Command::Capa)?,
            "STLS" => none(&args, Command::Stls)?,
            "AUTH" => {
                if args.len() > 2 {
                    return Err(BadCommand::TooManyArguments);
                }
                Command::Auth {
                    mechanism: args
                        .first()
                        .map(|m| short(m).map(|m| m.to_ascii_uppercase()))
                        .transpose()?,
                    initial: args.get(1).map(|s| s.to_string()),
                }
            }
            _ => return Err(BadCommand::Unknown),
        };
        Ok(cmd)
    }

    /// The keyword, for logs (arguments such as passwords left out).
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Quit => "QUIT",
            Command::Top { .. } => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Auth { .. } => "AUTH",
        }
    }
}

fn exactly<'a, const N: usize>(args: &[&'a str]) -> Result<[&'a str; N], BadCommand> {
    match args.len().cmp(&N) {
        std::cmp::Ordering::Less => Err(BadCommand::MissingArgument),
        std::cmp::Ordering::Greater => Err(BadCommand::TooManyArguments),
        std::cmp::Ordering::Equal => {
            let mut out = [""; N];
            out.copy_from_slice(args);
            Ok(out)
        }
    }
}

fn none(args: &[&str], cmd: Command) -> Result<Command, BadCommand> {
    if args.is_empty() {
        Ok(cmd)
    } else {
        Err(BadCommand::TooManyArguments)
    }
}

fn short(arg: &str) -> Result<&str, BadCommand> {
    if arg.len() > MAX_ARG * 8 {
        // Logins may be long addresses; anything longer is nonsense.
        return Err(BadCommand::TooLong);
    }
    Ok(arg)
}

/// A message number: 1 or more, decimal digits only.
fn number(arg: &str) -> Result<u32, BadCommand> {
    match count(arg)? {
        0 => Err(BadCommand::BadNumber),
        n => Ok(n),
    }
}

/// A non-negative count (TOP's lines); larger than u32 means "all".
fn count(arg: &str) -> Result<u32, BadCommand> {
    if arg.is_empty() || arg.len() > MAX_ARG || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadCommand::BadNumber);
    }
    Ok(arg
        .parse::<u64>()
        .map_or(u32::MAX, |n| n.min(u32::MAX as u64) as u32))
}

fn optional_number(args: &[&str]) -> Result<Option<u32>, BadCommand> {
    match args {
        [] => Ok(None),
        [n] => number(n).map(Some),
        _ => Err(BadCommand::TooManyArguments),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands() {
        assert_eq!(
            Command::parse(b"user joe\r\n"),
            Ok(Command::User("joe".into()))
        );
        assert_eq!(
            Command::parse(b"PASS two words \r\n"),
            Ok(Command::Pass("two words ".into()))
        );
        assert_eq!(Command::parse(b"STAT\n"), Ok(Command::Stat));
        assert_eq!(Command::parse(b"LIST"), Ok(Command::List(None)));
        assert_eq!(Command::parse(b"LIST 3"), Ok(Command::List(Some(3))));
        assert_eq!(Command::parse(b"RETR 1"), Ok(Command::Retr(1)));
        assert_eq!(
            Command::parse(b"TOP 2 0"),
            Ok(Command::Top { msg: 2, lines: 0 })
        );
        assert_eq!(
            Command::parse(b"TOP 2 99999999999999"),
            Ok(Command::Top {
                msg: 2,
                lines: u32::MAX
            })
        );
        assert_eq!(
            Command::parse(b"APOP joe C4C9334BAC560ECC979E58001B3E22FB"),
            Ok(Command::Apop {
                name: "joe".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into()
            })
        );
        assert_eq!(
            Command::parse(b"AUTH plain AGpvZQBzZWNyZXQ="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AGpvZQBzZWNyZXQ=".into())
            })
        );
        assert_eq!(
            Command::parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(Command::parse(b"RETR 0"), Err(BadCommand::BadNumber));
        assert_eq!(Command::parse(b"RETR -1"), Err(BadCommand::BadNumber));
        assert_eq!(Command::parse(b"RETR +1"), Err(BadCommand::BadNumber));
        assert_eq!(Command::parse(b"RETR"), Err(BadCommand::MissingArgument));
        assert_eq!(
            Command::parse(b"DELE 1 2"),
            Err(BadCommand::TooManyArguments)
        );
        assert_eq!(Command::parse(b"STAT x"), Err(BadCommand::TooManyArguments));
        assert_eq!(Command::parse(b"PASS"), Err(BadCommand::MissingArgument));
        assert_eq!(Command::parse(b"XTND"), Err(BadCommand::Unknown));
        assert_eq!(Command::parse(b"RETRIEVE 1"), Err(BadCommand::Unknown));
        assert_eq!(Command::parse(b"USER a\0b"), Err(BadCommand::BadBytes));
        assert_eq!(Command::parse(b"USER \xff"), Err(BadCommand::BadBytes));
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Command::parse(&line);
        }

        #[test]
        fn numbers_round_trip(n in 1u32..) {
            prop_assert_eq!(Command::parse(format!("RETR {n}").as_bytes()), Ok(Command::Retr(n)));
        }
    }
}
