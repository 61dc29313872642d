//! stored on a real installation, started by start-msg under the watcher,
//! driven through the store client as imapd and ims_master will drive it.

use std::time::Duration;

use epistle_ipc::store::{FlagOp, StoreError, StoreEvent, StoreReply, StoreRequest};
use epistle_ipc::store_client::{StoreClient, StoreEvents};
use epistle_tests::{Install, assert_ok, stdout, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn running_store() -> Install {
    let i = Install::new();
    i.configure();
    assert_ok(&i.sbin("start-msg", &["store"]), "start-msg store");
    i
}

async fn client(i: &Install) -> (StoreClient, StoreEvents) {
    StoreClient::connect(&i.data.join("run/stored.sock"))
        .await
        .expect("connect to stored")
}

async fn next_event(rx: &mut StoreEvents) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no event within 5 s")
        .expect("event channel closed")
}

#[tokio::test]
async fn a_change_in_one_connection_is_pushed_to_another() {
    let i = running_store();
    let (writer, _) = client(&i).await;
    let (reader, mut events) = client(&i).await;
    writer.create("user/joe/INBOX").await.unwrap();
    reader.watch("user/joe/INBOX", true).await.unwrap();

    let (uid, mbox) = writer
        .append(
            "user/joe/INBOX",
            b"Subject: hi\r\n\r\nhello\r\n",
            &[],
            1_700_000_000,
        )
        .await
        .unwrap();
    assert_eq!((uid, mbox.record.messages), (1, 1));
    match next_event(&mut events).await {
        StoreEvent::Exists {
            mailbox,
            after,
            messages,
            status,
        } => {
            assert_eq!(
                (mailbox.as_str(), after, status.messages),
                ("user/joe/INBOX", 0, 1)
            );
            assert_eq!(messages.len(), 1);
            assert_eq!(
                (messages[0].uid, messages[0].record.size),
                (1, 22),
                "the new message's index entry comes with the event"
            );
        }
        other => panic!("{other:?}"),
    }
    let path = reader.message_path("user/joe/INBOX", 1).await.unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"Subject: hi\r\n\r\nhello\r\n"
    );
    assert!(
        path.to_string_lossy().contains("/=user/"),
        "{}",
        path.display()
    );

    writer
        .store_flags(
            "user/joe/INBOX",
            &[1],
            FlagOp::Add,
            &["\\Deleted".into()],
            None,
        )
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        StoreEvent::Flags { .. }
    ));
    assert_eq!(writer.expunge("user/joe/INBOX", None).await.unwrap(), [1]);
    match next_event(&mut events).await {
        StoreEvent::Expunged { uids, .. } => assert_eq!(uids, [1]),
        other => panic!("{other:?}"),
    }
    let st = reader.status("user/joe/INBOX").await.unwrap();
    assert_eq!((st.record.messages, st.record.uidnext), (0, 2));
}

#[tokio::test]
async fn many_clients_append_at_once() {
    let i = running_store();
    let (c, _) = client(&i).await;
    c.create("user/ann/INBOX").await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..10 {
        let sock = i.data.join("run/stored.sock");
        tasks.push(tokio::spawn(async move {
            let (c, _) = StoreClient::connect(&sock).await.unwrap();
            let mut uids = Vec::new();
            for k in 0..20 {
                let body = format!("Subject: {n}-{k}\r\n\r\nbody {n} {k}\r\n");
                uids.push(
                    c.append("user/ann/INBOX", body.as_bytes(), &[], 0)
                        .await
                        .unwrap()
                        .0,
                );
            }
            uids
        }));
    }
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<u32>>());
    assert_eq!(c.messages("user/ann/INBOX").await.unwrap().len(), 200);
    match c
        .request(StoreRequest::QuotaUsage { user: "ann".into() })
        .await
        .unwrap()
    {
        StoreReply::Quota { messages, .. } => assert_eq!(messages, 200),
        other => panic!("{other:?}"),
    }
}

/// Sends stored SIGKILL after `delay`; the function returned waits until
/// the watcher has it serving again.
async fn kill_stored_after(i: &Install, delay: Duration) -> impl Fn() + '_ {
    tokio::time::sleep(delay).await;
    let pid = i.pid("store").unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    move || {
        let sock = i.data.join("run/stored.sock");
        assert!(
            wait_for(Duration::from_secs(10), || i
                .pid("store")
                .is_some_and(|p| p != pid)
                && std::os::unix::net::UnixStream::connect(&sock).is_ok()),
            "stored was not restarted"
        );
    }
}

