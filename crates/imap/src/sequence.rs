//! Sequence sets (RFC 9051 §9 `sequence-set`): message numbers or UIDs,
//! ranges with `*` for the largest in use, and `$` for the result saved
//! by SEARCH RETURN (SAVE) (RFC 5182).

/// One end of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    Value(u32),
    /// `*`: the largest number in use.
    Largest,
}

impl SeqNum {
    fn resolve(self, largest: u32) -> u32 {
        match self {
            SeqNum::Value(v) => v,
            SeqNum::Largest => largest,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceSet {
    /// Ranges as written (each end inclusive, either order).
    Ranges(Vec<(SeqNum, SeqNum)>),
    /// `$`: the saved search result.
    Saved,
}

/// Most ranges in one set (the line limit bounds it too).
pub const MAX_RANGES: usize = 10_000;

impl SequenceSet {
    /// Whether `n` is in the set, `largest` standing for `*`. False for
    /// `$` (the session substitutes the saved result first).
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        match self {
            SequenceSet::Saved => false,
            SequenceSet::Ranges(r) => r.iter().any(|&(a, b)| {
                let (a, b) = (a.resolve(largest), b.resolve(largest));
                a.min(b) <= n && n <= a.max(b)
            }),
        }
    }

    /// The set's ranges resolved against `largest`, low end first, sorted
    /// and merged.
    pub fn resolved(&self, largest: u32) -> Vec<(u32, u32)> {
        let SequenceSet::Ranges(r) = self else {
            return Vec::new();
        };
        let mut v: Vec<(u32, u32)> = r
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.resolve(largest), b.resolve(largest));
                (a.min(b), a.max(b))
            })
            .collect();
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        out
    }

    /// Parses `1,3:5,7:*` or `$`.
    pub fn parse(s: &str) -> Option<SequenceSet> {
        if s == "$" {
            return Some(SequenceSet::Saved);
        }
        let mut ranges = Vec::new();
        for part in s.split(',') {
            if ranges.len() == MAX_RANGES {
                return None;
            }
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            ranges.push((seq_num(a)?, seq_num(b)?));
        }
        Some(SequenceSet::Ranges(ranges))
    }
}

fn seq_num(s: &str) -> Option<SeqNum> {
    if s == "*" {
        return Some(SeqNum::Largest);
    }
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().map(SeqNum::Value)
}

/// Writes sorted numbers compactly: `1:3,7,9:10`.
pub fn compact(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = numbers[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_resolve() {
        let s = SequenceSet::parse("7:*,1,3:2").unwrap();
        assert_eq!(s.resolved(9), vec![(1, 3), (7, 9)]);
        assert!(s.contains(8, 9) && !s.contains(5, 9));
        // `*` below the other end still makes a range.
        assert_eq!(SequenceSet::parse("5:*").unwrap().resolved(3), vec![(3, 5)]);
        assert_eq!(SequenceSet::parse("$"), Some(SequenceSet::Saved));
        for bad in ["", "0", "1,", "a", "1:", "01", "4294967296", "1::2"] {
            assert_eq!(SequenceSet::parse(bad), None, "{bad}");
        }
        assert_eq!(compact(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
    }

    proptest::proptest! {
        #[test]
        fn compact_round_trips(mut v in proptest::collection::vec(1u32..50, 1..30)) {
            v.sort_unstable();
            v.dedup();
            let s = SequenceSet::parse(&compact(&v)).unwrap();
            let back: Vec<u32> = s.resolved(50).into_iter().flat_map(|(a, b)| a..=b).collect();
            proptest::prop_assert_eq!(back, v);
        }
    }
}
