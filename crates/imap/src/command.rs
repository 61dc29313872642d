//! Client commands (RFC 9051 §6 and the extensions imapd serves): one
//! framed command in, a [`Command`] out, or the reason it is malformed
//! together with its tag when one could be read (for `tag BAD …`).

use crate::parser::{Cursor, Result};
use crate::search::{self, SearchKey, SortCriterion};
use crate::sequence::SequenceSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Bad(String),
}

/// A command that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCommand {
    /// The tag, when the command had one (else the answer is `* BAD`).
    pub tag: Option<String>,
    pub error: ParseError,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    pub body: CommandBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    Capability,
    Noop,
    Logout,
    StartTls,
    /// `initial` is the SASL-IR initial response as sent (`=` for empty).
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Login {
        user: String,
        password: String,
    },
    Enable(Vec<String>),
    Id(Option<Vec<(String, Option<String>)>>),
    Compress(String),
    /// SELECT, or EXAMINE with `read_only`.
    Select {
        mailbox: String,
        read_only: bool,
        params: SelectParams,
    },
    Create {
        mailbox: String,
        /// CREATE-SPECIAL-USE attributes (`\Drafts`…).
        special_use: Vec<String>,
    },
    Delete(String),
    Rename {
        from: String,
        to: String,
    },
    Subscribe(String),
    Unsubscribe(String),
    List(ListCommand),
    Lsub {
        reference: String,
        pattern: String,
    },
    Namespace,
    Status {
        mailbox: String,
        items: Vec<StatusItem>,
    },
    Append {
        mailbox: String,
        flags: Vec<String>,
        date: Option<i64>,
        message: Vec<u8>,
        /// Sent as a literal8 (BINARY): may hold NUL bytes.
        binary: bool,
    },
    Idle,
    Check,
    Close,
    Unselect,
    /// EXPUNGE, or UID EXPUNGE with the UIDs.
    Expunge(Option<SequenceSet>),
    Search {
        uid: bool,
        ret: Option<Vec<SearchReturn>>,
        charset: Option<String>,
        criteria: SearchKey,
    },
    Fetch {
        uid: bool,
        set: SequenceSet,
        items: Vec<FetchAttr>,
        changed_since: Option<u64>,
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SequenceSet,
        unchanged_since: Option<u64>,
        mode: StoreMode,
        silent: bool,
        flags: Vec<String>,
    },
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: String,
    },
    Move {
        uid: bool,
        set: SequenceSet,
        mailbox: String,
    },
    Sort {
        uid: bool,
        ret: Option<Vec<SearchReturn>>,
        criteria: Vec<SortCriterion>,
        charset: String,
        keys: SearchKey,
    },
    Thread {
        uid: bool,
        algorithm: ThreadAlgorithm,
        charset: String,
        keys: SearchKey,
    },
    GetQuota(String),
    GetQuotaRoot(String),
    SetQuota {
        root: String,
        limits: Vec<(String, u64)>,
    },
    GetAcl(String),
    SetAcl {
        mailbox: String,
        identifier: String,
        rights: String,
    },
    DeleteAcl {
        mailbox: String,
        identifier: String,
    },
    ListRights {
        mailbox: String,
        identifier: String,
    },
    MyRights(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectParams {
    pub condstore: bool,
    pub qresync: Option<QResync>,
}

/// QRESYNC parameters of SELECT (RFC 7162 §3.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QResync {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub known_uids: Option<SequenceSet>,
    /// Message numbers and the UIDs the client thinks they have.
    pub seq_match: Option<(SequenceSet, SequenceSet)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListCommand {
    /// Upper-cased: SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE.
    pub selection: Vec<String>,
    pub reference: String,
    pub patterns: Vec<String>,
    pub returns: ListReturn,
    /// Whether the extended syntax was used (answers then always carry
    /// the extended data).
    pub extended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    pub status: Option<Vec<StatusItem>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    Recent,
    HighestModSeq,
    AppendLimit,
    MailboxId,
}

impl StatusItem {
    pub fn name(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::Deleted => "DELETED",
            StatusItem::Size => "SIZE",
            StatusItem::Recent => "RECENT",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::AppendLimit => "APPENDLIMIT",
            StatusItem::MailboxId => "MAILBOXID",
        }
    }
}

