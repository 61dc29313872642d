//! The selected mailbox: the session's numbered view of it (message
//! sequence numbers are positions in `messages`), the changes other
//! sessions made that wait to be reported, and the commands that work on
//! messages — FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT.
//!
//! Changes come from stored as events and are reported only where RFC
//! 9051 §7.5.1 allows: EXPUNGE never during FETCH, STORE or SEARCH by
//! sequence number, so the numbers a client holds stay right.

use std::collections::VecDeque;
use std::path::PathBuf;

use epistle_imap::command::{
    FetchAttr, QResync, SearchReturn, Section, SectionText, StoreMode, ThreadAlgorithm,
};
use epistle_imap::search::SearchKey;
use epistle_imap::sequence::{SequenceSet, compact};
use epistle_imap::{CommandBody, response};
use epistle_ipc::store::{
    FlagOp, MessageInfo, MessageStructure, StoreError, StoreEvent, StoreReply, StoreRequest,
    mailbox_object_id, message_file,
};
use epistle_ipc::store_client::{OpenMailbox, StoreClient, read_message_file};

use crate::flag_lists::{FlagLists, FlagsId, has_flag};
use crate::render;
use crate::search::{self, Candidate, Extent};
use crate::session::{Result, Session};

const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];
/// Changes kept for reporting before the view is rebuilt instead.
const MAX_PENDING: usize = 100_000;

/// A message in the view: 32 bytes, since a view holds one for every
/// message and a session one view.
#[derive(Debug, Clone, Copy)]
pub struct Msg {
    pub uid: u32,
    /// Its flags, a list of the view's [`FlagLists`].
    pub flags: FlagsId,
    pub modseq: u64,
    pub size: u64,
    pub internal_date: i64,
}

pub struct Selected {
    /// The store's name.
    pub name: String,
    /// Where its message files are.
    dir: PathBuf,
    /// RFC 8474 MAILBOXID.
    mailbox_id: String,
    /// The session's user owns it: the index entries that come with
    /// events are as this user sees them.
    own: bool,
    pub read_only: bool,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    pub messages: Vec<Msg>,
    flag_lists: FlagLists,
    pending: VecDeque<StoreEvent>,
    /// Too many changes were waiting: the view is read again.
    rebuild: bool,
    /// SEARCHRES's saved result (UIDs).
    pub saved: Vec<u32>,
}

impl Selected {
    pub fn new(name: String, read_only: bool, own: bool, open: OpenMailbox) -> Selected {
        let info = &open.info.record;
        let mut flag_lists = FlagLists::default();
        let messages: Vec<Msg> = open
            .messages
            .iter()
            .map(|m| entry(&mut flag_lists, m))
            .collect();
        // The status and the index may be a commit apart.
        let uidnext = messages.last().map_or(0, |m| m.uid + 1).max(info.uidnext);
        let highest_modseq = messages
            .iter()
            .map(|m| m.modseq)
            .fold(info.highest_modseq, u64::max);
        Selected {
            name,
            dir: open.dir,
            mailbox_id: mailbox_object_id(info.id),
            own,
            read_only,
            uidvalidity: info.uidvalidity,
            uidnext,
            highest_modseq,
            messages,
            flag_lists,
            pending: VecDeque::new(),
            rebuild: false,
            saved: Vec::new(),
        }
    }

    /// Message `i`'s flags.
    pub fn flags(&self, i: usize) -> &[String] {
        self.flag_lists.get(self.messages[i].flags)
    }

    pub fn has_flag(&self, i: usize, flag: &str) -> bool {
        has_flag(self.flags(i), flag)
    }

    /// Message `i`'s flags and mod-sequence as the store says they are
    /// now.
    fn set_flags(&mut self, i: usize, m: &MessageInfo) {
        self.messages[i].flags = self.flag_lists.intern(&m.record.flags);
        self.messages[i].modseq = m.record.modseq;
        if self.flag_lists.needs_compacting(self.messages.len()) {
            self.flag_lists
                .compact(self.messages.iter_mut().map(|m| &mut m.flags));
        }
    }

    /// Adds a message to the end of the view.
    fn push(&mut self, m: &MessageInfo) {
        let e = entry(&mut self.flag_lists, m);
        self.messages.push(e);
    }

