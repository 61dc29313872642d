//! imapd end to end: a configured installation with the store and the
//! IMAP server on a loopback port, driven by Python's imaplib and raw
//! sockets. Mail comes in through the MTA like a user's would.

use std::time::Duration;

use epistle_tests::{Install, wait_for};

/// An installation with users joe and ann and everything started.
fn running() -> Install {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.add_user("ann", "ann secret", &[]);
    i.start();
    i
}

/// Runs a Python script with `port` and an `imap()` helper defined.
fn imap_script(i: &Install, body: &str) -> String {
    let script = format!(
        "import imaplib, socket, ssl, sys, time\n\
         port = int(sys.argv[1])\n\
         smtp_port = int(sys.argv[2])\n\
         def imap():\n    return imaplib.IMAP4('127.0.0.1', port, timeout=20)\n\
         def send(to, subject, body='Hello\\r\\n'):\n    import smtplib\n    s = smtplib.SMTP('127.0.0.1', smtp_port, timeout=20)\n    s.sendmail('sender@example.org', [to], ('From: Sender <sender@example.org>\\r\\nTo: ' + to + '\\r\\nSubject: ' + subject + '\\r\\nMessage-ID: <' + subject.replace(' ', '.') + '@example.org>\\r\\nDate: Tue, 1 Dec 2026 03:00:00 +0000\\r\\n\\r\\n' + body).encode())\n    s.quit()\n\
         def raw(lines):\n    s = socket.create_connection(('127.0.0.1', port), 20)\n    f = s.makefile('rb')\n    out = [f.readline().decode()]\n    for l in lines:\n        s.sendall(l.encode() + b'\\r\\n')\n        tag = l.split(' ')[0]\n        while True:\n            r = f.readline().decode()\n            out.append(r)\n            if r.startswith(tag + ' ') or r.startswith('+') or not r:\n                break\n    s.close()\n    return ''.join(out)\n\
         {body}"
    );
    i.python(
        &script,
        &[&i.ports.imap.to_string(), &i.ports.smtp.to_string()],
    )
}

#[test]
fn a_full_imaplib_session() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
send('joe@example.com', 'first one')
send('joe@example.com', 'second one', 'Line one\r\nfind-me here\r\n')
c = imap()
assert 'IMAP4REV1' in c.capabilities, c.capabilities
typ, _ = c.login('joe', 'joe secret')
assert typ == 'OK'
for _ in range(100):
    typ, data = c.status('INBOX', '(MESSAGES UNSEEN UIDNEXT)')
    if b'MESSAGES 2' in data[0]:
        break
    time.sleep(0.1)
assert b'MESSAGES 2' in data[0] and b'UNSEEN 2' in data[0], data
typ, data = c.select('INBOX')
assert typ == 'OK' and data == [b'2'], data
typ, data = c.fetch('1:2', '(UID FLAGS RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
assert typ == 'OK', data
text = repr(data)
assert 'first one' in text and 'second one' in text and '"Sender" NIL "sender" "example.org"' in text, text
# Delivery order is not promised: find the second message by subject.
typ, data = c.search(None, 'SUBJECT', '"second one"')
second = data[0].decode()
typ, data = c.search(None, 'BODY', 'find-me')
assert data == [second.encode()], data
typ, data = c.uid('SEARCH', 'SUBJECT', 'first')
uid1 = int(data[0])
typ, data = c.fetch(second, '(BODY[TEXT])')
assert b'find-me here' in data[0][1], data
typ, data = c.fetch(second, '(FLAGS)')
assert b'\\Seen' in data[0], data
typ, data = c.store('1', '+FLAGS', '(\\Flagged $Work)')
assert b'\\Flagged' in data[0] and b'$Work' in data[0], data
c.create('Archive')
typ, data = c.list('""', '*')
names = b' '.join(data)
assert b'INBOX' in names and b'Archive' in names, data
typ, data = c.uid('COPY', str(uid1), 'Archive')
assert typ == 'OK', data
typ, code = c.response('COPYUID')
assert code[0].split()[1] == str(uid1).encode(), code
typ, data = c.uid('MOVE', str(uid1), 'Archive')
assert typ == 'OK', data
typ, data = c.select('INBOX')
assert data == [b'1'], data
typ, data = c.append('INBOX', '(\\Seen)', None, b'Subject: appended\r\n\r\nbody\r\n')
assert typ == 'OK' and b'APPENDUID' in data[0], data
c.noop()
typ, data = c.search(None, 'ALL')
assert data == [b'1 2'], data
c.store('2', '+FLAGS', '\\Deleted')
typ, data = c.expunge()
assert data == [b'2'], data
typ, data = c.status('Archive', '(MESSAGES)')
assert b'MESSAGES 2' in data[0], data
c.logout()
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
    let log = std::fs::read_to_string(i.base.join("log/imap/imap")).unwrap_or_default();
    assert!(
        log.contains("login [127.0.0.1:") && log.contains(" joe plaintext"),
        "{log}"
    );
    assert!(log.contains("close [127.0.0.1:"), "{log}");
}