/// kill -9 of stored during a stream of appends: every append answered OK
/// is there exactly once with its content, and stored comes back (the
/// watcher restarts it) without repair.
#[tokio::test]
async fn acknowledged_appends_survive_kill_9() {
    let i = running_store();
    let sock = i.data.join("run/stored.sock");
    let (c, _) = client(&i).await;
    c.create("user/joe/INBOX").await.unwrap();
    let appender = tokio::spawn({
        let sock = sock.clone();
        async move {
            let (c, _) = StoreClient::connect(&sock).await.unwrap();
            let mut acked = Vec::new();
            for k in 0..100_000u32 {
                let body = format!("Subject: {k}\r\n\r\n{}\r\n", "x".repeat(500));
                match c.append("user/joe/INBOX", body.as_bytes(), &[], 0).await {
                    Ok((uid, _)) => acked.push((uid, body)),
                    Err(_) => break, // stored went away mid-request
                }
            }
            acked
        }
    });
    let restarted = kill_stored_after(&i, Duration::from_millis(600)).await;
    let acked = appender.await.unwrap();
    assert!(
        acked.len() > 5,
        "only {} appends before the kill",
        acked.len()
    );
    restarted();
    let (c, _) = client(&i).await;
    let index = c.messages("user/joe/INBOX").await.unwrap();
    for (uid, body) in &acked {
        assert_eq!(
            index.iter().filter(|m| m.uid == *uid).count(),
            1,
            "uid {uid} not there exactly once"
        );
        let path = c.message_path("user/joe/INBOX", *uid).await.unwrap();
        assert_eq!(
            &std::fs::read_to_string(path).unwrap(),
            body,
            "uid {uid} damaged"
        );
    }
    // Nothing half-written is visible: every indexed message is whole.
    for m in &index {
        let path = c.message_path("user/joe/INBOX", m.uid).await.unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().len(), m.record.size);
    }
    // And the store goes on taking mail.
    let (uid, _) = c.append("user/joe/INBOX", b"after", &[], 0).await.unwrap();
    assert!(uid > acked.last().unwrap().0);
}

/// kill -9 of stored while messages are being expunged (flag changes and
/// expunges are made durable within a second, not before their reply):
/// afterwards every message the index still lists has its whole file, so
/// an expunge undone by the crash never leaves a message without content.
#[tokio::test]
async fn expunges_cut_by_kill_9_leave_no_message_without_its_file() {
    let i = running_store();
    let sock = i.data.join("run/stored.sock");
    let (c, _) = client(&i).await;
    c.create("user/joe/INBOX").await.unwrap();
    for k in 0..300u32 {
        let body = format!("Subject: {k}\r\n\r\n{}\r\n", "y".repeat(300));
        c.append("user/joe/INBOX", body.as_bytes(), &[], 0)
            .await
            .unwrap();
    }
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let expunger = tokio::spawn({
        let (sock, progress) = (sock.clone(), progress.clone());
        async move {
            let (c, _) = StoreClient::connect(&sock).await.unwrap();
            let deleted = ["\\Deleted".to_string()];
            let mut gone = 0;
            for uid in 1..=300u32 {
                let step = async {
                    c.store_flags("user/joe/INBOX", &[uid], FlagOp::Add, &deleted, None)
                        .await?;
                    c.expunge("user/joe/INBOX", None).await
                };
                match step.await {
                    Ok(_) => gone += 1,
                    Err(_) => break, // stored went away mid-request
                }
                progress.store(gone, std::sync::atomic::Ordering::Relaxed);
            }
            gone
        }
    });
    // Killed in the middle of the stream, however busy the machine.
    let started = std::time::Instant::now();
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 20
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restarted = kill_stored_after(&i, Duration::ZERO).await;
    let gone = expunger.await.unwrap();
    assert!(gone > 5, "only {gone} expunges before the kill");
    restarted();
    let (c, _) = client(&i).await;
    let index = c.messages("user/joe/INBOX").await.unwrap();
    // Nothing went but what was expunged (the last one perhaps unanswered).
    assert!(
        index.len() + gone + 1 >= 300,
        "{} messages left after {gone} expunges",
        index.len()
    );
    for m in &index {
        let path = c.message_path("user/joe/INBOX", m.uid).await.unwrap();
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("uid {} lost its file: {e}", m.uid))
            .len();
        assert_eq!(len, m.record.size, "uid {} damaged", m.uid);
    }
    // Expunges go on after the restart, and their files go once durable.
    let first = index
        .first()
        .expect("every message expunged before the kill")
        .uid;
    c.store_flags(
        "user/joe/INBOX",
        &[first],
        FlagOp::Add,
        &["\\Deleted".to_string()],
        None,
    )
    .await
    .unwrap();
    assert_eq!(c.expunge("user/joe/INBOX", None).await.unwrap(), [first]);
    let path = c.message_path("user/joe/INBOX", first).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || !path.exists()),
        "the file of a durable expunge was left"
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_isolated() {
    let i = running_store();
    let (c, _) = client(&i).await;
    for bad in [
        "user/joe/../ann/INBOX",
        "user/joe/a\u{0}b",
        "INBOX",
        "user/joe/",
        "user/jo e/INBOX",
    ] {
        assert!(
            matches!(c.create(bad).await, Err(StoreError::Invalid(_))),
            "{bad:?} accepted"
        );
    }
    c.create("user/joe/INBOX").await.unwrap();
    let staged = StoreRequest::Append {
        name: "user/joe/INBOX".into(),
        staged: "../../../etc/passwd".into(),
        flags: vec![],
        internal_date: 0,
        uid: None,
    };
    assert!(matches!(
        c.request(staged).await,
        Err(StoreError::Invalid(_))
    ));
    // Garbage on one connection closes that connection only.
    let mut raw = std::os::unix::net::UnixStream::connect(i.data.join("run/stored.sock")).unwrap();
    std::io::Write::write_all(&mut raw, b"\x00\x00\x00\x05hello").unwrap();
    let mut buf = [0u8; 16];
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        std::io::Read::read(&mut raw, &mut buf).unwrap_or(0),
        0,
        "the bad connection stayed open"
    );
    assert_eq!(c.status("user/joe/INBOX").await.unwrap().record.messages, 0);
}

