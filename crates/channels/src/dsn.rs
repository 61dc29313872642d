//! Delivery status notifications (RFC 3464): a `multipart/report` from
//! the postmaster with a human part, a `message/delivery-status` part
//! naming each recipient, its status and the remote reply, and the
//! original message (or its header, for `RET=HDRS`). Pure.

use std::fmt::Write as _;

use epistle_mta::queuefile::Envelope;

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    Failed,
    Delayed,
    Delivered,
}

impl DsnAction {
    fn word(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
        }
    }
}

/// One recipient's part of a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// ORCPT (`rfc822;joe@example.com`), when known.
    pub original: Option<String>,
    /// The address the channel delivered to.
    pub final_recipient: String,
    pub action: DsnAction,
    /// `5.1.1`.
    pub status: String,
    /// The remote server, for `Remote-MTA`.
    pub remote_mta: Option<String>,
    /// `smtp; 550 5.1.1 No such user`, or our own reason.
    pub diagnostic: String,
}

/// Everything a notice says.
pub struct Notice<'a> {
    /// This host, for `Reporting-MTA` and the Message-ID.
    pub host: &'a str,
    /// The notice's `From:`.
    pub postmaster: &'a str,
    /// The notice's `To:`: the sender, or the postmaster for a copy.
    pub to: &'a str,
    pub envelope: &'a Envelope,
    pub recipients: &'a [RecipientStatus],
    /// The message as queued.
    pub message: &'a [u8],
    /// Date to give up, for delay notices.
    pub retry_until: Option<String>,
    /// A unique token for the boundary and Message-ID.
    pub token: &'a str,
    /// Most bytes of the original returned in full.
    pub return_limit: usize,
}

/// The header of a message: up to and including the blank line.
fn header_of(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| message.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(message.len());
    &message[..end]
}

/// One line of a delivery-status field: no line breaks may get in.
fn field(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(900)
        .collect()
}

