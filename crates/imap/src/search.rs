//! SEARCH keys (RFC 9051 §6.4.4, CONDSTORE's MODSEQ, OBJECTID's EMAILID
//! and THREADID) and SORT criteria (RFC 5256).

use crate::command::ParseError;
use crate::parser::{Cursor, Result};
use crate::sequence::SequenceSet;

/// A civil date (year, month, day), as SEARCH compares them.
pub type Date = (i32, u32, u32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    /// Message numbers.
    Sequence(SequenceSet),
    Uid(SequenceSet),
    /// A system flag or keyword set (`\Seen`, `$Junk`…).
    Flag(String),
    /// … or not set.
    NotFlag(String),
    New,
    Old,
    Recent,
    /// Header field contains text (`From`, `Subject`… and HEADER).
    Header(String, String),
    Body(String),
    Text(String),
    Before(Date),
    On(Date),
    Since(Date),
    SentBefore(Date),
    SentOn(Date),
    SentSince(Date),
    Larger(u64),
    Smaller(u64),
    ModSeq(u64),
    EmailId(String),
    ThreadId(String),
    Not(Box<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    /// Keys in parentheses, or several keys in a row: all must match.
    And(Vec<SearchKey>),
}

fn bad(what: &str) -> ParseError {
    ParseError::Bad(what.into())
}

/// Keys up to the end of the command: all must match.
pub(crate) fn keys(c: &mut Cursor<'_>) -> Result<SearchKey> {
    let mut all = vec![key(c)?];
    while c.eat(b' ') {
        if all.len() >= 1000 {
            return Err(bad("too many search keys"));
        }
        all.push(key(c)?);
    }
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        SearchKey::And(all)
    })
}

fn key(c: &mut Cursor<'_>) -> Result<SearchKey> {
    if c.peek() == Some(b'(') {
        c.nest()?;
        c.expect(b'(')?;
        let mut all = vec![key(c)?];
        while c.eat(b' ') {
            if all.len() >= 1000 {
                return Err(bad("too many search keys"));
            }
            all.push(key(c)?);
        }
        c.expect(b')')?;
        c.depth -= 1;
        return Ok(SearchKey::And(all));
    }
    if c.peek()
        .is_some_and(|b| b.is_ascii_digit() || b == b'*' || b == b'$')
    {
        return c.sequence_set().map(SearchKey::Sequence);
    }
    let word = c.atom()?.to_ascii_uppercase();
    let flag = |f: &str| Ok(SearchKey::Flag(f.into()));
    let not_flag = |f: &str| Ok(SearchKey::NotFlag(f.into()));
    match word.as_str() {
        "ALL" => Ok(SearchKey::All),
        "ANSWERED" => flag("\\Answered"),
        "DELETED" => flag("\\Deleted"),
        "DRAFT" => flag("\\Draft"),
        "FLAGGED" => flag("\\Flagged"),
        "SEEN" => flag("\\Seen"),
        "UNANSWERED" => not_flag("\\Answered"),
        "UNDELETED" => not_flag("\\Deleted"),
        "UNDRAFT" => not_flag("\\Draft"),
        "UNFLAGGED" => not_flag("\\Flagged"),
        "UNSEEN" => not_flag("\\Seen"),
        "NEW" => Ok(SearchKey::New),
        "OLD" => Ok(SearchKey::Old),
        "RECENT" => Ok(SearchKey::Recent),
        "KEYWORD" | "UNKEYWORD" => {
            c.sp()?;
            let k = c.flag()?;
            if word == "KEYWORD" {
                Ok(SearchKey::Flag(k))
            } else {
                Ok(SearchKey::NotFlag(k))
            }
        }
        "BCC" | "CC" | "FROM" | "SUBJECT" | "TO" => {
            c.sp()?;
            let field = match word.as_str() {
                "BCC" => "Bcc",
                "CC" => "Cc",
                "FROM" => "From",
                "SUBJECT" => "Subject",
                _ => "To",
            };
            Ok(SearchKey::Header(field.into(), c.astring()?))
        }
        "HEADER" => {
            c.sp()?;
            let field = c.astring()?;
            c.sp()?;
            Ok(SearchKey::Header(field, c.astring()?))
        }
        "BODY" => {
            c.sp()?;
            Ok(SearchKey::Body(c.astring()?))
        }
        "TEXT" => {
            c.sp()?;
            Ok(SearchKey::Text(c.astring()?))
        }
        "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
            c.sp()?;
            let d = c.date()?;
            Ok(match word.as_str() {
                "BEFORE" => SearchKey::Before(d),
                "ON" => SearchKey::On(d),
                "SINCE" => SearchKey::Since(d),
                "SENTBEFORE" => SearchKey::SentBefore(d),
                "SENTON" => SearchKey::SentOn(d),
                _ => SearchKey::SentSince(d),
            })
        }
        "LARGER" | "SMALLER" => {
            c.sp()?;
            let n = c.number64()?;
            Ok(if word == "LARGER" {
                SearchKey::Larger(n)
            } else {
                SearchKey::Smaller(n)
            })
        }
        "UID" => {
            c.sp()?;
            c.sequence_set().map(SearchKey::Uid)
        }
        "NOT" => {
            c.sp()?;
            c.nest()?;
            let k = key(c)?;
            c.depth -= 1;
            Ok(SearchKey::Not(Box::new(k)))
        }
        "OR" => {
            c.nest()?;
            c.sp()?;
            let a = key(c)?;
            c.sp()?;
            let b = key(c)?;
            c.depth -= 1;
            Ok(SearchKey::Or(Box::new(a), Box::new(b)))
        }
        "MODSEQ" => {
            c.sp()?;
            // An optional entry name and type (per-flag mod-sequences),
            // which this server keeps as one.
            if c.peek() == Some(b'"') {
                c.string()?;
                c.sp()?;
                let t = c.atom()?.to_ascii_lowercase();
                if !["priv", "shared", "all"].contains(&t.as_str()) {
                    return Err(bad("bad MODSEQ entry type"));
                }
                c.sp()?;
            }
            Ok(SearchKey::ModSeq(c.number64()?))
        }
        "EMAILID" | "THREADID" => {
            c.sp()?;
            let id = c.atom()?.to_string();
            Ok(if word == "EMAILID" {
                SearchKey::EmailId(id)
            } else {
                SearchKey::ThreadId(id)
            })
        }
        _ => Err(ParseError::Bad(format!("unknown search key {word}"))),
    }
}