#[test]
fn hashdir_and_mboxutil() {
    let i = running_store();
    let h = stdout(&i.sbin("hashdir", &["joe"]));
    assert_eq!(h.trim().len(), 5, "{h}");
    let full = stdout(&i.sbin("hashdir", &["-a", "Joe.B"]));
    assert!(full.trim().ends_with("/=+joe%d+b"), "{full}");
    assert_ok(
        &i.sbin(
            "mboxutil",
            &[
                "-c",
                "user/joe/INBOX",
                "user/joe/Lists",
                "user/joe/Lists/rust",
            ],
        ),
        "mboxutil -c",
    );
    let list = stdout(&i.sbin("mboxutil", &["-l", "-p", "user/joe/%", "-s"]));
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["user/joe/INBOX", "user/joe/Lists"]
    );
    assert_ok(
        &i.sbin("mboxutil", &["-r", "user/joe/Lists", "user/joe/Archive"]),
        "mboxutil -r",
    );
    let list = stdout(&i.sbin("mboxutil", &["-l", "-x"]));
    assert!(
        list.contains("user/joe/Archive/rust") && list.contains("path="),
        "{list}"
    );
    assert!(list.contains(&format!("=user/{}/=joe", h.trim())), "{list}");
    assert_ok(
        &i.sbin("mboxutil", &["-d", "user/joe/INBOX"]),
        "mboxutil -d INBOX",
    );
    assert_eq!(stdout(&i.sbin("mboxutil", &["-l", "-s"])).trim(), "");
    let q = stdout(&i.sbin("mboxutil", &["-q", "joe"]));
    assert!(q.contains("bytes=0 messages=0"), "{q}");
}

