//! The embedded directory: the same object classes and attributes as the
//! LDAP schema, kept in one LDIF file under `data/` (the default for a
//! single machine). The file is read again when it changes on disk; every
//! change through this module happens under an exclusive lock and is
//! written to a temporary file, fsynced and renamed, so readers see the old
//! or the new directory and never half of one. The same file loads into
//! slapd with `ldapadd -f` to move to a real directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use crate::dn::Dn;
use crate::entry::Entry;
use crate::filter::Filter;
use crate::{DirError, Scope, ldif};

pub struct EmbeddedDirectory {
    path: PathBuf,
    state: RwLock<Snapshot>,
}

/// Attributes with an equality index: what the lookups search by.
const INDEXED: &[&str] = &[
    "uid",
    "mail",
    "mailalternateaddress",
    "mailequivalentaddress",
    "sunpreferreddomain",
    "associateddomain",
    "cn",
];

#[derive(Default)]
struct Snapshot {
    /// Normalized DN → (parsed DN, entry).
    entries: BTreeMap<String, (Dn, Entry)>,
    /// (attribute, value), both lower-cased → normalized DNs.
    index: HashMap<(String, String), BTreeSet<String>>,
    /// Modification time and length of the file the entries came from.
    stamp: Option<(SystemTime, u64)>,
}

impl Snapshot {
    fn build(entries: BTreeMap<String, Entry>, stamp: Option<(SystemTime, u64)>) -> Snapshot {
        let mut index: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
        let mut parsed = BTreeMap::new();
        for (key, e) in entries {
            for attr in INDEXED {
                for v in e.get_all(attr) {
                    index
                        .entry((attr.to_string(), v.to_lowercase()))
                        .or_default()
                        .insert(key.clone());
                }
            }
            // load() parsed every DN already; one that fails here cannot occur.
            if let Ok(dn) = Dn::parse(&e.dn) {
                parsed.insert(key, (dn, e));
            }
        }
        Snapshot {
            entries: parsed,
            index,
            stamp,
        }
    }

    /// The entries that can match `f`, when an index narrows them down.
    fn candidates(&self, f: &Filter) -> Option<BTreeSet<String>> {
        match f {
            Filter::Equal(a, v) if INDEXED.contains(&a.to_ascii_lowercase().as_str()) => Some(
                self.index
                    .get(&(a.to_ascii_lowercase(), v.to_lowercase()))
                    .cloned()
                    .unwrap_or_default(),
            ),
            Filter::And(fs) => fs
                .iter()
                .filter_map(|x| self.candidates(x))
                .reduce(|a, b| &a & &b),
            Filter::Or(fs) => {
                let mut all = BTreeSet::new();
                for x in fs {
                    all.extend(self.candidates(x)?);
                }
                Some(all)
            }
            _ => None,
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn load(path: &Path) -> Result<BTreeMap<String, Entry>, DirError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        DirError::Unavailable(format!(
            "cannot read the directory file {}: {e}",
            path.display()
        ))
    })?;
    let entries =
        ldif::parse(&text).map_err(|e| DirError::Data(format!("{}: {e}", path.display())))?;
    let mut map = BTreeMap::new();
    for e in entries {
        let key = e
            .parsed_dn()
            .map_err(|err| DirError::Data(err.to_string()))?
            .normalized();
        if map.insert(key, e.clone()).is_some() {
            return Err(DirError::Data(format!(
                "{}: the entry {} appears twice",
                path.display(),
                e.dn
            )));
        }
    }
    Ok(map)
}

impl EmbeddedDirectory {
    /// Opens the directory file, which must exist and be valid.
    pub fn open(path: impl Into<PathBuf>) -> Result<EmbeddedDirectory, DirError> {
        let path = path.into();
        let entries = load(&path)?;
        let snap = Snapshot::build(entries, stamp(&path));
        Ok(EmbeddedDirectory {
            path,
            state: RwLock::new(snap),
        })
    }

    /// Creates a new directory file holding `entries` (configure).
    pub fn create(path: &Path, entries: &[Entry]) -> Result<(), DirError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DirError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        write_file(path, entries.iter())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again if it changed. A file that no longer parses is
    /// reported and the last good contents keep being served.
    fn refresh(&self) -> Result<(), DirError> {
        let now = stamp(&self.path);
        if now == self.state.read().map_err(poisoned)?.stamp {
            return Ok(());
        }
        let fresh = Snapshot::build(load(&self.path)?, now);
        *self.state.write().map_err(poisoned)? = fresh;
        Ok(())
    }

