//! What the access servers (imapd, popd, and later the webmail and the
//! proxy) share around a client session: accepting connections, the
//! session limit, slowing down password guessing, which clients may send
//! a password in the clear, and the §11.2 close record.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// The next connection on `listener`; never ready when there is none
/// (a port turned off), so it can sit in a `select!` beside the others.
pub async fn accept(listener: Option<&TcpListener>) -> Option<(TcpStream, SocketAddr)> {
    let Some(l) = listener else {
        return std::future::pending().await;
    };
    match l.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            // Out of descriptors and the like: wait a little, go on.
            tracing::warn!("accept: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Closes a client connection so that the last answer arrives: the
/// sending side is shut down first, then what the client still sends is
/// read and dropped for a moment. Closing with unread input would make
/// the kernel reset the connection, and a reset can destroy the answer
/// (a "line too long" error) before the client reads it.
pub async fn close_gracefully<S>(stream: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// This host's own loopback address (127.0.0.1 or ::1), where a password
/// in the clear never crosses a network. Other 127/8 addresses count as
/// remote, as they do for the MTA's INTERNAL_IP.
pub fn is_local_client(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST),
    }
}

/// The number of open sessions against the `maxsessions` limit.
pub struct SessionSlots {
    max: usize,
    open: AtomicUsize,
}

/// A taken slot; dropping it frees the slot.
pub struct SessionSlot<'a>(&'a SessionSlots);

impl Drop for SessionSlot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SessionSlots {
    pub fn new(max: usize) -> SessionSlots {
        SessionSlots {
            max: max.max(1),
            open: AtomicUsize::new(0),
        }
    }

    /// Takes a slot; `None` when the server is full.
    pub fn enter(&self) -> Option<SessionSlot<'_>> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        if n >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SessionSlot(self))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// Failed logins per client address, to slow down password guessing
/// across connections.
#[derive(Default)]
pub struct FailedLogins {
    recent: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(900);
/// Addresses remembered at most; older entries are dropped beyond it.
const MAX_TRACKED: usize = 100_000;

impl FailedLogins {
    /// Records a failure and says how long to wait before answering it:
    /// one second, doubling with each failure from the address in the
    /// last quarter hour, at most half a minute.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut f = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() > MAX_TRACKED {
            f.retain(|_, (_, t)| t.elapsed() < FAILURE_MEMORY);
        }
        let e = f.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() > FAILURE_MEMORY {
            e.0 = 0;
        }
        e.0 = (e.0 + 1).min(6);
        e.1 = Instant::now();
        Duration::from_secs(1 << (e.0 - 1)).min(Duration::from_secs(30))
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// What a session's `close` log line (§11.2) reports.
pub struct SessionRecord {
    pub peer: SocketAddr,
    pub started: Instant,
    pub user: Option<String>,
    pub login_at: Option<chrono::DateTime<chrono::Local>>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// IMAP: folders selected; POP: messages retrieved.
    pub count: u32,
}

impl SessionRecord {
    pub fn new(peer: SocketAddr) -> SessionRecord {
        SessionRecord {
            peer,
            started: Instant::now(),
            user: None,
            login_at: None,
            bytes_in: 0,
            bytes_out: 0,
            count: 0,
        }
    }

    /// The user logged in now.
    pub fn logged_in(&mut self, user: &str) {
        self.user = Some(user.to_string());
        self.login_at = Some(chrono::Local::now());
    }

    /// `close [ip:port] user login-time duration bytes-in bytes-out count`.
    pub fn log_close(&self) {
        let who = self.user.as_deref().unwrap_or("[unauthenticated]");
        let at = self
            .login_at
            .map(|t| t.format("%Y/%-m/%-d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into());
        let d = self.started.elapsed().as_secs();
        tracing::info!(
            target: "Account",
            "close [{}] {who} {at} {}:{:02}:{:02} {} {} {}",
            self.peer,
            d / 3600,
            d % 3600 / 60,
            d % 60,
            self.bytes_in,
            self.bytes_out,
            self.count
        );
    }
}

/// A login name or other client text fit for one log line.
pub fn log_safe(s: &str) -> String {
    s.chars()
        .take(256)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        let s = SessionSlots::new(2);
        let a = s.enter().unwrap();
        let _b = s.enter().unwrap();
        assert!(s.enter().is_none());
        drop(a);
        assert!(s.enter().is_some());
    }

    #[test]
    fn delays_grow_and_reset() {
        let f = FailedLogins::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let d: Vec<u64> = (0..8).map(|_| f.failed(ip).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 30, 30, 30]);
        f.succeeded(ip);
        assert_eq!(f.failed(ip).as_secs(), 1);
    }

    #[test]
    fn local_clients() {
        assert!(is_local_client("127.0.0.1".parse().unwrap()));
        assert!(is_local_client("::1".parse().unwrap()));
        assert!(is_local_client("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_local_client("127.0.0.2".parse().unwrap()));
        assert!(!is_local_client("192.0.2.1".parse().unwrap()));
    }
}