/// Quotas from the directory: the warning message arrives once, then an
/// append that would exceed mailQuota is refused as over quota.
#[tokio::test]
async fn directory_quotas_are_enforced_with_one_warning() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &["-A", "mailQuota:4K"]);
    assert_ok(&i.sbin("start-msg", &["store"]), "start-msg store");
    let (c, mut events) = client(&i).await;
    c.create("user/joe/INBOX").await.unwrap();
    c.watch("user/joe/INBOX", true).await.unwrap();
    let kb = "x".repeat(1024);
    for _ in 0..3 {
        c.append("user/joe/INBOX", kb.as_bytes(), &[], 0)
            .await
            .unwrap();
    }
    // 3 KB of 4 KB: below 90%. The fourth crosses it: a warning follows.
    let (uid, _) = c.append("user/joe/INBOX", b"small", &[], 0).await.unwrap();
    assert_eq!(uid, 4);
    let mut exists = 0;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        if matches!(ev, StoreEvent::Exists { .. }) {
            exists += 1;
        }
    }
    assert_eq!(exists, 4, "no warning message before 90%");
    let (uid, _) = c
        .append("user/joe/INBOX", "y".repeat(700).as_bytes(), &[], 0)
        .await
        .unwrap();
    let messages = c.messages("user/joe/INBOX").await.unwrap();
    assert_eq!(messages.len(), 6, "the message and one warning");
    let warning = messages
        .iter()
        .find(|m| m.uid == uid + 1)
        .expect("warning message");
    let text =
        std::fs::read_to_string(c.message_path("user/joe/INBOX", warning.uid).await.unwrap())
            .unwrap();
    assert!(
        text.contains("Subject: Your mailbox is nearly full"),
        "{text}"
    );
    // Over the limit now: refused, and the refusal is "over quota".
    assert!(matches!(
        c.append("user/joe/INBOX", kb.as_bytes(), &[], 0).await,
        Err(StoreError::OverQuota(_))
    ));
    assert_eq!(c.messages("user/joe/INBOX").await.unwrap().len(), 6);
}

/// Deleting the store database and running reconstruct brings every
/// message back.
#[tokio::test]
async fn reconstruct_after_the_database_is_lost() {
    let i = running_store();
    let (c, _) = client(&i).await;
    c.create("user/joe/INBOX").await.unwrap();
    c.create("user/joe/Sent").await.unwrap();
    for n in 0..5 {
        c.append(
            "user/joe/INBOX",
            format!("message {n}").as_bytes(),
            &[],
            1_650_000_000 + n,
        )
        .await
        .unwrap();
    }
    c.append("user/joe/Sent", b"sent", &[], 0).await.unwrap();
    drop(c);
    assert_ok(&i.sbin("stop-msg", &["store"]), "stop-msg store");
    std::fs::remove_file(i.data.join("store/mboxlist/store.redb")).unwrap();
    assert_ok(&i.sbin("start-msg", &["store"]), "start-msg store");
    let dry = i.sbin("reconstruct", &["-n", "-m"]);
    assert_ok(&dry, "reconstruct -n -m");
    assert!(
        stdout(&dry).contains("user/joe/INBOX: added back"),
        "{}",
        stdout(&dry)
    );
    assert_ok(&i.sbin("reconstruct", &["-m"]), "reconstruct -m");
    let (c, _) = client(&i).await;
    let inbox = c.messages("user/joe/INBOX").await.unwrap();
    assert_eq!(inbox.len(), 5);
    assert_eq!(inbox[4].record.internal_date, 1_650_000_004);
    assert_eq!(
        std::fs::read_to_string(c.message_path("user/joe/INBOX", 3).await.unwrap()).unwrap(),
        "message 2"
    );
    assert_eq!(c.messages("user/joe/Sent").await.unwrap().len(), 1);
    assert_eq!(
        stdout(&i.sbin("reconstruct", &["-m"])).trim(),
        "",
        "a second run found something to fix"
    );
    let q = stdout(&i.sbin("mboxutil", &["-q", "joe"]));
    assert!(q.contains("messages=6"), "{q}");
}

#[tokio::test]
async fn imexpire_applies_the_aging_rules() {
    let i = Install::new();
    i.configure();
    std::fs::write(
        i.data.join("config/store.expirerule"),
        "Trash.folderpattern: user/%/Trash\nTrash.messagedays: 7\n",
    )
    .unwrap();
    assert_ok(&i.sbin("start-msg", &["store"]), "start-msg store");
    let (c, _) = client(&i).await;
    c.create("user/joe/Trash").await.unwrap();
    c.create("user/joe/INBOX").await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    c.append("user/joe/Trash", b"old", &[], now - 10 * 86_400)
        .await
        .unwrap();
    c.append("user/joe/Trash", b"new", &[], now - 86_400)
        .await
        .unwrap();
    c.append("user/joe/INBOX", b"old but kept", &[], now - 100 * 86_400)
        .await
        .unwrap();
    let dry = stdout(&i.sbin("imexpire", &["-n"]));
    assert!(
        dry.contains("user/joe/Trash: 1 message(s) would expire"),
        "{dry}"
    );
    assert_eq!(c.messages("user/joe/Trash").await.unwrap().len(), 2);
    let run = i.sbin("imexpire", &[]);
    assert_ok(&run, "imexpire");
    assert!(stdout(&run).contains("Expire finished"));
    let left = c.messages("user/joe/Trash").await.unwrap();
    assert_eq!(left.iter().map(|m| m.uid).collect::<Vec<_>>(), [2]);
    assert_eq!(c.messages("user/joe/INBOX").await.unwrap().len(), 1);
    std::fs::write(
        i.data.join("config/store.expirerule"),
        "Bad.folderpattern: x\n",
    )
    .unwrap();
    let bad = i.sbin("imexpire", &[]);
    assert!(
        !bad.status.success() && epistle_tests::stderr(&bad).contains("no limit"),
        "{}",
        epistle_tests::stderr(&bad)
    );
}

