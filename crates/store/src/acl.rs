//! Access rights (RFC 4314): what a user other than the owner may do with
//! a mailbox, and which right each store request needs. Pure.

use crate::db::{DELETED, SEEN, StoreError};

/// Every right, in RFC 4314 order: lookup, read, keep seen, write flags,
/// insert, post, create mailboxes, delete mailbox, delete messages,
/// expunge, administer.
pub const ALL: &str = "lrswipkxtea";

/// Rights sorted in canonical order without repeats; obsolete `c` means
/// `k` and `d` means `xte` (RFC 4314 section 2.1.1).
pub fn normalize(r: &str) -> Result<String, StoreError> {
    let mut have = String::new();
    for c in r.chars() {
        match c {
            'c' => have.push('k'),
            'd' => have.push_str("xte"),
            c if ALL.contains(c) => have.push(c),
            c => {
                return Err(StoreError::Invalid(format!(
                    "{c:?} is not an access right (use {ALL})"
                )));
            }
        }
    }
    Ok(ALL.chars().filter(|c| have.contains(*c)).collect())
}

/// The right setting each flag needs: `\Seen` s, `\Deleted` t, others w.
pub fn right_for_flag(flag: &str) -> char {
    if flag.eq_ignore_ascii_case(SEEN) {
        's'
    } else if flag.eq_ignore_ascii_case(DELETED) {
        't'
    } else {
        'w'
    }
}

/// The flags of `flags` that `rights` allow setting.
pub fn allowed_flags(flags: &[String], rights: &str) -> Vec<String> {
    flags
        .iter()
        .filter(|f| rights.contains(right_for_flag(f)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights() {
        assert_eq!(normalize("rl").unwrap(), "lr");
        assert_eq!(normalize("lrcd").unwrap(), "lrkxte");
        assert!(normalize("lz").is_err());
        let flags: Vec<String> = ["\\Seen", "\\Deleted", "$Work"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(allowed_flags(&flags, "lrs"), ["\\Seen"]);
        assert_eq!(allowed_flags(&flags, "lrswt"), flags);
    }
}
