//! Logins verified recently (`local.ugldap.authcachettl` seconds): a
//! client that logs in again with the same password, against the same
//! stored hash, is admitted without paying for the memory-hard hash again
//! — webmail, phones and IMAP clients that open a connection per folder
//! log in many times an hour. Cyrus's saslauthd offers the same (`-c`).
//!
//! What is kept is a keyed digest (HMAC-SHA-256 under a key drawn when the
//! process starts) of the stored hashes and the password, never the
//! password. Failed checks are never kept, so every wrong guess still
//! costs the full hash. A changed password changes the stored hash, so
//! the old password stops matching as soon as the directory cache hands
//! out the new entry (`local.ugldap.cachettl`).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::cache::TtlMap;

type Digest = [u8; 32];

pub struct VerifiedLogins {
    key: Digest,
    seen: TtlMap<Digest, ()>,
}

impl VerifiedLogins {
    /// `ttl` zero (or no randomness to draw a key from) turns it off.
    pub fn new(ttl: Duration, max: usize) -> VerifiedLogins {
        let mut key = [0u8; 32];
        let ttl = match getrandom::fill(&mut key) {
            Ok(()) => ttl,
            Err(_) => Duration::ZERO,
        };
        VerifiedLogins {
            key,
            seen: TtlMap::new(ttl, max),
        }
    }

    pub fn disabled() -> VerifiedLogins {
        VerifiedLogins::new(Duration::ZERO, 0)
    }

    fn digest(&self, stored: &[String], given: &str) -> Digest {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        // Lengths first, so no two different inputs run together the same.
        for s in stored {
            mac.update(&(s.len() as u64).to_be_bytes());
            mac.update(s.as_bytes());
        }
        mac.update(&(given.len() as u64).to_be_bytes());
        mac.update(given.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `given` was found right against `stored` within the TTL.
    pub fn contains(&self, stored: &[String], given: &str) -> bool {
        self.seen.enabled() && self.seen.get(&self.digest(stored, given)).is_some()
    }

    /// Keeps a check that succeeded.
    pub fn remember(&self, stored: &[String], given: &str) {
        if self.seen.enabled() {
            self.seen.put(self.digest(stored, given), ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_same_password_against_the_same_hash_matches() {
        let v = VerifiedLogins::new(Duration::from_secs(60), 10);
        let stored = hashes(&["{SSHA}abc"]);
        assert!(!v.contains(&stored, "secret"));
        v.remember(&stored, "secret");
        assert!(v.contains(&stored, "secret"));
        assert!(!v.contains(&stored, "secreT"));
        assert!(!v.contains(&stored, "secret "));
        // A changed password (new stored hash) does not match.
        assert!(!v.contains(&hashes(&["{SSHA}abd"]), "secret"));
        // Boundaries between values count.
        v.remember(&hashes(&["ab", "c"]), "d");
        assert!(!v.contains(&hashes(&["a", "bc"]), "d"));
        assert!(!v.contains(&hashes(&["ab"]), "cd"));
        // Another process (another key) knows nothing of it.
        let w = VerifiedLogins::new(Duration::from_secs(60), 10);
        assert!(!w.contains(&stored, "secret"));
    }

    #[test]
    fn expiry_limits_and_off() {
        let v = VerifiedLogins::new(Duration::from_millis(30), 2);
        let stored = hashes(&["h"]);
        v.remember(&stored, "a");
        std::thread::sleep(Duration::from_millis(40));
        assert!(!v.contains(&stored, "a"), "kept past its TTL");
        for p in ["b", "c", "d"] {
            v.remember(&stored, p);
        }
        assert!(v.seen.len() <= 2);
        assert!(v.contains(&stored, "d"));
        let off = VerifiedLogins::disabled();
        off.remember(&stored, "a");
        assert!(!off.contains(&stored, "a"));
    }
}