/// imsbackup -f - / | imsrestore -f - into another installation: the same
/// mailboxes, UIDVALIDITY, UIDs, flags, internal dates and contents; a
/// second restore adds nothing; -m renames the account.
#[tokio::test]
async fn backup_and_restore_through_a_pipe() {
    let from = running_store();
    let (c, _) = client(&from).await;
    c.create("user/joe/INBOX").await.unwrap();
    c.create("user/joe/Sent").await.unwrap();
    for (n, flags) in [
        (1, vec!["\\Seen".to_string()]),
        (2, vec![]),
        (3, vec!["$Work".to_string(), "\\Flagged".to_string()]),
    ] {
        c.append(
            "user/joe/INBOX",
            format!("Subject: {n}\r\n\r\nbody {n}\n.\n").as_bytes(),
            &flags,
            1_600_000_000 + n,
        )
        .await
        .unwrap();
    }
    c.store_flags(
        "user/joe/INBOX",
        &[2],
        FlagOp::Add,
        &["\\Deleted".into()],
        None,
    )
    .await
    .unwrap();
    c.expunge("user/joe/INBOX", None).await.unwrap(); // a gap in the UIDs
    c.append("user/joe/Sent", b"sent", &[], 7).await.unwrap();
    let to = running_store();
    let run = |src: &Install, dst: &Install, extra: &[&str]| {
        let mut backup = std::process::Command::new(src.base.join("sbin/imsbackup"))
            .args(["-f", "-", "/"])
            .env_remove("MSG_SVR_BASE")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let restore = std::process::Command::new(dst.base.join("sbin/imsrestore"))
            .args(["-f", "-"])
            .args(extra)
            .env_remove("MSG_SVR_BASE")
            .stdin(backup.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(backup.wait().unwrap().success(), "imsbackup failed");
        assert_ok(&restore, "imsrestore");
        stdout(&restore)
    };
    assert!(run(&from, &to, &[]).contains("3 messages restored, 0 already present"));
    let (d, _) = client(&to).await;
    for mailbox in ["user/joe/INBOX", "user/joe/Sent"] {
        let (a, b) = (
            c.status(mailbox).await.unwrap(),
            d.status(mailbox).await.unwrap(),
        );
        assert_eq!(
            (a.record.uidvalidity, a.record.uidnext, a.record.messages),
            (b.record.uidvalidity, b.record.uidnext, b.record.messages),
            "{mailbox}"
        );
        let (ma, mb) = (
            c.messages(mailbox).await.unwrap(),
            d.messages(mailbox).await.unwrap(),
        );
        assert_eq!(ma.len(), mb.len());
        for (x, y) in ma.iter().zip(&mb) {
            assert_eq!(
                (
                    x.uid,
                    &x.record.flags,
                    x.record.internal_date,
                    x.record.size
                ),
                (
                    y.uid,
                    &y.record.flags,
                    y.record.internal_date,
                    y.record.size
                )
            );
            let (fx, fy) = (
                c.message_path(mailbox, x.uid).await.unwrap(),
                d.message_path(mailbox, y.uid).await.unwrap(),
            );
            assert_eq!(std::fs::read(fx).unwrap(), std::fs::read(fy).unwrap());
        }
    }
    assert!(
        run(&from, &to, &[]).contains("0 messages restored, 3 already present"),
        "a second restore duplicated"
    );
    let map = to.dir.path().join("map");
    std::fs::write(&map, "joe=ann\n").unwrap();
    assert!(run(&from, &to, &["-m", map.to_str().unwrap()]).contains("3 messages restored"));
    assert_eq!(d.messages("user/ann/INBOX").await.unwrap().len(), 2);
    // A cut stream is refused loudly.
    let cut = from.dir.path().join("cut");
    assert_ok(
        &from.sbin("imsbackup", &["-f", cut.to_str().unwrap(), "user/joe"]),
        "imsbackup to a file",
    );
    let whole = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &whole[..whole.len() - 20]).unwrap();
    let out = to.sbin("imsrestore", &["-f", cut.to_str().unwrap()]);
    assert!(
        !out.status.success() && epistle_tests::stderr(&out).contains("cut short"),
        "{}",
        epistle_tests::stderr(&out)
    );
}

