//! msprobe: does a service still answer? Connects to one of its listeners
//! and reads the protocol greeting (IMAP `* OK`, POP `+OK`, SMTP `220`,
//! HTTP status line). TLS ports are only connected to.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a healthy greeting starts with, for the protocols that greet.
/// `None`: a connect is all that can be checked without TLS.
pub fn expected_greeting(protocol: &str) -> Option<&'static [&'static str]> {
    match protocol {
        "imap" => Some(&["* OK", "* PREAUTH"]),
        "pop3" => Some(&["+OK"]),
        "smtp" | "submission" | "lmtp" => Some(&["220"]),
        "http" => Some(&["HTTP/"]),
        _ => None,
    }
}

/// Is `greeting` what `protocol` should say?
pub fn greeting_ok(protocol: &str, greeting: &str) -> bool {
    match expected_greeting(protocol) {
        None => true,
        Some(prefixes) => prefixes.iter().any(|p| greeting.starts_with(p)),
    }
}

/// A wildcard bind address is probed on loopback.
pub fn probe_target(bound: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = bound.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Some(addr)
}

/// Probes once; `Ok(elapsed)` on a healthy answer within `timeout`.
pub async fn probe(
    addr: SocketAddr,
    protocol: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if expected_greeting(protocol).is_none() {
            return Ok(());
        }
        if protocol == "http" {
            s.write_all(b"HEAD / HTTP/1.0\r\n\r\n")
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        let mut buf = vec![0u8; 512];
        let mut got = 0;
        while got < buf.len() && !buf[..got].contains(&b'\n') {
            let n = s
                .read(&mut buf[got..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = String::from_utf8_lossy(&buf[..got]);
        let line = line.lines().next().unwrap_or("").to_string();
        if greeting_ok(protocol, &line) {
            Ok(())
        } else if line.is_empty() {
            Err("closed without a greeting".to_string())
        } else {
            Err(format!("unexpected greeting {line:?}"))
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings() {
        assert!(greeting_ok("imap", "* OK mail.example.com IMAP4 service"));
        assert!(!greeting_ok("imap", "+OK"));
        assert!(greeting_ok("pop3", "+OK ready"));
        assert!(greeting_ok("smtp", "220 mail ESMTP"));
        assert!(greeting_ok("imaps", ""));
        assert_eq!(
            probe_target("0.0.0.0:143").unwrap().to_string(),
            "127.0.0.1:143"
        );
        assert_eq!(probe_target("[::]:143").unwrap().to_string(), "[::1]:143");
    }
}