/// ESEARCH return options (RFC 4731, RFC 5182's SAVE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchReturn {
    Min,
    Max,
    All,
    Count,
    Save,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    OrderedSubject,
    References,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAttr {
    Envelope,
    Flags,
    InternalDate,
    Rfc822Size,
    Uid,
    BodyStructure,
    /// `BODY` alone: the non-extensible body structure.
    Body,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    /// `BODY[section]<partial>` or `BODY.PEEK[…]`.
    Section {
        peek: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
    /// `BINARY[part]<partial>` or `BINARY.PEEK[…]` (RFC 3516).
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<(u32, u32)>,
    },
    BinarySize {
        part: Vec<u32>,
    },
    ModSeq,
    EmailId,
    ThreadId,
    Preview {
        lazy: bool,
    },
    SaveDate,
}

/// A body section: part numbers, then what of that part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields { not: bool, fields: Vec<String> },
    Text,
    Mime,
}

fn bad(what: impl Into<String>) -> crate::command::ParseError {
    ParseError::Bad(what.into())
}

impl Command {
    /// Parses one framed command (as [`crate::Framer`] cut it, CRLF
    /// included).
    pub fn parse(input: &[u8]) -> std::result::Result<Command, BadCommand> {
        let mut c = Cursor::new(input);
        let tag = match c.tag() {
            Ok(t) => t.to_string(),
            Err(error) => return Err(BadCommand { tag: None, error }),
        };
        let body = (|| {
            c.sp()?;
            let body = body(&mut c)?;
            c.end()?;
            Ok(body)
        })();
        match body {
            Ok(body) => Ok(Command { tag, body }),
            Err(error) => Err(BadCommand {
                tag: Some(tag),
                error,
            }),
        }
    }
}