/// Shared mailboxes: a connection acting for a user may do only what the
/// mailbox's access control list (RFC 4314) allows.
#[tokio::test]
async fn access_rights_are_enforced_for_acting_users() {
    let i = running_store();
    let (system, _) = client(&i).await;
    system.create("user/joe/INBOX").await.unwrap();
    system.create("user/joe/Shared").await.unwrap();
    system
        .append("user/joe/Shared", b"shared message", &[], 0)
        .await
        .unwrap();
    system.create("user/joe/Private").await.unwrap();
    let acl = StoreRequest::SetAcl {
        name: "user/joe/Shared".into(),
        identifier: "ann".into(),
        rights: Some("lrs".into()),
    };
    system.request(acl).await.unwrap();

    let (ann, _) = client(&i).await;
    ann.request(StoreRequest::ActAs { user: "ann".into() })
        .await
        .unwrap();
    assert!(
        ann.request(StoreRequest::ActAs { user: "joe".into() })
            .await
            .is_err(),
        "identity changed twice"
    );
    let visible: Vec<String> = ann
        .list("user/joe/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(visible, ["user/joe/Shared"]);
    assert_eq!(ann.messages("user/joe/Shared").await.unwrap().len(), 1);
    match ann
        .request(StoreRequest::MyRights {
            name: "user/joe/Shared".into(),
        })
        .await
        .unwrap()
    {
        StoreReply::Rights { rights } => assert_eq!(rights, "lrs"),
        other => panic!("{other:?}"),
    }
    // May keep \Seen (her own: joe's stays as it was), may not delete,
    // expunge, insert or administer.
    ann.store_flags(
        "user/joe/Shared",
        &[1],
        FlagOp::Add,
        &["\\Seen".into()],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        ann.messages("user/joe/Shared").await.unwrap()[0]
            .record
            .flags,
        ["\\Seen"]
    );
    assert!(
        system.messages("user/joe/Shared").await.unwrap()[0]
            .record
            .flags
            .is_empty(),
        "ann's \\Seen leaked to joe"
    );
    assert_eq!(
        ann.status("user/joe/Shared").await.unwrap().record.unseen,
        0
    );
    assert_eq!(
        system
            .status("user/joe/Shared")
            .await
            .unwrap()
            .record
            .unseen,
        1
    );
    assert!(matches!(
        ann.store_flags(
            "user/joe/Shared",
            &[1],
            FlagOp::Add,
            &["\\Deleted".into()],
            None
        )
        .await,
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        ann.expunge("user/joe/Shared", None).await,
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        ann.append("user/joe/Shared", b"x", &[], 0).await,
        Err(StoreError::Refused(_))
    ));
    assert!(
        ann.request(StoreRequest::GetAcl {
            name: "user/joe/Shared".into()
        })
        .await
        .is_err()
    );
    // A mailbox ann may not see does not exist for her.
    assert!(matches!(
        ann.messages("user/joe/Private").await,
        Err(StoreError::NoMailbox(_))
    ));
    assert!(matches!(
        ann.create("user/joe/Mine").await,
        Err(StoreError::Refused(_))
    ));
    assert!(
        ann.create("user/ann/INBOX").await.is_ok(),
        "her own account is hers"
    );
    assert!(
        ann.request(StoreRequest::DeleteUser { user: "joe".into() })
            .await
            .is_err()
    );
    // Rights can be added to and taken away.
    let more = StoreRequest::SetAcl {
        name: "user/joe/Shared".into(),
        identifier: "ann".into(),
        rights: Some("+it".into()),
    };
    match system.request(more).await.unwrap() {
        StoreReply::Acl { acl } => assert_eq!(acl, [("ann".to_string(), "lrsit".to_string())]),
        other => panic!("{other:?}"),
    }
    assert!(
        ann.append("user/joe/Shared", b"from ann", &["\\Flagged".into()], 0)
            .await
            .is_ok()
    );
    let last = ann
        .messages("user/joe/Shared")
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        last.record.flags.is_empty(),
        "a flag ann may not set was kept: {:?}",
        last.record.flags
    );
}

