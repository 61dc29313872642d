//! What the access servers (imapd, popd, and later the webmail and the
//! proxy) share around a client session: their two ports and the accept
//! loop, the session limit, slowing down password guessing, which
//! clients may send a password in the clear, a closing that lets the last
//! answer arrive, and the §11.2 close record.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::{Daemon, Io, SignalEvent, Signals};

/// An access protocol's two ports: the plain one (where the client may
/// start TLS) and the one with TLS from the first byte.
pub struct AccessPorts {
    params: PortParams,
    plain: Option<std::net::TcpListener>,
    secure: Option<std::net::TcpListener>,
}

/// The parameters that place an access protocol's ports, and the names
/// the watcher knows its ports by.
pub struct PortParams {
    /// `service.imap.port`: plain, STARTTLS offered (0: off).
    pub port: &'static str,
    /// `service.imap.sslport`: TLS from the first byte (0: off).
    pub sslport: &'static str,
    /// `service.imap.enablesslport`: whether to open the TLS port at all.
    pub enablesslport: &'static str,
    /// `["imap", "imaps"]`.
    pub protocols: [&'static str; 2],
}

impl AccessPorts {
    /// Binds the plain port and, when enabled, the TLS port.
    pub fn bind(d: &mut Daemon, params: PortParams) -> anyhow::Result<AccessPorts> {
        let plain = d.bind_tcp(params.port, params.protocols[0])?;
        let secure = if d.config.get_bool(params.enablesslport) {
            d.bind_tcp(params.sslport, params.protocols[1])?
        } else {
            None
        };
        Ok(AccessPorts {
            params,
            plain,
            secure,
        })
    }

    /// Accepts until TERM (HUP reloads), handing each connection to
    /// `session` with whether it came in on the TLS port. Reports ready
    /// to the watcher once the sockets and signals are in place; fails
    /// the start when the TLS port is open but `tls` (the server's TLS
    /// identity loaded) is false.
    pub async fn serve<F, Fut>(self, d: &mut Daemon, tls: bool, session: F)
    where
        F: Fn(TcpStream, SocketAddr, bool) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.secure.is_some() && !tls {
            let PortParams {
                sslport,
                enablesslport,
                ..
            } = self.params;
            d.fail(&anyhow::anyhow!(
                "the {sslport} port needs the TLS certificate; fix local.ssl.certfile \
                 and local.ssl.keyfile or turn the port off with \
                 configutil -o {enablesslport} -v no"
            ));
        }
        let to_tokio = |l: Option<std::net::TcpListener>| l.map(TcpListener::from_std).transpose();
        let (plain, secure) = match (to_tokio(self.plain), to_tokio(self.secure)) {
            (Ok(p), Ok(s)) => (p, s),
            (Err(e), _) | (_, Err(e)) => d.fail(&e.into()),
        };
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => d.fail(&e.into()),
        };
        if let Err(e) = d.ready() {
            d.fail(&e);
        }
        loop {
            tokio::select! {
                Some((conn, peer)) = accept(plain.as_ref()) => {
                    tokio::spawn(session(conn, peer, false));
                }
                Some((conn, peer)) = accept(secure.as_ref()) => {
                    tokio::spawn(session(conn, peer, true));
                }
                ev = signals.next() => match ev {
                    SignalEvent::Reload => d.reload(),
                    SignalEvent::Shutdown => break,
                },
            }
        }
        tracing::info!("{} server stopped", self.params.protocols[0]);
    }
}

/// The TLS identity for STARTTLS and the TLS port, or `None` (logged:
/// the server then offers no TLS) when the certificate does not load.
pub fn tls_acceptor(d: &Daemon) -> Option<TlsAcceptor> {
    match crate::tls::server_config(&d.base, &d.config) {
        Ok(c) => Some(TlsAcceptor::from(c)),
        Err(e) => {
            tracing::warn!("TLS is off: {e:#}");
            None
        }
    }
}

/// This host's name (`local.hostname`) and the greeting the `banner`
/// parameter makes for `protocol`.
pub fn host_and_greeting(d: &Daemon, banner: &str, protocol: &str) -> (String, String) {
    let host = match d.config.get("local.hostname") {
        "" => "localhost".to_string(),
        h => h.to_string(),
    };
    let greeting = crate::banner(d.config.get(banner), &host, protocol);
    (host, greeting)
}

/// Lets a new connection in: a session slot, then TLS on the TLS port.
/// A client over the limit gets `full` (the protocol's refusal line) and
/// the connection is closed; `None` then, or when the TLS handshake fails.
pub async fn admit<'a>(
    slots: &'a SessionSlots,
    tls: Option<&TlsAcceptor>,
    conn: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    full: &str,
) -> Option<(SessionSlot<'a>, Box<dyn Io>)> {
    let _ = conn.set_nodelay(true);
    let Some(slot) = slots.enter() else {
        let mut conn = conn;
        let _ = conn.write_all(full.as_bytes()).await;
        tracing::warn!(target: "Network", "[{peer}] refused: the most sessions allowed (maxsessions) are open");
        return None;
    };
    if !implicit_tls {
        return Some((slot, Box::new(conn)));
    }
    let stream = start_tls(tls?, Box::new(conn)).await?;
    Some((slot, stream))
}

/// Starts TLS on a connection that asked for it (STARTTLS, STLS); `None`
/// when the handshake fails or takes too long.
pub async fn start_tls(acceptor: &TlsAcceptor, plain: Box<dyn Io>) -> Option<Box<dyn Io>> {
    // Boxed: the handshake's state is large, and a session's future would
    // otherwise keep room for it for as long as the session lasts.
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(acceptor.accept(plain))).await {
        Ok(Ok(s)) => Some(Box::new(s)),
        _ => None,
    }
}

/// How long a client has to complete a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

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
        // On the heap: an array here would be part of every session's
        // future for its whole life.
        let mut sink = vec![0u8; 4096];
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

/// Commands a client may send per second, sustained: well above what a
/// busy client does over loopback (a mixed IMAP workload runs about
/// 3,000 a second), so only a flood is slowed.
pub const COMMANDS_PER_SECOND: f64 = 5000.0;
/// Commands a client may send at once before the rate applies.
pub const COMMAND_BURST: f64 = 10000.0;

/// A token bucket on one session's commands: a client sending faster than
/// the rate is slowed down (its commands wait), never refused, so a busy
/// client works and a flood from one connection cannot take the server.
pub struct CommandRate {
    tokens: f64,
    last: Instant,
}

impl Default for CommandRate {
    fn default() -> Self {
        CommandRate::new(Instant::now())
    }
}

impl CommandRate {
    pub fn new(now: Instant) -> CommandRate {
        CommandRate {
            tokens: COMMAND_BURST,
            last: now,
        }
    }

    /// Takes one command at `now`; how long it must wait first.
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * COMMANDS_PER_SECOND).min(COMMAND_BURST) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / COMMANDS_PER_SECOND)
        }
    }

    /// Takes one command now, sleeping as long as the rate asks.
    pub async fn pace(&mut self) {
        let wait = self.take(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
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
    fn command_rate() {
        let t0 = Instant::now();
        let mut r = CommandRate::new(t0);
        // The burst goes through at once.
        for _ in 0..COMMAND_BURST as usize {
            assert_eq!(r.take(t0), Duration::ZERO);
        }
        // Then each command waits its share of a second, more and more.
        let w1 = r.take(t0);
        let w2 = r.take(t0);
        assert!(w1 > Duration::ZERO && w2 > w1, "{w1:?} {w2:?}");
        // After a quiet second the client has its rate again.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(r.take(later), Duration::ZERO);
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