    /// The untagged lines that open a SELECT.
    pub fn announce(&self, s: &mut Session) {
        let mut keywords: Vec<&str> = SYSTEM_FLAGS.to_vec();
        for m in &self.messages {
            for f in self.flag_lists.get(m.flags) {
                if !f.starts_with('\\') && !keywords.contains(&f.as_str()) && keywords.len() < 200 {
                    keywords.push(f);
                }
            }
        }
        s.line(&format!("* FLAGS ({})", keywords.join(" ")));
        if self.read_only {
            s.line("* OK [PERMANENTFLAGS ()] Read-only mailbox");
        } else {
            s.line(&format!(
                "* OK [PERMANENTFLAGS ({} \\*)] Flags permitted",
                SYSTEM_FLAGS.join(" ")
            ));
        }
        s.line(&format!("* {} EXISTS", self.messages.len()));
        // IMAP4rev2 dropped RECENT and the UNSEEN code.
        if !s.rev2 {
            s.line("* 0 RECENT");
            if let Some(i) = (0..self.messages.len()).position(|i| !self.has_flag(i, "\\Seen")) {
                s.line(&format!("* OK [UNSEEN {}] First unseen", i + 1));
            }
        }
        s.line(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid",
            self.uidvalidity
        ));
        s.line(&format!(
            "* OK [UIDNEXT {}] Predicted next UID",
            self.uidnext
        ));
        s.line(&format!(
            "* OK [MAILBOXID ({})] Mailbox id",
            self.mailbox_id
        ));
        if s.condstore {
            s.line(&format!(
                "* OK [HIGHESTMODSEQ {}] Highest",
                self.highest_modseq
            ));
        }
    }

    /// QRESYNC at SELECT (RFC 7162 §3.2.5): what vanished and what
    /// changed since the client's mod-sequence, before the tagged OK.
    pub fn resynchronize(&self, s: &mut Session, q: &QResync) {
        let known = q
            .known_uids
            .as_ref()
            .map(|k| k.resolved(self.uidnext.saturating_sub(1).max(1)));
        let missing = self.missing_uids(known.as_deref());
        if !missing.is_empty() {
            s.line(&format!("* VANISHED (EARLIER) {missing}"));
        }
        for i in 0..self.messages.len() {
            if self.messages[i].modseq > q.modseq {
                self.flags_line(s, i);
            }
        }
    }

    /// Keeps another session's change for the next report.
    /// Events were lost: the view is read again at the next point where
    /// changes may be reported.
    pub fn read_again(&mut self) {
        self.pending.clear();
        self.rebuild = true;
    }

    pub fn queue(&mut self, ev: StoreEvent) {
        if ev.mailbox() != self.name {
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
            self.rebuild = true;
            return;
        }
        self.pending.push_back(ev);
    }

    fn position(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    fn last_uid(&self) -> u32 {
        self.messages.last().map_or(0, |m| m.uid)
    }

    /// One message's flags as an untagged FETCH.
    fn flags_line(&self, s: &mut Session, i: usize) {
        let m = &self.messages[i];
        let mut l = format!("* {} FETCH (UID {} FLAGS ", i + 1, m.uid).into_bytes();
        response::flags(&mut l, self.flags(i));
        if s.condstore {
            l.extend_from_slice(format!(" MODSEQ ({})", m.modseq).as_bytes());
        }
        l.extend_from_slice(b")\r\n");
        s.out.extend_from_slice(&l);
    }

    /// Takes messages out of the view and says so: one EXPUNGE per
    /// message (highest number first, so each number is right when
    /// read), or with QRESYNC one VANISHED for them all.
    fn expunge_uids(&mut self, s: &mut Session, uids: &[u32]) {
        let mut gone: Vec<(usize, u32)> = uids
            .iter()
            .filter_map(|&u| self.position(u).map(|i| (i, u)))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        for &(i, _) in gone.iter().rev() {
            self.messages.remove(i);
            if !s.qresync {
                s.line(&format!("* {} EXPUNGE", i + 1));
            }
        }
        if s.qresync && !gone.is_empty() {
            let mut u: Vec<u32> = gone.iter().map(|g| g.1).collect();
            u.sort_unstable();
            s.line(&format!("* VANISHED {}", compact(&u)));
        }
    }

    /// UIDs below UIDNEXT (and within `within`, when given) that are not
    /// in the mailbox: what QRESYNC reports as VANISHED (EARLIER). Without
    /// a record of expunges, every missing UID is named; RFC 7162 lets a
    /// server name UIDs the client never saw.
    pub fn missing_uids(&self, within: Option<&[(u32, u32)]>) -> String {
        let top = self.uidnext.saturating_sub(1);
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        let mut next = 1u32;
        for m in self
            .messages
            .iter()
            .map(|m| m.uid)
            .chain([top.saturating_add(1)])
        {
            if m > next {
                ranges.push((next, m - 1));
            }
            next = m.saturating_add(1);
        }
        if let Some(w) = within {
            ranges = ranges
                .into_iter()
                .flat_map(|(a, b)| {
                    w.iter().filter_map(move |&(x, y)| {
                        let (lo, hi) = (a.max(x), b.min(y));
                        (lo <= hi).then_some((lo, hi))
                    })
                })
                .collect();
        }
        ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}:{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reports waiting changes, in order; stops at an expunge when
    /// expunges may not be reported now.
    pub async fn report(&mut self, s: &mut Session, expunges: bool) -> Result<()> {
        let before = self.messages.len();
        let mut new_messages = false;
        if self.rebuild && expunges {
            self.rebuild = false;
            self.resync(s).await?;
        }
        while let Some(ev) = self.pending.pop_front() {
            match &ev {
                StoreEvent::Expunged { uids, .. } => {
                    if !expunges {
                        self.pending.push_front(ev);
                        break;
                    }
                    self.expunge_uids(s, uids);
                }
                StoreEvent::Exists {
                    after,
                    messages,
                    status,
                    ..
                } => {
                    if messages.iter().any(|m| m.uid > self.last_uid()) {
                        // Right after the view's last message: added as
                        // they come; otherwise (another message came
                        // between, or one went) read from the index.
                        if self.own && *after == self.last_uid() && !new_messages {
                            for m in messages {
                                self.highest_modseq = self.highest_modseq.max(m.record.modseq);
                                self.push(m);
                            }
                        } else {
                            new_messages = true;
                        }
                    }
                    self.uidnext = self.uidnext.max(status.uidnext);
                }
                StoreEvent::Flags {
                    messages, status, ..
                } => {
                    self.highest_modseq = self.highest_modseq.max(status.highest_modseq);
                    for m in messages {
                        if let Some(i) = self.position(m.uid)
                            && m.record.modseq > self.messages[i].modseq
                        {
                            self.set_flags(i, m);
                            self.flags_line(s, i);
                        }
                    }
                }
                StoreEvent::Gone { .. } => {}
            }
        }
        if new_messages {
            self.fetch_new(s).await?;
        }
        if self.messages.len() > before || new_messages {
            s.line(&format!("* {} EXISTS", self.messages.len()));
        }
        Ok(())
    }

    /// Reads the index entries above the last UID this view has.
    async fn fetch_new(&mut self, s: &mut Session) -> Result<()> {
        let store = s.store()?;
        loop {
            let after = self.last_uid();
            let reply = store
                .request(StoreRequest::Messages {
                    name: self.name.clone(),
                    after,
                })
                .await;
            let Ok(StoreReply::Messages { messages }) = reply else {
                return Ok(());
            };
            let n = messages.len();
            for m in &messages {
                self.uidnext = self.uidnext.max(m.uid + 1);
                self.highest_modseq = self.highest_modseq.max(m.record.modseq);
                self.push(m);
            }
            if n < epistle_ipc::store::INDEX_PAGE {
                return Ok(());
            }
        }
    }

    /// The view read again after changes were lost: what is gone is
    /// reported expunged, flags that differ are reported, new messages
    /// added.
    async fn resync(&mut self, s: &mut Session) -> Result<()> {
        let Ok(index) = s.store()?.messages(&self.name).await else {
            return Ok(());
        };
        let now: std::collections::HashMap<u32, &MessageInfo> =
            index.iter().map(|m| (m.uid, m)).collect();
        let gone: Vec<u32> = self
            .messages
            .iter()
            .map(|m| m.uid)
            .filter(|u| !now.contains_key(u))
            .collect();
        self.expunge_uids(s, &gone);
        for i in 0..self.messages.len() {
            let m = now[&self.messages[i].uid];
            if m.record.flags != self.flags(i) {
                self.set_flags(i, m);
                self.flags_line(s, i);
            }
        }
        let last = self.last_uid();
        for m in index.iter().filter(|m| m.uid > last) {
            self.push(m);
        }
        Ok(())
    }

    /// Positions (0-based) a set names: message numbers, or UIDs.
    fn resolve(&self, set: &SequenceSet, uid: bool) -> std::result::Result<Vec<usize>, String> {
        if let SequenceSet::Saved = set {
            return Ok(self
                .saved
                .iter()
                .filter_map(|u| self.position(*u))
                .collect());
        }
        if uid {
            let largest = self.last_uid();
            if largest == 0 {
                return Ok(Vec::new());
            }
            let ranges = set.resolved(largest);
            return Ok(self
                .messages
                .iter()
                .enumerate()
                .filter(|(_, m)| ranges.iter().any(|(a, b)| *a <= m.uid && m.uid <= *b))
                .map(|(i, _)| i)
                .collect());
        }
        let n = self.messages.len() as u32;
        if n == 0 {
            return Err("No messages in the mailbox".into());
        }
        let mut out = Vec::new();
        for (a, b) in set.resolved(n) {
            if b > n {
                return Err("Message sequence number out of range".into());
            }
            out.extend((a..=b).map(|i| (i - 1) as usize));
        }
        Ok(out)
    }
}

/// Runs a command that needs the selected mailbox.
pub async fn command(s: &mut Session, tag: &str, body: CommandBody) -> Result<()> {
    let Some(mut sel) = s.selected.take() else {
        s.line(&format!("{tag} BAD No mailbox selected"));
        return Ok(());
    };
    // EXPUNGE responses would renumber what a FETCH, STORE or SEARCH by
    // number is about.
    let expunges_ok = !matches!(
        body,
        CommandBody::Fetch { uid: false, .. }
            | CommandBody::Store { uid: false, .. }
            | CommandBody::Search { uid: false, .. }
    );
    let keep = run(s, &mut sel, tag, body).await;
    let keep = match keep {
        Ok(k) => k,
        Err(e) => {
            s.selected = Some(sel);
            return Err(e);
        }
    };
    if keep {
        // Collect what arrived meanwhile, then report.
        s.selected = Some(sel);
        s.report_changes(expunges_ok).await?;
    }
    Ok(())
}

/// The command's work; `false` when the mailbox is no longer selected.
async fn run(s: &mut Session, sel: &mut Selected, tag: &str, body: CommandBody) -> Result<bool> {
    match body {
        CommandBody::Check => s.ok(tag, "CHECK completed"),
        CommandBody::Close | CommandBody::Unselect => {
            let close = matches!(body, CommandBody::Close);
            let store = s.store()?;
            if close && !sel.read_only {
                let _ = store.expunge(&sel.name, None).await;
            }
            let _ = store.watch(&sel.name, false).await;
            s.ok(
                tag,
                if close {
                    "CLOSE completed"
                } else {
                    "UNSELECT completed"
                },
            );
            return Ok(false);
        }
        CommandBody::Expunge(uids) => {
            if sel.read_only {
                s.line(&format!("{tag} NO [READ-ONLY] The mailbox is read-only"));
                return Ok(true);
            }
            let only = match &uids {
                Some(set) => match sel.resolve(set, true) {
                    Ok(ix) => Some(ix.iter().map(|&i| sel.messages[i].uid).collect()),
                    Err(e) => {
                        s.line(&format!("{tag} BAD {e}"));
                        return Ok(true);
                    }
                },
                None => None,
            };
            match s.store()?.expunge(&sel.name, only).await {
                Ok(gone) => {
                    sel.expunge_uids(s, &gone);
                    s.ok(tag, "EXPUNGE completed");
                }
                Err(e) => s.store_error(tag, &e),
            }
        }
        CommandBody::Fetch {
            uid,
            set,
            items,
            changed_since,
            vanished,
        } => {
            if vanished {
                if !s.qresync {
                    s.line(&format!("{tag} BAD VANISHED needs ENABLE QRESYNC"));
                    return Ok(true);
                }
                let within = set.resolved(sel.uidnext.saturating_sub(1).max(1));
                let missing = sel.missing_uids(Some(&within));
                if !missing.is_empty() {
                    s.line(&format!("* VANISHED (EARLIER) {missing}"));
                }
            }
            fetch(s, sel, tag, uid, &set, items, changed_since).await?;
        }
        CommandBody::Store {
            uid,
            set,
            unchanged_since,
            mode,
            silent,
            flags,
        } => {
            store(s, sel, tag, uid, &set, unchanged_since, mode, silent, flags).await?;
        }
        CommandBody::Search {
            uid,
            ret,
            charset,
            criteria,
        } => {
            if charset.as_deref().is_some_and(|c| {
                !c.eq_ignore_ascii_case("UTF-8") && !c.eq_ignore_ascii_case("US-ASCII")
            }) {
                s.line(&format!(
                    "{tag} NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
                ));
                return Ok(true);
            }
            search_command(s, sel, tag, uid, ret, &criteria).await?;
        }
        CommandBody::Copy { uid, set, mailbox } => {
            copy(s, sel, tag, uid, &set, &mailbox, false).await?;
        }
        CommandBody::Move { uid, set, mailbox } => {
            copy(s, sel, tag, uid, &set, &mailbox, true).await?;
        }
        CommandBody::Sort {
            uid,
            ret: _,
            criteria,
            charset,
            keys,
        } => {
            if !supported_charset(&charset) {
                s.line(&format!(
                    "{tag} NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
                ));
                return Ok(true);
            }
            match sort_items(s, sel, &keys, uid).await {
                Ok((structures, hits)) => {
                    let mut items = to_sort_items(sel, &structures, &hits, uid);
                    let order = crate::sort::sort(&mut items, &criteria);
                    let list: Vec<String> = order.iter().map(u32::to_string).collect();
                    s.line(format!("* SORT {}", list.join(" ")).trim_end());
                    s.ok(tag, "SORT completed");
                }
                Err(e) => s.store_error(tag, &e),
            }
        }
        CommandBody::Thread {
            uid,
            algorithm,
            charset,
            keys,
        } => {
            if !supported_charset(&charset) {
                s.line(&format!(
                    "{tag} NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
                ));
                return Ok(true);
            }
            let threads = match algorithm {
                ThreadAlgorithm::OrderedSubject => match sort_items(s, sel, &keys, uid).await {
                    Ok((structures, hits)) => {
                        let mut items = to_sort_items(sel, &structures, &hits, uid);
                        Ok(crate::sort::ordered_subject(&mut items))
                    }
                    Err(e) => Err(e),
                },
                ThreadAlgorithm::References => match thread_items(s, sel, &keys, uid).await {
                    Ok(items) => Ok(crate::thread::references(&items)),
                    Err(e) => Err(e),
                },
            };
            match threads {
                Ok(t) => {
                    s.line(format!("* THREAD {t}").trim_end());
                    s.ok(tag, "THREAD completed");
                }
                Err(e) => s.store_error(tag, &e),
            }
        }
        _ => s.line(&format!("{tag} BAD Unexpected command")),
    }
    Ok(true)
}

fn supported_charset(c: &str) -> bool {
    c.eq_ignore_ascii_case("UTF-8") || c.eq_ignore_ascii_case("US-ASCII")
}

/// The matching messages and their structures, for SORT and THREAD.
async fn sort_items(
    s: &mut Session,
    sel: &Selected,
    keys: &SearchKey,
    _uid: bool,
) -> std::result::Result<(Vec<MessageStructure>, Vec<usize>), StoreError> {
    let hits = evaluate(s, sel, keys).await?;
    let store = s
        .store
        .clone()
        .ok_or_else(|| StoreError::Io("no store".into()))?;
    let mut structures = Vec::with_capacity(hits.len());
    for chunk in hits.chunks(STRUCTURE_BATCH) {
        structures.extend(
            structures_of(&store, sel, chunk)
                .await
                .into_iter()
                .map(Option::unwrap_or_default),
        );
    }
    Ok((structures, hits))
}

/// The matching messages with their ids and References, for
/// THREAD=REFERENCES.
async fn thread_items(
    s: &mut Session,
    sel: &Selected,
    keys: &SearchKey,
    uid: bool,
) -> std::result::Result<Vec<crate::thread::ThreadItem>, StoreError> {
    let (structures, hits) = sort_items(s, sel, keys, uid).await?;
    let mut out = Vec::with_capacity(hits.len());
    for (&i, st) in hits.iter().zip(&structures) {
        let m = &sel.messages[i];
        let header = message_bytes(sel, m).await.unwrap_or_default();
        let header = &header[..(st.header_size as usize).min(header.len())];
        let refs = render::header_fields(header, &["References".into()], false);
        let refs = String::from_utf8_lossy(&refs);
        let mut references =
            crate::thread::message_ids(refs.split_once(':').map_or("", |(_, v)| v));
        if references.is_empty() {
            references =
                crate::thread::message_ids(st.envelope.in_reply_to.as_deref().unwrap_or(""))
                    .into_iter()
                    .take(1)
                    .collect();
        }
        out.push(crate::thread::ThreadItem {
            number: if uid { m.uid } else { i as u32 + 1 },
            seq: i as u32 + 1,
            sent: search::sent_date(st.envelope.date.as_deref()).unwrap_or(m.internal_date),
            subject: st.envelope.subject.clone().unwrap_or_default(),
            message_id: st
                .envelope
                .message_id
                .as_deref()
                .and_then(|id| crate::thread::message_ids(id).into_iter().next()),
            references,
        });
    }
    Ok(out)
}

fn to_sort_items<'a>(
    sel: &Selected,
    structures: &'a [MessageStructure],
    hits: &[usize],
    uid: bool,
) -> Vec<crate::sort::SortItem<'a>> {
    hits.iter()
        .zip(structures)
        .map(|(&i, st)| {
            let m = &sel.messages[i];
            crate::sort::SortItem {
                seq: i as u32 + 1,
                number: if uid { m.uid } else { i as u32 + 1 },
                internal_date: m.internal_date,
                size: m.size,
                envelope: &st.envelope,
                sent: search::sent_date(st.envelope.date.as_deref()).unwrap_or(m.internal_date),
            }
        })
        .collect()
}