/// A SORT criterion (RFC 5256; DISPLAYFROM/DISPLAYTO of RFC 5957).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortCriterion {
    pub reverse: bool,
    pub key: SortKey,
}

pub(crate) fn sort_criteria(c: &mut Cursor<'_>) -> Result<Vec<SortCriterion>> {
    let list = c.paren_list(|c| {
        let reverse = c.eat_word("REVERSE ");
        let key = match c.atom()?.to_ascii_uppercase().as_str() {
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            "DISPLAYFROM" => SortKey::DisplayFrom,
            "DISPLAYTO" => SortKey::DisplayTo,
            other => return Err(ParseError::Bad(format!("unknown sort key {other}"))),
        };
        Ok(SortCriterion { reverse, key })
    })?;
    if list.is_empty() {
        return Err(bad("no sort criteria"));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SearchKey> {
        let mut c = Cursor::new(s.as_bytes());
        keys(&mut c)
    }

    #[test]
    fn keys_parse() {
        assert_eq!(
            parse("UNSEEN FROM \"Ann\" OR 1:3 NOT (DELETED SINCE 1-Feb-2024)").unwrap(),
            SearchKey::And(vec![
                SearchKey::NotFlag("\\Seen".into()),
                SearchKey::Header("From".into(), "Ann".into()),
                SearchKey::Or(
                    Box::new(SearchKey::Sequence(SequenceSet::parse("1:3").unwrap())),
                    Box::new(SearchKey::Not(Box::new(SearchKey::And(vec![
                        SearchKey::Flag("\\Deleted".into()),
                        SearchKey::Since((2024, 2, 1)),
                    ])))),
                ),
            ])
        );
        assert_eq!(parse("$").unwrap(), SearchKey::Sequence(SequenceSet::Saved));
        assert!(parse("FROM").is_err());
        assert!(parse("BOGUS").is_err());
        let deep = format!("{}ALL{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).is_err(), "nesting is bounded");
        let nots = format!("{}ALL", "NOT ".repeat(40));
        assert!(parse(&nots).is_err(), "NOT chains are bounded");
    }
}