#[test]
fn protocol_corners_and_bad_input() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
t = raw(['a1 CAPABILITY', 'a2 LOGIN joe {10}'])
assert 'AUTH=PLAIN' in t and 'a1 OK' in t and t.endswith('+ Ready for literal data\r\n'), t
t = raw(['b1 FROB', 'b2 SELECT INBOX', '* NOOP', 'b3 LOGIN joe "wrong"', 'b4 APPEND INBOX {99999999999}'])
assert 'b1 BAD' in t and 'b2 BAD Log in first' in t and '* BAD' in t, t
assert 'b3 NO [AUTHENTICATIONFAILED]' in t, t
assert 'b4 NO [TOOBIG]' in t, t
t = raw(['c1 LOGIN joe "joe secret"', 'c2 SELECT "../etc"', 'c3 SELECT INBOX', 'c4 FETCH 5 FLAGS', 'c5 LOGOUT'])
assert 'c2 NO' in t and 'c3 OK [READ-WRITE]' in t and 'c4 BAD' in t and '* BYE' in t, t
# AUTHENTICATE PLAIN with an initial response, then with a continuation.
import base64
ir = base64.b64encode(b'\0joe\0joe secret').decode()
t = raw(['d1 AUTHENTICATE PLAIN ' + ir])
assert 'd1 OK' in t, t
s = socket.create_connection(('127.0.0.1', port), 20)
f = s.makefile('rb')
f.readline()
s.sendall(b'e1 AUTHENTICATE PLAIN\r\n')
assert f.readline().startswith(b'+')
s.sendall(ir.encode() + b'\r\n')
assert f.readline().startswith(b'e1 OK')
# An over-long line ends the session.
s.sendall(b'e2 NOOP ' + b'x' * 70000 + b'\r\n')
assert f.readline().startswith(b'* BYE')
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn idle_shows_a_delivery_at_once_and_two_sessions_see_each_others_changes() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
send('ann@example.com', 'one')
a = imap(); a.login('ann', 'ann secret')
for _ in range(100):
    if b'MESSAGES 1' in a.status('INBOX', '(MESSAGES)')[1][0]:
        break
    time.sleep(0.1)
a.select('INBOX')
b = imap(); b.login('ann', 'ann secret'); b.select('INBOX')
# b flags message 1; a sees the change at its next command.
b.store('1', '+FLAGS', '(\\Answered)')
# The change reaches a's session as an event; it shows at a's next command.
for _ in range(50):
    a.noop()
    if any(b'\\Answered' in (d or b'') for d in a.untagged_responses.get('FETCH', [])):
        break
    time.sleep(0.1)
else:
    raise AssertionError(a.untagged_responses)
# a expunges while b is in a FETCH by number: no EXPUNGE in b's FETCH answer.
a.store('1', '+FLAGS', '(\\Deleted)')
a.expunge()
typ, data = b.fetch('1', '(FLAGS)')
assert 'EXPUNGE' not in b.untagged_responses, b.untagged_responses
for _ in range(50):
    b.noop()
    if b.untagged_responses.get('EXPUNGE') == [b'1']:
        break
    time.sleep(0.1)
else:
    raise AssertionError(b.untagged_responses)
