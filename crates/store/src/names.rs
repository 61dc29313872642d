//! Mailbox names and where a user's files live. Pure.
//!
//! A mailbox name in the store is `user/<userid>/<folder>`, as the
//! original's mboxlist kept it (`user/joe/INBOX`, `user/joe/Lists/rust`),
//! with `/` as the hierarchy separator and folder names in UTF-8 (the IMAP
//! server converts modified UTF-7). A user's files live under
//! `<partition>/=user/<h1>/<h2>/=<userid>/`, where `<h1>/<h2>` is what
//! `hashdir` prints.

use sha1::{Digest, Sha1};

/// Longest mailbox name, in bytes.
pub const MAX_NAME: usize = 1024;
/// Deepest folder hierarchy.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mailbox name {name:?}: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// A checked mailbox name: owner and folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName {
    owner: String,
    folder: String,
}

impl MailboxName {
    /// `user/<owner>/<folder>`.
    pub fn parse(full: &str) -> Result<MailboxName, NameError> {
        let bad = |reason| NameError {
            name: full.chars().take(100).collect(),
            reason,
        };
        let rest = full
            .strip_prefix("user/")
            .ok_or_else(|| bad("must begin with user/"))?;
        let (owner, folder) = rest
            .split_once('/')
            .ok_or_else(|| bad("names user/<uid>/<folder>"))?;
        MailboxName::new(owner, folder)
    }

    pub fn new(owner: &str, folder: &str) -> Result<MailboxName, NameError> {
        let full = format!("user/{owner}/{folder}");
        let bad = |reason| NameError {
            name: full.chars().take(100).collect(),
            reason,
        };
        validate_userid(owner).map_err(&bad)?;
        validate_folder(folder).map_err(bad)?;
        // INBOX is case-insensitive (RFC 3501); keep one spelling.
        let folder = match folder.split_once('/') {
            Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX/{rest}"),
            None if folder.eq_ignore_ascii_case("INBOX") => "INBOX".to_string(),
            _ => folder.to_string(),
        };
        Ok(MailboxName {
            owner: owner.to_string(),
            folder,
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn folder(&self) -> &str {
        &self.folder
    }

    pub fn is_inbox(&self) -> bool {
        self.folder == "INBOX"
    }

    /// The parent folder, if any (`user/joe/a/b` → `user/joe/a`).
    pub fn parent(&self) -> Option<MailboxName> {
        let (p, _) = self.folder.rsplit_once('/')?;
        Some(MailboxName {
            owner: self.owner.clone(),
            folder: p.to_string(),
        })
    }

    /// Is `self` strictly below `other` in the hierarchy?
    pub fn is_below(&self, other: &MailboxName) -> bool {
        self.owner == other.owner
            && self.folder.len() > other.folder.len() + 1
            && self.folder.starts_with(&format!("{}/", other.folder))
    }
}

impl std::fmt::Display for MailboxName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user/{}/{}", self.owner, self.folder)
    }
}

/// A user id as the directory has it: `uid` or `uid@domain`.
pub fn validate_userid(u: &str) -> Result<(), &'static str> {
    if u.is_empty() || u.len() > 255 {
        return Err("the user id must have 1 to 255 characters");
    }
    if !u
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c))
    {
        return Err("the user id may hold letters, digits and . _ - @ + only");
    }
    if u.starts_with('.') || u.contains("..") {
        return Err("the user id may not begin with a dot or hold two");
    }
    Ok(())
}

/// A folder: `/`-separated, no empty, `.` or `..` segment, no control
/// characters, bounded length and depth.
pub fn validate_folder(f: &str) -> Result<(), &'static str> {
    if f.is_empty() {
        return Err("the folder name is empty");
    }
    if f.len() > MAX_NAME {
        return Err("the name is too long");
    }
    if f.chars().any(|c| c.is_control()) {
        return Err("control characters are not allowed");
    }
    let segments: Vec<&str> = f.split('/').collect();
    if segments.len() > MAX_DEPTH {
        return Err("the folder hierarchy is too deep");
    }
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err("empty, . or .. hierarchy levels are not allowed");
    }
    if segments.iter().any(|s| s.contains(['*', '%'])) {
        return Err("* and % are wildcards, not name characters");
    }
    Ok(())
}

