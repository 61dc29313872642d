//! A directory entry: a DN and its attributes, looked up by name without
//! regard to case, as LDAP does.

use std::collections::BTreeMap;

use crate::dn::{Dn, DnError};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The DN as written.
    pub dn: String,
    /// Lower-cased attribute name → (name as written, values).
    attrs: BTreeMap<String, (String, Vec<String>)>,
}

impl Entry {
    pub fn new(dn: impl Into<String>) -> Entry {
        Entry {
            dn: dn.into(),
            attrs: BTreeMap::new(),
        }
    }

    pub fn parsed_dn(&self) -> Result<Dn, DnError> {
        Dn::parse(&self.dn)
    }

    /// Adds a value (duplicates, compared without case, are ignored).
    pub fn add(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        let slot = self
            .attrs
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| (name.to_string(), Vec::new()));
        if !slot.1.iter().any(|v| v.eq_ignore_ascii_case(&value))
            || name.eq_ignore_ascii_case("userPassword")
        {
            slot.1.push(value);
        }
    }

    /// Replaces every value of `name` (none: removes the attribute).
    pub fn set(&mut self, name: &str, values: Vec<String>) {
        if values.is_empty() {
            self.attrs.remove(&name.to_ascii_lowercase());
        } else {
            self.attrs
                .insert(name.to_ascii_lowercase(), (name.to_string(), values));
        }
    }

    /// Removes one value; true when it was there.
    pub fn remove_value(&mut self, name: &str, value: &str) -> bool {
        let key = name.to_ascii_lowercase();
        let Some((_, vals)) = self.attrs.get_mut(&key) else {
            return false;
        };
        let before = vals.len();
        vals.retain(|v| !v.eq_ignore_ascii_case(value));
        let removed = vals.len() != before;
        if vals.is_empty() {
            self.attrs.remove(&key);
        }
        removed
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).first().map(String::as_str)
    }

    pub fn get_all(&self, name: &str) -> &[String] {
        self.attrs
            .get(&name.to_ascii_lowercase())
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    pub fn has(&self, name: &str) -> bool {
        self.attrs.contains_key(&name.to_ascii_lowercase())
    }

    pub fn has_class(&self, class: &str) -> bool {
        self.get_all("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(class))
    }

    /// Attributes as (name as written, values), in name order.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.attrs.values().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}
