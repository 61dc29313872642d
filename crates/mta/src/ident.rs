//! IDENT (RFC 1413): asking the client's host who holds the connection,
//! for the source channel's `identtcp*` keywords. The answer is shown in
//! `Received:` (`user@name`) and never trusted for anything: it is only
//! what the client's host says. A host that does not answer costs the
//! connection [`IDENT_TIMEOUT`] at most; one that refuses, nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// The IDENT service's port.
pub const IDENT_PORT: u16 = 113;
/// The longest an IDENT answer is waited for, connection included.
pub const IDENT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 1413 §6: an answer line is at most 1000 characters.
const MAX_ANSWER: usize = 1000;
/// The most of a user id kept for a header comment.
const MAX_USER: usize = 64;

/// The user id in an IDENT answer about the connection between the
/// client's `their_port` and our `our_port`; `None` for an ERROR answer,
/// one about other ports, or one with nothing usable in it. Characters
/// that could end or confuse a header comment are dropped.
pub fn user_of(answer: &str, their_port: u16, our_port: u16) -> Option<String> {
    let mut fields = answer.trim_end_matches(['\r', '\n']).splitn(4, ':');
    let ports = fields.next()?;
    let (a, b) = ports.split_once(',')?;
    if a.trim().parse::<u16>().ok()? != their_port || b.trim().parse::<u16>().ok()? != our_port {
        return None;
    }
    if !fields.next()?.trim().eq_ignore_ascii_case("USERID") {
        return None;
    }
    let _system = fields.next()?;
    let user: String = fields
        .next()?
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic() && !"()[]<>\\\"@;,".contains(*c))
        .take(MAX_USER)
        .collect();
    (!user.is_empty()).then_some(user)
}

/// Asks the IDENT service at `server` (the client's address, port
/// [`IDENT_PORT`]) from our address `local` who holds the connection from
/// the client's `their_port` to our `our_port`. `None` when it refuses,
/// does not answer within [`IDENT_TIMEOUT`], or answers nothing usable.
pub async fn query(
    server: SocketAddr,
    local: IpAddr,
    their_port: u16,
    our_port: u16,
) -> Option<String> {
    let ask = async {
        let socket = match server {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .ok()?;
        // From the address the client reached, so its IDENT service can
        // find the connection.
        socket.bind(SocketAddr::new(local, 0)).ok()?;
        let mut stream = socket.connect(server).await.ok()?;
        stream
            .write_all(format!("{their_port}, {our_port}\r\n").as_bytes())
            .await
            .ok()?;
        let mut answer = Vec::with_capacity(128);
        let mut buf = [0u8; 256];
        while !answer.contains(&b'\n') && answer.len() < MAX_ANSWER {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let line = answer.split(|&b| b == b'\n').next()?;
        user_of(&String::from_utf8_lossy(line), their_port, our_port)
    };
    tokio::time::timeout(IDENT_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    #[test]
    fn answers_are_read_for_the_right_ports_only() {
        assert_eq!(
            user_of("6193, 23 : USERID : UNIX : stjohns\r\n", 6193, 23).as_deref(),
            Some("stjohns")
        );
        assert_eq!(
            user_of("6193,23:USERID:OTHER,US-ASCII:a:b", 6193, 23).as_deref(),
            Some("a:b")
        );
        assert_eq!(
            user_of("6195, 23 : USERID : UNIX : stjohns", 6193, 23),
            None,
            "other ports"
        );
        assert_eq!(user_of("6193, 23 : ERROR : NO-USER", 6193, 23), None);
        assert_eq!(user_of("6193, 23 : USERID : UNIX : ", 6193, 23), None);
        assert_eq!(
            user_of("6193, 23 : USERID : UNIX : eve) (forged@x", 6193, 23).as_deref(),
            Some("eveforgedx"),
            "nothing that ends a comment"
        );
        assert_eq!(user_of("garbage", 1, 2), None);
    }

    #[tokio::test]
    async fn asks_a_real_service_and_gives_up_on_a_silent_or_absent_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let mut conn = tokio::io::BufReader::new(conn);
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            let (a, b) = line.trim().split_once(',').unwrap();
            let reply = format!("{}, {} : USERID : UNIX : joe\r\n", a.trim(), b.trim());
            conn.get_mut().write_all(reply.as_bytes()).await.unwrap();
            line
        });
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(query(at, local, 40001, 25).await.as_deref(), Some("joe"));
        assert_eq!(server.await.unwrap(), "40001, 25\r\n");

        // Nobody there: refused at once.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = std::time::Instant::now();
        assert_eq!(query(closed, local, 1, 25).await, None);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