fn body(c: &mut Cursor<'_>) -> Result<CommandBody> {
    let name = c.atom()?.to_ascii_uppercase();
    let b = match name.as_str() {
        "CAPABILITY" => CommandBody::Capability,
        "NOOP" => CommandBody::Noop,
        "LOGOUT" => CommandBody::Logout,
        "STARTTLS" => CommandBody::StartTls,
        "AUTHENTICATE" => {
            c.sp()?;
            let mechanism = c.atom()?.to_ascii_uppercase();
            let initial = if c.eat(b' ') {
                let ir = c.atom()?;
                Some(ir.to_string())
            } else {
                None
            };
            CommandBody::Authenticate { mechanism, initial }
        }
        "LOGIN" => {
            c.sp()?;
            let user = c.astring()?;
            c.sp()?;
            let password = c.astring()?;
            CommandBody::Login { user, password }
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            while c.eat(b' ') {
                if caps.len() >= 100 {
                    return Err(bad("too many capabilities"));
                }
                caps.push(c.atom()?.to_ascii_uppercase());
            }
            if caps.is_empty() {
                return Err(bad("ENABLE needs a capability"));
            }
            CommandBody::Enable(caps)
        }
        "ID" => {
            c.sp()?;
            if c.eat_word("NIL") {
                CommandBody::Id(None)
            } else {
                let mut pairs = Vec::new();
                let items = c.paren_list(|c| c.nstring())?;
                if items.len() % 2 != 0 || items.len() > 60 {
                    return Err(bad("ID takes up to 30 field and value pairs"));
                }
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k.ok_or_else(|| bad("an ID field cannot be NIL"))?, v));
                }
                CommandBody::Id(Some(pairs))
            }
        }
        "COMPRESS" => {
            c.sp()?;
            CommandBody::Compress(c.atom()?.to_ascii_uppercase())
        }
        "SELECT" | "EXAMINE" => {
            c.sp()?;
            let mailbox = c.astring()?;
            let params = if c.eat(b' ') {
                select_params(c)?
            } else {
                SelectParams::default()
            };
            CommandBody::Select {
                mailbox,
                read_only: name == "EXAMINE",
                params,
            }
        }
        "CREATE" => {
            c.sp()?;
            let mailbox = c.astring()?;
            let mut special_use = Vec::new();
            if c.eat(b' ') {
                c.expect(b'(')?;
                if !c.eat_word("USE ") {
                    return Err(bad("unknown CREATE parameter"));
                }
                special_use = c.flag_list()?;
                c.expect(b')')?;
            }
            CommandBody::Create {
                mailbox,
                special_use,
            }
        }
        "DELETE" | "SUBSCRIBE" | "UNSUBSCRIBE" | "GETQUOTA" | "GETQUOTAROOT" | "GETACL"
        | "MYRIGHTS" => {
            c.sp()?;
            let m = c.astring()?;
            match name.as_str() {
                "DELETE" => CommandBody::Delete(m),
                "SUBSCRIBE" => CommandBody::Subscribe(m),
                "UNSUBSCRIBE" => CommandBody::Unsubscribe(m),
                "GETQUOTA" => CommandBody::GetQuota(m),
                "GETQUOTAROOT" => CommandBody::GetQuotaRoot(m),
                "GETACL" => CommandBody::GetAcl(m),
                _ => CommandBody::MyRights(m),
            }
        }
        "RENAME" => {
            c.sp()?;
            let from = c.astring()?;
            c.sp()?;
            let to = c.astring()?;
            CommandBody::Rename { from, to }
        }
        "LIST" => CommandBody::List(list(c)?),
        "LSUB" => {
            c.sp()?;
            let reference = c.astring()?;
            c.sp()?;
            let pattern = c.list_mailbox()?;
            CommandBody::Lsub { reference, pattern }
        }
        "NAMESPACE" => CommandBody::Namespace,
        "STATUS" => {
            c.sp()?;
            let mailbox = c.astring()?;
            c.sp()?;
            let items = status_items(c)?;
            CommandBody::Status { mailbox, items }
        }
        "APPEND" => {
            c.sp()?;
            let mailbox = c.astring()?;
            c.sp()?;
            let mut flags = Vec::new();
            if c.peek() == Some(b'(') {
                flags = c.flag_list()?;
                c.sp()?;
            }
            let mut date = None;
            if c.peek() == Some(b'"') {
                date = Some(c.date_time()?);
                c.sp()?;
            }
            let (message, binary) = c.append_data()?;
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
                binary,
            }
        }
        "IDLE" => CommandBody::Idle,
        "CHECK" => CommandBody::Check,
        "CLOSE" => CommandBody::Close,
        "UNSELECT" => CommandBody::Unselect,
        "EXPUNGE" => CommandBody::Expunge(None),
        "UID" => {
            c.sp()?;
            let sub = c.atom()?.to_ascii_uppercase();
            match sub.as_str() {
                "EXPUNGE" => {
                    c.sp()?;
                    CommandBody::Expunge(Some(c.sequence_set()?))
                }
                "FETCH" | "STORE" | "SEARCH" | "COPY" | "MOVE" | "SORT" | "THREAD" => {
                    with_set(c, &sub, true)?
                }
                other => return Err(bad(format!("UID {other} is not a command"))),
            }
        }
        "FETCH" | "STORE" | "SEARCH" | "COPY" | "MOVE" | "SORT" | "THREAD" => {
            with_set(c, &name, false)?
        }
        "SETQUOTA" => {
            c.sp()?;
            let root = c.astring()?;
            c.sp()?;
            let flat = c.paren_list(|c| {
                if c.peek().is_some_and(|b| b.is_ascii_digit()) {
                    Ok((None, Some(c.number64()?)))
                } else {
                    Ok((Some(c.atom()?.to_ascii_uppercase()), None))
                }
            })?;
            let mut limits = Vec::new();
            let mut it = flat.into_iter();
            while let Some((name, _)) = it.next() {
                match (name, it.next()) {
                    (Some(n), Some((None, Some(v)))) => limits.push((n, v)),
                    _ => return Err(bad("SETQUOTA takes resource and limit pairs")),
                }
            }
            CommandBody::SetQuota { root, limits }
        }
        "SETACL" | "DELETEACL" | "LISTRIGHTS" => {
            c.sp()?;
            let mailbox = c.astring()?;
            c.sp()?;
            let identifier = c.astring()?;
            match name.as_str() {
                "SETACL" => {
                    c.sp()?;
                    let rights = c.astring()?;
                    CommandBody::SetAcl {
                        mailbox,
                        identifier,
                        rights,
                    }
                }
                "DELETEACL" => CommandBody::DeleteAcl {
                    mailbox,
                    identifier,
                },
                _ => CommandBody::ListRights {
                    mailbox,
                    identifier,
                },
            }
        }
        other => return Err(bad(format!("unknown command {other}"))),
    };
    Ok(b)
}

