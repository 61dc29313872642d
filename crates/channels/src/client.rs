//! The SMTP and LMTP client the outbound channel programs and `sendmail`
//! speak with: replies read with the pure codec of `epistle_mta::smtp`,
//! a timeout on every read and write (RFC 5321 §4.5.3.2), STARTTLS by
//! swapping the stream under the session.

use std::time::Duration;

use epistle_daemon::Io;
use epistle_mta::channel_options::SmtpClientOptions;
use epistle_mta::smtp::{PeerReply, ReplyReader, dot_stuff};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection to {peer} failed: {message}")]
    Io { peer: String, message: String },
    #[error("{peer} timed out waiting for {what}")]
    Timeout { peer: String, what: String },
    #[error("{peer} broke the protocol: {message}")]
    Protocol { peer: String, message: String },
}

/// Per-stage timeouts, RFC 5321 §4.5.3.2 (greeting 5 min, MAIL 5, RCPT 5,
/// DATA initiation 2, data block 3, end of data 10).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub command: Duration,
    pub data_block: Duration,
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(60),
            greeting: Duration::from_secs(300),
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            data_end: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// The defaults, with a channel option file's `COMMAND_TRANSMIT_TIME`
    /// (a command and its reply) and `DATA_TRANSMIT_TIME` (a block of
    /// message text) in place of theirs.
    pub fn for_channel(options: &SmtpClientOptions) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            command: options.command_time.unwrap_or(d.command),
            data_block: options.data_time.unwrap_or(d.data_block),
            ..d
        }
    }
}

pub struct SmtpClient {
    stream: Box<dyn Io>,
    input: Vec<u8>,
    /// The peer as `host [ip]`, for diagnostics.
    pub peer: String,
    /// EHLO/LHLO keywords, upper case (`SIZE 1000`, `STARTTLS`).
    pub extensions: Vec<String>,
    pub timeouts: Timeouts,
    pub tls: bool,
}

impl SmtpClient {
    pub fn new(stream: Box<dyn Io>, peer: String, timeouts: Timeouts) -> SmtpClient {
        SmtpClient {
            stream,
            input: Vec::new(),
            peer,
            extensions: Vec::new(),
            timeouts,
            tls: false,
        }
    }

    /// Connects over TCP, from `source` when given (the channel's
    /// `interfaceaddress`).
    pub async fn connect(
        addr: std::net::SocketAddr,
        source: Option<std::net::IpAddr>,
        peer: String,
        timeouts: Timeouts,
    ) -> Result<SmtpClient, ClientError> {
        let io = |message: String| ClientError::Io {
            peer: peer.clone(),
            message,
        };
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| io(e.to_string()))?;
        if let Some(src) = source {
            if src.is_ipv4() != addr.is_ipv4() {
                return Err(io(format!(
                    "interfaceaddress {src} cannot reach {} (another address family)",
                    addr.ip()
                )));
            }
            socket
                .bind(std::net::SocketAddr::new(src, 0))
                .map_err(|e| io(format!("cannot send from interfaceaddress {src}: {e}")))?;
        }
        let conn = tokio::time::timeout(timeouts.connect, socket.connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                peer: peer.clone(),
                what: "the connection".into(),
            })?
            .map_err(|e| ClientError::Io {
                peer: peer.clone(),
                message: e.to_string(),
            })?;
        let _ = conn.set_nodelay(true);
        Ok(SmtpClient::new(Box::new(conn), peer, timeouts))
    }

    fn io_error(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Io {
            peer: self.peer.clone(),
            message: e.to_string(),
        }
    }

    /// Reads one whole reply.
    pub async fn reply(&mut self, timeout: Duration, what: &str) -> Result<PeerReply, ClientError> {
        let mut reader = ReplyReader::default();
        loop {
            while let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.input.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                match reader.feed(&line) {
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) => {}
                    Err(message) => {
                        return Err(ClientError::Protocol {
                            peer: self.peer.clone(),
                            message,
                        });
                    }
                }
            }
            if self.input.len() > epistle_mta::smtp::MAX_REPLY_LINE {
                return Err(ClientError::Protocol {
                    peer: self.peer.clone(),
                    message: "reply line too long".into(),
                });
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout(timeout, self.stream.read(&mut buf))
                .await
                .map_err(|_| ClientError::Timeout {
                    peer: self.peer.clone(),
                    what: what.to_string(),
                })?
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.io_error(format!("connection closed waiting for {what}")));
            }
            self.input.extend_from_slice(&buf[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), ClientError> {
        let peer = self.peer.clone();
        tokio::time::timeout(timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout {
            peer,
            what: "sending".into(),
        })?
        .map_err(|e| self.io_error(e))
    }

    pub async fn greeting(&mut self) -> Result<PeerReply, ClientError> {
        self.reply(self.timeouts.greeting, "the greeting").await
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<PeerReply, ClientError> {
        self.send(format!("{line}\r\n").as_bytes(), self.timeouts.command)
            .await?;
        let what = line.split(':').next().unwrap_or(line).to_string();
        self.reply(self.timeouts.command, &what).await
    }

    /// EHLO (or LHLO for LMTP), falling back to HELO for an old SMTP
    /// server; remembers the extensions.
    pub async fn hello(&mut self, name: &str, lmtp: bool) -> Result<PeerReply, ClientError> {
        let verb = if lmtp { "LHLO" } else { "EHLO" };
        let r = self.command(&format!("{verb} {name}")).await?;
        if r.code == 250 {
            self.extensions = r
                .lines
                .iter()
                .skip(1)
                .map(|l| l.trim().to_ascii_uppercase())
                .collect();
            return Ok(r);
        }
        if lmtp {
            return Ok(r);
        }
        self.extensions.clear();
        self.command(&format!("HELO {name}")).await
    }

    /// Whether the peer offered an extension (`STARTTLS`, `SIZE`).
    pub fn has(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.split(' ').next() == Some(keyword))
    }

    /// STARTTLS, then the handshake; the caller says EHLO again.
    pub async fn starttls(
        mut self,
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> Result<(SmtpClient, PeerReply), ClientError> {
        let r = self.command("STARTTLS").await?;
        if r.code != 220 {
            return Ok((self, r));
        }
        // Nothing the server sent before the handshake may be read as TLS
        // session data.
        self.input.clear();
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0));
        let tls = tokio::time::timeout(self.timeouts.command, connector.connect(name, plain))
            .await
            .map_err(|_| ClientError::Timeout {
                peer: self.peer.clone(),
                what: "the TLS handshake".into(),
            })?
            .map_err(|e| self.io_error(format!("TLS handshake: {e}")))?;
        self.stream = Box::new(tls);
        self.tls = true;
        self.extensions.clear();
        Ok((self, r))
    }

    /// Sends the message after a 354 and reads `replies` replies (one for
    /// SMTP, one per accepted recipient for LMTP).
    pub async fn data(
        &mut self,
        message: &[u8],
        replies: usize,
    ) -> Result<Vec<PeerReply>, ClientError> {
        let stuffed = dot_stuff(message);
        for chunk in stuffed.chunks(64 * 1024) {
            self.send(chunk, self.timeouts.data_block).await?;
        }
        let mut out = Vec::with_capacity(replies);
        for _ in 0..replies {
            out.push(
                self.reply(self.timeouts.data_end, "the end of data")
                    .await?,
            );
        }
        Ok(out)
    }

    /// QUIT, politely; errors do not matter any more.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.command("QUIT")).await;
        let _ = self.stream.shutdown().await;
    }
}
