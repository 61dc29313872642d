//! The command line in the style of the Communications Server utilities:
//! `commadmin OBJECT ACTION -x value ...`, single-letter options, some
//! repeatable, and `-i FILE` for a batch of option lines.

use std::collections::BTreeMap;

/// Options that take no value.
const FLAGS: &[char] = &['s', 'v', 'h', '?'];
/// Options that may be given more than once.
const REPEATABLE: &[char] = &['A', 'm', 'M'];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    values: BTreeMap<char, Vec<String>>,
}

impl Options {
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, String> {
        let mut o = Options::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let mut chars = a.chars();
            let (Some('-'), Some(c), None) = (chars.next(), chars.next(), chars.next()) else {
                return Err(format!(
                    "unexpected argument {a:?}; options look like -l uid"
                ));
            };
            if FLAGS.contains(&c) {
                o.values.entry(c).or_default().push(String::new());
                continue;
            }
            let v = it.next().ok_or_else(|| format!("-{c} needs a value"))?;
            let slot = o.values.entry(c).or_default();
            if !slot.is_empty() && !REPEATABLE.contains(&c) {
                return Err(format!("-{c} given twice"));
            }
            slot.push(v);
        }
        Ok(o)
    }

    /// Options of one batch line over the command line's (the line wins).
    pub fn merged(&self, line: &Options) -> Options {
        let mut o = self.clone();
        for (k, v) in &line.values {
            o.values.insert(*k, v.clone());
        }
        o
    }

    pub fn get(&self, c: char) -> Option<&str> {
        self.values
            .get(&c)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    pub fn all(&self, c: char) -> &[String] {
        self.values.get(&c).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has(&self, c: char) -> bool {
        self.values.contains_key(&c)
    }

    pub fn require(&self, c: char, what: &str) -> Result<&str, String> {
        self.get(c)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("-{c} {what} is required"))
    }

    /// Refuses options the action does not know.
    pub fn only(&self, allowed: &str) -> Result<(), String> {
        let common = "DwnXpsvi";
        match self
            .values
            .keys()
            .find(|k| !allowed.contains(**k) && !common.contains(**k))
        {
            Some(k) => Err(format!("-{k} does not apply here")),
            None => Ok(()),
        }
    }
}

/// Splits a batch line into words, honouring "double" and 'single' quotes.
pub fn split_line(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Result<Options, String> {
        Options::parse(split_line(s).unwrap())
    }

    #[test]
    fn parses_values_flags_and_repeats() {
        let o =
            opts("-l joe -A mailQuota:10M -A +mailAlternateAddress:j@example.com -v -F \"Joe B\"")
                .unwrap();
        assert_eq!(o.get('l'), Some("joe"));
        assert_eq!(o.all('A').len(), 2);
        assert!(o.has('v'));
        assert_eq!(o.get('F'), Some("Joe B"));
        assert!(opts("-l a -l b").is_err());
        assert!(opts("-l").is_err());
        assert!(opts("joe").is_err());
        assert!(split_line("-F \"open").is_err());
    }
}
