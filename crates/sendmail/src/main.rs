//! NAME
//!   sendmail - submit a message to the local MTA, as sendmail does
//!
//! SYNOPSIS
//!   sendmail [-t] [-i | -oi] [-f SENDER | -r SENDER] [-F NAME] [--] [RECIPIENT ...]
//!
//! DESCRIPTION
//!   Reads a message on standard input and hands it to the MTA of this
//!   installation over SMTP (the SMTP service of dispatcher.cnf, on the
//!   loopback side), the way the guide's sendmail clients reach it.
//!   Without -i a line holding only "." ends the message. -t takes the
//!   recipients from To:, Cc: and Bcc: (and removes Bcc:). -f sets the
//!   envelope sender (default: the user running the command, at
//!   local.defdomain). Date:, Message-ID: and From: are added when
//!   missing. Other sendmail options (-o..., -bm, -odi) are accepted and
//!   ignored.
//!
//! EXIT STATUS
//!   0 sent; 64 bad usage; 65 bad message; 67 a recipient was refused; 69
//!   the MTA refused the message; 75 the MTA is not running or asked to
//!   try later (sysexits.h).

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use epistle_channels::client::{SmtpClient, Timeouts};
use epistle_config::MsgSvrBase;
use epistle_mta::compiled::MtaConfig;
use epistle_mta::dispatcher_cnf::services;

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_UNAVAILABLE: u8 = 69;
const EX_TEMPFAIL: u8 = 75;
/// Largest message read from standard input.
const MAX_MESSAGE: usize = 256 << 20;

struct Options {
    from_headers: bool,
    dot_ends: bool,
    sender: Option<String>,
    full_name: Option<String>,
    recipients: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        from_headers: false,
        dot_ends: true,
        sender: None,
        full_name: None,
        recipients: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let mut value = |flag: &str| -> Result<String, String> {
            if a.len() > flag.len() {
                Ok(a[flag.len()..].to_string())
            } else {
                i += 1;
                args.get(i).cloned().ok_or(format!("{flag} needs a value"))
            }
        };
        match a.as_str() {
            "--" => {
                o.recipients.extend(args[i + 1..].iter().cloned());
                break;
            }
            "-t" => o.from_headers = true,
            "-i" | "-oi" => o.dot_ends = false,
            s if s.starts_with("-f") => o.sender = Some(value("-f")?),
            s if s.starts_with("-r") => o.sender = Some(value("-r")?),
            s if s.starts_with("-F") => o.full_name = Some(value("-F")?),
            s if s.starts_with("-o") || s.starts_with("-b") || s.starts_with("-v") => {
                if s == "-bs" || s == "-bd" || s == "-bp" {
                    return Err(format!("{s} is not supported; use SMTP or imsimta qm"));
                }
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => o.recipients.push(a.clone()),
        }
        i += 1;
    }
    Ok(o)
}

/// The header block and the body, split at the first empty line.
fn split(message: &str) -> (&str, &str) {
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(p) = message.find(sep) {
            return (&message[..p], &message[p + sep.len()..]);
        }
    }
    (message, "")
}

/// Header fields as (name, whole field text with continuations).
fn fields(header: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in header.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push_str("\r\n");
                last.1.push_str(line);
            }
        } else if let Some((name, _)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), line.to_string()));
        }
    }
    out
}