/// FETCH, STORE, SEARCH, COPY, MOVE, SORT and THREAD, with or without UID.
fn with_set(c: &mut Cursor<'_>, name: &str, uid: bool) -> Result<CommandBody> {
    c.sp()?;
    match name {
        "SEARCH" => {
            let ret = search_return(c)?;
            let mut charset = None;
            if c.eat_word("CHARSET ") {
                charset = Some(c.astring()?);
                c.sp()?;
            }
            let criteria = search::keys(c)?;
            Ok(CommandBody::Search {
                uid,
                ret,
                charset,
                criteria,
            })
        }
        "SORT" => {
            let ret = search_return(c)?;
            let criteria = search::sort_criteria(c)?;
            c.sp()?;
            let charset = c.astring()?;
            c.sp()?;
            let keys = search::keys(c)?;
            Ok(CommandBody::Sort {
                uid,
                ret,
                criteria,
                charset,
                keys,
            })
        }
        "THREAD" => {
            let algorithm = match c.atom()?.to_ascii_uppercase().as_str() {
                "ORDEREDSUBJECT" => ThreadAlgorithm::OrderedSubject,
                "REFERENCES" => ThreadAlgorithm::References,
                other => return Err(bad(format!("unknown thread algorithm {other}"))),
            };
            c.sp()?;
            let charset = c.astring()?;
            c.sp()?;
            let keys = search::keys(c)?;
            Ok(CommandBody::Thread {
                uid,
                algorithm,
                charset,
                keys,
            })
        }
        _ => {
            let set = c.sequence_set()?;
            c.sp()?;
            match name {
                "FETCH" => fetch(c, uid, set),
                "STORE" => store(c, uid, set),
                "COPY" => Ok(CommandBody::Copy {
                    uid,
                    set,
                    mailbox: c.astring()?,
                }),
                _ => Ok(CommandBody::Move {
                    uid,
                    set,
                    mailbox: c.astring()?,
                }),
            }
        }
    }
}

/// `RETURN (…)` of SEARCH and SORT, followed by a space.
fn search_return(c: &mut Cursor<'_>) -> Result<Option<Vec<SearchReturn>>> {
    if !c.eat_word("RETURN ") {
        return Ok(None);
    }
    let ret = c.paren_list(|c| match c.atom()?.to_ascii_uppercase().as_str() {
        "MIN" => Ok(SearchReturn::Min),
        "MAX" => Ok(SearchReturn::Max),
        "ALL" => Ok(SearchReturn::All),
        "COUNT" => Ok(SearchReturn::Count),
        "SAVE" => Ok(SearchReturn::Save),
        other => Err(bad(format!("unknown search return option {other}"))),
    })?;
    c.sp()?;
    Ok(Some(ret))
}

fn select_params(c: &mut Cursor<'_>) -> Result<SelectParams> {
    let mut p = SelectParams::default();
    c.expect(b'(')?;
    c.nest()?;
    loop {
        let word = c.atom()?.to_ascii_uppercase();
        match word.as_str() {
            "CONDSTORE" => p.condstore = true,
            "QRESYNC" => {
                c.sp()?;
                c.expect(b'(')?;
                let uidvalidity = c.nz_number()?;
                c.sp()?;
                let modseq = c.number64()?;
                let mut q = QResync {
                    uidvalidity,
                    modseq,
                    known_uids: None,
                    seq_match: None,
                };
                if c.eat(b' ') {
                    if c.peek() != Some(b'(') {
                        q.known_uids = Some(c.sequence_set()?);
                        c.eat(b' ');
                    }
                    if c.eat(b'(') {
                        let seqs = c.sequence_set()?;
                        c.sp()?;
                        let uids = c.sequence_set()?;
                        c.expect(b')')?;
                        q.seq_match = Some((seqs, uids));
                    }
                }
                c.expect(b')')?;
                p.qresync = Some(q);
            }
            other => return Err(bad(format!("unknown SELECT parameter {other}"))),
        }
        if c.eat(b')') {
            break;
        }
        c.sp()?;
    }
    c.depth -= 1;
    Ok(p)
}

fn status_items(c: &mut Cursor<'_>) -> Result<Vec<StatusItem>> {
    let items = c.paren_list(|c| match c.atom()?.to_ascii_uppercase().as_str() {
        "MESSAGES" => Ok(StatusItem::Messages),
        "UIDNEXT" => Ok(StatusItem::UidNext),
        "UIDVALIDITY" => Ok(StatusItem::UidValidity),
        "UNSEEN" => Ok(StatusItem::Unseen),
        "DELETED" => Ok(StatusItem::Deleted),
        "SIZE" => Ok(StatusItem::Size),
        "RECENT" => Ok(StatusItem::Recent),
        "HIGHESTMODSEQ" => Ok(StatusItem::HighestModSeq),
        "APPENDLIMIT" => Ok(StatusItem::AppendLimit),
        "MAILBOXID" => Ok(StatusItem::MailboxId),
        other => Err(bad(format!("unknown status item {other}"))),
    })?;
    if items.is_empty() {
        return Err(bad("STATUS needs at least one item"));
    }
    Ok(items)
}