/// A message's bytes from its file; `None` when it is gone (expunged by
/// another session meanwhile).
async fn message_bytes(sel: &Selected, m: &Msg) -> Option<Vec<u8>> {
    read_message_file(&message_file(&sel.dir, m.uid), m.size)
        .await
        .ok()
}

/// How many messages' structures are asked of the store at once.
const STRUCTURE_BATCH: usize = 256;

/// The structures of the messages at positions `ix`, in order; `None`
/// for one expunged meanwhile (or all, when the store cannot answer).
async fn structures_of(
    store: &StoreClient,
    sel: &Selected,
    ix: &[usize],
) -> Vec<Option<MessageStructure>> {
    let uids: Vec<u32> = ix.iter().map(|&i| sel.messages[i].uid).collect();
    store
        .structures(&sel.name, &uids)
        .await
        .unwrap_or_else(|_| vec![None; uids.len()])
}

/// Whether fetching `a` reads the message file.
fn needs_file(a: &FetchAttr) -> bool {
    matches!(
        a,
        FetchAttr::Preview { .. }
            | FetchAttr::Rfc822
            | FetchAttr::Rfc822Header
            | FetchAttr::Rfc822Text
            | FetchAttr::Section { .. }
            | FetchAttr::Binary { .. }
            | FetchAttr::BinarySize { .. }
    )
}