impl Notice<'_> {
    fn worst(&self) -> DsnAction {
        if self
            .recipients
            .iter()
            .any(|r| r.action == DsnAction::Failed)
        {
            DsnAction::Failed
        } else if self
            .recipients
            .iter()
            .any(|r| r.action == DsnAction::Delayed)
        {
            DsnAction::Delayed
        } else {
            DsnAction::Delivered
        }
    }

    /// The notice as a message (CRLF line ends).
    pub fn build(&self, date: &str) -> Vec<u8> {
        let kind = self.worst();
        let subject = match kind {
            DsnAction::Failed => "Undeliverable: delivery failed",
            DsnAction::Delayed => "Delayed: delivery not yet done",
            DsnAction::Delivered => "Delivered",
        };
        let boundary = format!("=_report_{}", self.token);
        let mut h = String::new();
        let _ = write!(
            h,
            "From: Mail Delivery System <{}>\r\nTo: <{}>\r\nSubject: {subject}\r\n\
             Date: {date}\r\nMessage-ID: <dsn.{}@{}>\r\nAuto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n\
             This is a MIME-encapsulated delivery status notification.\r\n\r\n",
            field(self.postmaster),
            field(self.to),
            self.token,
            self.host,
        );
        // The human part.
        let _ = write!(
            h,
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        );
        let intro = match kind {
            DsnAction::Failed => {
                "Your message could not be delivered to one or more recipients.\r\n\
                 It has been returned; the reasons are below.\r\n"
            }
            DsnAction::Delayed => {
                "Your message has not been delivered yet to the recipients below.\r\n\
                 Delivery is still being tried; you need do nothing now.\r\n"
            }
            DsnAction::Delivered => {
                "Your message was delivered to the recipients below, as you asked to be told.\r\n"
            }
        };
        h.push_str(intro);
        h.push_str("\r\n");
        for r in self.recipients {
            let who = r
                .original
                .as_deref()
                .and_then(|o| o.split_once(';').map(|(_, a)| a))
                .unwrap_or(&r.final_recipient);
            let _ = write!(
                h,
                "  {}: {}\r\n    {}\r\n",
                field(who),
                r.action.word(),
                field(&r.diagnostic)
            );
        }
        if let Some(until) = &self.retry_until {
            let _ = write!(h, "\r\nDelivery will be tried until {until}.\r\n");
        }
        // The machine-readable part.
        let _ = write!(
            h,
            "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n\
             Reporting-MTA: dns;{}\r\n",
            self.host
        );
        if let Some(envid) = &self.envelope.envid {
            let _ = write!(h, "Original-Envelope-Id: {}\r\n", field(envid));
        }
        if let Some(arrival) = chrono::DateTime::from_timestamp(self.envelope.received, 0) {
            let _ = write!(h, "Arrival-Date: {}\r\n", arrival.to_rfc2822());
        }
        for r in self.recipients {
            h.push_str("\r\n");
            if let Some(o) = &r.original {
                let _ = write!(h, "Original-Recipient: {}\r\n", field(o));
            }
            let _ = write!(
                h,
                "Final-Recipient: rfc822;{}\r\nAction: {}\r\nStatus: {}\r\n",
                field(&r.final_recipient),
                r.action.word(),
                field(&r.status)
            );
            if let Some(m) = &r.remote_mta {
                let _ = write!(h, "Remote-MTA: dns;{}\r\n", field(m));
            }
            if !r.diagnostic.is_empty() {
                let _ = write!(h, "Diagnostic-Code: {}\r\n", field(&r.diagnostic));
            }
            if r.action == DsnAction::Delayed
                && let Some(until) = &self.retry_until
            {
                let _ = write!(h, "Will-Retry-Until: {until}\r\n");
            }
        }
        // The original: whole for failures unless RET=HDRS or too big.
        let full = kind == DsnAction::Failed
            && self.envelope.ret.as_deref() != Some("HDRS")
            && self.message.len() <= self.return_limit;
        let mut out = h.into_bytes();
        if full {
            out.extend_from_slice(
                format!("\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(self.message);
        } else {
            out.extend_from_slice(
                format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(header_of(self.message));
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_notice_names_recipient_reply_and_reason() {
        let env = Envelope {
            from: "joe@example.org".into(),
            envid: Some("ENV1".into()),
            received: 1_800_000_000,
            ..Default::default()
        };
        let rs = [RecipientStatus {
            original: Some("rfc822;ann@example.com".into()),
            final_recipient: "ann@example.com".into(),
            action: DsnAction::Failed,
            status: "5.1.1".into(),
            remote_mta: Some("mx.example.com".into()),
            diagnostic: "smtp; 550 5.1.1 No such user\r\nInjected: x".into(),
        }];
        let n = Notice {
            to: "a@example.org",
            host: "mail.example.net",
            postmaster: "postmaster@example.net",
            envelope: &env,
            recipients: &rs,
            message: b"Subject: hi\r\n\r\nbody\r\n",
            retry_until: None,
            token: "T1",
            return_limit: 1 << 20,
        };
        let text = String::from_utf8(n.build("Tue, 1 Dec 2026 10:00:00 +0000")).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains(
            "Final-Recipient: rfc822;ann@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(text.contains("Original-Recipient: rfc822;ann@example.com\r\n"));
        assert!(text.contains("Remote-MTA: dns;mx.example.com\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 No such user  Injected: x\r\n"));
        assert!(text.contains("Original-Envelope-Id: ENV1\r\n"));
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nbody\r\n"));
        assert!(text.ends_with("--=_report_T1--\r\n"));
        assert!(!text.contains("\r\nInjected:"), "no header injection");

        let hdrs = Envelope {
            ret: Some("HDRS".into()),
            ..env.clone()
        };
        let n = Notice {
            to: "a@example.org",
            envelope: &hdrs,
            ..n
        };
        let text = String::from_utf8(n.build("d")).unwrap();
        assert!(text.contains("text/rfc822-headers\r\n\r\nSubject: hi\r\n\r\n"));
        assert!(!text.contains("body"));
    }
}