# IDLE: a delivery shows up without a command.
s = socket.create_connection(('127.0.0.1', port), 20)
f = s.makefile('rb')
f.readline()
s.sendall(b'i1 LOGIN ann "ann secret"\r\ni2 SELECT INBOX\r\n')
while not f.readline().startswith(b'i2 OK'):
    pass
s.sendall(b'i3 IDLE\r\n')
assert f.readline().startswith(b'+')
send('ann@example.com', 'two')
line = f.readline()
assert line == b'* 1 EXISTS\r\n', line
s.sendall(b'DONE\r\n')
assert f.readline().startswith(b'i3 OK')
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
    assert!(wait_for(Duration::from_secs(1), || true));
}

#[test]
fn curl_reads_over_starttls_and_imaps() {
    let i = Install::configured();
    let sslport = epistle_tests::free_port();
    for (p, v) in [
        ("service.imap.enablesslport", "yes".to_string()),
        ("service.imap.sslport", sslport.to_string()),
    ] {
        epistle_tests::assert_ok(&i.configutil(&["-o", p, "-v", &v]), "configutil");
    }
    i.add_user("joe", "joe secret", &[]);
    i.start();
    imap_script(
        &i,
        r#"
send('joe@example.com', 'for curl', 'curl was here\r\n')
c = imap(); c.login('joe', 'joe secret')
for _ in range(100):
    if b'MESSAGES 1' in c.status('INBOX', '(MESSAGES)')[1][0]:
        break
    time.sleep(0.1)
"#,
    );
    let curl = |url: String, extra: &[&str]| epistle_tests::curl(&url, "joe:joe secret", extra);
    let plain = i.ports.imap;
    let m = curl(
        format!("imap://127.0.0.1:{plain}/INBOX;UID=1"),
        &["--ssl-reqd"],
    );
    assert!(
        m.contains("Subject: for curl") && m.contains("curl was here"),
        "{m}"
    );
    let m = curl(format!("imaps://127.0.0.1:{sslport}/INBOX;UID=1"), &[]);
    assert!(m.contains("curl was here"), "{m}");
    // A listing of the mailboxes.
    let l = curl(format!("imaps://127.0.0.1:{sslport}/"), &[]);
    assert!(l.contains("INBOX"), "{l}");
}