fn list(c: &mut Cursor<'_>) -> Result<ListCommand> {
    let mut l = ListCommand::default();
    c.sp()?;
    if c.peek() == Some(b'(') {
        l.extended = true;
        l.selection = c.paren_list(|c| Ok(c.atom()?.to_ascii_uppercase()))?;
        for s in &l.selection {
            if !["SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"].contains(&s.as_str()) {
                return Err(bad(format!("unknown LIST selection option {s}")));
            }
        }
        if l.selection == ["RECURSIVEMATCH"] {
            return Err(bad("RECURSIVEMATCH needs another selection option"));
        }
        c.sp()?;
    }
    l.reference = c.astring()?;
    c.sp()?;
    if c.peek() == Some(b'(') {
        l.extended = true;
        l.patterns = c.paren_list(Cursor::list_mailbox)?;
    } else {
        l.patterns = vec![c.list_mailbox()?];
    }
    if c.eat(b' ') {
        if !c.eat_word("RETURN ") {
            return Err(bad("expected RETURN"));
        }
        l.extended = true;
        c.expect(b'(')?;
        c.nest()?;
        if !c.eat(b')') {
            loop {
                match c.atom()?.to_ascii_uppercase().as_str() {
                    "SUBSCRIBED" => l.returns.subscribed = true,
                    "CHILDREN" => l.returns.children = true,
                    "SPECIAL-USE" => l.returns.special_use = true,
                    "STATUS" => {
                        c.sp()?;
                        l.returns.status = Some(status_items(c)?);
                    }
                    other => return Err(bad(format!("unknown LIST return option {other}"))),
                }
                if c.eat(b')') {
                    break;
                }
                c.sp()?;
            }
        }
        c.depth -= 1;
    }
    Ok(l)
}

fn fetch(c: &mut Cursor<'_>, uid: bool, set: SequenceSet) -> Result<CommandBody> {
    let items = if c.peek() == Some(b'(') {
        let items = c.paren_list(fetch_att)?;
        if items.is_empty() {
            return Err(bad("FETCH needs at least one item"));
        }
        items
    } else if c.eat_word("ALL") {
        vec![
            FetchAttr::Flags,
            FetchAttr::InternalDate,
            FetchAttr::Rfc822Size,
            FetchAttr::Envelope,
        ]
    } else if c.eat_word("FAST") {
        vec![
            FetchAttr::Flags,
            FetchAttr::InternalDate,
            FetchAttr::Rfc822Size,
        ]
    } else if c.eat_word("FULL") {
        vec![
            FetchAttr::Flags,
            FetchAttr::InternalDate,
            FetchAttr::Rfc822Size,
            FetchAttr::Envelope,
            FetchAttr::Body,
        ]
    } else {
        vec![fetch_att(c)?]
    };
    let (mut changed_since, mut vanished) = (None, false);
    if c.eat(b' ') {
        c.expect(b'(')?;
        loop {
            match c.atom()?.to_ascii_uppercase().as_str() {
                "CHANGEDSINCE" => {
                    c.sp()?;
                    changed_since = Some(c.number64()?);
                }
                "VANISHED" => vanished = true,
                other => return Err(bad(format!("unknown FETCH modifier {other}"))),
            }
            if c.eat(b')') {
                break;
            }
            c.sp()?;
        }
        if vanished && (changed_since.is_none() || !uid) {
            return Err(bad("VANISHED goes with UID FETCH and CHANGEDSINCE"));
        }
    }
    Ok(CommandBody::Fetch {
        uid,
        set,
        items,
        changed_since,
        vanished,
    })
}