fn needs_structure(a: &FetchAttr) -> bool {
    matches!(
        a,
        FetchAttr::Preview { .. }
            | FetchAttr::EmailId
            | FetchAttr::Envelope
            | FetchAttr::BodyStructure
            | FetchAttr::Body
            | FetchAttr::Section { .. }
            | FetchAttr::Binary { .. }
            | FetchAttr::BinarySize { .. }
            | FetchAttr::Rfc822Header
            | FetchAttr::Rfc822Text
    )
}

/// Whether fetching `a` marks the message seen.
fn sets_seen(a: &FetchAttr) -> bool {
    matches!(
        a,
        FetchAttr::Rfc822
            | FetchAttr::Rfc822Text
            | FetchAttr::Section { peek: false, .. }
            | FetchAttr::Binary { peek: false, .. }
    )
}

#[allow(clippy::too_many_arguments)]
async fn fetch(
    s: &mut Session,
    sel: &mut Selected,
    tag: &str,
    uid: bool,
    set: &SequenceSet,
    mut items: Vec<FetchAttr>,
    changed_since: Option<u64>,
) -> Result<()> {
    let mut ix = match sel.resolve(set, uid) {
        Ok(ix) => ix,
        Err(e) => {
            s.line(&format!("{tag} BAD {e}"));
            return Ok(());
        }
    };
    if uid && !items.contains(&FetchAttr::Uid) {
        items.insert(0, FetchAttr::Uid);
    }
    if let Some(since) = changed_since {
        s.condstore = true;
        ix.retain(|&i| sel.messages[i].modseq > since);
        if !items.contains(&FetchAttr::ModSeq) {
            items.push(FetchAttr::ModSeq);
        }
    }
    let store = s.store()?;
    // Mark seen first, so the answer carries the new flags.
    if !sel.read_only && items.iter().any(sets_seen) {
        let unseen: Vec<u32> = ix
            .iter()
            .filter(|&&i| !sel.has_flag(i, "\\Seen"))
            .map(|&i| sel.messages[i].uid)
            .collect();
        if !unseen.is_empty() {
            if let Ok((changed, _, _)) = store
                .store_flags(&sel.name, &unseen, FlagOp::Add, &["\\Seen".into()], None)
                .await
            {
                for m in changed {
                    if let Some(i) = sel.position(m.uid) {
                        sel.set_flags(i, &m);
                    }
                }
            }
            if !items.contains(&FetchAttr::Flags) {
                items.push(FetchAttr::Flags);
            }
        }
    }
    let want_file = items.iter().any(needs_file);
    let want_structure = items.iter().any(needs_structure);
    let mut missing = false;
    for chunk in ix.chunks(STRUCTURE_BATCH) {
        let structures = if want_structure {
            structures_of(&store, sel, chunk).await
        } else {
            Vec::new()
        };
        for (n, &i) in chunk.iter().enumerate() {
            let m = &sel.messages[i];
            let structure = match structures.get(n) {
                Some(None) => {
                    missing = true;
                    continue;
                }
                Some(Some(st)) => Some(st),
                None => None,
            };
            let raw = if want_file {
                match message_bytes(sel, m).await {
                    Some(r) => Some(r),
                    None => {
                        missing = true;
                        continue;
                    }
                }
            } else {
                None
            };
            let mut l = format!("* {} FETCH (", i + 1).into_bytes();
            for (n, a) in items.iter().enumerate() {
                if n > 0 {
                    l.push(b' ');
                }
                fetch_item(
                    &mut l,
                    a,
                    m,
                    sel.flags(i),
                    structure,
                    raw.as_deref(),
                    s.utf8,
                );
            }
            l.extend_from_slice(b")\r\n");
            s.out.extend_from_slice(&l);
            // Large answers go out as they are made.
            if s.out.len() > 256 * 1024 {
                s.flush().await?;
            }
        }
    }
    if missing {
        s.line(&format!(
            "{tag} NO [EXPUNGEISSUED] Some messages were expunged meanwhile"
        ));
    } else {
        s.ok(tag, "FETCH completed");
    }
    Ok(())
}

