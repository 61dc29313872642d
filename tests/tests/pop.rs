//! popd end to end: a configured installation with the store, the MTA and
//! the POP server on loopback ports, driven by Python's poplib, raw
//! sockets, fetchmail and curl. Mail comes in through the MTA.

use epistle_tests::{Install, assert_ok, free_port};

/// An installation with users joe and ann, POP3S on a free port, and
/// everything started.
fn running(extra: &[(&str, &str)]) -> (Install, u16) {
    let i = Install::configured();
    let sslport = free_port();
    let sslport_s = sslport.to_string();
    let mut params = vec![
        ("service.pop.enablesslport", "yes"),
        ("service.pop.sslport", sslport_s.as_str()),
    ];
    params.extend_from_slice(extra);
    for (p, v) in params {
        assert_ok(&i.configutil(&["-o", p, "-v", v]), "configutil");
    }
    i.add_user("joe", "joe secret", &[]);
    i.add_user("ann", "ann secret", &[]);
    i.start();
    (i, sslport)
}

/// Runs a Python script with `port`, `sslport`, `imap_port` and helpers:
/// `send(to, subject, body)` by SMTP, `wait_count(n)` until joe's INBOX
/// holds n messages, `pop()` a poplib client, `raw(lines)` the transcript
/// of lines sent at once (the last one should be QUIT).
fn pop_script(i: &Install, sslport: u16, body: &str) -> String {
    let script = format!(
        r#"import imaplib, poplib, socket, ssl, sys, time, smtplib
port, smtp_port, imap_port, sslport = (int(a) for a in sys.argv[1:5])
def send(to, subject, body='Hello\r\n'):
    s = smtplib.SMTP('127.0.0.1', smtp_port, timeout=20)
    s.sendmail('sender@example.org', [to], ('From: Sender <sender@example.org>\r\nTo: ' + to + '\r\nSubject: ' + subject + '\r\nDate: Tue, 1 Dec 2026 03:00:00 +0000\r\n\r\n' + body).encode())
    s.quit()
def imap(user='joe', password='joe secret'):
    c = imaplib.IMAP4('127.0.0.1', imap_port, timeout=20)
    c.login(user, password)
    return c
def wait_count(n, user='joe', password='joe secret'):
    c = imap(user, password)
    for _ in range(200):
        if ('MESSAGES %d)' % n).encode() in c.status('INBOX', '(MESSAGES)')[1][0]:
            c.logout()
            return
        time.sleep(0.1)
    raise Exception('INBOX never held %d messages' % n)
def pop():
    return poplib.POP3('127.0.0.1', port, timeout=20)
def raw(lines, source='127.0.0.1'):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(20)
    s.connect(('127.0.0.1', port))
    s.sendall(''.join(l + '\r\n' for l in lines).encode())
    out = b''
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    return out.decode('latin-1')
{body}"#
    );
    i.python(
        &script,
        &[
            &i.ports.pop.to_string(),
            &i.ports.smtp.to_string(),
            &i.ports.imap.to_string(),
            &sslport.to_string(),
        ],
    )
}