/// Addresses of an address-list field: `<…>` parts, or bare words with @.
fn addresses(field: &str) -> Vec<String> {
    let value = field.split_once(':').map_or("", |(_, v)| v);
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut current) = (0, false, String::new());
    for c in value.chars().chain(std::iter::once(',')) {
        match c {
            '"' => quoted = !quoted,
            // Comments are dropped.
            '(' if !quoted => {
                depth += 1;
                continue;
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                continue;
            }
            ',' if !quoted && depth == 0 => {
                let part = current.trim();
                let addr = match (part.rfind('<'), part.rfind('>')) {
                    (Some(a), Some(b)) if a < b => part[a + 1..b].trim().to_string(),
                    _ => part.split_whitespace().last().unwrap_or("").to_string(),
                };
                if addr.contains('@') {
                    out.push(addr);
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            current.push(c);
        }
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let mut raw = Vec::new();
    if std::io::stdin()
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut raw)
        .is_err()
        || raw.len() > MAX_MESSAGE
    {
        eprintln!("sendmail: cannot read the message (at most {MAX_MESSAGE} bytes)");
        return ExitCode::from(EX_DATAERR);
    }
    let mut text = String::from_utf8_lossy(&raw).into_owned();
    if opts.dot_ends
        && let Some(p) = text.lines().position(|l| l.trim_end_matches('\r') == ".")
    {
        text = text.lines().take(p).collect::<Vec<_>>().join("\n");
        text.push('\n');
    }
    let base = MsgSvrBase::locate();
    let cfg = base.config_files().load().ok();
    let get = |name: &str| {
        cfg.as_ref()
            .map(|c| c.get(name).to_string())
            .unwrap_or_default()
    };
    let host = match get("local.hostname") {
        h if h.is_empty() => "localhost".to_string(),
        h => h,
    };
    let domain = match get("local.defdomain") {
        d if d.is_empty() => host.clone(),
        d => d,
    };
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::current())
        .ok()
        .flatten()
        .map_or_else(|| "nobody".to_string(), |u| u.name);
    let sender = opts
        .sender
        .clone()
        .unwrap_or_else(|| format!("{user}@{domain}"));
    let (header, body) = split(&text);
    let fs = fields(header);
    let mut recipients = opts.recipients.clone();
    if opts.from_headers {
        for (name, f) in &fs {
            if matches!(name.as_str(), "to" | "cc" | "bcc") {
                recipients.extend(addresses(f));
            }
        }
    }
    if recipients.is_empty() {
        eprintln!("sendmail: no recipients (name them, or use -t)");
        return ExitCode::from(EX_USAGE);
    }
    // The header as sent: Bcc: dropped, missing fields added.
    let mut out = String::new();
    let has = |n: &str| fs.iter().any(|(name, _)| name == n);
    if !has("from") {
        match &opts.full_name {
            Some(n) => out.push_str(&format!("From: \"{}\" <{sender}>\r\n", n.replace('"', ""))),
            None => out.push_str(&format!("From: {sender}\r\n")),
        }
    }
    if !has("date") {
        out.push_str(&format!("Date: {}\r\n", chrono::Local::now().to_rfc2822()));
    }
    if !has("message-id") {
        let id = format!(
            "{}.{}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            std::process::id()
        );
        out.push_str(&format!("Message-ID: <{id}@{host}>\r\n"));
    }
    for (name, f) in &fs {
        if name != "bcc" {
            out.push_str(f);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(body);
    let message = out.replace("\r\n", "\n").replace('\n', "\r\n");

    let target = match smtp_address(&base) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    ExitCode::from(rt.block_on(submit(
        target,
        &host,
        &sender,
        &recipients,
        message.as_bytes(),
    )))
}

/// Where the local MTA listens: the SMTP service of the compiled
/// dispatcher.cnf, on loopback when it listens everywhere.
fn smtp_address(base: &MsgSvrBase) -> Result<SocketAddr, String> {
    let mta = MtaConfig::load(&base.config())
        .map_err(|e| format!("cannot read the MTA configuration: {e}"))?;
    let specs = services(&mta.dispatcher).map_err(|e| e.to_string())?;
    let spec = specs
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case("SMTP"))
        .or(specs.first())
        .ok_or("dispatcher.cnf has no SMTP service")?;
    let port = spec
        .ports
        .iter()
        .find(|p| !spec.tls_ports.contains(p))
        .ok_or("the SMTP service has no port without TLS")?;
    let ip = match spec.interface {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(ip) => ip,
    };
    Ok(SocketAddr::new(ip, *port))
}

async fn submit(
    target: SocketAddr,
    host: &str,
    sender: &str,
    recipients: &[String],
    message: &[u8],
) -> u8 {
    let fail = |code: u8, what: String| {
        eprintln!("sendmail: {what}");
        code
    };
    let mut c =
        match SmtpClient::connect(target, None, target.to_string(), Timeouts::default()).await {
            Ok(c) => c,
            Err(e) => return fail(EX_TEMPFAIL, format!("the MTA is not reachable: {e}")),
        };
    let temp_or = |code: u16| {
        if code < 500 {
            EX_TEMPFAIL
        } else {
            EX_UNAVAILABLE
        }
    };
    match c.greeting().await {
        Ok(r) if r.code == 220 => {}
        Ok(r) => return fail(temp_or(r.code), format!("the MTA said {r}")),
        Err(e) => return fail(EX_TEMPFAIL, e.to_string()),
    }
    let steps = async {
        let r = c.hello(host, false).await?;
        if r.code != 250 {
            return Ok(Err((temp_or(r.code), format!("EHLO: {r}"))));
        }
        let r = c.command(&format!("MAIL FROM:<{sender}>")).await?;
        if r.code != 250 {
            return Ok(Err((temp_or(r.code), format!("sender {sender}: {r}"))));
        }
        let mut accepted = 0;
        let mut refused = false;
        for rcpt in recipients {
            let r = c.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if r.code == 250 || r.code == 251 {
                accepted += 1;
            } else {
                eprintln!("sendmail: {rcpt}: {r}");
                refused = true;
            }
        }
        if accepted == 0 {
            return Ok(Err((EX_NOUSER, "no recipient was accepted".to_string())));
        }
        let r = c.command("DATA").await?;
        if r.code != 354 {
            return Ok(Err((temp_or(r.code), format!("DATA: {r}"))));
        }
        let r = c.data(message, 1).await?;
        if r[0].code != 250 {
            return Ok(Err((
                temp_or(r[0].code),
                format!("message refused: {}", r[0]),
            )));
        }
        Ok::<_, epistle_channels::client::ClientError>(Ok(refused))
    };
    let result = steps.await;
    c.quit().await;
    match result {
        Ok(Ok(false)) => 0,
        Ok(Ok(true)) => EX_NOUSER,
        Ok(Err((code, what))) => fail(code, what),
        Err(e) => fail(EX_TEMPFAIL, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_addresses() {
        assert_eq!(
            addresses(
                "To: Joe <joe@example.com>, \"Bloggs, Ann\" <ann@example.com>,\r\n bob@example.org (Bob)"
            ),
            vec!["joe@example.com", "ann@example.com", "bob@example.org"]
        );
        let f = fields("Subject: a\r\nTo: x@example.com,\r\n y@example.com\r\nBcc: z@example.com");
        assert_eq!(f.len(), 3);
        assert_eq!(addresses(&f[1].1), vec!["x@example.com", "y@example.com"]);
    }

    #[test]
    fn options() {
        let o = parse(&[
            "-t".into(),
            "-oi".into(),
            "-f".into(),
            "a@b".into(),
            "x@y".into(),
        ])
        .unwrap();
        assert!(o.from_headers && !o.dot_ends);
        assert_eq!(o.sender.as_deref(), Some("a@b"));
        assert_eq!(o.recipients, vec!["x@y"]);
        assert!(parse(&["-q".into()]).is_err());
        assert_eq!(
            parse(&["-fa@b".into()]).unwrap().sender.as_deref(),
            Some("a@b")
        );
    }
}
