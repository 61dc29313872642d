//! The directory cache (the MTA's "LDAP cache"): answers are reused for
//! `local.ugldap.cachettl` seconds, "no such thing" answers included, so
//! repeated lookups do not reach the directory. Passwords are never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{Domain, Recipient, User};

#[derive(Clone)]
enum Value {
    Domain(Option<Box<Domain>>),
    User(Option<Box<User>>),
    Recipient(Option<Recipient>),
}

/// Entries kept for `ttl`, at most `max` of them: when it is full, the
/// stale ones go, and if that frees nothing, all of them. `ttl` or `max`
/// zero keeps nothing. What the directory cache and the remembered
/// logins ([`crate::verified`]) are built on.
pub(crate) struct TtlMap<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + std::hash::Hash, V: Clone> TtlMap<K, V> {
    pub(crate) fn new(ttl: Duration, max: usize) -> TtlMap<K, V> {
        TtlMap {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max > 0
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let map = self.map.lock().ok()?;
        let (at, v) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    pub(crate) fn put(&self, key: K, v: V) {
        if !self.enabled() {
            return;
        }
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= self.max {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), v));
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            m.clear();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }
}

pub struct Cache {
    map: TtlMap<(u8, String), Value>,
}

impl Cache {
    /// `ttl` zero turns the cache off.
    pub fn new(ttl: Duration, max: usize) -> Cache {
        Cache {
            map: TtlMap::new(ttl, max),
        }
    }

    pub fn disabled() -> Cache {
        Cache::new(Duration::ZERO, 0)
    }

    fn get(&self, kind: u8, key: &str) -> Option<Value> {
        self.map.get(&(kind, key.to_ascii_lowercase()))
    }

    fn put(&self, kind: u8, key: &str, v: Value) {
        self.map.put((kind, key.to_ascii_lowercase()), v);
    }

    pub fn clear(&self) {
        self.map.clear();
    }

    pub fn get_domain(&self, k: &str) -> Option<Option<Domain>> {
        match self.get(0, k)? {
            Value::Domain(d) => Some(d.map(|d| *d)),
            _ => None,
        }
    }
    pub fn put_domain(&self, k: &str, v: Option<Domain>) {
        self.put(0, k, Value::Domain(v.map(Box::new)));
    }
    pub fn get_user(&self, k: &str) -> Option<Option<User>> {
        match self.get(1, k)? {
            Value::User(u) => Some(u.map(|u| *u)),
            _ => None,
        }
    }
    pub fn put_user(&self, k: &str, v: Option<User>) {
        self.put(1, k, Value::User(v.map(Box::new)));
    }
    pub fn get_recipient(&self, k: &str) -> Option<Option<Recipient>> {
        match self.get(2, k)? {
            Value::Recipient(r) => Some(r),
            _ => None,
        }
    }
    pub fn put_recipient(&self, k: &str, v: Option<Recipient>) {
        self.put(2, k, Value::Recipient(v));
    }
}