/// Many first deliveries at once to a user whose INBOX does not exist yet
/// all succeed, and the INBOX is made once.
#[tokio::test]
async fn concurrent_first_deliveries_to_a_new_user() {
    let i = running_store();
    let sock = i.data.join("run/stored.sock");
    let mut tasks = Vec::new();
    for n in 0..20 {
        let sock = sock.clone();
        tasks.push(tokio::spawn(async move {
            let (c, _) = StoreClient::connect(&sock).await.unwrap();
            c.deliver(
                "user/newbie/INBOX",
                format!("message {n}").as_bytes(),
                &[],
                0,
            )
            .await
            .map(|r| r.0)
        }));
    }
    let mut uids = Vec::new();
    for t in tasks {
        uids.push(t.await.unwrap().expect("a first delivery failed"));
    }
    uids.sort();
    assert_eq!(uids, (1..=20).collect::<Vec<u32>>());
    let (c, _) = client(&i).await;
    assert_eq!(c.list("user/newbie/").await.unwrap().len(), 1);
}

/// Users arriving from other servers: an mbox file and a Maildir with
/// Maildir++ subfolders, flags and dates kept.
#[tokio::test]
async fn imsimport_takes_mbox_and_maildir() {
    let i = running_store();
    let src = i.dir.path().join("old-server");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("Archive"),
        "From joe@example.com Mon Nov 30 20:28:29 2026\nSubject: one\n\n>From the archive\n\nFrom ann@example.com Tue Dec  1 08:00:00 2026\nSubject: two\n\nbody\n",
    )
    .unwrap();
    let md = src.join("Maildir");
    for d in [
        "cur",
        "new",
        "tmp",
        ".Lists.rust/cur",
        ".Lists.rust/new",
        ".Lists.rust/tmp",
    ] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    std::fs::write(
        md.join("cur/1700000000.A.host:2,FS"),
        "Subject: read and flagged\n\nx\n",
    )
    .unwrap();
    std::fs::write(md.join("new/1700000001.B.host"), "Subject: new\n\ny\n").unwrap();
    std::fs::write(
        md.join(".Lists.rust/cur/1700000002.C.host:2,S"),
        "Subject: list\n\nz\n",
    )
    .unwrap();
    let out = i.sbin(
        "imsimport",
        &[
            "-u",
            "joe",
            src.join("Archive").to_str().unwrap(),
            md.to_str().unwrap(),
        ],
    );
    assert_ok(&out, "imsimport");
    let (c, _) = client(&i).await;
    let archive = c.messages("user/joe/Archive").await.unwrap();
    assert_eq!(archive.len(), 2);
    assert_eq!(archive[0].record.internal_date, 1_796_070_509);
    let body =
        std::fs::read_to_string(c.message_path("user/joe/Archive", 1).await.unwrap()).unwrap();
    assert!(body.contains("\nFrom the archive\n"), "{body}");
    let inbox = c.messages("user/joe/INBOX").await.unwrap();
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0].record.flags, ["\\Flagged", "\\Seen"]);
    assert!(inbox[1].record.flags.is_empty());
    assert_eq!(
        c.messages("user/joe/Lists/rust").await.unwrap()[0]
            .record
            .flags,
        ["\\Seen"]
    );
}

/// A reader that does not keep up loses events, not its connection, and
/// is told so (IMAP then reads the mailbox again).
#[tokio::test]
async fn a_reader_that_falls_behind_is_told_it_lost_events() {
    let i = running_store();
    let (writer, _) = client(&i).await;
    let (reader, mut events) = client(&i).await;
    writer.create("user/joe/INBOX").await.unwrap();
    writer
        .append("user/joe/INBOX", b"Subject: x\r\n\r\nx\r\n", &[], 0)
        .await
        .unwrap();
    reader.watch("user/joe/INBOX", true).await.unwrap();
    let backlog = epistle_ipc::store_client::EVENT_BACKLOG;
    for n in 0..backlog + 10 {
        let op = if n % 2 == 0 {
            FlagOp::Add
        } else {
            FlagOp::Remove
        };
        writer
            .store_flags("user/joe/INBOX", &[1], op, &["\\Flagged".into()], None)
            .await
            .unwrap();
    }
    // The reader's connection still answers, after every event it got.
    reader.status("user/joe/INBOX").await.unwrap();
    assert!(events.lost(), "the loss is reported");
    assert!(!events.lost(), "once");
    let mut got = 0;
    while events.try_recv().is_some() {
        got += 1;
    }
    assert_eq!(got, backlog);
}