fn fetch_item(
    l: &mut Vec<u8>,
    a: &FetchAttr,
    m: &Msg,
    flags: &[String],
    st: Option<&MessageStructure>,
    raw: Option<&[u8]>,
    utf8: bool,
) {
    let raw = raw.unwrap_or_default();
    let empty = MessageStructure::default();
    let st = st.unwrap_or(&empty);
    match a {
        FetchAttr::Uid => l.extend_from_slice(format!("UID {}", m.uid).as_bytes()),
        FetchAttr::Flags => {
            l.extend_from_slice(b"FLAGS ");
            response::flags(l, flags);
        }
        FetchAttr::InternalDate => {
            l.extend_from_slice(b"INTERNALDATE ");
            l.extend_from_slice(response::date_time(m.internal_date, 0).as_bytes());
        }
        FetchAttr::Rfc822Size => l.extend_from_slice(format!("RFC822.SIZE {}", m.size).as_bytes()),
        FetchAttr::ModSeq => l.extend_from_slice(format!("MODSEQ ({})", m.modseq).as_bytes()),
        FetchAttr::Envelope => {
            l.extend_from_slice(b"ENVELOPE ");
            render::envelope(l, &st.envelope, utf8);
        }
        FetchAttr::BodyStructure => {
            l.extend_from_slice(b"BODYSTRUCTURE ");
            render::body_structure(l, &st.body, true, utf8);
        }
        FetchAttr::Body => {
            l.extend_from_slice(b"BODY ");
            render::body_structure(l, &st.body, false, utf8);
        }
        FetchAttr::Rfc822 => {
            l.extend_from_slice(b"RFC822 ");
            response::literal(l, raw);
        }
        FetchAttr::Rfc822Header => {
            l.extend_from_slice(b"RFC822.HEADER ");
            let h =
                render::section(raw, st, &text_section(SectionText::Header)).unwrap_or_default();
            response::literal(l, &h);
        }
        FetchAttr::Rfc822Text => {
            l.extend_from_slice(b"RFC822.TEXT ");
            let t = render::section(raw, st, &text_section(SectionText::Text)).unwrap_or_default();
            response::literal(l, &t);
        }
        FetchAttr::Section {
            section, partial, ..
        } => {
            l.extend_from_slice(b"BODY[");
            section_spec(l, section);
            l.push(b']');
            let data = render::section(raw, st, section);
            partial_data(l, data.as_deref(), *partial, false);
        }
        FetchAttr::Binary { part, partial, .. } => {
            l.extend_from_slice(format!("BINARY[{}]", dotted(part)).as_bytes());
            let data = binary(raw, st, part);
            partial_data(l, data.as_deref(), *partial, true);
        }
        FetchAttr::BinarySize { part } => {
            let size = binary(raw, st, part).map_or(0, |d| d.len());
            l.extend_from_slice(format!("BINARY.SIZE[{}] {size}", dotted(part)).as_bytes());
        }
        FetchAttr::Preview { .. } => {
            l.extend_from_slice(b"PREVIEW ");
            match render::preview(raw, st) {
                Some(p) => response::string(l, p.as_bytes(), utf8),
                None => l.extend_from_slice(b"NIL"),
            }
        }
        FetchAttr::EmailId if !st.email_id.is_empty() => {
            l.extend_from_slice(format!("EMAILID ({})", st.email_id).as_bytes())
        }
        FetchAttr::EmailId => l.extend_from_slice(b"EMAILID NIL"),
        // No persistent thread ids (RFC 8474 §5.2 allows NIL); SAVEDATE
        // is not offered.
        FetchAttr::ThreadId => l.extend_from_slice(b"THREADID NIL"),
        FetchAttr::SaveDate => l.extend_from_slice(b"SAVEDATE NIL"),
    }
}