    pub fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &Filter,
    ) -> Result<Vec<Entry>, DirError> {
        // A failed reload keeps the old data: the error is for the logs of
        // whoever edits the file, not a reason to stop serving mail.
        let _ = self.refresh();
        let base = Dn::parse(base).map_err(|e| DirError::Data(e.to_string()))?;
        let s = self.state.read().map_err(poisoned)?;
        let keep = |dn: &Dn, e: &Entry| {
            let in_scope = match scope {
                Scope::Base => *dn == base,
                Scope::One => dn.is_child_of(&base),
                Scope::Sub => dn.is_under(&base),
            };
            in_scope && filter.matches(e)
        };
        let out = match (scope, s.candidates(filter)) {
            (Scope::Base, _) => s
                .entries
                .get(&base.normalized())
                .filter(|(dn, e)| keep(dn, e))
                .map(|(_, e)| e.clone())
                .into_iter()
                .collect(),
            (_, Some(keys)) => keys
                .iter()
                .filter_map(|k| s.entries.get(k))
                .filter(|(dn, e)| keep(dn, e))
                .map(|(_, e)| e.clone())
                .collect(),
            (_, None) => s
                .entries
                .values()
                .filter(|(dn, e)| keep(dn, e))
                .map(|(_, e)| e.clone())
                .collect(),
        };
        Ok(out)
    }

    /// Applies a change to the current file contents under the lock and
    /// writes the result atomically.
    pub fn change(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Entry>) -> Result<(), DirError>,
    ) -> Result<(), DirError> {
        let lock_path = self.path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| DirError::Unavailable(format!("{}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| DirError::Unavailable(format!("{}: {e}", lock_path.display())))?;
        let mut entries = load(&self.path)?;
        f(&mut entries)?;
        write_file(&self.path, entries.values())?;
        let fresh = Snapshot::build(entries, stamp(&self.path));
        *self.state.write().map_err(poisoned)? = fresh;
        drop(lock);
        Ok(())
    }

    pub fn add(&self, entry: Entry) -> Result<(), DirError> {
        let dn = entry
            .parsed_dn()
            .map_err(|e| DirError::Data(e.to_string()))?;
        self.change(|m| {
            let key = dn.normalized();
            if m.contains_key(&key) {
                return Err(DirError::AlreadyExists(entry.dn.clone()));
            }
            if let Some(parent) = dn.parent().filter(|p| !p.is_root()) {
                let is_suffix = !m
                    .keys()
                    .any(|k| Dn::parse(k).is_ok_and(|d| parent.is_under(&d)));
                if !m.contains_key(&parent.normalized()) && !is_suffix {
                    return Err(DirError::NotFound(format!("parent of {}", entry.dn)));
                }
            }
            m.insert(key, entry);
            Ok(())
        })
    }

    pub fn replace(&self, entry: Entry) -> Result<(), DirError> {
        let key = entry
            .parsed_dn()
            .map_err(|e| DirError::Data(e.to_string()))?
            .normalized();
        self.change(|m| match m.get_mut(&key) {
            Some(slot) => {
                *slot = entry;
                Ok(())
            }
            None => Err(DirError::NotFound(entry.dn.clone())),
        })
    }

    pub fn delete(&self, dn: &str) -> Result<(), DirError> {
        let target = Dn::parse(dn).map_err(|e| DirError::Data(e.to_string()))?;
        self.change(|m| {
            let key = target.normalized();
            if !m.contains_key(&key) {
                return Err(DirError::NotFound(dn.to_string()));
            }
            if m.keys()
                .any(|k| Dn::parse(k).is_ok_and(|d| d.is_child_of(&target)))
            {
                return Err(DirError::Data(format!(
                    "{dn} has entries below it; delete them first"
                )));
            }
            m.remove(&key);
            Ok(())
        })
    }
}

fn poisoned<T>(_: T) -> DirError {
    DirError::Unavailable("the embedded directory's lock was poisoned".into())
}

/// Parents before children, so `ldapadd -f` takes the file as it is.
fn write_file<'a>(path: &Path, entries: impl Iterator<Item = &'a Entry>) -> Result<(), DirError> {
    let mut list: Vec<&Entry> = entries.collect();
    list.sort_by_key(|e| {
        (
            e.parsed_dn().map(|d| d.depth()).unwrap_or(0),
            e.dn.to_lowercase(),
        )
    });
    let owned: Vec<Entry> = list.into_iter().cloned().collect();
    let text = ldif::write(&owned);
    epistle_config::write_atomically(path, text.as_bytes(), 0o640)
        .map_err(|e| DirError::Unavailable(format!("cannot write the directory: {e}")))
}