/// The structure IMAP FETCH needs is parsed at append and kept: it comes
/// back for the message and for its copies.
#[tokio::test]
async fn the_parsed_structure_is_kept() {
    let i = running_store();
    let (c, _) = client(&i).await;
    c.create("user/joe/INBOX").await.unwrap();
    c.create("user/joe/Keep").await.unwrap();
    let msg = "From: Joe <joe@example.com>\r\nTo: ann@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nplain\r\n--x\r\n\
Content-Type: text/html\r\n\r\n<p>html</p>\r\n--x--\r\n";
    c.append("user/joe/INBOX", msg.as_bytes(), &[], 0)
        .await
        .unwrap();
    let both = c.structures("user/joe/INBOX", &[1, 99]).await.unwrap();
    assert_eq!(both.len(), 2);
    assert!(both[1].is_none(), "no message 99");
    let s = both[0].clone().unwrap();
    assert_eq!(s.envelope.subject.as_deref(), Some("report"));
    assert_eq!(s.envelope.to[0].host.as_deref(), Some("example.org"));
    assert_eq!(s.body.media_subtype, "alternative");
    let html = &s.body.parts[1];
    assert_eq!(
        &msg[html.offset_body as usize..html.offset_end as usize],
        "<p>html</p>"
    );
    c.request(StoreRequest::Copy {
        from: "user/joe/INBOX".into(),
        uids: vec![1],
        to: "user/joe/Keep".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.structures("user/joe/Keep", &[1]).await.unwrap(),
        vec![Some(s)]
    );
    assert!(c.structures("user/joe/Nowhere", &[1]).await.is_err());
    // Many large structures come back whole, over several answers.
    let mut big = String::from(
        "Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
    );
    for n in 0..200 {
        big.push_str(&format!(
            "--b\r\nContent-Type: text/plain; name=\"part-{n}-with-a-long-name.txt\"\r\n\r\n{n}\r\n"
        ));
    }
    big.push_str("--b--\r\n");
    c.create("user/joe/Big").await.unwrap();
    c.append("user/joe/Big", big.as_bytes(), &[], 0)
        .await
        .unwrap();
    for _ in 0..99 {
        c.request(StoreRequest::Copy {
            from: "user/joe/Big".into(),
            uids: vec![1],
            to: "user/joe/Big".into(),
        })
        .await
        .unwrap();
    }
    let uids: Vec<u32> = (1..=100).chain([500]).collect();
    let all = c.structures("user/joe/Big", &uids).await.unwrap();
    assert_eq!(all.len(), 101);
    assert!(
        all[..100]
            .iter()
            .all(|s| s.as_ref() == all[0].as_ref() && s.is_some())
    );
    assert_eq!(all[0].as_ref().unwrap().body.parts.len(), 200);
    assert!(all[100].is_none());
}

/// Moving an account between partitions, and finding the mailboxes of
/// accounts the directory no longer has.
#[tokio::test]
async fn partition_moves_and_orphans() {
    let i = Install::new();
    let second = i.dir.path().join("part2");
    let state = i.state() + &format!("param.store.partition.part2.path = {}\n", second.display());
    assert_ok(
        &i.configure_with(&state, &[]),
        "configure with two partitions",
    );
    assert_ok(&i.sbin("start-msg", &["store"]), "start-msg store");
    let (c, _) = client(&i).await;
    c.create("user/admin/INBOX").await.unwrap();
    c.append("user/admin/INBOX", b"to move", &[], 0)
        .await
        .unwrap();
    c.create("user/ghost/INBOX").await.unwrap();
    let out = i.sbin(
        "mboxutil",
        &["-r", "user/admin/INBOX", "user/admin/INBOX", "part2"],
    );
    assert_ok(&out, "mboxutil -r ... part2");
    let path = c.message_path("user/admin/INBOX", 1).await.unwrap();
    assert!(path.starts_with(&second), "{}", path.display());
    assert_eq!(std::fs::read_to_string(path).unwrap(), "to move");
    // The client staged its last message on the old partition; the next
    // goes to the new one.
    let (uid, _) = c
        .append("user/admin/INBOX", b"after the move", &[], 0)
        .await
        .unwrap();
    let path = c.message_path("user/admin/INBOX", uid).await.unwrap();
    assert!(path.starts_with(&second), "{}", path.display());
    assert_eq!(std::fs::read_to_string(path).unwrap(), "after the move");
    // "admin" is in the directory (configure made it); "ghost" is not.
    let orphans = stdout(&i.sbin("mboxutil", &["-o"]));
    assert_eq!(orphans.trim(), "user/ghost/INBOX");
}