/// The two-level hash of a user id: two bytes of its SHA-1, as two hex
/// directories (`d1/a7`).
pub fn hashdir(userid: &str) -> String {
    let h = Sha1::digest(userid.to_ascii_lowercase().as_bytes());
    format!("{:02x}/{:02x}", h[0], h[1])
}

/// A user id as a directory name: upper-case letters become `+` and the
/// letter, `.` becomes `%d`, other bytes outside `[a-z0-9@_-]` become
/// `%XX`, so that every user id has its own directory on any file system.
pub fn escape_userid(u: &str) -> String {
    let mut out = String::with_capacity(u.len() + 4);
    for b in u.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'@' | b'_' | b'-' => out.push(b as char),
            b'A'..=b'Z' => {
                out.push('+');
                out.push(b.to_ascii_lowercase() as char);
            }
            b'.' => out.push_str("%d"),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `=user/<h1>/<h2>/=<escaped userid>`, relative to a partition.
pub fn user_dir(userid: &str) -> String {
    format!("=user/{}/={}", hashdir(userid), escape_userid(userid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = MailboxName::parse("user/joe/Lists/rust").unwrap();
        assert_eq!((n.owner(), n.folder()), ("joe", "Lists/rust"));
        assert_eq!(n.parent().unwrap().to_string(), "user/joe/Lists");
        assert!(n.is_below(&MailboxName::parse("user/joe/Lists").unwrap()));
        assert!(
            !MailboxName::parse("user/joe/Listsx")
                .unwrap()
                .is_below(&MailboxName::parse("user/joe/Lists").unwrap())
        );
        assert_eq!(
            MailboxName::parse("user/joe/inbox").unwrap().to_string(),
            "user/joe/INBOX"
        );
        assert_eq!(
            MailboxName::parse("user/joe/Inbox/x").unwrap().folder(),
            "INBOX/x"
        );
        for bad in [
            "user/joe/../ann/INBOX",
            "user/joe/a//b",
            "user/joe/",
            "user/../x",
            "joe/INBOX",
            "user/joe/a\0b",
            "user/jo e/INBOX",
            "user/joe/a*",
            "user/joe//",
        ] {
            assert!(MailboxName::parse(bad).is_err(), "{bad}");
        }
        assert!(MailboxName::parse(&format!("user/joe/{}", "a/".repeat(40) + "z")).is_err());
        // Folder names are UTF-8 (the IMAP server decodes modified UTF-7).
        assert_eq!(
            MailboxName::parse("user/joe/Entwürfe/日本")
                .unwrap()
                .folder(),
            "Entwürfe/日本"
        );
        assert!(
            MailboxName::parse(&format!("user/joe/{}", "é".repeat(600))).is_err(),
            "the length limit counts bytes"
        );
    }

    #[test]
    fn user_directories() {
        assert_eq!(
            escape_userid("Joe.Bloggs@example.com"),
            "+joe%d+bloggs@example%dcom"
        );
        let d = user_dir("joe");
        assert!(d.starts_with("=user/") && d.ends_with("/=joe"), "{d}");
        assert_eq!(hashdir("joe"), hashdir("JOE"));
        assert_eq!(hashdir("joe").len(), 5);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = MailboxName::parse(&s);
        }

        #[test]
        fn escaped_userids_are_distinct_and_safe(a in "[A-Za-z0-9._@-]{1,12}", b in "[A-Za-z0-9._@-]{1,12}") {
            let (ea, eb) = (escape_userid(&a), escape_userid(&b));
            proptest::prop_assert!(!ea.contains('/') && !ea.contains('.'));
            proptest::prop_assert_eq!(a == b, ea == eb);
        }
    }
}