fn text_section(t: SectionText) -> Section {
    Section {
        part: Vec::new(),
        text: Some(t),
    }
}

fn dotted(part: &[u32]) -> String {
    part.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn section_spec(l: &mut Vec<u8>, s: &Section) {
    l.extend_from_slice(dotted(&s.part).as_bytes());
    let Some(t) = &s.text else { return };
    if !s.part.is_empty() {
        l.push(b'.');
    }
    match t {
        SectionText::Header => l.extend_from_slice(b"HEADER"),
        SectionText::Text => l.extend_from_slice(b"TEXT"),
        SectionText::Mime => l.extend_from_slice(b"MIME"),
        SectionText::HeaderFields { not, fields } => {
            l.extend_from_slice(if *not {
                b"HEADER.FIELDS.NOT ("
            } else {
                b"HEADER.FIELDS ("
            });
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    l.push(b' ');
                }
                response::astring(l, f, false);
            }
            l.push(b')');
        }
    }
}

/// The decoded content of a part for BINARY (the whole body for `[]`).
fn binary(raw: &[u8], st: &MessageStructure, part: &[u32]) -> Option<Vec<u8>> {
    if part.is_empty() {
        return Some(raw.to_vec());
    }
    let p = render::find_part(st, part)?;
    render::decoded(raw, p)
}