/// Runs mbsync with a configuration syncing joe's mailboxes into `maildir`.
fn mbsync(i: &Install, maildir: &std::path::Path) -> String {
    let rc = i.dir.path().join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount test\nHost 127.0.0.1\nPort {port}\nUser joe\nPass \"joe secret\"\n\
             SSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount test\n\n\
             MaildirStore local\nPath {dir}/\nInbox {dir}/INBOX\nSubFolders Verbatim\n\n\
             Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n\
             Expunge Both\nSync All\nSyncState *\n",
            port = i.ports.imap,
            dir = maildir.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("mbsync")
        .arg("-c")
        .arg(&rc)
        .arg("-a")
        .output()
        .unwrap();
    epistle_tests::assert_ok(&out, "mbsync");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files of a maildir folder (`cur` and `new`).
fn maildir_files(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    ["cur", "new"]
        .iter()
        .flat_map(|d| std::fs::read_dir(folder.join(d)).into_iter().flatten())
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[test]
fn mbsync_syncs_both_ways_with_flags() {
    let i = running();
    imap_script(
        &i,
        r#"
send('joe@example.com', 'sync one')
send('joe@example.com', 'sync two')
c = imap(); c.login('joe', 'joe secret')
for _ in range(100):
    if b'MESSAGES 2' in c.status('INBOX', '(MESSAGES)')[1][0]:
        break
    time.sleep(0.1)
c.create('Lists')
"#,
    );
    let maildir = i.dir.path().join("maildir");
    std::fs::create_dir_all(&maildir).unwrap();
    mbsync(&i, &maildir);
    let inbox = maildir.join("INBOX");
    let files = maildir_files(&inbox);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(maildir.join("Lists").exists());
    // Read one locally (the S flag), and write a new one into Lists.
    let one = files
        .iter()
        .find(|f| std::fs::read_to_string(f).unwrap().contains("sync one"))
        .unwrap();
    let name = one.file_name().unwrap().to_string_lossy().into_owned();
    let seen = match name.split_once(":2,") {
        Some((base, flags)) => format!("{base}:2,{flags}S"),
        None => format!("{name}:2,S"),
    };
    std::fs::rename(one, inbox.join("cur").join(seen)).unwrap();
    std::fs::write(
        maildir.join("Lists/new/1700000000.local.host"),
        "From: joe@example.com\r\nSubject: written offline\r\n\r\nlocal\r\n",
    )
    .unwrap();
    mbsync(&i, &maildir);
    let out = imap_script(
        &i,
        r#"
c = imap(); c.login('joe', 'joe secret')
c.select('INBOX')
typ, data = c.search(None, 'SEEN')
seen = data[0].split()
typ, data = c.fetch(seen[0], '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
assert b'sync one' in data[0][1], data
typ, data = c.search(None, 'UNSEEN')
two = data[0].decode()
c.store(two, '+FLAGS', '(\\Flagged)')
c.select('Lists')
typ, data = c.fetch('1:*', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
assert b'written offline' in data[0][1], data
print(len(seen))
"#,
    );
    assert_eq!(out.trim(), "1");
    // The flag set on the server comes down.
    mbsync(&i, &maildir);
    let flagged: Vec<_> = maildir_files(&inbox)
        .into_iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .split_once(":2,")
                .is_some_and(|(_, fl)| fl.contains('F'))
        })
        .collect();
    assert_eq!(flagged.len(), 1, "{:?}", maildir_files(&inbox));
}

#[test]
fn mutt_reads_moves_and_deletes_in_batch() {
    let i = running();
    imap_script(
        &i,
        r#"
for s in ['keep-me', 'move-me', 'delete-me']:
    send('joe@example.com', s)
c = imap(); c.login('joe', 'joe secret')
for _ in range(100):
    if b'MESSAGES 3' in c.status('INBOX', '(MESSAGES)')[1][0]:
        break
    time.sleep(0.1)
c.create('Archive')
"#,
    );
    let rc = i.dir.path().join("muttrc");
    std::fs::write(
        &rc,
        format!(
            "set folder=\"imap://joe@127.0.0.1:{port}/\"\nset imap_pass=\"joe secret\"\n\
             set spoolfile=\"+INBOX\"\nset ssl_starttls=no\nset ssl_force_tls=no\n\
             set confirmappend=no\nset confirmcreate=no\nset delete=yes\nset move=no\n\
             set mail_check=0\nset timeout=1\nset wait_key=no\nset header_cache=\"\"\n",
            port = i.ports.imap
        ),
    )
    .unwrap();
    let keys = "<search>~s keep-me<enter><display-message><exit>\
                <tag-pattern>~s move-me<enter><tag-prefix><save-message>=Archive<enter>\
                <tag-pattern>~s delete-me<enter><tag-prefix><delete-message>\
                <sync-mailbox><quit>";
    let cmd = format!("mutt -n -F {} -e 'push \"{keys}\"'", rc.display());
    let out = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    epistle_tests::assert_ok(&out, "mutt");
    let out = imap_script(
        &i,
        r#"
c = imap(); c.login('joe', 'joe secret')
c.select('INBOX')
typ, data = c.fetch('1:*', '(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
inbox = repr(data)
c.select('Archive')
typ, data = c.fetch('1:*', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
archive = repr(data)
assert 'keep-me' in inbox and '\\\\Seen' in inbox, inbox
assert 'move-me' not in inbox and 'delete-me' not in inbox, inbox
assert 'move-me' in archive, archive
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn shared_folders_by_acl_and_quota() {
    let i = Install::configured();
    for (p, v) in [
        ("store.defaultmailboxquota", "2M"),
        ("store.defaultmessagequota", "100"),
    ] {
        epistle_tests::assert_ok(&i.configutil(&["-o", p, "-v", v]), "configutil");
    }
    i.add_user("joe", "joe secret", &[]);
    i.add_user("ann", "ann secret", &[]);
    i.start();
    let out = imap_script(
        &i,
        r#"
j = imap(); j.login('joe', 'joe secret')
j.create('Shared')
j.append('Shared', None, None, b'Subject: for the team\r\n\r\nshared body\r\n')
typ, data = j.getquotaroot('INBOX')
assert typ == 'OK', data
quota = repr(data)
assert 'STORAGE 1 2048' in quota and 'MESSAGE 1 100' in quota, quota
a = imap(); a.login('ann', 'ann secret')
typ, data = a.select('"Other Users/joe/Shared"')
assert typ == 'NO', data
typ, data = j.setacl('Shared', 'ann', 'lr')
assert typ == 'OK', data
typ, data = j.getacl('Shared')
assert b'ann lr' in data[0], data
typ, data = a.myrights('"Other Users/joe/Shared"')
assert b'lr' in data[0], data
typ, data = a.select('"Other Users/joe/Shared"', readonly=True)
assert typ == 'OK' and data == [b'1'], data
typ, data = a.fetch('1', '(BODY.PEEK[TEXT])')
assert b'shared body' in data[0][1], data
# Read rights only: no flag changes, no appends.
typ, data = a.append('"Other Users/joe/Shared"', None, None, b'Subject: x\r\n\r\ny\r\n')
assert typ == 'NO', data
typ, data = j.deleteacl('Shared', 'ann')
assert typ == 'OK', data
typ, data = a.myrights('"Other Users/joe/Shared"')
assert typ == 'NO' or b'lr' not in data[0], data
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn sort_thread_esearch_condstore_and_binary() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
c = imap(); c.login('joe', 'joe secret')
msgs = [
    (b'Subject: Re: budget\r\nFrom: Zed <zed@example.com>\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n\r\nz\r\n'),
    (b'Subject: budget\r\nFrom: Amy <amy@example.com>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\na\r\n'),
    (b'Subject: lunch\r\nFrom: Bob <bob@example.com>\r\nDate: Sun, 1 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naMOpbGxv\r\n'),
]
for m in msgs:
    c.append('INBOX', None, None, m)
c.select('INBOX')
typ, data = c.sort('(SUBJECT DATE)', 'UTF-8', 'ALL')
assert data == [b'2 1 3'], data
typ, data = c.sort('(REVERSE FROM)', 'UTF-8', 'ALL')
assert data == [b'1 3 2'], data
typ, data = c.thread('ORDEREDSUBJECT', 'UTF-8', 'ALL')
assert data == [b'(3)(2 1)'], data
c.uid('SEARCH', 'RETURN', '(MIN MAX COUNT)', 'ALL')
typ, data = c.response('ESEARCH')
assert data[0].startswith(b'(TAG ') and b'UID MIN 1 MAX 3 COUNT 3' in data[0], data
typ, data = c.search(None, 'RETURN', '(SAVE)', 'FROM', 'amy')
typ, data = c.fetch('$', '(UID)')
assert data == [b'2 (UID 2)'], data
typ, data = c.fetch('3', '(BINARY[1] BINARY.SIZE[1])')
assert 'héllo'.encode() in data[0][1] and b'BINARY.SIZE[1] 6' in data[1], data
typ, data = c.fetch('1:3', '(UID) (CHANGEDSINCE 1)')
assert typ == 'OK' and all(b'MODSEQ' in d for d in data), data
typ, data = c.fetch('1', '(MODSEQ)')
modseq = int(data[0].split(b'MODSEQ (')[1].split(b')')[0])
typ, data = c._simple_command('STORE', '1', '(UNCHANGEDSINCE %d)' % (modseq - 1), '+FLAGS', '(\\Seen)')
assert typ == 'OK' and b'MODIFIED 1' in data[0], (typ, data)
typ, data = c._simple_command('STORE', '1', '(UNCHANGEDSINCE %d)' % modseq, '+FLAGS', '(\\Seen)')
assert typ == 'OK' and b'MODIFIED' not in data[0], (typ, data)
c.append('INBOX', None, None, b'Subject: Re: lunch\r\nMessage-ID: <r1@x>\r\nIn-Reply-To: <l@x>\r\nDate: Wed, 4 Nov 2026 10:00:00 +0000\r\n\r\nr\r\n')
c.append('INBOX', None, None, b'Subject: Re: Re: lunch\r\nMessage-ID: <r2@x>\r\nReferences: <l@x> <r1@x>\r\nDate: Thu, 5 Nov 2026 10:00:00 +0000\r\n\r\nr\r\n')
c.noop()
typ, data = c.thread('REFERENCES', 'UTF-8', 'ALL')
# 3 (lunch) has no Message-ID: 4 and 5 hang off the missing <l@x>, a
# dummy that is promoted away; subjects then gather the replies under 3
# and 1 under 2.
assert data == [b'(3 4 5)(2 1)'], data
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn qresync_reports_what_vanished_and_changed() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
c = imap(); c.login('joe', 'joe secret')
for n in range(3):
    c.append('INBOX', None, None, b'Subject: m%d\r\n\r\nx\r\n' % n)
c.select('INBOX')
t = raw(['a LOGIN joe "joe secret"', 'b ENABLE QRESYNC', 'c SELECT INBOX'])
validity = t.split('[UIDVALIDITY ')[1].split(']')[0]
modseq = t.split('[HIGHESTMODSEQ ')[1].split(']')[0]
assert '* ENABLED QRESYNC' in t, t
c.store('2', '+FLAGS', '(\\Deleted)')
c.expunge()
c.store('2', '+FLAGS', '(\\Flagged)')
t = raw(['a LOGIN joe "joe secret"', 'b SELECT INBOX (QRESYNC (%s %s 1:3))' % (validity, modseq)])
assert 'b BAD' in t, t
t = raw(['a LOGIN joe "joe secret"', 'b ENABLE QRESYNC', 'c SELECT INBOX (QRESYNC (%s %s 1:3))' % (validity, modseq),
         'd UID FETCH 1:* (FLAGS) (CHANGEDSINCE %s VANISHED)' % modseq, 'e STORE 1 +FLAGS (\\Deleted)', 'f EXPUNGE'])
assert '* VANISHED (EARLIER) 2\r\n' in t, t
assert '* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (' in t, t
assert t.count('* VANISHED (EARLIER) 2\r\n') == 2, t
assert '* VANISHED 1\r\n' in t and 'EXPUNGE\r\n' not in t.replace('f EXPUNGE', ''), t
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn special_use_folders() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
t = raw(['a LOGIN joe "joe secret"', 'b CREATE "Sent Items" (USE (\\Sent))', 'c CREATE Everything (USE (\\All))',
         'd CREATE Plain', 'e RENAME "Sent Items" "Sent Mail"', 'f LIST (SPECIAL-USE) "" "*"', 'g LIST "" "*"'])
assert 'b OK' in t and 'c NO [USEATTR]' in t and 'e OK' in t, t
assert '* LIST (\\HasNoChildren \\Sent) "/" "Sent Mail"' in t, t
f_part = t.split('f OK')[0].split('e OK')[1]
assert 'Plain' not in f_part and 'Sent Mail' in f_part, f_part
assert 'Plain' in t.split('f OK')[1], t
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

/// LIST shows mailboxes other users share (under Other Users/, with the
/// levels above them), subscriptions to mailboxes that are gone, and,
/// with RECURSIVEMATCH, parents of subscribed mailboxes.
#[test]
fn list_shared_gone_and_recursive_match() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
a = raw(['a LOGIN ann "ann secret"', 'b CREATE Shared', 'c SETACL Shared joe lr', 'd CREATE Private'])
assert 'c OK' in a, a
t = raw(['a LOGIN joe "joe secret"', 'b CREATE Work/Sub', 'c SUBSCRIBE Work/Sub', 'd CREATE Gone',
         'e SUBSCRIBE Gone', 'f DELETE Gone', 'g LIST "" "*"', 'h LIST (SUBSCRIBED) "" "*"',
         'i LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"', 'j LSUB "" "*"', 'k LIST "" "Other Users/%"',
         'l SELECT "Other Users/ann/Shared"', 'm LIST "" "Work/%"'])
def part(t, tag):
    prev = t.split(tag + ' OK')[0]
    return prev[prev.rfind(' OK ') :]
g = part(t, 'g')
assert '* LIST (\\Noselect \\HasChildren) "/" "Other Users"' in g, g
assert '* LIST (\\Noselect \\HasChildren) "/" "Other Users/ann"' in g, g
assert '* LIST (\\HasNoChildren) "/" "Other Users/ann/Shared"' in g, g
assert 'Private' not in g and 'Gone' not in g, g
assert '* LIST (\\HasChildren) "/" Work' in g and '* LIST (\\HasNoChildren) "/" Work/Sub' in g, g
h = part(t, 'h')
assert '* LIST (\\NonExistent \\Subscribed) "/" Gone' in h, h
assert '* LIST (\\HasNoChildren \\Subscribed) "/" Work/Sub' in h, h
assert '"/" Work\r' not in h, h
i_ = part(t, 'i')
assert '* LIST (\\HasChildren) "/" Work ("CHILDINFO" ("SUBSCRIBED"))' in i_, i_
assert 'Work/Sub' not in i_ and '(\\NonExistent \\Subscribed) "/" Gone' in i_, i_
j = part(t, 'j')
assert '* LSUB (\\Noselect) "/" Gone' in j and '"/" Work/Sub' in j, j
k = part(t, 'k')
assert '"Other Users/ann"' in k and 'Shared' not in k, k
assert 'l OK' in t, t
m = part(t, 'm')
assert '"/" Work/Sub' in m and '"/" Work\r' not in m, m
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

/// RFC 8474: mailboxes keep their MAILBOXID across a rename; a message
/// keeps its EMAILID when copied or moved, and SEARCH finds it by it.
#[test]
fn object_ids() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
import re
c = imap()
c.login('joe', 'joe secret')
typ, data = c.capability()
assert b'OBJECTID' in data[0], data
typ, data = c._simple_command('CREATE', 'Work')
created = re.search(rb'MAILBOXID \(([A-Za-z0-9_-]+)\)', data[0] if data[0] else b'')
typ, data = c.status('Work', '(MAILBOXID)')
mid = re.search(rb'MAILBOXID \(([A-Za-z0-9_-]+)\)', data[0]).group(1)
assert created.group(1) == mid, (data, mid)
c.rename('Work', 'Projects')
typ, data = c.status('Projects', '(MAILBOXID)')
assert mid in data[0], data
typ, data = c.status('INBOX', '(MAILBOXID)')
assert mid not in data[0], data
c.append('INBOX', None, None, b'Subject: keep me\r\n\r\nsame bytes\r\n')
c.append('INBOX', None, None, b'Subject: other\r\n\r\nother bytes\r\n')
typ, data = c.select('INBOX')
sel = c.untagged_responses.get('OK', [])
assert any(b'[MAILBOXID (' in r for r in sel), sel
typ, data = c.fetch('1:2', '(EMAILID THREADID)')
ids = [re.search(rb'EMAILID \(([A-Za-z0-9_-]+)\)', d).group(1) for d in data]
assert ids[0] != ids[1] and all(b'THREADID NIL' in d for d in data), data
typ, data = c.search(None, 'EMAILID', ids[0].decode())
assert data == [b'1'], data
c.copy('1', 'Projects')
c._simple_command('MOVE', '2', 'Projects')
c.select('Projects')
typ, data = c.fetch('1:2', '(EMAILID)')
assert [re.search(rb'EMAILID \(([A-Za-z0-9_-]+)\)', d).group(1) for d in data] == ids, data
typ, data = c.search(None, 'EMAILID', ids[1].decode())
assert data == [b'2'], data
t = raw(['a LOGIN joe "joe secret"', 'b CREATE Fresh', 'c SELECT INBOX', 'd SEARCH EMAILID "M 1"',
         'e FETCH 1 (EMAILID)'])
assert re.search(r'b OK \[MAILBOXID \(F[0-9]+\)\]', t), t
assert 'd BAD' in t and '* 1 FETCH (EMAILID (' + ids[0].decode() + '))' in t, t
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn compress_deflate() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
import zlib
s = socket.create_connection(('127.0.0.1', port), 20)
f = s.makefile('rb')
f.readline()
s.sendall(b'a LOGIN joe "joe secret"\r\n')
assert f.readline().startswith(b'a OK')
s.sendall(b'b COMPRESS DEFLATE\r\n')
assert f.readline().startswith(b'b OK'), 'no OK'
comp = zlib.compressobj(6, zlib.DEFLATED, -15)
dec = zlib.decompressobj(-15)
def send(line):
    s.sendall(comp.compress(line + b'\r\n') + comp.flush(zlib.Z_SYNC_FLUSH))
got = b''
def until(tag):
    global got
    while (b'\r\n' + tag + b' ') not in (b'\r\n' + got):
        data = s.recv(65536)
        assert data, got
        got += dec.decompress(data)
    return got
msg = b'Subject: squeezed\r\n\r\n' + b'z' * 5
send(b'c APPEND INBOX {%d+}\r\n' % len(msg) + msg)
send(b'd SELECT INBOX')
send(b'e FETCH 1 (BODY[])')
send(b'f COMPRESS DEFLATE')
t = until(b'f').decode()
assert 'c OK [APPENDUID' in t and 'd OK' in t and 'Subject: squeezed' in t, t
assert 'f NO [COMPRESSIONACTIVE]' in t, t
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn imap4rev2_answers_and_preview() {
    let i = running();
    let out = imap_script(
        &i,
        r#"
c = imap(); c.login('joe', 'joe secret')
c.append('INBOX', None, None, b'Subject: plain\r\n\r\nHello   there,\r\n\r\nsee you.\r\n')
c.append('INBOX', None, None, b'Subject: html\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>Rich <b>text</b></p>\r\n--b--\r\n')
t = raw(['a LOGIN joe "joe secret"', 'b ENABLE IMAP4rev2', 'c SELECT INBOX', 'd SEARCH ALL', 'e FETCH 1:2 (PREVIEW)'])
assert '* ENABLED IMAP4rev2' in t and 'RECENT' not in t and '[UNSEEN' not in t, t
assert '* ESEARCH (TAG "d") ALL 1:2' in t, t
assert '* 1 FETCH (PREVIEW "Hello there, see you.")' in t, t
assert '* 2 FETCH (PREVIEW "Rich text")' in t, t
t = raw(['a LOGIN joe "joe secret"', 'c SELECT INBOX', 'd SEARCH ALL'])
assert '* 0 RECENT' in t and '* SEARCH 1 2' in t, t
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn passwords_need_tls_from_elsewhere_and_sessions_are_limited() {
    let i = Install::configured();
    epistle_tests::assert_ok(
        &i.configutil(&["-o", "service.imap.maxsessions", "-v", "3"]),
        "configutil",
    );
    i.add_user("joe", "joe secret", &[]);
    i.start();
    let out = imap_script(
        &i,
        r#"
import base64
def external():
    s = socket.socket()
    s.bind(('127.0.0.2', 0))
    s.connect(('127.0.0.1', port))
    s.settimeout(20)
    return s, s.makefile('rb')
s, f = external()
greeting = f.readline()
assert b'LOGINDISABLED' in greeting and b'AUTH=PLAIN' not in greeting, greeting
s.sendall(b'a LOGIN joe "joe secret"\r\n')
assert f.readline().startswith(b'a NO [PRIVACYREQUIRED]')
ir = base64.b64encode(b'\0joe\0joe secret')
s.sendall(b'b AUTHENTICATE PLAIN ' + ir + b'\r\n')
assert f.readline().startswith(b'b NO [PRIVACYREQUIRED]')
s.sendall(b'c STARTTLS\r\n')
assert f.readline().startswith(b'c OK')
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s)
tf = t.makefile('rb')
t.sendall(b'd CAPABILITY\r\n')
caps = tf.readline()
assert b'AUTH=PLAIN' in caps and b'LOGINDISABLED' not in caps and b'STARTTLS' not in caps, caps
tf.readline()
t.sendall(b'e LOGIN joe "joe secret"\r\n')
assert tf.readline().startswith(b'e OK'), 'login over TLS'
# Three sessions are open (t and two more); a fourth is turned away.
c1 = imap(); c2 = imap()
s4 = socket.create_connection(('127.0.0.1', port), 20)
assert s4.makefile('rb').readline().startswith(b'* BYE'), 'maxsessions'
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}