fn fetch_att(c: &mut Cursor<'_>) -> Result<FetchAttr> {
    // The name runs up to `[`, a space or a parenthesis.
    let start = c.i;
    while c
        .peek()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        c.i += 1;
    }
    let name = String::from_utf8_lossy(&c.rest_from(start)[..c.i - start]).to_ascii_uppercase();
    let a = match name.as_str() {
        "ENVELOPE" => FetchAttr::Envelope,
        "FLAGS" => FetchAttr::Flags,
        "INTERNALDATE" => FetchAttr::InternalDate,
        "RFC822.SIZE" => FetchAttr::Rfc822Size,
        "UID" => FetchAttr::Uid,
        "BODYSTRUCTURE" => FetchAttr::BodyStructure,
        "RFC822" => FetchAttr::Rfc822,
        "RFC822.HEADER" => FetchAttr::Rfc822Header,
        "RFC822.TEXT" => FetchAttr::Rfc822Text,
        "MODSEQ" => FetchAttr::ModSeq,
        "EMAILID" => FetchAttr::EmailId,
        "THREADID" => FetchAttr::ThreadId,
        "SAVEDATE" => FetchAttr::SaveDate,
        "PREVIEW" => {
            let mut lazy = false;
            if c.eat_word(" (") {
                lazy = c.eat_word("LAZY");
                c.expect(b')')?;
            }
            FetchAttr::Preview { lazy }
        }
        "BODY" | "BODY.PEEK" if c.peek() == Some(b'[') => {
            let section = section(c)?;
            FetchAttr::Section {
                peek: name == "BODY.PEEK",
                section,
                partial: partial(c)?,
            }
        }
        "BODY" => FetchAttr::Body,
        "BINARY" | "BINARY.PEEK" | "BINARY.SIZE" => {
            c.expect(b'[')?;
            let part = part_numbers(c)?;
            c.expect(b']')?;
            if name == "BINARY.SIZE" {
                FetchAttr::BinarySize { part }
            } else {
                FetchAttr::Binary {
                    peek: name == "BINARY.PEEK",
                    part,
                    partial: partial(c)?,
                }
            }
        }
        other => return Err(bad(format!("unknown FETCH item {other}"))),
    };
    Ok(a)
}

/// `1.2.3` (possibly empty), stopping before a `.` that is not followed
/// by a digit.
fn part_numbers(c: &mut Cursor<'_>) -> Result<Vec<u32>> {
    let mut part = Vec::new();
    while c.peek().is_some_and(|b| b.is_ascii_digit()) {
        if part.len() >= 100 {
            return Err(bad("section part nested too deeply"));
        }
        part.push(c.nz_number()?);
        let r = c.rest();
        if r.len() >= 2 && r[0] == b'.' && r[1].is_ascii_digit() {
            c.i += 1;
        } else {
            break;
        }
    }
    Ok(part)
}

fn section(c: &mut Cursor<'_>) -> Result<Section> {
    c.expect(b'[')?;
    let part = part_numbers(c)?;
    if part.is_empty() || !c.eat(b'.') {
        if c.eat(b']') {
            return Ok(Section { part, text: None });
        }
        if !part.is_empty() {
            return Err(bad("bad section"));
        }
    }
    let not = c.eat_word("HEADER.FIELDS.NOT ");
    let text = if not || c.eat_word("HEADER.FIELDS ") {
        let fields = c.paren_list(Cursor::astring)?;
        if fields.is_empty() {
            return Err(bad("HEADER.FIELDS needs field names"));
        }
        SectionText::HeaderFields { not, fields }
    } else if c.eat_word("HEADER") {
        SectionText::Header
    } else if c.eat_word("TEXT") {
        SectionText::Text
    } else if !part.is_empty() && c.eat_word("MIME") {
        SectionText::Mime
    } else {
        return Err(bad("bad section"));
    };
    c.expect(b']')?;
    Ok(Section {
        part,
        text: Some(text),
    })
}

/// `<offset.length>`.
fn partial(c: &mut Cursor<'_>) -> Result<Option<(u32, u32)>> {
    if !c.eat(b'<') {
        return Ok(None);
    }
    let offset = c.number()?;
    c.expect(b'.')?;
    let len = c.nz_number()?;
    c.expect(b'>')?;
    Ok(Some((offset, len)))
}

