//! Reading and changing a message's header section: the MTA's own edits
//! (an access table's `$K` new `Sender:`, the `Return-Path:` of final
//! delivery) and the fields it acts on (`Deferred-delivery:`); the
//! pieces other readers share (sections, fields, Content-Type). Pure.

/// The message with every `name:` field (and its continuation lines)
/// removed and `name: value` put where the first one was, or at the end
/// of the header section when there was none. A message without a blank
/// line is all header.
pub fn replace_field(message: &[u8], name: &str, value: &str) -> Vec<u8> {
    let field = field_line(name, value);
    let mut out = Vec::with_capacity(message.len() + field.len());
    edit(message, name, Some(&field), &mut out);
    out
}

/// The message as finally delivered (RFC 5321 §4.4): `Return-Path:`
/// with the envelope sender (`<>` for a notice) first, and any
/// `Return-Path:` the message came with taken out.
pub fn with_return_path(message: &[u8], from: &str) -> Vec<u8> {
    let field = field_line("Return-Path", &format!("<{from}>"));
    let mut out = Vec::with_capacity(message.len() + field.len());
    out.extend_from_slice(field.as_bytes());
    edit(message, "Return-Path", None, &mut out);
    out
}

/// The value of the first `name:` field, continuation lines unfolded and
/// surrounding blanks trimmed; `None` when the header has no such field.
pub fn field_value(message: &[u8], name: &str) -> Option<String> {
    let mut value: Option<Vec<u8>> = None;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        match value.as_mut() {
            Some(v) if continuation => v.extend_from_slice(line),
            Some(_) => break,
            None if !continuation && is_field(line, name) => {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                value = Some(line[colon + 1..].to_vec());
            }
            None => {}
        }
    }
    let v = value?;
    let text: String = String::from_utf8_lossy(&v)
        .split(['\r', '\n'])
        .collect::<Vec<_>>()
        .join("");
    Some(text.trim().to_string())
}

fn field_line(name: &str, value: &str) -> String {
    let value: String = value.chars().filter(|c| !c.is_control()).collect();
    format!("{name}: {value}\r\n")
}

/// Copies `message` into `out` without its `name:` fields; `field`, when
/// given, goes where the first was (or ends the header section).
fn edit(message: &[u8], name: &str, field: Option<&str>, out: &mut Vec<u8>) {
    let start = out.len();
    let mut placed = false;
    let mut dropping = false;
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let (line, after) = rest.split_at(end);
        if line == b"\r\n" || line == b"\n" {
            break; // the body starts
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            dropping = is_field(line, name);
            if dropping && !placed {
                out.extend_from_slice(field.unwrap_or("").as_bytes());
                placed = true;
            }
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        rest = after;
    }
    if let (false, Some(field)) = (placed, field) {
        if out.len() > start && !out.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(rest);
}

/// The header section and the body of a message (a message without a
/// blank line is all header).
pub fn split(message: &[u8]) -> (&[u8], &[u8]) {
    let mut at = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        at += line.len();
        if line == b"\r\n" || line == b"\n" {
            return (&message[..at - line.len()], &message[at..]);
        }
    }
    (message, &[])
}

/// The header's fields, each with its continuation lines.
pub fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation && at > start {
            out.push(&header[start..at]);
            start = at;
        }
        at += line.len();
    }
    if at > start {
        out.push(&header[start..at]);
    }
    out
}

pub fn field_name(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == b':').unwrap_or(0);
    String::from_utf8_lossy(&field[..end])
        .trim()
        .to_ascii_lowercase()
}

/// The parameters of a Content-Type value: `type/subtype; a=1; b="x y"`.
pub fn content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut rest = value.trim();
    let end = rest.find(';').unwrap_or(rest.len());
    let kind = rest[..end].trim().to_ascii_lowercase();
    rest = &rest[end..];
    let mut params = Vec::new();
    while let Some(after) = rest.strip_prefix(';') {
        let after = after.trim_start();
        let Some(eq) = after.find('=') else { break };
        let name = after[..eq].trim().to_ascii_lowercase();
        let v = after[eq + 1..].trim_start();
        let (value, left) = if let Some(q) = v.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end.min(q.len())..])
        } else {
            let end = v.find(';').unwrap_or(v.len());
            (v[..end].trim().to_string(), &v[end..])
        };
        params.push((name, value));
        rest = left.trim_start();
        if !rest.starts_with(';') {
            break;
        }
    }
    (kind, params)
}

/// Whether `line` starts field `name` (case-insensitive, `name:`).
fn is_field(line: &[u8], name: &str) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && line[name.len()..]
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            == Some(&b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_instance_where_the_first_was() {
        let m = b"From: a@b\r\nSender: old@x\r\n  (folded)\r\nTo: c@d\r\nsender : again\r\n\r\nSender: in the body\r\n";
        let out = replace_field(m, "Sender", "new@y");
        assert_eq!(
            out,
            b"From: a@b\r\nSender: new@y\r\nTo: c@d\r\n\r\nSender: in the body\r\n".to_vec()
        );
    }

    #[test]
    fn adds_at_the_end_of_the_header_when_absent() {
        let out = replace_field(b"From: a@b\r\n\r\nbody\r\n", "Sender", "s@y");
        assert_eq!(out, b"From: a@b\r\nSender: s@y\r\n\r\nbody\r\n".to_vec());
        // No blank line: all header; a last line without its end gets one.
        let out = replace_field(b"From: a@b", "Sender", "s@y\r\nBcc: x");
        assert_eq!(out, b"From: a@b\r\nSender: s@yBcc: x\r\n".to_vec());
        // Senders is another field.
        let out = replace_field(b"Senders: q\r\n\r\n", "Sender", "s");
        assert_eq!(out, b"Senders: q\r\nSender: s\r\n\r\n".to_vec());
    }

    #[test]
    fn reads_the_first_field_unfolded() {
        let m = b"Subject: one\r\nDeferred-Delivery: Tue, 1 Dec 2026\r\n 10:00:00 +0000\r\nX: y\r\ndeferred-delivery: second\r\n\r\nDeferred-Delivery: body\r\n";
        assert_eq!(
            field_value(m, "Deferred-delivery").as_deref(),
            Some("Tue, 1 Dec 2026 10:00:00 +0000")
        );
        assert_eq!(field_value(m, "Subject").as_deref(), Some("one"));
        assert_eq!(field_value(m, "Deferred"), None);
        assert_eq!(field_value(b"\r\nX: body\r\n", "X"), None);
        assert_eq!(field_value(b"X:", "X").as_deref(), Some(""));
    }

    #[test]
    fn return_path_comes_first_and_only_once() {
        let m =
            b"Received: x\r\nReturn-Path: <forged@x>\r\nSubject: s\r\n\r\nReturn-Path: body\r\n";
        assert_eq!(
            with_return_path(m, "a@b.c"),
            b"Return-Path: <a@b.c>\r\nReceived: x\r\nSubject: s\r\n\r\nReturn-Path: body\r\n"
                .to_vec()
        );
        assert!(with_return_path(b"\r\nbody", "").starts_with(b"Return-Path: <>\r\n\r\nbody"));
    }
}
