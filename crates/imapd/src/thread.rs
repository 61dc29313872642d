//! THREAD=REFERENCES (RFC 5256 §4): messages linked by Message-ID,
//! In-Reply-To and References, dummy parents pruned, roots with the same
//! base subject gathered, siblings in sent-date order. Pure.

use std::collections::HashMap;

use crate::sort::{base_subject, is_reply};

/// What threading needs of one message.
pub struct ThreadItem {
    /// What the answer names it by (sequence number or UID).
    pub number: u32,
    pub seq: u32,
    pub sent: i64,
    pub subject: String,
    pub message_id: Option<String>,
    /// References, oldest first; or In-Reply-To's id when there are none.
    pub references: Vec<String>,
}

struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest<'a> {
    items: &'a [ThreadItem],
    nodes: Vec<Node>,
}

impl Forest<'_> {
    fn add(&mut self, msg: Option<usize>) -> usize {
        self.nodes.push(Node {
            msg,
            parent: None,
            children: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Whether `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut cur = Some(b);
        let mut steps = 0;
        while let Some(c) = cur {
            if c == a {
                return true;
            }
            steps += 1;
            if steps > self.nodes.len() {
                return true; // a loop: refuse the link
            }
            cur = self.nodes[c].parent;
        }
        false
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    /// A node's date: its message's, or (a dummy) its first child's.
    fn date(&self, n: usize) -> (i64, u32) {
        match self.nodes[n].msg {
            Some(m) => (self.items[m].sent, self.items[m].seq),
            None => self.nodes[n]
                .children
                .first()
                .map_or((i64::MAX, u32::MAX), |&c| self.date(c)),
        }
    }

    fn sort_siblings(&mut self, list: &mut [usize]) {
        for &n in list.iter() {
            let mut children = std::mem::take(&mut self.nodes[n].children);
            self.sort_siblings(&mut children);
            self.nodes[n].children = children;
        }
        list.sort_by_key(|&n| self.date(n));
    }

    /// Dummies without children go; a dummy's children take its place,
    /// except at the top where a dummy with several children stays.
    fn prune(&mut self, list: Vec<usize>, top: bool) -> Vec<usize> {
        let mut out = Vec::new();
        for n in list {
            let children = std::mem::take(&mut self.nodes[n].children);
            let children = self.prune(children, false);
            for &c in &children {
                self.nodes[c].parent = Some(n);
            }
            self.nodes[n].children = children;
            if self.nodes[n].msg.is_some() {
                out.push(n);
            } else if self.nodes[n].children.is_empty() {
                continue;
            } else if top && self.nodes[n].children.len() > 1 {
                out.push(n);
            } else {
                let promoted = std::mem::take(&mut self.nodes[n].children);
                for &c in &promoted {
                    self.nodes[c].parent = self.nodes[n].parent;
                }
                out.extend(promoted);
            }
        }
        out
    }

    /// The subject a root stands for: its message's, or its first
    /// child's for a dummy.
    fn root_subject(&self, n: usize) -> Option<&str> {
        let m = match self.nodes[n].msg {
            Some(m) => m,
            None => self.nodes[*self.nodes[n].children.first()?].msg?,
        };
        Some(&self.items[m].subject)
    }

    fn write(&self, n: usize, out: &mut String) {
        match self.nodes[n].msg {
            Some(m) => {
                out.push_str(&self.items[m].number.to_string());
                let children = &self.nodes[n].children;
                if children.len() == 1 {
                    out.push(' ');
                    self.write(children[0], out);
                } else if !children.is_empty() {
                    out.push(' ');
                    for &c in children {
                        out.push('(');
                        self.write(c, out);
                        out.push(')');
                    }
                }
            }
            None => {
                for &c in &self.nodes[n].children {
                    out.push('(');
                    self.write(c, out);
                    out.push(')');
                }
            }
        }
    }
}

/// The THREAD response's list of threads.
pub fn references(items: &[ThreadItem]) -> String {
    let mut f = Forest {
        items,
        nodes: Vec::new(),
    };
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        // The message's own container (a duplicate Message-ID gets its own).
        let me = match item.message_id.as_ref().and_then(|id| ids.get(id).copied()) {
            Some(n) if f.nodes[n].msg.is_none() => {
                f.nodes[n].msg = Some(i);
                n
            }
            _ => {
                let n = f.add(Some(i));
                if let Some(id) = &item.message_id {
                    ids.entry(id.clone()).or_insert(n);
                }
                n
            }
        };
        // Chain the references, never making a loop or moving a parent.
        let mut prev: Option<usize> = None;
        for r in &item.references {
            let node = match ids.get(r) {
                Some(&n) => n,
                None => {
                    let n = f.add(None);
                    ids.insert(r.clone(), n);
                    n
                }
            };
            if let Some(p) = prev
                && p != node
                && f.nodes[node].parent.is_none()
                && !f.is_ancestor(node, p)
            {
                f.link(p, node);
            }
            prev = Some(node);
        }
        // The message's parent is its last reference (or nothing).
        f.unlink(me);
        if let Some(p) = prev
            && p != me
            && !f.is_ancestor(me, p)
        {
            f.link(p, me);
        }
    }
    let roots: Vec<usize> = (0..f.nodes.len())
        .filter(|&n| f.nodes[n].parent.is_none())
        .collect();
    let mut roots = f.prune(roots, true);
    for &r in &roots {
        f.nodes[r].parent = None;
    }
    // Gather roots that share a base subject.
    let mut by_subject: HashMap<String, usize> = HashMap::new();
    for &r in &roots {
        let Some(subject) = f.root_subject(r) else {
            continue;
        };
        let base = base_subject(subject);
        if base.is_empty() {
            continue;
        }
        match by_subject.get(&base).copied() {
            None => {
                by_subject.insert(base, r);
            }
            Some(old) => {
                let old_dummy = f.nodes[old].msg.is_none();
                let new_dummy = f.nodes[r].msg.is_none();
                let old_reply = f.root_subject(old).is_some_and(is_reply);
                let new_reply = f.root_subject(r).is_some_and(is_reply);
                if (new_dummy && !old_dummy) || (old_reply && !new_reply && !old_dummy) {
                    by_subject.insert(base, r);
                }
            }
        }
    }
    let mut merged: Vec<usize> = Vec::new();
    for r in std::mem::take(&mut roots) {
        let target = f
            .root_subject(r)
            .map(base_subject)
            .and_then(|b| by_subject.get(&b).copied());
        let Some(t) = target.filter(|&t| t != r) else {
            merged.push(r);
            continue;
        };
        let (t_dummy, r_dummy) = (f.nodes[t].msg.is_none(), f.nodes[r].msg.is_none());
        let r_reply = f.root_subject(r).is_some_and(is_reply);
        let t_reply = f.root_subject(t).is_some_and(is_reply);
        if t_dummy && r_dummy {
            for c in std::mem::take(&mut f.nodes[r].children) {
                f.nodes[c].parent = None;
                f.link(t, c);
            }
        } else if t_dummy || (r_reply && !t_reply) {
            f.link(t, r);
        } else {
            // Neither is the other's reply: a new dummy holds both. The
            // table's root is replaced wherever it sits in the result.
            let d = f.add(None);
            let pos = merged.iter().position(|&m| m == t);
            f.link(d, t);
            f.link(d, r);
            match pos {
                Some(p) => merged[p] = d,
                None => merged.push(d),
            }
            if let Some(base) = f.root_subject(d).map(base_subject) {
                by_subject.insert(base, d);
            }
        }
    }
    let mut roots: Vec<usize> = merged
        .into_iter()
        .filter(|&r| f.nodes[r].parent.is_none())
        .collect();
    f.sort_siblings(&mut roots);
    let mut out = String::new();
    for r in roots {
        out.push('(');
        f.write(r, &mut out);
        out.push(')');
    }
    out
}

/// Message ids (`<…>`) in a References or In-Reply-To value, at most 100.
pub fn message_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let id = &rest[start..start + len + 1];
        if id.len() > 2 && !id.contains(char::is_whitespace) {
            out.push(id.to_string());
        }
        rest = &rest[start + len + 1..];
        if out.len() >= 100 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u32, sent: i64, subject: &str, id: &str, refs: &[&str]) -> ThreadItem {
        ThreadItem {
            number: n,
            seq: n,
            sent,
            subject: subject.into(),
            message_id: Some(id.into()),
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn threads() {
        let items = vec![
            item(1, 10, "plan", "<a>", &[]),
            item(2, 20, "Re: plan", "<b>", &["<a>"]),
            item(3, 30, "Re: plan", "<c>", &["<a>"]),
            item(4, 40, "Re: plan", "<d>", &["<a>", "<b>"]),
            item(5, 15, "lunch", "<e>", &[]),
            // Its parent is missing: a dummy, promoted away.
            item(6, 50, "Re: gone", "<f>", &["<zz>"]),
            // Same subject, no references: gathered under "lunch".
            item(7, 60, "Re: lunch", "<g>", &[]),
        ];
        assert_eq!(references(&items), "(1 (2 4)(3))(5 7)(6)");
        // A reference loop is cut, not followed.
        let items = vec![
            item(1, 1, "x", "<a>", &["<b>"]),
            item(2, 2, "y", "<b>", &["<a>"]),
        ];
        assert_eq!(references(&items), "(2 1)");
        assert_eq!(
            message_ids(" <a@b> <c@d>\r\n\t<e@f>"),
            ["<a@b>", "<c@d>", "<e@f>"]
        );
    }
}
