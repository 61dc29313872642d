//! The aliases file (original.md §3.5): addresses the directory does not
//! hold, such as postmaster. One `alias: address address …` a line
//! (commas between addresses are accepted too), `!` comments, blank lines
//! ignored, a trailing `\` continues a line, and `<file` includes a file
//! of the same form. An alias without `@domain` names a local-host alias.

use std::collections::BTreeMap;

use crate::imtacnf::{ImtaError, Origin};

/// Longest physical line, as the original.
pub const MAX_LINE: usize = 1024;
/// Deepest include nesting and alias-to-alias expansion.
pub const MAX_DEPTH: usize = 8;
/// Most files included in all.
pub const MAX_INCLUDES: usize = 256;
/// Most addresses one expansion yields.
pub const MAX_EXPANSION: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Aliases {
    /// Lower-cased alias to its addresses, in file order.
    entries: BTreeMap<String, Vec<String>>,
}

fn err(origin: Origin, message: impl Into<String>) -> ImtaError {
    ImtaError {
        origin,
        message: message.into(),
    }
}

impl Aliases {
    pub fn parse(
        file: &str,
        text: &str,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Aliases, ImtaError> {
        let mut aliases = Aliases::default();
        aliases.add(file, text, read, 0, &mut 0)?;
        Ok(aliases)
    }

    fn add(
        &mut self,
        file: &str,
        text: &str,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
        depth: usize,
        includes: &mut usize,
    ) -> Result<(), ImtaError> {
        let mut logical = String::new();
        let mut start = 0;
        for (n, raw) in text.lines().enumerate() {
            let origin = Origin {
                file: file.to_string(),
                line: n + 1,
            };
            if raw.len() > MAX_LINE {
                return Err(err(
                    origin,
                    format!("line longer than {MAX_LINE} characters"),
                ));
            }
            if logical.is_empty() {
                start = n + 1;
                if raw.starts_with('!') || raw.trim().is_empty() {
                    continue;
                }
                if let Some(name) = raw.strip_prefix('<') {
                    let name = name.trim();
                    if depth >= MAX_DEPTH {
                        return Err(err(
                            origin,
                            format!("includes nested deeper than {MAX_DEPTH}"),
                        ));
                    }
                    *includes += 1;
                    if *includes > MAX_INCLUDES {
                        return Err(err(
                            origin,
                            format!("more than {MAX_INCLUDES} files included"),
                        ));
                    }
                    let included = read(name).map_err(|why| {
                        err(origin.clone(), format!("cannot include {name}: {why}"))
                    })?;
                    self.add(name, &included, read, depth + 1, includes)?;
                    continue;
                }
            }
            match raw.strip_suffix('\\') {
                Some(part) => {
                    logical.push_str(part);
                    logical.push(' ');
                }
                None => {
                    logical.push_str(raw);
                    let origin = Origin {
                        file: file.to_string(),
                        line: start,
                    };
                    self.entry(&std::mem::take(&mut logical), origin)?;
                }
            }
        }
        if !logical.is_empty() {
            self.entry(
                &logical,
                Origin {
                    file: file.to_string(),
                    line: start,
                },
            )?;
        }
        Ok(())
    }

    fn entry(&mut self, line: &str, origin: Origin) -> Result<(), ImtaError> {
        let (alias, targets) = line
            .split_once(':')
            .ok_or_else(|| err(origin.clone(), "an alias line is \"alias: address ...\""))?;
        let alias = alias.trim().to_lowercase();
        if alias.is_empty() || alias.contains(char::is_whitespace) {
            return Err(err(origin, "the alias before the colon must be one word"));
        }
        let targets: Vec<String> = targets
            .split([',', ' ', '\t'])
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if targets.is_empty() {
            return Err(err(origin, format!("alias {alias} has no addresses")));
        }
        if self.entries.contains_key(&alias) {
            return Err(err(origin, format!("alias {alias} is defined twice")));
        }
        self.entries.insert(alias, targets);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The addresses an alias names directly. `address` is tried whole,
    /// then by its local part when its domain is one of `local_domains`.
    pub fn get(&self, address: &str, local_domains: &[&str]) -> Option<&[String]> {
        self.entry_for(address, local_domains).map(|(_, t)| t)
    }

    /// The matching alias's own name and its addresses.
    fn entry_for(&self, address: &str, local_domains: &[&str]) -> Option<(&str, &[String])> {
        let lower = address.to_lowercase();
        let found = self.entries.get_key_value(&lower).or_else(|| {
            let (local, domain) = lower.rsplit_once('@')?;
            local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
                .then(|| self.entries.get_key_value(local))
                .flatten()
        });
        found.map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Expands an address through aliases naming aliases, to the final
    /// addresses (without duplicates, in order); an address that is no
    /// alias is itself. Loops end the branch that loops.
    pub fn expand(&self, address: &str, local_domains: &[&str]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.expand_into(address, local_domains, &mut path, &mut out)?;
        Ok(out)
    }

    fn expand_into(
        &self,
        address: &str,
        local_domains: &[&str],
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        let (key, targets) = match self.entry_for(address, local_domains) {
            Some((key, t)) if !path.iter().any(|p| p == key) => (key.to_string(), t),
            _ => {
                if !out.iter().any(|o: &String| o.eq_ignore_ascii_case(address)) {
                    if out.len() >= MAX_EXPANSION {
                        return Err(format!(
                            "alias expansion of more than {MAX_EXPANSION} addresses"
                        ));
                    }
                    out.push(address.to_string());
                }
                return Ok(());
            }
        };
        if path.len() >= MAX_DEPTH {
            return Err(format!(
                "aliases nested deeper than {MAX_DEPTH} at {address}"
            ));
        }
        path.push(key);
        for t in targets {
            self.expand_into(t, local_domains, path, out)?;
        }
        path.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Aliases, ImtaError> {
        Aliases::parse("aliases", text, &mut |name| match name {
            "more" => Ok("webmaster: joe@example.com\n".into()),
            "wide" => Ok("<leaf\n".repeat(MAX_INCLUDES + 1)),
            "leaf" => Ok(String::new()),
            _ => Err("no such file".into()),
        })
    }

    #[test]
    fn lines_continuations_and_includes() {
        let a = parse(
            "! comment\n\npostmaster: pma@example.com\nstaff: joe@example.com, \\\n  ann@example.com bob\n<more\nroot@mail.example.com: postmaster\n",
        )
        .unwrap();
        assert_eq!(a.len(), 4);
        let local = ["example.com", "mail.example.com"];
        assert_eq!(
            a.get("Postmaster@Example.COM", &local).unwrap(),
            ["pma@example.com"]
        );
        assert_eq!(a.get("postmaster@elsewhere.org", &local), None);
        assert_eq!(
            a.get("staff@example.com", &local).unwrap(),
            ["joe@example.com", "ann@example.com", "bob"]
        );
        assert_eq!(
            a.get("webmaster@example.com", &local).unwrap(),
            ["joe@example.com"]
        );
        assert_eq!(
            a.expand("root@mail.example.com", &local).unwrap(),
            ["pma@example.com"]
        );
        assert_eq!(
            a.expand("nobody@example.com", &local).unwrap(),
            ["nobody@example.com"]
        );
    }

    #[test]
    fn loops_stop_and_duplicates_merge() {
        let a = parse("a: b c\nb: a c\nc: x@example.org\n").unwrap();
        let local = ["example.com"];
        assert_eq!(
            a.expand("a@example.com", &local).unwrap(),
            ["a", "x@example.org"]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(
            parse("x: a\nnonsense\n").unwrap_err().to_string(),
            "aliases:2: an alias line is \"alias: address ...\""
        );
        assert_eq!(parse("a b: c\n").unwrap_err().origin.line, 1);
        assert!(parse("a:\n").unwrap_err().message.contains("no addresses"));
        assert!(
            parse("a: b\nA: c\n")
                .unwrap_err()
                .message
                .contains("defined twice")
        );
        assert!(
            parse("<gone\n")
                .unwrap_err()
                .message
                .contains("cannot include gone")
        );
        assert!(parse(&format!("a: {}\n", "b".repeat(MAX_LINE))).is_err());
        let e = parse("<wide\n").unwrap_err();
        assert!(e.message.contains("files included"), "{e}");
    }

    #[test]
    fn the_shipped_template_parses() {
        let text =
            include_str!("../../../config/aliases").replace("@@POSTMASTER@@", "pma@example.com");
        let a = parse(&text).unwrap();
        assert_eq!(
            a.expand("MAILER-DAEMON@example.com", &["example.com"])
                .unwrap(),
            ["pma@example.com"]
        );
    }
}