/// ` <origin>` and the data (NIL when absent), cut to the partial range.
fn partial_data(l: &mut Vec<u8>, data: Option<&[u8]>, partial: Option<(u32, u32)>, binary: bool) {
    let Some(data) = data else {
        l.extend_from_slice(b" NIL");
        return;
    };
    let data = match partial {
        Some((origin, len)) => {
            l.extend_from_slice(format!("<{origin}>").as_bytes());
            let a = (origin as usize).min(data.len());
            let b = a.saturating_add(len as usize).min(data.len());
            &data[a..b]
        }
        None => data,
    };
    l.push(b' ');
    if binary && data.contains(&0) {
        l.push(b'~');
    }
    response::literal(l, data);
}

#[allow(clippy::too_many_arguments)]
async fn store(
    s: &mut Session,
    sel: &mut Selected,
    tag: &str,
    uid: bool,
    set: &SequenceSet,
    unchanged_since: Option<u64>,
    mode: StoreMode,
    silent: bool,
    flags: Vec<String>,
) -> Result<()> {
    if sel.read_only {
        s.line(&format!("{tag} NO [READ-ONLY] The mailbox is read-only"));
        return Ok(());
    }
    if flags.iter().any(|f| f.eq_ignore_ascii_case("\\Recent")) {
        s.line(&format!("{tag} BAD \\Recent cannot be stored"));
        return Ok(());
    }
    let ix = match sel.resolve(set, uid) {
        Ok(ix) => ix,
        Err(e) => {
            s.line(&format!("{tag} BAD {e}"));
            return Ok(());
        }
    };
    if unchanged_since.is_some() {
        s.condstore = true;
    }
    let uids: Vec<u32> = ix.iter().map(|&i| sel.messages[i].uid).collect();
    let op = match mode {
        StoreMode::Add => FlagOp::Add,
        StoreMode::Remove => FlagOp::Remove,
        StoreMode::Replace => FlagOp::Replace,
    };
    let (changed, refused) = match s
        .store()?
        .store_flags(&sel.name, &uids, op, &flags, unchanged_since)
        .await
    {
        Ok((changed, refused, info)) => {
            sel.highest_modseq = sel.highest_modseq.max(info.record.highest_modseq);
            (changed, refused)
        }
        Err(e) => {
            s.store_error(tag, &e);
            return Ok(());
        }
    };
    for m in &changed {
        if let Some(i) = sel.position(m.uid) {
            sel.set_flags(i, m);
        }
    }
    for &i in &ix {
        let m = &sel.messages[i];
        if refused.contains(&m.uid) {
            continue;
        }
        let was_changed = changed.iter().any(|c| c.uid == m.uid);
        if silent && !(was_changed && unchanged_since.is_some()) {
            continue;
        }
        let mut l = format!("* {} FETCH (", i + 1).into_bytes();
        if uid {
            l.extend_from_slice(format!("UID {} ", m.uid).as_bytes());
        }
        if silent {
            l.extend_from_slice(format!("MODSEQ ({}))\r\n", m.modseq).as_bytes());
            s.out.extend_from_slice(&l);
            continue;
        }
        l.extend_from_slice(b"FLAGS ");
        response::flags(&mut l, sel.flags(i));
        if s.condstore {
            l.extend_from_slice(format!(" MODSEQ ({})", m.modseq).as_bytes());
        }
        l.extend_from_slice(b")\r\n");
        s.out.extend_from_slice(&l);
    }
    if refused.is_empty() {
        s.ok(tag, "STORE completed");
    } else {
        let mut nums: Vec<u32> = refused
            .iter()
            .filter_map(|u| {
                sel.position(*u)
                    .map(|i| if uid { *u } else { i as u32 + 1 })
            })
            .collect();
        nums.sort_unstable();
        s.ok(
            tag,
            &format!("[MODIFIED {}] Conditional STORE failed", compact(&nums)),
        );
    }
    Ok(())
}

