//! The distinct flag lists of a selected mailbox, each kept once.
//!
//! A session's view holds an entry for every message, so what an entry
//! costs is multiplied by the mailbox's size and by the sessions open on
//! it. Most mailboxes have a handful of distinct flag lists (none,
//! `\Seen`, `\Seen \Answered`, ...) shared by thousands of messages: a
//! message names its list by number instead of holding its own strings,
//! which keeps a view entry at 32 bytes.

use std::collections::HashMap;
use std::sync::Arc;

/// Names one list of a [`FlagLists`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagsId(u32);

#[derive(Default)]
pub struct FlagLists {
    lists: Vec<Arc<[String]>>,
    ids: HashMap<Arc<[String]>, FlagsId>,
}

impl FlagLists {
    /// The number of `flags` (in their order), added when new.
    pub fn intern(&mut self, flags: &[String]) -> FlagsId {
        if let Some(&id) = self.ids.get(flags) {
            return id;
        }
        let list: Arc<[String]> = flags.into();
        let id = FlagsId(self.lists.len() as u32);
        self.lists.push(list.clone());
        self.ids.insert(list, id);
        id
    }

    pub fn get(&self, id: FlagsId) -> &[String] {
        &self.lists[id.0 as usize]
    }

    /// Whether lists no message uses may have piled up (each flag change
    /// can add one): more lists than twice the messages, past a floor.
    pub fn needs_compacting(&self, messages: usize) -> bool {
        self.lists.len() > 2 * messages + 256
    }

    /// Keeps only the lists `ids` name, renumbering them in place.
    pub fn compact<'a>(&mut self, ids: impl Iterator<Item = &'a mut FlagsId>) {
        let old = std::mem::take(self);
        for id in ids {
            *id = self.intern(old.get(*id));
        }
    }
}

/// Whether `flags` holds `flag` (flags compare without regard to case).
pub fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|x| x.eq_ignore_ascii_case(flag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn equal_lists_share_a_number() {
        let mut t = FlagLists::default();
        let seen = t.intern(&list(&["\\Seen"]));
        let none = t.intern(&[]);
        assert_ne!(seen, none);
        assert_eq!(t.intern(&list(&["\\Seen"])), seen);
        assert_eq!(t.get(seen), &list(&["\\Seen"])[..]);
        assert!(t.get(none).is_empty());
        // Order is kept: a list in another order is another list.
        let a = t.intern(&list(&["\\Seen", "$x"]));
        let b = t.intern(&list(&["$x", "\\Seen"]));
        assert_ne!(a, b);
    }

    #[test]
    fn compacting_keeps_what_is_used() {
        let mut t = FlagLists::default();
        let mut ids: Vec<FlagsId> = (0..1000).map(|i| t.intern(&[format!("k{i}")])).collect();
        ids.truncate(3);
        assert!(t.needs_compacting(ids.len()));
        t.compact(ids.iter_mut());
        assert!(!t.needs_compacting(ids.len()));
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.get(*id), &[format!("k{i}")][..]);
        }
        assert!(has_flag(&list(&["\\SEEN"]), "\\seen"));
    }
}