#[test]
fn a_full_poplib_session_and_what_imap_sees_after() {
    let (i, sslport) = running(&[]);
    let out = pop_script(
        &i,
        sslport,
        r#"
send('joe@example.com', 'one')
send('joe@example.com', 'two', 'first line\r\n.leading dot\r\n..two dots\r\nlast line\r\n')
send('joe@example.com', 'three')
wait_count(3)
p = pop()
caps = p.capa()
for c in ['TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING', 'USER', 'SASL', 'IMPLEMENTATION']:
    assert c in caps, caps
assert caps['SASL'] == ['PLAIN'] and caps['EXPIRE'] == ['NEVER'], caps
assert p.user('joe').startswith(b'+OK')
assert p.pass_('joe secret').startswith(b'+OK')
count, size = p.stat()
assert count == 3, count
resp, listing, _ = p.list()
sizes = [int(l.split()[1]) for l in listing]
assert len(sizes) == 3 and sum(sizes) == size, (listing, size)
resp, uidls, _ = p.uidl()
uidls = [l.split()[1].decode() for l in uidls]
# Every message: RETR gives exactly the octets LIST announced.
subjects = {}
for n in (1, 2, 3):
    resp, lines, octets = p.retr(n)
    assert resp.startswith(b'+OK %d octets' % sizes[n - 1]), resp
    text = b'\r\n'.join(lines) + b'\r\n'
    assert len(text) == sizes[n - 1], (len(text), sizes[n - 1])
    subj = [l for l in lines if l.startswith(b'Subject: ')][0][9:].decode()
    subjects[subj] = n
    if subj == 'two':
        assert b'.leading dot' in lines and b'..two dots' in lines, lines
two = subjects['two']
resp, lines, _ = p.top(two, 1)
assert lines[-1] == b'first line' and lines[-2] == b'', lines
resp, lines, _ = p.top(two, 0)
assert lines[-1] == b'' and b'Subject: two' in lines, lines
assert p.dele(subjects['one']).startswith(b'+OK')
try:
    p.retr(subjects['one'])
    raise Exception('a deleted message was retrieved')
except poplib.error_proto as e:
    assert 'is deleted' in str(e), e
assert p.stat()[0] == 2
assert p.rset().startswith(b'+OK')
assert p.stat()[0] == 3
p.dele(subjects['one'])
p.dele(subjects['three'])
assert p.quit().startswith(b'+OK')
# IMAP sees the two deleted messages gone and the retrieved one seen;
# UIDLs are UIDVALIDITY.UID.
c = imap()
typ, data = c.select('INBOX')
assert data == [b'1'], data
uidvalidity = c.response('UIDVALIDITY')[1][0].decode()
typ, data = c.fetch('1', '(UID FLAGS)')
assert b'\\Seen' in data[0], data
uid = data[0].split(b'UID ')[1].split()[0].decode()
assert uidls[two - 1] == uidvalidity + '.' + uid, (uidls, uidvalidity, uid)
c.logout()
# A second session: the same UIDL for the same message.
p = pop()
p.user('joe'); p.pass_('joe secret')
resp, data, _ = p.uidl()
assert [l.split()[1].decode() for l in data] == [uidls[two - 1]], data
assert p.uidl(1).split()[2].decode() == uidls[two - 1]
p.quit()
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
    let log = std::fs::read_to_string(i.base.join("log/pop/pop")).unwrap_or_default();
    assert!(
        log.contains("login [127.0.0.1:") && log.contains(" joe plaintext"),
        "{log}"
    );
    // Close lines count the messages retrieved: three in the first session.
    assert!(
        log.lines()
            .any(|l| l.contains("close [127.0.0.1:") && l.contains(" joe ") && l.ends_with(" 3")),
        "{log}"
    );
}

#[test]
fn every_command_and_response_code() {
    let (i, sslport) = running(&[]);
    let out = pop_script(
        &i,
        sslport,
        r#"
import base64, time
send('joe@example.com', 'first')
send('joe@example.com', 'second')
wait_count(2)
# Before login.
t = raw(['CAPA', 'STAT', 'NOOP', 'PASS nope', 'FROB', 'RETR', 'USER', 'APOP joe 0123', 'AUTH', 'AUTH CRAM-MD5', 'QUIT'])
r = t.split('\r\n')
assert r[0].startswith('+OK') and 'POP3' in r[0], r[0]
assert r[1].startswith('+OK') and 'STLS' in t and 'SASL PLAIN' in t, t
assert '-ERR Log in first' in t and '-ERR Send USER first' in t and '-ERR Unknown command' in t, t
assert '-ERR Missing argument' in t and '-ERR APOP is not offered here' in t, t
assert '+OK Mechanisms follow\r\nPLAIN\r\n.\r\n' in t, t
assert '-ERR Unsupported authentication mechanism' in t and t.endswith('signing off\r\n'), t
# A wrong password and an unknown user get the same answer.
t = raw(['USER joe', 'PASS wrong', 'USER nobody', 'PASS wrong', 'QUIT'])
assert t.count('-ERR [AUTH] Authentication failed') == 2, t
# AUTH PLAIN inline and after a continuation; cancelling.
ir = base64.b64encode(b'\0joe\0joe secret').decode()
t = raw(['AUTH PLAIN', '*', 'AUTH PLAIN ' + ir, 'STAT', 'QUIT'])
assert '-ERR Authentication cancelled' in t and '+OK Logged in; 2 messages' in t, t
t = raw(['AUTH PLAIN', ir, 'QUIT'])
assert '+ \r\n+OK Logged in' in t, t
# Transaction state, pipelined.
t = raw(['USER joe', 'PASS joe secret', 'STAT', 'LIST', 'LIST 2', 'LIST 3', 'LIST 0', 'UIDL', 'UIDL 1', 'UIDL 9',
         'TOP 1 0', 'TOP 1', 'RETR 9', 'DELE 1', 'DELE 1', 'LIST 1', 'STAT', 'NOOP', 'RSET', 'STAT',
         'USER joe', 'STLS', 'RETR 1 2', 'TOP 1 x', 'QUIT'])
r = t.split('\r\n')
assert r[3].startswith('+OK 2 ') and r[4].startswith('+OK 2 messages'), r
assert '-ERR No message 3' in t and '-ERR Invalid message number' in t, t
assert '+OK Unique-id listing follows\r\n1 ' in t and '-ERR No message 9' in t, t
assert '+OK Message 1 deleted' in t and '-ERR Message 1 is deleted' in t, t
assert '+OK 1 ' in t and '+OK Still here' in t and '+OK Maildrop has 2 messages' in t, t
assert '-ERR Already logged in' in t and '-ERR STLS is only available before login' in t, t
assert '-ERR Too many arguments' in t and '-ERR Missing argument' in t, t
assert t.endswith('(2 messages left)\r\n'), t
# A second session while one holds the maildrop: IN-USE.
p = pop(); p.user('joe'); p.pass_('joe secret')
t = raw(['USER joe', 'PASS joe secret', 'QUIT'])
assert '-ERR [IN-USE]' in t, t
# A message expunged by IMAP meanwhile: RETR says so once its file is gone
# (within a second: it goes when the expunge is durable), QUIT still works.
c = imap(); c.select('INBOX'); c.store('1', '+FLAGS', '\\Deleted'); c.expunge(); c.logout()
for _ in range(100):
    try:
        p.retr(1)
        time.sleep(0.1)
    except poplib.error_proto as e:
        assert 'removed by another session' in str(e), e
        break
else:
    raise Exception('still retrieving an expunged message after 10 s')
p.dele(1)
assert p.quit().startswith(b'+OK')
# An over-long line ends the session.
t = raw(['USER ' + 'x' * 5000])
assert t.endswith('-ERR Line too long\r\n'), t[-100:]
# Binary junk is a protocol error, not a crash.
t = raw(['USER \x00\x01', '\xff\xfe', 'QUIT'])
assert '-ERR Invalid characters' in t and '-ERR Unknown command' in t and t.endswith('signing off\r\n'), t
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
    let log = std::fs::read_to_string(i.base.join("log/pop/pop")).unwrap_or_default();
    assert!(
        log.contains("badlogin: [127.0.0.1:") && log.contains("no such user"),
        "{log}"
    );
}

#[test]
fn deletions_apply_only_at_quit() {
    let (i, sslport) = running(&[]);
    let out = pop_script(
        &i,
        sslport,
        r#"
for n in range(3):
    send('joe@example.com', 'm%d' % n)
wait_count(3)
# DELE then the connection drops: nothing is removed.
s = socket.create_connection(('127.0.0.1', port), 20)
f = s.makefile('rb')
f.readline()
s.sendall(b'USER joe\r\nPASS joe secret\r\nDELE 1\r\nDELE 2\r\n')
for _ in range(4):
    assert f.readline().startswith(b'+OK')
f.close(); s.close()
time.sleep(0.5)
p = pop(); p.user('joe'); p.pass_('joe secret')
assert p.stat()[0] == 3
p.dele(1); p.dele(2); p.dele(3)
p.quit()
p = pop(); p.user('joe'); p.pass_('joe secret')
assert p.stat() == (0, 0), p.stat()
p.quit()
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn a_large_message_streams_whole() {
    let (i, sslport) = running(&[]);
    let out = pop_script(
        &i,
        sslport,
        r#"
# 3 MB of lines, some beginning with dots, the last without a line end.
body = b''.join(b'.%06d dotted line of a large message\r\n' % n if n % 7 == 0 else b'%06d line of a large message\r\n' % n for n in range(90000)) + b'no end'
msg = b'Subject: large\r\n\r\n' + body
c = imap()
typ, data = c.append('INBOX', None, None, msg)
assert typ == 'OK', data
c.logout()
p = pop(); p.user('joe'); p.pass_('joe secret')
resp, lines, octets = p.retr(1)
assert resp.startswith(b'+OK %d octets' % len(msg)), resp
assert b'\r\n'.join(lines) == msg, 'RETR changed the message'
resp, lines, _ = p.top(1, 2)
assert lines == [b'Subject: large', b'', b'.000000 dotted line of a large message', b'000001 line of a large message'], lines
p.quit()
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn passwords_need_tls_from_elsewhere_and_sessions_are_limited() {
    let (i, sslport) = running(&[("service.pop.maxsessions", "3")]);
    let out = pop_script(
        &i,
        sslport,
        r#"
import base64
t = raw(['CAPA', 'USER joe', 'AUTH PLAIN ' + base64.b64encode(b'\0joe\0joe secret').decode(), 'QUIT'], source='127.0.0.2')
assert 'STLS' in t and 'USER\r\n' not in t and 'SASL' not in t, t
assert t.count('-ERR [AUTH] Plaintext authentication is refused without TLS') == 2, t
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = socket.socket(); s.bind(('127.0.0.2', 0)); s.settimeout(20); s.connect(('127.0.0.1', port))
f = s.makefile('rb')
f.readline()
# Input pipelined after STLS is dropped, not run after the handshake.
s.sendall(b'STLS\r\nUSER joe\r\n')
assert f.readline().startswith(b'+OK Begin TLS')
t = ctx.wrap_socket(s)
tf = t.makefile('rb')
t.sendall(b'CAPA\r\n')
caps = []
while True:
    l = tf.readline()
    caps.append(l)
    if l == b'.\r\n':
        break
assert b'USER\r\n' in caps and b'STLS\r\n' not in caps, caps
t.sendall(b'PASS joe secret\r\n')
assert tf.readline().startswith(b'-ERR Send USER first')
t.sendall(b'USER joe\r\nPASS joe secret\r\n')
assert tf.readline().startswith(b'+OK') and tf.readline().startswith(b'+OK Logged in')
# POP3S, with poplib.
p = poplib.POP3_SSL('127.0.0.1', sslport, context=ctx, timeout=20)
p.user('ann'); p.pass_('ann secret')
assert p.stat() == (0, 0)
# Three sessions are open (t, p and one more); a fourth is turned away.
p3 = pop()
s4 = socket.create_connection(('127.0.0.1', port), 20)
assert s4.makefile('rb').readline().startswith(b'-ERR [SYS/TEMP] Too many connections')
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
    let log = std::fs::read_to_string(i.base.join("log/pop/pop")).unwrap_or_default();
    assert!(log.contains(" joe plaintext TLS"), "{log}");
}

#[test]
fn apop_with_a_clear_text_secret() {
    let (i, sslport) = running(&[("service.pop.apop", "yes")]);
    // APOP needs the secret itself: give ann a clear-text password, as an
    // old directory would hold it.
    let ldif = i.data.join("directory/directory.ldif");
    let text = std::fs::read_to_string(&ldif).unwrap();
    let mut out = String::new();
    let mut in_ann = false;
    for line in text.lines() {
        if line.starts_with("dn: ") {
            in_ann = line.starts_with("dn: uid=ann,");
        }
        if in_ann && line.starts_with("userPassword") {
            out.push_str("userPassword: apop secret\n");
        } else if !(in_ann && line.starts_with(' ')) {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(&ldif, out).unwrap();
    let out = pop_script(
        &i,
        sslport,
        r#"
import hashlib, re
p = pop()
ts = re.search(rb'<[^>]+>', p.getwelcome()).group(0)
p2 = pop()
assert re.search(rb'<[^>]+>', p2.getwelcome()).group(0) != ts, 'timestamps repeat'
try:
    p2.apop('joe', 'joe secret')
    raise Exception('APOP worked with a hashed password')
except poplib.error_proto as e:
    assert '[AUTH]' in str(e), e
assert p.apop('ann', 'apop secret').startswith(b'+OK Logged in')
p.quit()
print('ok')
"#,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn fetchmail_keeps_then_deletes_over_stls() {
    let (i, sslport) = running(&[]);
    pop_script(
        &i,
        sslport,
        r#"
send('joe@example.com', 'for fetchmail 1', 'one\r\n')
send('joe@example.com', 'for fetchmail 2', '.dotted\r\n')
wait_count(2)
"#,
    );
    let dir = i.dir.path();
    let got = dir.join("fetched");
    std::fs::create_dir_all(&got).unwrap();
    let mda = dir.join("deliver.sh");
    std::fs::write(
        &mda,
        format!("#!/bin/sh\ncat > {}/msg.$$.$(date +%s%N)\n", got.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&mda, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fetch = |keep: &str| {
        let rc = dir.join("fetchmailrc");
        std::fs::write(
            &rc,
            format!(
                "set no bouncemail\npoll 127.0.0.1 service {} protocol pop3 uidl auth password\n  \
                 user \"joe\" password \"joe secret\" is \"{}\" here\n  \
                 sslproto tls1.2+ no sslcertck {keep}\n  mda \"{}\"\n",
                i.ports.pop,
                whoami(),
                mda.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::process::Command::new("fetchmail")
            .args(["-f", rc.to_str().unwrap(), "--nosyslog", "-v", "--nodetach"])
            .env("FETCHMAILHOME", dir)
            .env("HOME", dir)
            .output()
            .unwrap()
    };
    let first = fetch("keep");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(text(&first).contains("STLS"), "{}", text(&first));
    let files = || std::fs::read_dir(&got).unwrap().count();
    assert_eq!(files(), 2);
    let bodies: String = std::fs::read_dir(&got)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(bodies.contains("\n.dotted\n"), "{bodies}");
    // keep + uidl: nothing new the second time (fetchmail exits 1: no mail).
    let again = fetch("keep");
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert_eq!(files(), 2);
    // fetchall + nokeep: fetched again and deleted on the server.
    let delete = fetch("fetchall nokeep");
    assert_eq!(delete.status.code(), Some(0), "{}", text(&delete));
    assert_eq!(files(), 4);
    assert!(i.messages("user/joe/INBOX").is_empty());
    let log = std::fs::read_to_string(i.base.join("log/pop/pop")).unwrap_or_default();
    assert!(log.contains(" joe plaintext TLS"), "{log}");
}

#[test]
fn curl_reads_over_stls_and_pop3s() {
    let (i, sslport) = running(&[]);
    pop_script(
        &i,
        sslport,
        r#"
send('joe@example.com', 'for curl', 'curl was here\r\n')
wait_count(1)
"#,
    );
    let curl = |url: String, extra: &[&str]| epistle_tests::curl(&url, "joe:joe secret", extra);
    let m = curl(
        format!("pop3://127.0.0.1:{}/1", i.ports.pop),
        &["--ssl-reqd"],
    );
    assert!(
        m.contains("Subject: for curl") && m.contains("curl was here"),
        "{m}"
    );
    let m = curl(format!("pop3s://127.0.0.1:{sslport}/1"), &[]);
    assert!(m.contains("curl was here"), "{m}");
    let l = curl(format!("pop3s://127.0.0.1:{sslport}/"), &[]);
    assert!(l.starts_with("1 "), "{l}");
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap()
        .name
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