async fn search_command(
    s: &mut Session,
    sel: &mut Selected,
    tag: &str,
    uid: bool,
    ret: Option<Vec<SearchReturn>>,
    key: &SearchKey,
) -> Result<()> {
    let hits = match evaluate(s, sel, key).await {
        Ok(h) => h,
        Err(e) => {
            s.store_error(tag, &e);
            return Ok(());
        }
    };
    let modseq = if search::uses_modseq(key) {
        s.condstore = true;
        hits.iter().map(|&i| sel.messages[i].modseq).max()
    } else {
        None
    };
    let nums: Vec<u32> = hits
        .iter()
        .map(|&i| {
            if uid {
                sel.messages[i].uid
            } else {
                i as u32 + 1
            }
        })
        .collect();
    // IMAP4rev2 answers every SEARCH with ESEARCH.
    let ret = match ret {
        None if s.rev2 => Some(vec![SearchReturn::All]),
        other => other,
    };
    let Some(ret) = ret else {
        let mut l = String::from("* SEARCH");
        for n in &nums {
            l.push_str(&format!(" {n}"));
        }
        if let Some(m) = modseq {
            l.push_str(&format!(" (MODSEQ {m})"));
        }
        s.line(&l);
        s.ok(tag, "SEARCH completed");
        return Ok(());
    };
    // RETURN () means ALL.
    let ret = if ret.is_empty() {
        vec![SearchReturn::All]
    } else {
        ret
    };
    if ret.contains(&SearchReturn::Save) {
        sel.saved = hits.iter().map(|&i| sel.messages[i].uid).collect();
    }
    let mut l = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        l.push_str(" UID");
    }
    for r in &ret {
        match r {
            SearchReturn::Min if !nums.is_empty() => l.push_str(&format!(" MIN {}", nums[0])),
            SearchReturn::Max if !nums.is_empty() => {
                l.push_str(&format!(" MAX {}", nums[nums.len() - 1]));
            }
            SearchReturn::All if !nums.is_empty() => {
                let mut sorted = nums.clone();
                sorted.sort_unstable();
                l.push_str(&format!(" ALL {}", compact(&sorted)));
            }
            SearchReturn::Count => l.push_str(&format!(" COUNT {}", nums.len())),
            _ => {}
        }
    }
    if let Some(m) = modseq {
        l.push_str(&format!(" MODSEQ {m}"));
    }
    // SAVE alone answers nothing but the tagged OK.
    if ret != [SearchReturn::Save] {
        s.line(&l);
    }
    s.ok(tag, "SEARCH completed");
    Ok(())
}

/// The positions of the messages `key` matches.
async fn evaluate(
    s: &mut Session,
    sel: &Selected,
    key: &SearchKey,
) -> std::result::Result<Vec<usize>, StoreError> {
    let store = s
        .store
        .clone()
        .ok_or_else(|| StoreError::Io("no store".into()))?;
    let content = search::needs_content(key);
    let extent = Extent {
        largest_seq: sel.messages.len() as u32,
        largest_uid: sel.last_uid(),
        saved: &sel.saved,
    };
    let mut hits = Vec::new();
    let all: Vec<usize> = (0..sel.messages.len()).collect();
    for chunk in all.chunks(STRUCTURE_BATCH) {
        let structures = if content {
            structures_of(&store, sel, chunk).await
        } else {
            Vec::new()
        };
        for (n, &i) in chunk.iter().enumerate() {
            let m = &sel.messages[i];
            let st = structures.get(n).and_then(Option::as_ref);
            let raw = if content {
                message_bytes(sel, m).await
            } else {
                None
            };
            let c = Candidate {
                seq: i as u32 + 1,
                msg: m,
                flags: sel.flags(i),
                raw: raw.as_deref(),
                sent: st.and_then(|st| search::sent_date(st.envelope.date.as_deref())),
                email_id: st.map(|st| st.email_id.as_str()),
            };
            if search::matches(key, &c, &extent) {
                hits.push(i);
            }
        }
    }
    Ok(hits)
}

async fn copy(
    s: &mut Session,
    sel: &mut Selected,
    tag: &str,
    uid: bool,
    set: &SequenceSet,
    mailbox: &str,
    moving: bool,
) -> Result<()> {
    if moving && sel.read_only {
        s.line(&format!("{tag} NO [READ-ONLY] The mailbox is read-only"));
        return Ok(());
    }
    let Some(to) = s.store_name(tag, mailbox, false) else {
        return Ok(());
    };
    let ix = match sel.resolve(set, uid) {
        Ok(ix) => ix,
        Err(e) => {
            s.line(&format!("{tag} BAD {e}"));
            return Ok(());
        }
    };
    let verb = if moving { "MOVE" } else { "COPY" };
    if ix.is_empty() {
        s.ok(tag, &format!("{verb} completed (no messages)"));
        return Ok(());
    }
    let uids: Vec<u32> = ix.iter().map(|&i| sel.messages[i].uid).collect();
    let store = s.store()?;
    let dest = match store.status(&to).await {
        Ok(d) => d,
        Err(StoreError::NoMailbox(_)) => {
            s.line(&format!("{tag} NO [TRYCREATE] No such mailbox"));
            return Ok(());
        }
        Err(e) => {
            s.store_error(tag, &e);
            return Ok(());
        }
    };
    let req = if moving {
        StoreRequest::Move {
            from: sel.name.clone(),
            uids,
            to,
        }
    } else {
        StoreRequest::Copy {
            from: sel.name.clone(),
            uids,
            to,
        }
    };
    let pairs = match store.request(req).await {
        Ok(StoreReply::Copied { pairs }) => pairs,
        Ok(_) => Vec::new(),
        Err(e) => {
            s.store_error(tag, &e);
            return Ok(());
        }
    };
    let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    let code = format!(
        "[COPYUID {} {} {}]",
        dest.record.uidvalidity,
        join_uids(&src),
        join_uids(&dst)
    );
    if moving {
        s.line(&format!("* OK {code} Moved"));
        sel.expunge_uids(s, &src);
        s.ok(tag, "MOVE completed");
    } else {
        s.ok(tag, &format!("{code} COPY completed"));
    }
    Ok(())
}

/// UIDs in the order given (COPYUID pairs them by position).
fn join_uids(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A view entry for a message the store describes.
fn entry(flag_lists: &mut FlagLists, m: &MessageInfo) -> Msg {
    Msg {
        uid: m.uid,
        flags: flag_lists.intern(&m.record.flags),
        modseq: m.record.modseq,
        size: m.record.size,
        internal_date: m.record.internal_date,
    }
}