fn store(c: &mut Cursor<'_>, uid: bool, set: SequenceSet) -> Result<CommandBody> {
    let mut unchanged_since = None;
    if c.eat(b'(') {
        if !c.eat_word("UNCHANGEDSINCE ") {
            return Err(bad("unknown STORE modifier"));
        }
        unchanged_since = Some(c.number64()?);
        c.expect(b')')?;
        c.sp()?;
    }
    let mode = if c.eat(b'+') {
        StoreMode::Add
    } else if c.eat(b'-') {
        StoreMode::Remove
    } else {
        StoreMode::Replace
    };
    if !c.eat_word("FLAGS") {
        return Err(bad("expected FLAGS"));
    }
    let silent = c.eat_word(".SILENT");
    c.sp()?;
    let flags = if c.peek() == Some(b'(') {
        c.flag_list()?
    } else {
        let mut f = vec![c.flag()?];
        while c.eat(b' ') {
            if f.len() >= 1000 {
                return Err(bad("too many flags"));
            }
            f.push(c.flag()?);
        }
        f
    };
    Ok(CommandBody::Store {
        uid,
        set,
        unchanged_since,
        mode,
        silent,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CommandBody {
        match Command::parse(s.as_bytes()) {
            Ok(c) => c.body,
            Err(e) => panic!("{s:?}: {e:?}"),
        }
    }

    fn refused(s: &str) -> BadCommand {
        Command::parse(s.as_bytes()).expect_err(s)
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse("a1 CAPABILITY\r\n"), CommandBody::Capability);
        assert_eq!(parse("a1 noop\r\n"), CommandBody::Noop);
        assert_eq!(
            parse("a LOGIN joe \"se cret\"\r\n"),
            CommandBody::Login {
                user: "joe".into(),
                password: "se cret".into()
            }
        );
        assert_eq!(
            parse("a LOGIN {3}\r\njoe {2+}\r\npw\r\n"),
            CommandBody::Login {
                user: "joe".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            parse("a AUTHENTICATE plain AGpvZQBwdw==\r\n"),
            CommandBody::Authenticate {
                mechanism: "PLAIN".into(),
                initial: Some("AGpvZQBwdw==".into())
            }
        );
        assert_eq!(
            parse("a ENABLE CONDSTORE utf8=accept\r\n"),
            CommandBody::Enable(vec!["CONDSTORE".into(), "UTF8=ACCEPT".into()])
        );
        assert_eq!(
            parse("a ID (\"name\" \"mutt\" \"os\" NIL)\r\n"),
            CommandBody::Id(Some(vec![
                ("name".into(), Some("mutt".into())),
                ("os".into(), None)
            ]))
        );
        assert_eq!(parse("a ID NIL\r\n"), CommandBody::Id(None));
        assert_eq!(
            parse("a UID EXPUNGE 3:5\r\n"),
            CommandBody::Expunge(Some(SequenceSet::parse("3:5").unwrap()))
        );
    }

    #[test]
    fn select_and_list() {
        assert_eq!(
            parse("a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n"),
            CommandBody::Select {
                mailbox: "INBOX".into(),
                read_only: false,
                params: SelectParams {
                    condstore: false,
                    qresync: Some(QResync {
                        uidvalidity: 67_890_007,
                        modseq: 20_050_715_194_045_000,
                        known_uids: SequenceSet::parse("41,43:211,214:541"),
                        seq_match: None,
                    }),
                },
            }
        );
        let CommandBody::List(l) = parse(
            "a LIST (SUBSCRIBED) \"\" (\"INBOX\" %/%) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n",
        ) else {
            panic!()
        };
        assert_eq!(l.selection, ["SUBSCRIBED"]);
        assert_eq!(l.patterns, ["INBOX", "%/%"]);
        assert!(l.returns.children && l.extended);
        assert_eq!(
            l.returns.status,
            Some(vec![StatusItem::Messages, StatusItem::Unseen])
        );
        let CommandBody::List(l) = parse("a list \"\" *\r\n") else {
            panic!()
        };
        assert!(!l.extended && l.patterns == ["*"]);
        assert_eq!(
            parse("a CREATE Drafts (USE (\\Drafts))\r\n"),
            CommandBody::Create {
                mailbox: "Drafts".into(),
                special_use: vec!["\\Drafts".into()]
            }
        );
    }

    #[test]
    fn fetch_items() {
        let CommandBody::Fetch {
            uid,
            items,
            changed_since,
            vanished,
            ..
        } = parse(
            "a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)] BODY[1.2.MIME] BODY[]<0.100> BINARY.PEEK[1] BINARY.SIZE[2] RFC822.SIZE PREVIEW (LAZY)) (CHANGEDSINCE 12345 VANISHED)\r\n",
        )
        else {
            panic!()
        };
        assert!(uid && vanished);
        assert_eq!(changed_since, Some(12345));
        assert_eq!(
            items,
            vec![
                FetchAttr::Flags,
                FetchAttr::Section {
                    peek: true,
                    section: Section {
                        part: vec![],
                        text: Some(SectionText::HeaderFields {
                            not: false,
                            fields: vec!["From".into(), "Subject".into()]
                        })
                    },
                    partial: None
                },
                FetchAttr::Section {
                    peek: false,
                    section: Section {
                        part: vec![1, 2],
                        text: Some(SectionText::Mime)
                    },
                    partial: None
                },
                FetchAttr::Section {
                    peek: false,
                    section: Section::default(),
                    partial: Some((0, 100))
                },
                FetchAttr::Binary {
                    peek: true,
                    part: vec![1],
                    partial: None
                },
                FetchAttr::BinarySize { part: vec![2] },
                FetchAttr::Rfc822Size,
                FetchAttr::Preview { lazy: true },
            ]
        );
        let CommandBody::Fetch { items, .. } = parse("a FETCH 1 body[header.fields.not (x)]\r\n")
        else {
            panic!()
        };
        assert!(matches!(
            &items[0],
            FetchAttr::Section {
                section: Section {
                    text: Some(SectionText::HeaderFields { not: true, .. }),
                    ..
                },
                ..
            }
        ));
        assert!(
            matches!(parse("a FETCH 1:3 FAST\r\n"), CommandBody::Fetch { items, .. } if items.len() == 3)
        );
        assert!(
            matches!(parse("a FETCH 2 BODY\r\n"), CommandBody::Fetch { items, .. } if items == [FetchAttr::Body])
        );
    }

    #[test]
    fn store_append_search_sort() {
        assert_eq!(
            parse("a UID STORE 1:4 (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Seen $Junk)\r\n"),
            CommandBody::Store {
                uid: true,
                set: SequenceSet::parse("1:4").unwrap(),
                unchanged_since: Some(9),
                mode: StoreMode::Add,
                silent: true,
                flags: vec!["\\Seen".into(), "$Junk".into()],
            }
        );
        assert_eq!(
            parse("a APPEND Sent (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {5+}\r\nhello\r\n"),
            CommandBody::Append {
                mailbox: "Sent".into(),
                flags: vec!["\\Seen".into()],
                date: Some(837_596_665),
                message: b"hello".to_vec(),
                binary: false,
            }
        );
        assert!(matches!(
            parse("a APPEND x ~{3+}\r\na\0b\r\n"),
            CommandBody::Append { binary: true, .. }
        ));
        assert!(matches!(
            parse("a UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 SUBJECT \"héllo\"\r\n"),
            CommandBody::Search { uid: true, ret: Some(r), charset: Some(_), .. } if r == [SearchReturn::Min, SearchReturn::Count]
        ));
        assert!(matches!(
            parse("a SORT (REVERSE DATE SUBJECT) UTF-8 ALL\r\n"),
            CommandBody::Sort { criteria, .. } if criteria.len() == 2 && criteria[0].reverse
        ));
        assert!(matches!(
            parse("a UID THREAD REFERENCES UTF-8 UNDELETED\r\n"),
            CommandBody::Thread {
                uid: true,
                algorithm: ThreadAlgorithm::References,
                ..
            }
        ));
        assert_eq!(
            parse("a SETQUOTA \"\" (STORAGE 512)\r\n"),
            CommandBody::SetQuota {
                root: "".into(),
                limits: vec![("STORAGE".into(), 512)]
            }
        );
    }

    #[test]
    fn malformed_commands_keep_their_tag() {
        assert_eq!(refused("a1 FROB\r\n").tag.as_deref(), Some("a1"));
        assert_eq!(refused("\r\n").tag, None);
        assert_eq!(refused("+ NOOP\r\n").tag, None);
        for s in [
            "a NOOP extra\r\n",
            "a LOGIN joe\r\n",
            "a SELECT\r\n",
            "a FETCH 0 FLAGS\r\n",
            "a FETCH 1 (FLAGS\r\n",
            "a FETCH 1 BODY[1.]\r\n",
            "a FETCH 1 BODY[]<5.0>\r\n",
            "a STORE 1 FLAGS (\\Seen\r\n",
            "a APPEND x {10+}\r\nshort\r\n",
            "a APPEND x {3+}\r\na\0b\r\n",
            "a LOGIN \"a\rb\" x\r\n",
            "a UID FROB 1\r\n",
            "a FETCH 1 FLAGS (VANISHED)\r\n",
        ] {
            assert!(refused(s).tag.is_some(), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Command::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_near_commands(
            words in proptest::collection::vec(proptest::sample::select(vec![
                "a", " ", "UID", "FETCH", "1:*", "(", ")", "BODY[", "]", "<0.1>", "{2}\r\nab",
                "{1+}\r\n", "\"x\"", "SEARCH", "NOT", "OR", "STORE", "+FLAGS", "\\Seen", "SELECT",
                "LIST", "RETURN", "STATUS", "*", "%", "$", "\r\n", "HEADER.FIELDS", "~{1}\r\n",
            ]), 0..30)
        ) {
            let _ = Command::parse(words.concat().as_bytes());
        }
    }
}
