//! storebench: store figures (a benchmark, not a test), on a throw-away
//! installation with the release programs:
//! - appends per second, 4 KB messages, durable, 1 and 10 clients;
//! - time to open a 100,000-message mailbox and fetch its whole index;
//! - RSS of stored with 1,000 mailboxes open (a watching connection each).
//!
//!   cargo build --release --bins && target/release/storebench [MESSAGES]

use std::time::{Duration, Instant};

use epistle_ipc::store_client::StoreClient;
use epistle_tests::{Install, assert_ok};

async fn appends(sock: &std::path::Path, clients: usize, each: usize, mailbox: &str) -> Duration {
    let body = vec![b'x'; 4096];
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (sock, body, mailbox) = (sock.to_path_buf(), body.clone(), mailbox.to_string());
        tasks.push(tokio::spawn(async move {
            let (c, _) = StoreClient::connect(&sock).await.unwrap();
            for _ in 0..each {
                c.append(&mailbox, &body, &[], 0).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed()
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let big: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let i = Install::new();
    i.configure();
    assert_ok(&i.sbin("start-msg", &["store"]), "start-msg store");
    let sock = i.data.join("run/stored.sock");
    let (c, _) = StoreClient::connect(&sock).await.unwrap();
    for m in ["user/bench/INBOX", "user/bench/Ten", "user/bench/Big"] {
        c.create(m).await.unwrap();
    }

    let one = appends(&sock, 1, 500, "user/bench/INBOX").await;
    println!(
        "appends, 4 KB, durable, 1 client:   {:>8.0}/s",
        500.0 / one.as_secs_f64()
    );
    let ten = appends(&sock, 10, 100, "user/bench/Ten").await;
    println!(
        "appends, 4 KB, durable, 10 clients: {:>8.0}/s",
        1000.0 / ten.as_secs_f64()
    );

    let fill = appends(&sock, 10, big / 10, "user/bench/Big").await;
    println!(
        "filled a {big}-message mailbox in {:.1} s",
        fill.as_secs_f64()
    );
    let (fresh, _) = StoreClient::connect(&sock).await.unwrap();
    let t = Instant::now();
    let status = fresh.status("user/bench/Big").await.unwrap();
    let index = fresh.messages("user/bench/Big").await.unwrap();
    println!(
        "open it and fetch the whole index ({} entries): {:.0} ms",
        index.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(status.record.messages as usize, index.len());

    for n in 0..1000 {
        c.create(&format!("user/u{n}/INBOX")).await.unwrap();
    }
    let pid = i.pid("store").unwrap();
    let before = rss_kb(pid);
    let mut sessions = Vec::new();
    for n in 0..1000 {
        let (s, ev) = StoreClient::connect(&sock).await.unwrap();
        s.watch(&format!("user/u{n}/INBOX"), true).await.unwrap();
        s.status(&format!("user/u{n}/INBOX")).await.unwrap();
        sessions.push((s, ev));
    }
    println!(
        "stored RSS: {} KB idle, {} KB with 1,000 mailboxes open",
        before,
        rss_kb(pid)
    );
    drop(sessions);
    assert_ok(&i.sbin("stop-msg", &[]), "stop-msg");
}
