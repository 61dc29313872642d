//! The MTA end to end: the dispatcher and its SMTP servers on loopback
//! test ports, the job controller, ims_master and stored, driven by
//! Python's smtplib, raw sockets and swaks. An address on 127.0.0.2 plays
//! the external client, since INTERNAL_IP names only 127.0.0.1 (and the
//! host's own network).

use std::time::Duration;

use epistle_tests::{Install, assert_ok, stderr, stdout, wait_for};

/// An installation with the MTA started and users joe and ann.
fn running() -> Install {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.add_user("ann", "ann secret", &[]);
    i.start();
    i
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

#[test]
fn mail_is_delivered_into_the_store_with_a_trace_line() {
    let i = running();
    let out = i.smtp_script(
        r#"
s = smtp()
code, ehlo = s.ehlo('client.example.org')
assert code == 250, ehlo
kw = ehlo.decode().split('\n')[1:]
for k in ['PIPELINING', 'SIZE 52428800', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES',
          'DSN', 'CHUNKING', 'STARTTLS', 'ETRN']:
    assert k in kw, (k, kw)
assert not any(k.startswith('VRFY') or k.startswith('EXPN') for k in kw)
refused = s.sendmail('someone@example.org', ['joe@example.com', 'Ann@Example.COM'],
                     b'Subject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHello both\r\n')
assert refused == {}, refused
print(s.vrfy('joe')[0])
s.quit()
"#,
    );
    assert_eq!(out.trim(), "252", "VRFY is off by default");
    for user in ["joe", "ann"] {
        let m = text(&i.wait_messages(&format!("user/{user}/INBOX"), 1)[0]);
        // tcp_intranet looks the client's name up (identnone, the
        // default): what /etc/hosts calls 127.0.0.1 comes before it.
        let (head, rest) = m
            .split_once("[127.0.0.1])\r\n")
            .expect("the client's address");
        assert!(
            head.starts_with(
                "Return-Path: <someone@example.org>\r\nReceived: from client.example.org ("
            ),
            "{m}"
        );
        assert!(
            rest.starts_with(" by mail.example.com (Epistle) with ESMTP id <"),
            "{m}"
        );
        assert!(m.contains("\r\n\r\nHello both\r\n"), "{m}");
    }
    let log = i.wait_mail_log(|l| l.contains(" D ") && l.contains("ann@ims-ms-daemon"));
    // Internal clients are switched to tcp_intranet (switchchannel).
    assert!(
        log.lines().any(|l| l.contains(" tcp_intranet ")
            && l.contains(" ims-ms ")
            && l.contains(" EE ")
            && l.contains("rfc822;joe@example.com joe@ims-ms-daemon")),
        "{log}"
    );
}

#[test]
fn a_channel_program_lingers_for_more_work_and_queue_files_are_reused() {
    let i = running();
    let send = |subject: &str| {
        i.smtp_script(&format!(
            "s = smtp()\ns.sendmail('a@example.org', ['joe@example.com'], b'Subject: {subject}\\r\\n\\r\\nx\\r\\n')\ns.quit()\n"
        ));
    };
    let spare = i.base.join("data/queue/.spare");
    let spares = || std::fs::read_dir(&spare).map_or(0, |d| d.count());
    // The delivery record is written just before the spent file leaves
    // the queue; on a loaded machine that can be well after the message
    // shows in the mailbox, so the waits are generous.
    let delivered = |n: usize| {
        let found = wait_for(Duration::from_secs(20), || {
            let log =
                std::fs::read_to_string(i.base.join("log/mail.log_current")).unwrap_or_default();
            log.lines()
                .filter(|l| l.contains(" D ") && l.contains("joe@ims-ms-daemon"))
                .count()
                >= n
        });
        assert!(found, "no delivery record #{n}");
        let pooled = wait_for(Duration::from_secs(20), || spares() == 1);
        assert!(
            pooled,
            "after delivery #{n}: {} files in {}, not 1; mail.log_current:\n{}",
            spares(),
            spare.display(),
            std::fs::read_to_string(i.base.join("log/mail.log_current")).unwrap_or_default()
        );
    };
    send("first");
    i.wait_messages("user/joe/INBOX", 1);
    let first = i.pids_of("ims_master");
    assert_eq!(first.len(), 1, "one ims_master waits for more work");
    // The spent queue file waits in the spare pool for the next message.
    delivered(1);
    // The SMTP server found the pool empty for the first message and
    // believes so for 200 ms (EMPTY_POOL_RECHECK) before listing it again.
    std::thread::sleep(Duration::from_millis(300));
    send("second");
    i.wait_messages("user/joe/INBOX", 2);
    assert_eq!(
        i.pids_of("ims_master"),
        first,
        "the same program delivered it"
    );
    // The second message was written into that spare, which came back.
    delivered(2);
    // With nothing more to do it exits.
    assert!(wait_for(Duration::from_secs(15), || i
        .pids_of("ims_master")
        .is_empty()));
}

#[test]
fn unknown_users_and_relaying_are_refused_at_rcpt() {
    let i = running();
    i.smtp_script(
        r#"
# An external client (127.0.0.2): local mail yes, relaying no, no AUTH in the clear.
s = smtplib.SMTP('127.0.0.1', port, timeout=20, source_address=('127.0.0.2', 0))
code, ehlo = s.ehlo('outside.example.net')
assert b'AUTH' not in ehlo, ehlo
s.mail('x@outside.example.net')
code, msg = s.rcpt('nobody@example.com')
assert code == 550 and msg.startswith(b'5.1.1'), (code, msg)
code, msg = s.rcpt('someone@elsewhere.org')
assert code == 550 and b'Relaying not allowed' in msg, (code, msg)
code, msg = s.rcpt('joe@example.com')
assert code == 250, (code, msg)
code, msg = s.docmd('AUTH', 'PLAIN AGpvZQBqb2Ugc2VjcmV0')
assert code == 503, (code, msg)  # not inside a transaction
s.rset()
code, msg = s.docmd('AUTH', 'PLAIN AGpvZQBqb2Ugc2VjcmV0')
assert code == 538, (code, msg)  # and not in the clear from outside
# After STARTTLS, AUTH is offered and authenticated clients may relay.
s.starttls()
code, ehlo = s.ehlo('outside.example.net')
assert b'AUTH PLAIN LOGIN' in ehlo, ehlo
try:
    s.login('joe', 'wrong')
    assert False, 'a wrong password was taken'
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
s.login('joe', 'joe secret')
s.mail('joe@example.com')
code, msg = s.rcpt('someone@elsewhere.org')
assert code == 250, (code, msg)
s.quit()
# An internal client may relay without authentication.
s = smtp()
s.ehlo('inside')
s.mail('joe@example.com')
code, msg = s.rcpt('someone@elsewhere.org')
assert code == 250, (code, msg)
s.quit()
"#,
    );
}

#[test]
fn submission_requires_authentication_and_smtps_starts_with_tls() {
    let i = running();
    i.python(
        r#"
import smtplib, ssl, sys
sub, smtps = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', sub, timeout=20)
s.ehlo('c')
code, msg = s.mail('joe@example.com')
assert code == 530, (code, msg)
s.starttls(context=ctx)
s.ehlo('c')
s.login('joe', 'joe secret')
assert s.sendmail('joe@example.com', ['ann@example.com'], b'Subject: sub\r\n\r\nvia 587\r\n') == {}
s.quit()
s = smtplib.SMTP_SSL('127.0.0.1', smtps, timeout=20, context=ctx)
s.ehlo('c')
s.login('ann', 'ann secret')
assert s.sendmail('ann@example.com', ['joe@example.com'], b'Subject: tls\r\n\r\nvia 465\r\n') == {}
s.quit()
"#,
        &[&i.ports.submission.to_string(), &i.ports.smtps.to_string()],
    );
    let m = text(&i.wait_messages("user/ann/INBOX", 1)[0]);
    assert!(
        m.contains("with ESMTPSA")
            && m.contains("(authenticated as joe)")
            && m.contains("(using TLS1."),
        "{m}"
    );
    let m = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        m.contains("with ESMTPSA") && m.contains("(authenticated as ann)"),
        "{m}"
    );
}

#[test]
fn swaks_sends_with_starttls_and_auth() {
    let i = running();
    let out = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &i.ports.smtp.to_string()])
        .args(["--from", "ann@example.com", "--to", "joe@example.com"])
        .args([
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "ann",
            "--auth-password",
            "ann secret",
        ])
        .args(["--header", "Subject: from swaks", "--body", "swaks body"])
        .args(["--local-interface", "127.0.0.2", "--timeout", "20"])
        .output()
        .unwrap();
    assert_ok(&out, "swaks");
    let m = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        m.contains("Subject: from swaks") && m.contains("(authenticated as ann)"),
        "{m}"
    );
}

#[test]
fn pipelined_commands_get_their_replies_in_order() {
    let i = running();
    i.smtp_script(
        r#"
s = socket.create_connection(('127.0.0.1', port), timeout=20)
f = s.makefile('rb')
assert f.readline().startswith(b'220 ')
s.sendall(b'EHLO pipe\r\n')
while True:
    l = f.readline()
    if l[3:4] == b' ': break
s.sendall(b'MAIL FROM:<x@example.org>\r\nRCPT TO:<joe@example.com>\r\nRCPT TO:<bad@example.com>\r\n'
          b'RCPT TO:<ann@example.com>\r\nDATA\r\n')
codes = [f.readline()[:3] for _ in range(5)]
assert codes == [b'250', b'250', b'550', b'250', b'354'], codes
# A bare LF before a dot does not end the message (no smuggling); only CRLF.CRLF does.
s.sendall(b'Subject: one\r\n\r\nline\n.\nMAIL FROM:<evil@example.org>\r\nstill one\r\n.\r\nQUIT\r\n')
r = f.readline()
assert r.startswith(b'250 2.0.0'), r
assert f.readline().startswith(b'221'), 'QUIT answered'
# CHUNKING: BDAT chunks, the last one ends the message.
s = socket.create_connection(('127.0.0.1', port), timeout=20)
f = s.makefile('rb')
f.readline()
s.sendall(b'EHLO chunk\r\n')
while f.readline()[3:4] != b' ': pass
body1, body2 = b'Subject: chunked\r\n\r\nfirst ', b'second\r\n'
s.sendall(b'MAIL FROM:<x@example.org>\r\nRCPT TO:<ann@example.com>\r\n')
assert f.readline().startswith(b'250') and f.readline().startswith(b'250')
s.sendall(b'BDAT %d\r\n' % len(body1) + body1)
assert f.readline().startswith(b'250'), 'first chunk'
s.sendall(b'BDAT %d LAST\r\n' % len(body2) + body2)
r = f.readline()
assert r.startswith(b'250 2.0.0'), r
"#,
    );
    let msgs = i.wait_messages("user/joe/INBOX", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        i.messages("user/joe/INBOX").len(),
        1,
        "one message, not two"
    );
    assert!(text(&msgs[0]).contains("line\n.\nMAIL FROM:<evil@example.org>\r\nstill one\r\n"));
    let ann = i.wait_messages("user/ann/INBOX", 2);
    assert!(
        ann.iter()
            .any(|m| text(m).contains("Subject: chunked\r\n\r\nfirst second\r\n")),
        "BDAT chunks joined"
    );
}

#[test]
fn limits_give_the_proper_replies() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    // 2 KB messages at most (option.dat); few bad commands (the source
    // channel's keyword); the service's own options (tcp_local_option),
    // which hold although 127.0.0.1 is switched to tcp_intranet.
    i.edit_config("option.dat", |t| format!("{t}\nBLOCK_LIMIT=2\n"));
    i.edit_config("imta.cnf", |t| {
        t.replacen(
            "\ntcp_intranet smtp ",
            "\ntcp_intranet disconnectbadcommandlimit 5 smtp ",
            1,
        )
    });
    i.edit_config("tcp_local_option", |t| {
        format!(
            "{t}\nALLOW_REJECTIONS_BEFORE_DEFERRAL=2\nBANNER_HOST=mx.example.net\n\
             BANNER_ADDITION=No UCE\nBANNER_PURGE_DELAY=50\n"
        )
    });
    i.cnbuild();
    i.start();
    i.smtp_script(
        r#"
def session():
    global s, f
    s = socket.create_connection(('127.0.0.1', port), timeout=20)
    f = s.makefile('rb')
    return f.readline()
def replies(line):
    s.sendall(line + b'\r\n')
    lines = [f.readline()]
    while lines[-1][3:4] == b'-': lines.append(f.readline())
    return lines
def cmd(line):
    return replies(line)[-1]
# BANNER_PURGE_DELAY: what a client says before its greeting is lost.
s = socket.create_connection(('127.0.0.1', port), timeout=20)
f = s.makefile('rb')
s.sendall(b'EHLO early\r\n')
assert f.readline().startswith(b'220 ')
r = replies(b'NOOP')
assert len(r) == 1 and r[0].startswith(b'250 '), ('the early EHLO was answered', r)
assert cmd(b'QUIT').startswith(b'221')
# BANNER_HOST and BANNER_ADDITION; after 2 refused recipients even a good
# one is deferred; refusals and one deferral are not 5 bad commands.
g = session()
assert g == b'220 mx.example.net ESMTP Epistle ready No UCE\r\n', g
r = replies(b'EHLO x')
assert r[0].startswith(b'250-mx.example.net Hello x'), r
assert cmd(b'MAIL FROM:<a@example.org>').startswith(b'250')
assert cmd(b'RCPT TO:<joe@example.com>').startswith(b'250')
assert cmd(b'RCPT TO:<nobody1@example.com>').startswith(b'550')
assert cmd(b'RCPT TO:<nobody2@example.com>').startswith(b'550')
r = cmd(b'RCPT TO:<joe@example.com>')
assert r.startswith(b'451 4.7.1'), r
assert cmd(b'RSET').startswith(b'250')
assert cmd(b'ETRN example.org').startswith(b'250'), 'ETRN'
r = cmd(b'ETRN example.org')
assert r.startswith(b'458'), ('one ETRN per session', r)
assert cmd(b'QUIT').startswith(b'221')
# A HELO name with a tab in it still gets its mail queued.
assert session().startswith(b'220 ')
assert cmd(b'EHLO odd\tname').startswith(b'250 ')
assert cmd(b'MAIL FROM:<a@example.org>').startswith(b'250')
assert cmd(b'RCPT TO:<joe@example.com>').startswith(b'250')
assert cmd(b'DATA').startswith(b'354')
r = cmd(b'Subject: odd helo\r\n\r\nhi\r\n.')
assert r.startswith(b'250'), r
assert cmd(b'QUIT').startswith(b'221')
assert session().startswith(b'220 ')
assert cmd(b'EHLO x').startswith(b'250 ')
assert cmd(b'MAIL FROM:<a@example.org> SIZE=999999').startswith(b'552 5.3.4'), 'SIZE over the limit'
assert cmd(b'MAIL FROM:<a@example.org>').startswith(b'250')
assert cmd(b'RCPT TO:<joe@example.com>').startswith(b'250')
assert cmd(b'DATA').startswith(b'354')
s.sendall(b'Subject: big\r\n\r\n' + b'x' * 5000 + b'\r\n.\r\n')
r = f.readline()
assert r.startswith(b'552 5.3.4'), r
assert cmd(b'X' * 5000).startswith(b'500 5.5.2'), 'line too long'
assert cmd(b'MAIL FROM:<a@example.org>\x00').startswith(b'500'), 'NUL'
r = cmd(b'BOGUS')
r = cmd(b'BOGUS')
assert r.startswith(b'421'), r
assert f.readline() == b'', 'closed after too many errors'
"#,
    );
}

#[test]
fn input_pipelined_after_starttls_is_discarded() {
    let i = running();
    i.smtp_script(
        r#"
s = socket.create_connection(('127.0.0.1', port), timeout=20)
f = s.makefile('rb')
f.readline()
s.sendall(b'EHLO x\r\n')
while f.readline()[3:4] != b' ': pass
# The injected MAIL arrives in the clear with STARTTLS.
s.sendall(b'STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n')
assert f.readline().startswith(b'220 ')
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s)
tf = t.makefile('rb')
t.sendall(b'EHLO x\r\n')
first = tf.readline()
assert first.startswith(b'250-'), first  # the EHLO reply, not a reply to MAIL
while tf.readline()[3:4] != b' ': pass
t.sendall(b'RCPT TO:<joe@example.com>\r\n')
r = tf.readline()
assert r.startswith(b'503'), r  # no MAIL in this session
"#,
    );
}

#[test]
fn aliases_groups_and_forwarding_expand() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.add_user("ann", "ann secret", &[]);
    // bob forwards everything to joe.
    i.add_user(
        "bob",
        "bob secret",
        &[
            "-A",
            "mailDeliveryOption:forward",
            "-A",
            "mailForwardingAddress:joe@example.com",
        ],
    );
    i.edit_config("aliases", |t| {
        format!("{t}\nteam@example.com: joe@example.com\n")
    });
    i.cnbuild();
    let out = i.sbin(
        "commadmin",
        &[
            "group",
            "create",
            "-D",
            "admin",
            "-w",
            "test password",
            "-G",
            "staff",
            "-m",
            "joe@example.com",
            "-m",
            "ann@example.com",
        ],
    );
    assert_ok(&out, "commadmin group create");
    // Only ann may send to the moderated list.
    let out = i.sbin(
        "commadmin",
        &[
            "group",
            "create",
            "-D",
            "admin",
            "-w",
            "test password",
            "-G",
            "board",
            "-m",
            "joe@example.com",
            "-A",
            "mgrpAllowedBroadcaster:mailto:ann@example.com",
        ],
    );
    assert_ok(&out, "commadmin group create board");
    i.start();
    i.smtp_script(
        r#"
s = smtp()
assert s.sendmail('x@example.org', ['team@example.com'], b'Subject: alias\r\n\r\na\r\n') == {}
assert s.sendmail('x@example.org', ['staff@example.com'], b'Subject: group\r\n\r\ng\r\n') == {}
assert s.sendmail('x@example.org', ['bob@example.com'], b'Subject: forwarded\r\n\r\nf\r\n') == {}
s.mail('x@example.org')
code, msg = s.rcpt('board@example.com')
assert code == 550 and msg.startswith(b'5.7.1'), (code, msg)
s.rset()
assert s.sendmail('ann@example.com', ['board@example.com'], b'Subject: board\r\n\r\nb\r\n') == {}
s.quit()
"#,
    );
    let joe = i.wait_messages("user/joe/INBOX", 4);
    for subject in ["alias", "group", "forwarded", "board"] {
        assert!(
            joe.iter()
                .any(|m| text(m).contains(&format!("Subject: {subject}"))),
            "{subject}"
        );
    }
    assert!(i.messages("user/bob/INBOX").is_empty(), "bob forwards only");
    let ann = i.wait_messages("user/ann/INBOX", 1);
    assert!(text(&ann[0]).contains("Subject: group"));
}

#[test]
fn a_failed_delivery_returns_a_notice_to_the_sender() {
    let i = running();
    // The postmaster (configure's POSTMASTER) has a mailbox.
    i.add_user("pma", "pma secret", &[]);
    // Queue messages for ann while the job controller is stopped, then
    // delete ann's mailbox: delivery fails permanently.
    i.stop_service("job_controller");
    i.smtp_script(
        r#"
s = smtp()
s.ehlo('c')
s.mail('joe@example.com', ['RET=HDRS', 'ENVID=env-42'])
assert s.rcpt('ann@example.com', ['NOTIFY=FAILURE', 'ORCPT=rfc822;ann@example.com'])[0] == 250
code, _ = s.data(b'Subject: doomed\r\n\r\nsecret body\r\n')
assert code == 250
s.quit()
"#,
    );
    i.modify_user("ann", &["-A", "mailUserStatus:deleted"]);
    i.start_service("job_controller");
    let notice = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        notice.contains("multipart/report; report-type=delivery-status"),
        "{notice}"
    );
    assert!(notice.contains("Original-Envelope-Id: env-42"), "{notice}");
    assert!(
        notice.contains("Original-Recipient: rfc822;ann@example.com"),
        "{notice}"
    );
    assert!(
        notice.contains("Action: failed\r\nStatus: 5.2.1"),
        "{notice}"
    );
    assert!(
        notice.contains("Subject: doomed") && !notice.contains("secret body"),
        "RET=HDRS: {notice}"
    );
    // The postmaster gets a copy (the defaults' copysendpost), with the
    // message's header only (postheadonly).
    let copy = text(&i.wait_messages("user/pma/INBOX", 1)[0]);
    assert!(
        copy.contains("\r\nTo: <pma@example.com>\r\n")
            && copy.contains("Action: failed\r\nStatus: 5.2.1")
            && copy.contains("Final-Recipient: rfc822;ann@ims-ms-daemon")
            && copy.contains("Subject: doomed")
            && !copy.contains("secret body"),
        "{copy}"
    );
    let log = i.wait_mail_log(|l| l.contains(" R ") && l.contains("ann@ims-ms-daemon"));
    // The notice goes out with the null sender.
    assert!(
        log.lines().any(|l| l.contains(" ims-ms ")
            && l.contains(" E ")
            && l.contains(" <> rfc822;joe@example.com joe@ims-ms-daemon")),
        "{log}"
    );
}

#[test]
fn held_users_mail_waits_in_the_hold_queue_until_process_held() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &["-A", "mailUserStatus:hold"]);
    i.add_user("ann", "ann secret", &["-A", "mailUserStatus:hold"]);
    i.start();
    i.smtp_script(
        r#"
s = smtp()
assert s.sendmail('x@example.org', ['joe@example.com', 'ann@example.com'], b'Subject: held\r\n\r\nh\r\n') == {}
s.quit()
"#,
    );
    let hold = i.base.join("data/queue/hold");
    let held_files = || std::fs::read_dir(&hold).map(|d| d.count()).unwrap_or(0);
    assert!(
        wait_for(Duration::from_secs(10), || held_files() == 1),
        "one file in the hold queue"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(i.messages("user/joe/INBOX").is_empty());
    let status = i.sbin("status-msg", &[]);
    assert!(
        stdout(&status).contains("dispatcher"),
        "{}",
        stdout(&status)
    );
    // Still on hold: routed again, back into the hold queue.
    let out = i.sbin("imsimta", &["process_held", "-uid=joe"]);
    assert_ok(&out, "imsimta process_held");
    assert!(
        stdout(&out).contains("1 recipient(s) to reprocess"),
        "{}",
        stdout(&out)
    );
    assert!(
        wait_for(Duration::from_secs(20), || held_files() == 2),
        "joe's copy back on hold beside ann's"
    );
    assert!(i.messages("user/joe/INBOX").is_empty());
    // Active again: joe's mail reaches the store, ann's stays held.
    i.modify_user("joe", &["-A", "mailUserStatus:active"]);
    assert_ok(
        &i.sbin("imsimta", &["process_held", "-uid=joe"]),
        "process_held",
    );
    let got = i.wait_messages("user/joe/INBOX", 1);
    assert!(text(&got[0]).contains("Subject: held"));
    assert!(wait_for(Duration::from_secs(10), || held_files() == 1));
    let left = stdout(&i.sbin("imsimta", &["qm", "directory", "hold"]));
    assert!(
        left.contains("ann@example.com") && !left.contains("joe@"),
        "{left}"
    );
    let none = i.sbin("imsimta", &["process_held", "-uid=joe"]);
    assert!(
        stdout(&none).contains("no held mail for joe"),
        "{}",
        stdout(&none)
    );
    let unknown = i.sbin("imsimta", &["process_held", "-uid=nobody"]);
    assert!(
        !unknown.status.success() && stderr(&unknown).contains("no user nobody"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn qm_holds_releases_deletes_and_returns() {
    let i = running();
    // Messages wait while the job controller is down.
    i.stop_service("job_controller");
    i.smtp_script(
        r#"
s = smtp()
for n in range(3):
    assert s.sendmail('ann@example.com', ['joe@example.com'],
                      ('Subject: q%d\r\n\r\nbody %d\r\n' % (n, n)).encode()) == {}
s.quit()
"#,
    );
    let dir = i.sbin("imsimta", &["qm", "directory", "ims-ms"]);
    assert_ok(&dir, "qm directory");
    let listing = stdout(&dir);
    let ids: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.ends_with(".00"))
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 3, "{listing}");
    // Which message each file holds (the listing's order is the
    // directory's, not the order they came in).
    let subject_of = |id: &str| -> String {
        let mut dirs = vec![i.base.join("data/queue/ims-ms")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    dirs.push(e.path());
                } else if e.file_name().to_string_lossy() == id {
                    let t = text(&std::fs::read(e.path()).unwrap());
                    let at = t.find("Subject: ").expect("a subject");
                    return t[at..].lines().next().unwrap().to_string();
                }
            }
        }
        panic!("{id} is not in the queue");
    };
    let held_subject = subject_of(&ids[0]);
    assert!(
        listing.contains("from: ann@example.com") && listing.contains("to:   joe@ims-ms-daemon"),
        "{listing}"
    );
    let sum = stdout(&i.sbin("imsimta", &["qm", "summarize"]));
    assert!(
        sum.lines()
            .any(|l| l.starts_with("ims-ms") && l.split_whitespace().nth(1) == Some("3")),
        "{sum}"
    );
    assert!(sum.contains("job controller is not running"), "{sum}");
    assert_ok(&i.sbin("imsimta", &["qm", "hold", &ids[0]]), "qm hold");
    assert_ok(
        &i.sbin("imsimta", &["qm", "delete", &format!("ims-ms/{}", ids[1])]),
        "qm delete",
    );
    assert_ok(&i.sbin("imsimta", &["qm", "return", &ids[2]]), "qm return");
    let unknown = i.sbin("imsimta", &["qm", "delete", "ZZNOSUCHFILE.00"]);
    assert!(!unknown.status.success());
    i.start_service("job_controller");
    // The returned one comes back to ann as a notice; the held one waits.
    let ann = i.wait_messages("user/ann/INBOX", 1);
    assert!(
        text(&ann[0]).contains("returned to the sender by the postmaster"),
        "{}",
        text(&ann[0])
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        i.messages("user/joe/INBOX").is_empty(),
        "held and deleted messages stay undelivered"
    );
    let held = stdout(&i.sbin("imsimta", &["qm", "directory"]));
    assert!(held.contains("HELD"), "{held}");
    assert_ok(
        &i.sbin("imsimta", &["qm", "release", &ids[0]]),
        "qm release",
    );
    let joe = i.wait_messages("user/joe/INBOX", 1);
    assert!(text(&joe[0]).contains(&held_subject), "{}", text(&joe[0]));
    let log = std::fs::read_to_string(i.base.join("log/mail.log_current")).unwrap();
    assert!(log.contains("deleted by the administrator"), "{log}");
    let counters = stdout(&i.sbin("imsimta", &["counters"]));
    assert!(
        counters.lines().any(|l| l.starts_with("ims-ms")),
        "{counters}"
    );
    let process = stdout(&i.sbin("imsimta", &["process"]));
    assert!(
        process.contains("dispatcher") && process.contains("tcp_smtp_server"),
        "{process}"
    );
}

#[test]
fn restart_takes_a_new_configuration_without_dropping_a_session() {
    let i = running();
    i.python(
        r#"
import smtplib, subprocess, sys, time
port, base = int(sys.argv[1]), sys.argv[2]
old = smtplib.SMTP('127.0.0.1', port, timeout=20)
old.ehlo('old')
old.mail('x@example.org')
assert old.rcpt('joe@example.com')[0] == 250
with open(base + '/config/aliases', 'a') as f:
    f.write('\nnewname@example.com: ann@example.com\n')
subprocess.run([base + '/sbin/imsimta', 'cnbuild'], check=True, capture_output=True)
subprocess.run([base + '/sbin/imsimta', 'restart'], check=True, capture_output=True)
time.sleep(0.5)
# The session open before the restart goes on to the end.
code, _ = old.data(b'Subject: across the restart\r\n\r\nstill here\r\n')
assert code == 250, code
old.quit()
# New connections get the new configuration.
new = smtplib.SMTP('127.0.0.1', port, timeout=20)
assert new.sendmail('x@example.org', ['newname@example.com'], b'Subject: new alias\r\n\r\nn\r\n') == {}
new.quit()
"#,
        &[&i.ports.smtp.to_string(), i.base.to_str().unwrap()],
    );
    assert!(text(&i.wait_messages("user/joe/INBOX", 1)[0]).contains("across the restart"));
    assert!(text(&i.wait_messages("user/ann/INBOX", 1)[0]).contains("new alias"));
}

/// The store channel (ims-ms) retries every second instead of after
/// 5 minutes, 10 minutes, ...
fn retry_store_deliveries_every_second(i: &Install) {
    i.edit_config("imta.cnf", |t| {
        t.replace(
            "backoff \"pt5m\" \"pt10m\" \"pt30m\" \"pt1h\" \"pt2h\" \"pt4h\"",
            "backoff \"pt1s\"",
        )
    });
}

#[test]
fn a_temporary_failure_stays_queued_and_is_retried() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    retry_store_deliveries_every_second(&i);
    i.cnbuild();
    i.start();
    i.stop_service("store");
    i.smtp_script(
        r#"
s = smtp()
assert s.sendmail('x@example.org', ['joe@example.com'], b'Subject: later\r\n\r\nl\r\n') == {}
s.quit()
"#,
    );
    i.wait_mail_log(|l| l.contains(" Q ") && l.contains("joe@ims-ms-daemon"));
    // The message waits with its attempts counted in its name.
    let mut dir = String::new();
    assert!(
        wait_for(Duration::from_secs(10), || {
            dir = stdout(&i.sbin("imsimta", &["qm", "directory", "ims-ms"]));
            dir.contains("to:   joe@ims-ms-daemon") && !dir.contains("attempts 0 ")
        }),
        "{dir}"
    );
    i.start_service("store");
    assert!(text(&i.wait_messages("user/joe/INBOX", 1)[0]).contains("Subject: later"));
}

#[test]
fn a_delay_warning_goes_out_once_when_the_first_notice_age_passes() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.add_user("ann", "ann secret", &[]);
    i.add_user("pma", "pma secret", &[]);
    retry_store_deliveries_every_second(&i);
    // notices count hours, not days.
    i.edit_config("option.dat", |t| format!("{t}\nRETURN_UNITS=1\n"));
    i.cnbuild();
    i.start();
    i.stop_service("store");
    i.smtp_script(
        r#"
s = smtp()
assert s.sendmail('ann@example.com', ['joe@example.com'], b'Subject: slow\r\n\r\ns\r\n') == {}
s.quit()
"#,
    );
    i.wait_mail_log(|l| l.contains(" Q ") && l.contains("joe@ims-ms-daemon"));
    // Make the message nearly an hour old (ims-ms warns after 1 unit, an
    // hour with RETURN_UNITS=1): the retry that finds it past the hour
    // sends the one warning.
    i.stop_service("job_controller");
    let mut files = vec![];
    let mut dirs = vec![i.base.join("data/queue/ims-ms")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !name.starts_with('.') {
                dirs.push(e.path());
            } else if e.path().is_file() && !name.starts_with('$') {
                files.push(e.path());
            }
        }
    }
    assert_eq!(files.len(), 1, "{files:?}");
    let old = std::fs::read(&files[0]).unwrap();
    let t = text(&old);
    let at = t.find("\nD ").expect("the arrival line") + 3;
    let end = at + t[at..].find('\n').unwrap();
    let nearly_an_hour = chrono_now() - 3_600 + 2;
    let edited = format!("{}{nearly_an_hour}{}", &t[..at], &t[end..]);
    std::fs::write(&files[0], edited).unwrap();
    i.start_service("job_controller");
    let log = i.wait_mail_log(|l| l.contains(" W ") && l.contains("joe@ims-ms-daemon"));
    std::thread::sleep(Duration::from_secs(3));
    let log_now = std::fs::read_to_string(i.base.join("log/mail.log_current")).unwrap();
    let warnings = log_now
        .lines()
        .filter(|l| l.contains(" W ") && l.contains("joe@ims-ms-daemon"))
        .count();
    assert_eq!(warnings, 1, "one warning: {log}");
    // With the store back: ann has the warning, the postmaster its copy
    // (copywarnpost), joe the message.
    i.start_service("store");
    let ann = text(&i.wait_messages("user/ann/INBOX", 1)[0]);
    assert!(
        ann.contains("Subject: Delayed")
            && ann.contains("Action: delayed")
            && ann.contains("Will-Retry-Until:"),
        "{ann}"
    );
    let pma = text(&i.wait_messages("user/pma/INBOX", 1)[0]);
    assert!(
        pma.contains("To: <pma@example.com>") && pma.contains("Action: delayed"),
        "{pma}"
    );
    assert!(text(&i.wait_messages("user/joe/INBOX", 1)[0]).contains("Subject: slow"));
}

/// A message for a full mailbox waits in the queue (holdexquota, the
/// default); with `noexquota` on ims-ms the next try returns it at once.
#[test]
fn over_quota_mail_is_held_or_with_noexquota_returned() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &["-A", "mailQuota:1K"]);
    i.add_user("ann", "ann secret", &[]);
    retry_store_deliveries_every_second(&i);
    i.cnbuild();
    i.start();
    i.smtp_script(
        r#"
s = smtp()
body = b'Subject: too big\r\n\r\n' + b'x' * 4000 + b'\r\n'
assert s.sendmail('ann@example.com', ['joe@example.com'], body) == {}
s.quit()
"#,
    );
    let held = i.wait_mail_log(|l| l.contains(" Q ") && l.contains("joe@ims-ms-daemon"));
    assert!(held.contains("mailbox full"), "{held}");
    let queued = stdout(&i.sbin("imsimta", &["qm", "directory", "ims-ms"]));
    assert!(queued.contains("joe@ims-ms-daemon"), "{queued}");
    i.edit_config("imta.cnf", |t| {
        t.replacen("ims-ms defragment", "ims-ms noexquota defragment", 1)
    });
    i.cnbuild();
    assert_ok(&i.sbin("imsimta", &["restart"]), "imsimta restart");
    let notice = text(&i.wait_messages("user/ann/INBOX", 1)[0]);
    assert!(
        notice.contains("Final-Recipient: rfc822;joe@ims-ms-daemon")
            && notice.contains("Action: failed")
            && notice.contains("Status: 5.2.2"),
        "{notice}"
    );
    assert!(
        i.wait_mail_log(|l| l.contains(" R ") && l.contains("joe@ims-ms-daemon"))
            .contains("mailbox full")
    );
}

#[test]
fn after_and_deferred_hold_a_message_until_its_time() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.edit_config("imta.cnf", |t| {
        t.replacen(
            "ims-ms defragment",
            "ims-ms after PT3S deferred defragment",
            1,
        )
    });
    i.cnbuild();
    i.start();
    let sent = std::time::Instant::now();
    i.smtp_script(
        r#"
import email.utils
s = smtp()
assert s.sendmail('ann@example.com', ['joe@example.com'], b'Subject: plain\r\n\r\nhi\r\n') == {}
later = email.utils.formatdate(time.time() + 9).encode()
m = b'Subject: later\r\nDeferred-Delivery: ' + later + b'\r\n\r\nhi\r\n'
assert s.sendmail('ann@example.com', ['joe@example.com'], m) == {}
s.quit()
"#,
    );
    let first = i.wait_messages("user/joe/INBOX", 1);
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "delivered after {waited:?}"
    );
    assert!(text(&first[0]).contains("Subject: plain"));
    let queued = stdout(&i.sbin("imsimta", &["qm", "directory", "ims-ms"]));
    assert!(queued.contains("joe@ims-ms-daemon"), "{queued}");
    let both = i.wait_messages("user/joe/INBOX", 2);
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(8),
        "delivered after {waited:?}"
    );
    assert!(text(&both[1]).contains("Subject: later"));

    // A value the keyword cannot use is refused by cnbuild, which names
    // the line, and the configuration in force stays.
    i.edit_config("imta.cnf", |t| t.replacen("after PT3S", "after soon", 1));
    let out = i.sbin("imsimta", &["cnbuild"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("imta.cnf:") && said.contains("\"soon\""),
        "{said}"
    );
}

#[test]
fn recipients_past_expandlimit_are_expanded_by_the_reprocess_channel() {
    let i = Install::configured();
    for u in ["joe", "ann", "bob", "eve", "kim"] {
        i.add_user(u, &format!("{u} secret"), &[]);
    }
    i.edit_config("imta.cnf", |t| {
        t.replacen("tcp_intranet smtp", "tcp_intranet expandlimit 2 smtp", 1)
    });
    // Asked by reprocess too, for the addresses it finds, as the session
    // would have: with its flags (EHLO was used: `$:E`) and, for
    // MAIL_ACCESS, its connection.
    i.edit_config("mappings", |t| {
        format!(
            "{t}\nSEND_ACCESS\n\n  *|*|*|eve@*  $:E$NNot$ for$ eve\n\n\
             MAIL_ACCESS\n\n  TCP|*|*|127.0.0.1|*|SMTP/*|*|*|*|kim@*  $NNot$ from$ 127.0.0.1\n"
        )
    });
    i.cnbuild();
    i.start();
    // The first two are looked up at RCPT; the rest are only checked, so
    // an unknown one is taken and returned later.
    i.smtp_script(
        r#"
s = smtp()
s.ehlo()
s.mail('ann@example.com')
assert s.rcpt('joe@example.com')[0] == 250
assert s.rcpt('nobody1@example.com')[0] == 550
assert s.rcpt('ann@example.com')[0] == 250
assert s.rcpt('bob@example.com')[0] == 250
assert s.rcpt('nobody2@example.com')[0] == 250
assert s.rcpt('eve@example.com')[0] == 250
assert s.rcpt('kim@example.com')[0] == 250
assert s.data(b'Subject: many\r\n\r\nhello all\r\n')[0] == 250
s.quit()
"#,
    );
    for user in ["joe", "bob"] {
        let m = text(&i.wait_messages(&format!("user/{user}/INBOX"), 1)[0]);
        assert!(m.contains("Subject: many"), "{m}");
    }
    let ann = i.wait_messages("user/ann/INBOX", 2);
    let notice = ann
        .iter()
        .map(|m| text(m))
        .find(|m| m.contains("Action: failed"))
        .expect("a failure notice for nobody2");
    assert!(
        notice.contains("Final-Recipient: rfc822;nobody2@example.com")
            && notice.contains("Status: 5.1.1"),
        "{notice}"
    );
    assert!(
        notice.contains("Final-Recipient: rfc822;eve@example.com")
            && notice.contains("Status: 5.7.1")
            && notice.contains("Not for eve"),
        "{notice}"
    );
    assert!(
        notice.contains("Final-Recipient: rfc822;kim@example.com")
            && notice.contains("Not from 127.0.0.1"),
        "{notice}"
    );
    assert!(i.messages("user/eve/INBOX").is_empty());
    assert!(i.messages("user/kim/INBOX").is_empty());
    let log = i.wait_mail_log(|l| l.contains("reprocess") && l.contains(" D "));
    assert!(
        log.lines()
            .any(|l| l.contains(" E ") && l.contains("reprocess") && l.contains("bob")),
        "{log}"
    );
}

#[test]
fn message_partial_parts_are_put_back_together_before_delivery() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.start();
    let send = |body: &str| {
        i.smtp_script(&format!(
            r#"
s = smtp()
assert s.sendmail('ann@elsewhere.test', ['joe@example.com'], {body}) == {{}}
s.quit()
"#
        ));
    };
    // The second part first: it waits in the defragment channel.
    send(
        r#"b'Subject: Part 2 of 2\r\nContent-Type: message/partial; id="rpt@elsewhere.test"; number=2; total=2\r\n\r\nsecond half\r\n'"#,
    );
    i.wait_mail_log(|l| l.contains(" E ") && l.contains("defragment"));
    assert!(wait_for(Duration::from_secs(20), || {
        stdout(&i.sbin("imsimta", &["qm", "directory", "defragment"])).contains("joe@ims-ms-daemon")
    }));
    assert!(
        i.messages("user/joe/INBOX").is_empty(),
        "a lone part is not delivered"
    );
    send(
        r#"b'From: Ann <ann@elsewhere.test>\r\nSubject: Part 1 of 2\r\nMIME-Version: 1.0\r\nContent-Type: message/partial; id="rpt@elsewhere.test"; number=1\r\n\r\nSubject: The report\r\nMessage-ID: <whole@elsewhere.test>\r\nContent-Type: text/plain\r\n\r\nfirst half\r\n'"#,
    );
    let m = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        m.contains("Subject: The report")
            && m.contains("\r\n\r\nfirst half\r\nsecond half\r\n")
            && m.contains("From: Ann <ann@elsewhere.test>")
            && !m.contains("message/partial"),
        "{m}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        i.messages("user/joe/INBOX").len(),
        1,
        "one message, not its parts"
    );
    let left = stdout(&i.sbin("imsimta", &["qm", "directory", "defragment"]));
    assert!(!left.contains("joe@"), "{left}");
}

#[test]
fn message_partial_parts_too_big_together_wait_unjoined() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    // Each part fits under 1 KB; together they would not.
    i.edit_config("option.dat", |t| format!("{t}\nBLOCK_LIMIT=1\n"));
    i.cnbuild();
    i.start();
    for n in [1, 2] {
        let total = if n == 2 { "; total=2" } else { "" };
        i.smtp_script(&format!(
            r#"
s = smtp()
m = b'Subject: part\r\nContent-Type: message/partial; id="big@elsewhere.test"; number={n}{total}\r\n\r\n' + b'x' * 500 + b'\r\n'
assert s.sendmail('ann@elsewhere.test', ['joe@example.com'], m) == {{}}
s.quit()
"#
        ));
    }
    let waiting = || {
        stdout(&i.sbin("imsimta", &["qm", "directory", "defragment"]))
            .matches("joe@ims-ms-daemon")
            .count()
    };
    // Whichever came second found the other and still left both waiting.
    for n in [1, 2] {
        let part = format!("part {n} of message/partial");
        i.wait_mail_log(|l| l.contains(" Q ") && l.contains(&part));
    }
    assert!(i.messages("user/joe/INBOX").is_empty());
    assert_eq!(waiting(), 2, "both parts still wait");
}

#[test]
fn a_lone_message_partial_part_goes_on_after_the_hold_period() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.start();
    i.smtp_script(
        r#"
s = smtp()
m = b'Subject: lone\r\nContent-Type: message/partial; id="lone@elsewhere.test"; number=1; total=2\r\n\r\nthe first half\r\n'
assert s.sendmail('ann@elsewhere.test', ['joe@example.com'], m) == {}
s.quit()
"#,
    );
    i.wait_mail_log(|l| l.contains(" Q ") && l.contains("part 1 of message/partial"));
    assert!(i.messages("user/joe/INBOX").is_empty(), "the part waits");
    // The part has waited the defragment channel's first notices age (2
    // days) once its queue file says it came 3 days ago.
    stdout(&i.sbin("stop-msg", &[]));
    let queue = i.data.join("queue/defragment");
    let files: Vec<_> = std::fs::read_dir(&queue)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".00"))
        })
        .collect();
    assert_eq!(files.len(), 1, "one part waits: {files:?}");
    let data = std::fs::read(&files[0]).unwrap();
    let queued = String::from_utf8_lossy(&data);
    let date = queued
        .lines()
        .find(|l| l.starts_with("D "))
        .unwrap()
        .to_string();
    let aged = format!("D {}", chrono_now() - 3 * 86_400);
    std::fs::write(&files[0], queued.replacen(&date, &aged, 1)).unwrap();
    i.start();
    assert_ok(&i.sbin("imsimta", &["run", "defragment"]), "imsimta run");
    let m = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        m.contains("message/partial") && m.contains("the first half"),
        "sent on as it is: {m}"
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn the_message_log_rolls_over_daily_and_purge_keeps_the_newest() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.edit_config("job_controller.cnf", |t| {
        t.replace("SYNCH_TIME=30", "SYNCH_TIME=1")
    });
    i.cnbuild();
    let logs = i.base.join("log");
    // Three old rolled logs, and a current one last written yesterday.
    for (n, day) in ["20261101", "20261102", "20261103"].iter().enumerate() {
        let p = logs.join(format!("mail.log_{day}"));
        std::fs::write(&p, "old\n").unwrap();
        touch(&p, &format!("2026-11-0{} 12:00", n + 1));
    }
    let current = logs.join("mail.log_current");
    std::fs::write(&current, "yesterday's record\n").unwrap();
    let yesterday = std::process::Command::new("date")
        .args(["-d", "yesterday", "+%Y-%m-%d 12:00"])
        .output()
        .unwrap();
    let yesterday = stdout(&yesterday).trim().to_string();
    touch(&current, &yesterday);
    i.start();
    let rolled = logs.join(format!("mail.log_{}", yesterday[..10].replace('-', "")));
    assert!(
        wait_for(Duration::from_secs(10), || rolled.exists()),
        "mail.log_current rolled over to {}",
        rolled.display()
    );
    assert_eq!(
        std::fs::read_to_string(&rolled).unwrap(),
        "yesterday's record\n"
    );
    // New records start a new current log.
    i.smtp_script(
        r#"
s = smtp()
assert s.sendmail('x@example.org', ['joe@example.com'], b'Subject: new day\r\n\r\nn\r\n') == {}
s.quit()
"#,
    );
    i.wait_mail_log(|l| l.contains("joe@ims-ms-daemon"));
    let out = i.sbin("imsimta", &["purge", "-num=2"]);
    assert_ok(&out, "imsimta purge");
    for (day, kept) in [("20261101", false), ("20261102", false), ("20261103", true)] {
        assert_eq!(
            logs.join(format!("mail.log_{day}")).exists(),
            kept,
            "{day}: {}",
            stdout(&out)
        );
    }
    assert!(rolled.exists() && current.exists());
    assert!(!i.sbin("imsimta", &["purge", "-num=x"]).status.success());
}

fn touch(path: &std::path::Path, when: &str) {
    let out = std::process::Command::new("touch")
        .args(["-d", when])
        .arg(path)
        .output()
        .unwrap();
    assert_ok(&out, "touch -d");
}

/// A stand-in remote SMTP server: takes mail for any address, except
/// `bad…` (550 5.1.1) and `later…` (451 4.2.0); writes each message it
/// takes, with its envelope and the client's address (`PEER ip`), to a
/// file in `dir`.
const SINK: &str = r#"
import socket, sys, threading, os, time
port, out = int(sys.argv[1]), sys.argv[2]
hold = float(sys.argv[3]) if len(sys.argv) > 3 else 0
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', port)); srv.listen(20)
count = [0]
sessions = [0, 0]  # now, most at once (written to out/../sink-peak)
lock = threading.Lock()
def serve(c, peer):
    with lock:
        sessions[0] += 1; sessions[1] = max(sessions[1], sessions[0])
        with open(os.path.join(out, '..', 'sink-peak'), 'w') as p: p.write(str(sessions[1]))
    try: session(c, peer)
    finally:
        with lock: sessions[0] -= 1
def session(c, peer):
    f = c.makefile('rb')
    w = lambda s: c.sendall(s.encode() + b'\r\n')
    w('220 sink.test ESMTP')
    env, rcpts, hello = None, [], ''
    while True:
        l = f.readline()
        if not l: return
        cmd = l.decode().strip(); up = cmd.upper()
        if up.startswith('EHLO'):
            hello = cmd; w('250-sink.test'); w('250-DSN'); w('250 SIZE 100000')
        elif up.startswith('MAIL'): env, rcpts = cmd, []; w('250 2.1.0 ok')
        elif up.startswith('RCPT'):
            a = cmd.split('<')[1].split('>')[0]
            if a.startswith('bad'): w('550 5.1.1 <%s>: no such user here' % a)
            elif a.startswith('later'): w('451 4.2.0 <%s>: try again' % a)
            else: rcpts.append(cmd); w('250 2.1.5 ok')
        elif up == 'DATA':
            w('354 go'); data = b''
            while True:
                l = f.readline()
                if l in (b'.\r\n', b''): break
                data += l
            time.sleep(hold)
            # The test holds every answer while out/../sink-hold exists.
            while os.path.exists(os.path.join(out, '..', 'sink-hold')): time.sleep(0.05)
            with lock: count[0] += 1; n = count[0]
            # Written aside and renamed in: a reader never sees half a file.
            tmp = os.path.join(out, '..', '.msg%d' % n)
            with open(tmp, 'wb') as m:
                m.write((env + '\n' + '\n'.join(rcpts) + '\nPEER ' + peer[0] + '\n' + hello + '\n\n').encode() + data)
            os.rename(tmp, os.path.join(out, 'msg%d' % n))
            w('250 2.0.0 taken')
        elif up == 'QUIT': w('221 bye'); c.close(); return
        else: w('502 5.5.1 no')
while True:
    c, peer = srv.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
"#;

/// The stand-in SMTP server of [`SINK`], stopped when dropped.
struct Sink {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Sink {
    fn start(i: &Install) -> Sink {
        Sink::holding(i, 0.0)
    }

    /// A sink that holds each answer to DATA `seconds` long, and notes
    /// the most sessions it had at once ([`Sink::peak`]).
    fn holding(i: &Install, seconds: f64) -> Sink {
        let port = epistle_tests::free_port();
        let dir = i.dir.path().join("sink");
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new("python3")
            .args([
                "-c",
                SINK,
                &port.to_string(),
                dir.to_str().unwrap(),
                &seconds.to_string(),
            ])
            .spawn()
            .unwrap();
        Sink { child, port, dir }
    }

    fn peak(&self) -> usize {
        std::fs::read_to_string(self.dir.join("../sink-peak"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    fn messages(&self) -> usize {
        std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Routes partner.example to a channel of its own, `tcp_peer`, with
/// `keywords` after `smtp`.
fn route_partner_to(i: &Install, keywords: &str) {
    i.edit_config("imta.cnf", |t| {
        t.replacen(
            "hold                         $U@hold-daemon\n",
            "hold                         $U@hold-daemon\npartner.example              $U%$D@tcp_peer-daemon\n",
            1,
        )
        .replacen(
            "\nbitbucket\n",
            &format!("\ntcp_peer smtp {keywords}\ntcp_peer-daemon\n\nbitbucket\n"),
            1,
        )
    });
}

#[test]
fn outbound_mail_goes_to_the_remote_server_with_per_recipient_results() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    let sink = Sink::start(&i);
    let (sink_port, sink_dir) = (sink.port, sink.dir.clone());
    // partner.example is routed to the stand-in by a channel of its own.
    route_partner_to(
        &i,
        &format!("daemon 127.0.0.1 port {sink_port} backoff \"pt1s\" maytlsclient"),
    );
    // The name the client gives in EHLO, from the channel's option file.
    i.edit_config("tcp_peer_option", |_| {
        "BANNER_HOST=out.example.net\n".into()
    });
    i.cnbuild();
    i.start();
    i.smtp_script(
        r#"
s = smtp()
s.ehlo('c')
s.mail('joe@example.com', ['ENVID=out-1'])
for r in ['ok@partner.example', 'bad@partner.example', 'later@partner.example']:
    assert s.rcpt(r, ['NOTIFY=FAILURE,DELAY'])[0] == 250
assert s.data(b'Subject: out\r\n\r\nto the partner\r\n')[0] == 250
s.quit()
"#,
    );
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::read_dir(&sink_dir)
            .map(|d| d.count() >= 1)
            .unwrap_or(false)),
        "the remote server got the message"
    );
    let got = std::fs::read_to_string(sink_dir.join("msg1")).unwrap();
    assert!(got.starts_with("MAIL FROM:<joe@example.com>"), "{got}");
    assert!(
        got.contains("ENVID=out-1"),
        "DSN parameters passed on: {got}"
    );
    assert!(
        got.contains("\nEHLO out.example.net\n"),
        "BANNER_HOST: {got}"
    );
    assert!(
        got.contains(
            "RCPT TO:<ok@partner.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;ok@partner.example"
        ),
        "{got}"
    );
    assert!(
        !got.contains("bad@") && got.contains("to the partner"),
        "{got}"
    );
    // bad@ comes back to joe; later@ stays queued for the next try.
    let notice = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        notice.contains("Final-Recipient: rfc822;bad@partner.example"),
        "{notice}"
    );
    assert!(notice.contains("Remote-MTA: dns;127.0.0.1"), "{notice}");
    assert!(
        notice
            .contains("Diagnostic-Code: smtp; 550 5.1.1 <bad@partner.example>: no such user here"),
        "{notice}"
    );
    assert!(!notice.contains("later@partner.example"), "{notice}");
    let queued = stdout(&i.sbin("imsimta", &["qm", "directory", "tcp_peer"]));
    assert!(
        queued.contains("to:   later@partner.example") && !queued.contains("ok@"),
        "{queued}"
    );
}

#[test]
fn ip_access_replaces_or_refuses_the_address_connected_to() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    let sink = Sink::start(&i);
    // partner.example's host is an address nobody listens on; IP_ACCESS
    // sends the client to the stand-in instead. closed.example goes by
    // another channel to an address IP_ACCESS refuses.
    route_partner_to(&i, &format!("daemon 127.0.0.9 port {}", sink.port));
    i.edit_config("imta.cnf", |t| {
        t.replacen(
            "hold                         $U@hold-daemon\n",
            "hold                         $U@hold-daemon\n\
             closed.example               $U%$D@tcp_closed-daemon\n",
            1,
        )
        .replacen(
            "\nbitbucket\n",
            &format!(
                "\ntcp_closed smtp daemon 127.0.0.8 port {}\ntcp_closed-daemon\n\nbitbucket\n",
                sink.port
            ),
            1,
        )
    });
    i.edit_config("mappings", |t| {
        format!(
            "{t}\nIP_ACCESS\n\n  tcp_peer|1|1|127.0.0.9|127.0.0.9  $A127.0.0.1\n\
             \x20 tcp_closed|*|*|127.0.0.8|*  $NNo$ mail$ to$ that$ network\n"
        )
    });
    i.cnbuild();
    i.start();
    i.smtp_script(
        r#"
s = smtp()
assert s.sendmail('joe@example.com', ['ann@partner.example'], b'Subject: replaced\r\n\r\nhi\r\n') == {}
assert s.sendmail('joe@example.com', ['bob@closed.example'], b'Subject: refused\r\n\r\nhi\r\n') == {}
s.quit()
"#,
    );
    assert!(
        wait_for(Duration::from_secs(20), || sink.messages() >= 1),
        "delivered to the replacement address"
    );
    let got = std::fs::read_to_string(sink.dir.join("msg1")).unwrap();
    assert!(got.contains("Subject: replaced"), "{got}");
    // The refused one comes back at once, with the table's text; the
    // stand-in never sees it.
    let notice = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    for want in [
        "Final-Recipient: rfc822;bob@closed.example",
        "Status: 5.7.1",
        "No mail to that network",
    ] {
        assert!(notice.contains(want), "{want}: {notice}");
    }
    assert_eq!(sink.messages(), 1);
}

#[test]
fn header_addresses_are_completed_and_reversed_except_for_noreverse_channels() {
    let i = Install::configured();
    i.add_user(
        "joe",
        "joe secret",
        &["-A", "mailAlternateAddress:joe.alias@example.com"],
    );
    let sink = Sink::start(&i);
    route_partner_to(
        &i,
        &format!("daemon 127.0.0.1 port {} noreverse", sink.port),
    );
    // A rule for header addresses pointing back ($B$R) masquerades a
    // host; the others for that host leave its addresses alone.
    i.edit_config("imta.cnf", |t| {
        t.replacen(
            "hold                         $U@hold-daemon\n",
            "hold                         $U@hold-daemon\n\
             desk.example.com             $U%example.com@tcp_local-daemon$B$R\n\
             desk.example.com             $U%$D@tcp_local-daemon\n",
            1,
        )
    });
    i.edit_config("mappings", |t| {
        format!("{t}\nREVERSE\n\n  *@old.example.com  $0@example.com$Y\n")
    });
    i.cnbuild();
    i.start();
    i.smtp_script(
        r#"
s = smtp()
s.ehlo('client.example.org')
m = (b'From: Joe <joe.alias@example.com>\r\nTo: joe, ann@partner.example\r\n'
     b'Cc: bob@old.example.com (Bob), amy@desk.example.com\r\nReply-To: joe@desk.example.com\r\n'
     b'Subject: reversal\r\n\r\nTo: the body is not a header\r\n')
assert s.sendmail('joe.alias@example.com', ['joe@example.com', 'ann@partner.example'], m) == {}
s.quit()
# From outside, tcp_local's remotehost: the client's own name.
e = smtplib.SMTP('127.0.0.1', port, timeout=20, source_address=('127.0.0.2', 0))
e.ehlo('client.example.org')
assert e.sendmail('ann@client.example.org', ['joe@example.com'], b'From: ann\r\nSubject: outside\r\n\r\nhi\r\n') == {}
e.quit()
"#,
    );
    let both = i.wait_messages("user/joe/INBOX", 2);
    let outside = both
        .iter()
        .map(|m| text(m))
        .find(|m| m.contains("Subject: outside"))
        .unwrap();
    assert!(
        outside.contains("From: ann@client.example.org\r\n"),
        "{outside}"
    );
    // Into the store (reverse, the default): short forms completed with
    // the default domain, the alternate address and REVERSE's match
    // reversed, the envelope From too.
    let m = both
        .iter()
        .map(|m| text(m))
        .find(|m| m.contains("Subject: reversal"))
        .unwrap();
    for want in [
        "Return-Path: <joe@example.com>",
        "From: Joe <joe@example.com>\r\n",
        "To: joe@example.com, ann@partner.example\r\n",
        "Cc: bob@example.com (Bob), amy@desk.example.com\r\n",
        "Reply-To: joe@example.com\r\n",
        "\r\n\r\nTo: the body is not a header",
    ] {
        assert!(m.contains(want), "{want}: {m}");
    }
    // To the noreverse channel: completed and rewritten by the rules,
    // not reversed.
    assert!(
        wait_for(Duration::from_secs(20), || sink.messages() >= 1),
        "the partner got it"
    );
    let got = std::fs::read_to_string(sink.dir.join("msg1")).unwrap();
    assert!(
        got.starts_with("MAIL FROM:<joe.alias@example.com>"),
        "{got}"
    );
    for want in [
        "From: Joe <joe.alias@example.com>\r\n",
        "To: joe@example.com, ann@partner.example\r\n",
        "Cc: bob@old.example.com (Bob), amy@desk.example.com\r\n",
        "Reply-To: joe@example.com\r\n",
    ] {
        assert!(got.contains(want), "{want}: {got}");
    }
}

#[test]
fn due_messages_go_out_by_priority_and_second_class_waits_a_pass() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    // One delivery at a time; the partner holds the first answer until
    // all the others are queued, so they go out in priority order.
    let sink = Sink::start(&i);
    let hold = i.dir.path().join("sink-hold");
    std::fs::write(&hold, "").unwrap();
    route_partner_to(
        &i,
        &format!(
            "daemon 127.0.0.1 port {} maxjobs 1 threaddepth 1 nonurgentblocklimit 1",
            sink.port
        ),
    );
    i.edit_config("tcp_peer_option", |_| "MAX_CLIENT_THREADS=1\n".into());
    i.edit_config("job_controller.cnf", |t| {
        t.replace("SYNCH_TIME=30", "SYNCH_TIME=8")
    });
    i.cnbuild();
    i.start();
    let send = |messages: &str| {
        i.smtp_script(&format!(
            r#"
s = smtp()
def send(subject, priority=b'', size=0):
    head = b'Subject: ' + subject + b'\r\n'
    if priority: head += b'Priority: ' + priority + b'\r\n'
    m = head + b'\r\n' + b'x' * size + b'\r\n'
    assert s.sendmail('joe@example.com', ['ann@partner.example'], m) == {{}}
{messages}
s.quit()
"#
        ))
    };
    send("send(b'first')");
    // At the partner, waiting for its answer: the others queue behind it.
    assert!(wait_for(Duration::from_secs(20), || sink.peak() >= 1));
    send(
        "send(b'big', b'non-urgent', 2000)  # past nonurgentblocklimit: second class\n\
         send(b'low', b'non-urgent')\nsend(b'normal')\nsend(b'urgent', b'urgent')",
    );
    // Every one was queued (and the job controller told) before its 250.
    std::fs::remove_file(&hold).unwrap();
    assert!(
        wait_for(Duration::from_secs(40), || sink.messages() >= 5),
        "all five delivered"
    );
    let order: Vec<String> = (1..=5)
        .map(|n| {
            let m = std::fs::read_to_string(sink.dir.join(format!("msg{n}"))).unwrap();
            let at = m.find("Subject: ").unwrap() + 9;
            m[at..m[at..].find('\r').unwrap() + at].to_string()
        })
        .collect();
    assert_eq!(order, ["first", "urgent", "normal", "low", "big"]);
    // The big one waited for the periodic pass (SYNCH_TIME, 8 s); the
    // others went out at once.
    let when = |n: usize| {
        std::fs::metadata(sink.dir.join(format!("msg{n}")))
            .unwrap()
            .modified()
            .unwrap()
    };
    let gap = when(5).duration_since(when(4)).unwrap();
    assert!(gap >= Duration::from_secs(3), "{gap:?}");
}

#[test]
fn one_channel_program_delivers_on_several_threads() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    let sink = Sink::holding(&i, 1.0);
    let port = sink.port;
    // One program at most (maxjobs 1); one thread per waiting message
    // (threaddepth 1), three at most (the channel's option file).
    route_partner_to(
        &i,
        &format!("daemon 127.0.0.1 port {port} maxjobs 1 threaddepth 1"),
    );
    std::fs::write(
        i.base.join("config/tcp_peer_option"),
        "MAX_CLIENT_THREADS=3\n",
    )
    .unwrap();
    i.cnbuild();
    i.start();
    i.smtp_script(
        r#"
s = smtp()
s.ehlo('c')
for n in range(8):
    s.mail('joe@example.com')
    assert s.rcpt('ok%d@partner.example' % n)[0] == 250
    assert s.data(b'Subject: out\r\n\r\nmessage\r\n')[0] == 250
s.quit()
"#,
    );
    assert!(
        wait_for(Duration::from_secs(30), || sink.messages() >= 8),
        "all eight reached the remote server ({} did)",
        sink.messages()
    );
    assert_eq!(
        sink.peak(),
        3,
        "one program held three sessions at once, no more"
    );
}

#[test]
fn sendmail_submits_through_the_local_mta() {
    let i = running();
    let mut child = std::process::Command::new(i.base.join("sbin/sendmail"))
        .args(["-t", "-i", "-f", "ann@example.com"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"To: Joe <joe@example.com>\nBcc: ann@example.com\nSubject: from sendmail\n\nbody\n.\nafter the dot\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let m = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        m.contains("Subject: from sendmail") && m.contains("Message-ID: <"),
        "{m}"
    );
    assert!(
        m.contains("after the dot"),
        "-i keeps lines after a lone dot: {m}"
    );
    assert!(!m.contains("Bcc:"), "{m}");
    let a = text(&i.wait_messages("user/ann/INBOX", 1)[0]);
    assert!(
        a.contains("Subject: from sendmail"),
        "Bcc recipients get it: {a}"
    );
    // Without the MTA: a temporary failure (EX_TEMPFAIL), nothing lost silently.
    i.stop_service("dispatcher");
    let mut child = std::process::Command::new(i.base.join("sbin/sendmail"))
        .arg("joe@example.com")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: x\n\nx\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_relay_delivers_to_a_store_host_over_lmtp() {
    // The store host: LMTP on a loopback port, users joe and ann.
    let store = Install::configured();
    let lmtp_port = epistle_tests::free_port();
    store.edit_config("dispatcher.cnf", |t| {
        format!("{t}\n[SERVICE=LMTP]\nPORT={lmtp_port}\nINTERFACE_ADDRESS=127.0.0.1\nIMAGE=IMTA_BIN:tcp_lmtp_server\n")
    });
    store.cnbuild();
    store.add_user("joe", "joe secret", &[]);
    store.add_user("ann", "ann secret", &["-A", "mailUserStatus:inactive"]);
    store.start();
    // The relay: example.com goes to the store host's LMTP.
    let relay = Install::configured();
    relay.edit_config("imta.cnf", |t| {
        t.replace(
            "example.com           $U%$D@mail.example.com\n",
            "example.com           $U%$D@lmtp_store-daemon\n",
        )
        .replacen(
            "\nbitbucket\n",
            &format!(
                "\nlmtp_store lmtp daemon 127.0.0.1 port {lmtp_port} backoff \"pt1s\"\nlmtp_store-daemon\n\nbitbucket\n"
            ),
            1,
        )
    });
    relay.cnbuild();
    relay.start();
    let routed = stdout(&relay.sbin("imsimta", &["test", "-rewrite", "joe@example.com"]));
    assert!(routed.contains("channel = lmtp_store"), "{routed}");
    relay.smtp_script(
        r#"
s = smtp()
assert s.sendmail('x@example.org', ['joe@example.com', 'ann@example.com'],
                  b'Subject: via lmtp\r\n\r\nthrough the relay\r\n') == {}
s.quit()
"#,
    );
    let m = text(&store.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        m.contains("through the relay") && m.contains(" with LMTPS id "),
        "delivered over LMTP with STARTTLS: {m}"
    );
    // ann's account is inactive: her copy stays queued on the relay, per recipient.
    relay.wait_mail_log(|l| {
        l.contains(" Q ") && l.contains("ann@example.com") && l.contains("lmtp;")
    });
    relay.wait_mail_log(|l| l.contains(" D ") && l.contains("joe@example.com"));
    // LMTP speaks LHLO only, and only to internal hosts.
    store.python(
        r#"
import socket, sys
port = int(sys.argv[1])
s = socket.create_connection(('127.0.0.1', port), timeout=10); f = s.makefile('rb')
assert b'LMTP' in f.readline()
s.sendall(b'EHLO x\r\n'); assert f.readline().startswith(b'500')
s.sendall(b'LHLO x\r\n')
while True:
    l = f.readline()
    if l[3:4] == b' ': break
assert l.startswith(b'250')
e = socket.socket(); e.bind(('127.0.0.2', 0)); e.connect(('127.0.0.1', port))
assert e.makefile('rb').readline().startswith(b'554 5.7.1')
"#,
        &[&lmtp_port.to_string()],
    );
}

#[test]
fn access_tables_connection_limits_and_timeouts() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.edit_config("mappings", |t| {
        format!(
            "{t}\nPORT_ACCESS\n\n  TCP|*|*|127.0.0.3|*  $NGo$ away\n  *  $Y\n\n\
             FROM_ACCESS\n\n  *|spammer@bad.example|*  $NSender$ refused\n\n\
             ORIG_MAIL_ACCESS\n\n  TCP|*|*|*|*|SMTP/*|*|*|*|blocked@example.com  $NNot$ here\n"
        )
    });
    i.edit_config("dispatcher.cnf", |t| {
        t.replace("MAX_CLIENT_CONNS=100", "MAX_CLIENT_CONNS=2\nBACKLOG=17")
    });
    // About 2 seconds each.
    i.edit_config("tcp_local_option", |t| {
        format!("{t}\nCOMMAND_RECEIVE_TIME=0.034\nDATA_RECEIVE_TIME=0.034\n")
    });
    i.cnbuild();
    i.start();
    // The listening socket's queue is BACKLOG deep (ss shows it as Send-Q).
    let ss = std::process::Command::new("ss")
        .args(["-Hltn"])
        .output()
        .expect("ss (iproute2)");
    let listing = String::from_utf8_lossy(&ss.stdout).into_owned();
    let smtp = format!(":{} ", i.ports.smtp);
    let line = listing
        .lines()
        .find(|l| l.contains(&smtp))
        .unwrap_or_else(|| panic!("no listener on {smtp}: {listing}"));
    assert_eq!(
        line.split_whitespace().nth(2),
        Some("17"),
        "backlog: {line}"
    );
    i.smtp_script(
        r#"
def conn(src):
    s = socket.socket(); s.bind((src, 0)); s.connect(('127.0.0.1', port)); s.settimeout(10)
    return s, s.makefile('rb')
# PORT_ACCESS refuses 127.0.0.3 before any SMTP.
s, f = conn('127.0.0.3')
l = f.readline()
assert l.startswith(b'421 4.7.0 Go away'), l
# Two connections per client address; the third is turned away.
a = conn('127.0.0.2'); b = conn('127.0.0.2')
assert a[1].readline().startswith(b'220') and b[1].readline().startswith(b'220')
c, cf = conn('127.0.0.2')
l = cf.readline()
assert l.startswith(b'421 4.7.0 Too many connections'), l
# A silent client is dropped with 421 after COMMAND_RECEIVE_TIME.
t = time.time()
l = a[1].readline()
assert l.startswith(b'421 4.4.2') and time.time() - t < 8, l
# So is one that stops in the middle of its message; nothing is queued.
b = conn('127.0.0.1')
assert b[1].readline().startswith(b'220')
b[0].sendall(b'HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nSubject: half\r\n')
for want in (b'250', b'250', b'250', b'354'):
    l = b[1].readline()
    assert l.startswith(want), (want, l)
l = b[1].readline()
assert l.startswith(b'421 4.4.2') and b'Timeout' in l, l
s = smtp()
s.ehlo('x')
code, msg = s.mail('spammer@bad.example')
assert code == 550 and b'Sender refused' in msg, (code, msg)
s.mail('ok@example.org')
code, msg = s.rcpt('blocked@example.com')
assert code == 550 and msg.startswith(b'5.7.1'), (code, msg)
assert s.rcpt('joe@example.com')[0] == 250
s.quit()
"#,
    );
}

#[test]
fn access_table_actions_hold_discard_rewrite_delay_and_test_flags() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    i.add_user("ann", "ann secret", &[]);
    i.edit_config("mappings", |t| {
        format!(
            "{t}\nFROM_ACCESS\n\n\
             \x20 *|bulk@example.org|*  $B$Y\n\
             \x20 *|list@example.org|*  $J$K$Yowner@example.org|editor@example.org\n\
             \x20 *|suspect@example.org|*  $H$Y\n\
             \x20 *|slow@example.org|*  $D$Y-150\n\
             \x20 *|tls-only@example.org|*  $;T$NUse$ STARTTLS$ first\n\
             \x20 *|later@example.org|*  $N451$ 4.7.1$ Try$ again$ later\n\n\
             SEND_ACCESS\n\n  *|*|*|ann@*  $B$Y\n"
        )
    });
    i.cnbuild();
    // The flag tests as imsimta test -mapping shows them.
    let probe = "TCP|127.0.0.1|25|127.0.0.1|5000|SMTP/x|tls-only@example.org|";
    let plain = stdout(&i.sbin(
        "imsimta",
        &["test", "-mapping", "-table=FROM_ACCESS", probe],
    ));
    assert!(plain.contains("Output flags: [$N]"), "{plain}");
    let tls = stdout(&i.sbin(
        "imsimta",
        &["test", "-mapping", "-table=FROM_ACCESS", "-flags=T", probe],
    ));
    assert!(tls.contains("No match"), "{tls}");
    i.start();
    i.smtp_script(
        r#"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtp()
s.ehlo('c')
code, msg = s.mail('later@example.org')
assert (code, msg) == (451, b'4.7.1 Try again later'), (code, msg)
code, msg = s.mail('tls-only@example.org')
assert (code, msg) == (550, b'5.7.1 Use STARTTLS first'), (code, msg)
t = time.time()
code, msg = s.mail('slow@example.org')
assert code == 250 and time.time() - t >= 1.4, (code, time.time() - t)
s.rset()
# Discarded: accepted, never delivered.
assert s.sendmail('bulk@example.org', ['joe@example.com'], b'Subject: bulk\r\n\r\nb\r\n') == {}
# ann's copy goes to the bitbucket; joe's is delivered.
assert s.sendmail('x@example.org', ['ann@example.com', 'joe@example.com'],
                  b'Subject: both\r\n\r\nb\r\n') == {}
# Held for the administrator.
assert s.sendmail('suspect@example.org', ['joe@example.com'], b'Subject: suspect\r\n\r\nh\r\n') == {}
# A new envelope sender and Sender:.
assert s.sendmail('list@example.org', ['joe@example.com'],
                  b'From: list@example.org\r\nSender: someone@else\r\nSubject: list\r\n\r\nl\r\n') == {}
s.starttls(context=ctx)
s.ehlo('c')
assert s.sendmail('tls-only@example.org', ['joe@example.com'], b'Subject: over tls\r\n\r\nt\r\n') == {}
s.quit()
"#,
    );
    let joe = i.wait_messages("user/joe/INBOX", 3);
    let texts: Vec<String> = joe.iter().map(|m| text(m)).collect();
    let subject = |s: &str| {
        texts
            .iter()
            .find(|t| t.contains(&format!("Subject: {s}\r\n")))
    };
    assert!(
        subject("both").is_some() && subject("over tls").is_some(),
        "{texts:?}"
    );
    let list = subject("list").expect("the list message");
    assert!(
        list.starts_with("Return-Path: <owner@example.org>\r\n"),
        "{list}"
    );
    assert!(
        list.contains("\r\nSender: editor@example.org\r\n") && !list.contains("someone@else"),
        "{list}"
    );
    let log = i.wait_mail_log(|l| l.contains(" bitbucket ") && l.contains("ann@"));
    assert!(
        log.lines()
            .any(|l| l.contains(" bitbucket ") && l.contains("bulk@example.org")),
        "{log}"
    );
    // The held message waits as .HELD; released, it is delivered.
    let held = stdout(&i.sbin("imsimta", &["qm", "directory"]));
    let id = held
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|w| w.ends_with(".HELD"))
        .unwrap_or_else(|| panic!("a held message: {held}"))
        .to_string();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        i.messages("user/joe/INBOX").len(),
        3,
        "bulk and suspect wait or vanish"
    );
    assert!(i.messages("user/ann/INBOX").is_empty());
    assert_ok(&i.sbin("imsimta", &["qm", "release", &id]), "qm release");
    let joe = i.wait_messages("user/joe/INBOX", 4);
    assert!(joe.iter().any(|m| text(m).contains("Subject: suspect")));
}

#[test]
fn channel_keywords_limit_tls_size_recipients_and_transactions() {
    let i = Install::configured();
    for u in ["joe", "ann", "bob", "eve"] {
        i.add_user(u, &format!("{u} secret"), &[]);
    }
    i.edit_config("imta.cnf", |t| {
        t.replace(
            "ims-ms defragment subdirs 20",
            "ims-ms defragment blocklimit 2 recipientlimit 3 holdlimit 2 subdirs 20",
        )
        .replace(
            "tcp_intranet smtp mx single_sys subdirs 20",
            "tcp_intranet smtp mx single_sys transactionlimit 2 subdirs 20",
        )
        .replace(
            "  maytlsserver maytlsclient allowswitchchannel",
            "  musttlsserver maytlsclient allowswitchchannel",
        )
        .replace(
            "SMTP_POOL maytlsserver maytlsclient maysaslserver",
            "SMTP_POOL notls maysaslserver",
        )
    });
    i.cnbuild();
    i.start();
    i.smtp_script(
        r#"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
# tcp_local (external clients) says notls: no STARTTLS offered or taken.
s = smtplib.SMTP('127.0.0.1', port, timeout=20, source_address=('127.0.0.2', 0))
s.ehlo('c')
assert not s.has_extn('starttls'), s.esmtp_features
assert s.docmd('STARTTLS')[0] == 454
s.quit()
# tcp_intranet says musttlsserver: no mail before STARTTLS.
s = smtp()
s.ehlo('c')
code, msg = s.mail('x@example.org')
assert code == 530 and b'STARTTLS' in msg, (code, msg)
s.starttls(context=ctx)
s.ehlo('c')
# ims-ms takes 2 blocks (2048 bytes): a declared SIZE above is refused at RCPT...
s.mail('x@example.org', ['SIZE=5000'])
code, msg = s.rcpt('joe@example.com')
assert code == 552 and b'channel ims-ms' in msg, (code, msg)
s.rset()
# ... and so is a larger message at its end, without a transaction spent.
s.mail('x@example.org')
assert s.rcpt('joe@example.com')[0] == 250
code, msg = s.data(b'Subject: big\r\n\r\n' + b'x' * 3000 + b'\r\n')
assert code == 552 and b'channel ims-ms' in msg, (code, msg)
# recipientlimit 3; past holdlimit 2 the message is held.
s.mail('x@example.org')
for u in ['joe', 'ann', 'bob']:
    assert s.rcpt(u + '@example.com')[0] == 250
code, msg = s.rcpt('eve@example.com')
assert code == 452 and b'Too many recipients for channel ims-ms' in msg, (code, msg)
assert s.data(b'Subject: three\r\n\r\nt\r\n')[0] == 250
assert s.sendmail('x@example.org', ['joe@example.com'], b'Subject: one\r\n\r\no\r\n') == {}
# transactionlimit 2: that was the second message of this connection.
code, msg = s.mail('x@example.org')
assert code == 452 and b'Too many transactions' in msg, (code, msg)
s.quit()
"#,
    );
    let joe = i.wait_messages("user/joe/INBOX", 1);
    assert!(text(&joe[0]).contains("Subject: one"));
    let held = stdout(&i.sbin("imsimta", &["qm", "directory", "ims-ms"]));
    assert!(held.contains(".HELD"), "{held}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(i.messages("user/joe/INBOX").len(), 1, "the held one waits");
    assert!(i.messages("user/ann/INBOX").is_empty());
}

#[test]
fn success_notices_when_asked() {
    let i = running();
    i.smtp_script(
        r#"
s = smtp()
s.ehlo('c')
s.mail('ann@example.com', ['ENVID=ok-1'])
assert s.rcpt('joe@example.com', ['NOTIFY=SUCCESS'])[0] == 250
assert s.data(b'Subject: tell me\r\n\r\nx\r\n')[0] == 250
s.quit()
"#,
    );
    i.wait_messages("user/joe/INBOX", 1);
    let n = text(&i.wait_messages("user/ann/INBOX", 1)[0]);
    assert!(n.contains("Action: delivered\r\nStatus: 2.0.0"), "{n}");
    assert!(
        n.contains("Content-Type: text/rfc822-headers"),
        "success returns headers only: {n}"
    );
}

/// A stand-in DNS server on UDP: MX and A records from its arguments
/// (`mx:DOMAIN:PREF:HOST`, `a:HOST:IP`, `nullmx:DOMAIN`); other names are
/// NXDOMAIN.
const DNS: &str = r#"
import socket, struct, sys
port = int(sys.argv[1])
mx, a, null = {}, {}, set()
for spec in sys.argv[2:]:
    kind, rest = spec.split(':', 1)
    if kind == 'mx':
        d, p, h = rest.split(':'); mx.setdefault(d, []).append((int(p), h))
    elif kind == 'a':
        h, ip = rest.split(':'); a[h] = ip
    elif kind == 'nullmx':
        null.add(rest)
def name(labels):
    return b''.join(bytes([len(l)]) + l.encode() for l in labels.split('.') if l) + b'\0'
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', port))
while True:
    q, peer = s.recvfrom(512)
    tid = q[:2]; i = 12; labels = []
    while q[i]:
        labels.append(q[i+1:i+1+q[i]].decode()); i += 1 + q[i]
    qname = '.'.join(labels).lower(); qtype = struct.unpack('>H', q[i+1:i+3])[0]
    question = q[12:i+5]
    answers = []
    if qtype == 15 and qname in null:
        answers.append(struct.pack('>HHIH', 15, 1, 60, 3) + struct.pack('>H', 0) + b'\0')
    elif qtype == 15 and qname in mx:
        for p, h in mx[qname]:
            rd = struct.pack('>H', p) + name(h)
            answers.append(struct.pack('>HHIH', 15, 1, 60, len(rd)) + rd)
    elif qtype == 1 and qname in a:
        answers.append(struct.pack('>HHIH', 1, 1, 60, 4) + socket.inet_aton(a[qname]))
    known = qname in mx or qname in a or qname in null
    rcode = 0 if known else 3
    head = tid + struct.pack('>HHHHH', 0x8180 | rcode, 1, len(answers), 0, 0)
    s.sendto(head + question + b''.join(b'\xc0\x0c' + r for r in answers), peer)
"#;

#[test]
fn ident_keywords_put_the_clients_checked_name_in_received() {
    // Loopback addresses are named by the resolver itself (RFC 6761):
    // 127.0.0.1 and 127.0.0.2 are both "localhost", whose address is
    // 127.0.0.1, so only 127.0.0.1 passes the forward check. A DNS server
    // named in option.dat keeps /etc/hosts (and its other names for
    // 127.0.0.1) out of it.
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    let _dns = StandInDns::start(&i, &[]);
    let set_ident = |keywords: &str| {
        i.edit_config("imta.cnf", |t| {
            let mut out = String::new();
            for line in t.lines() {
                if line.starts_with("tcp_local smtp") || line.starts_with("tcp_intranet smtp") {
                    let kept: Vec<&str> = line
                        .split_whitespace()
                        .filter(|w| !w.starts_with("ident") && !w.starts_with("forwardcheck"))
                        .collect();
                    out.push_str(&format!("{} {keywords}\n", kept.join(" ")));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            out
        });
        i.cnbuild();
    };
    let mut sent = 0;
    let mut send_from = |source: &str| {
        sent += 1;
        i.smtp_script(&format!(
            r#"
s = smtplib.SMTP('127.0.0.1', port, timeout=20, source_address=('{source}', 0))
assert s.sendmail('x@elsewhere.test', ['joe@example.com'], b'Subject: {sent}\r\n\r\nhi\r\n') == {{}}
s.quit()
"#
        ));
        let got = text(&i.wait_messages("user/joe/INBOX", sent)[sent - 1]);
        got[..got.find(" by ").unwrap()].trim_end().to_string()
    };

    set_ident("identnonenumeric");
    i.start();
    let received = send_from("127.0.0.2");
    assert!(received.ends_with(" ([127.0.0.2])"), "{received}");

    set_ident("identnone forwardchecktag");
    assert_ok(&i.sbin("imsimta", &["restart"]), "imsimta restart");
    let received = send_from("127.0.0.1");
    assert!(received.ends_with(" (localhost [127.0.0.1])"), "{received}");
    let received = send_from("127.0.0.2");
    assert!(
        received.ends_with(" (localhost* [127.0.0.2])"),
        "{received}"
    );

    set_ident("identnonesymbolic forwardcheckdelete");
    assert_ok(&i.sbin("imsimta", &["restart"]), "imsimta restart");
    let received = send_from("127.0.0.1");
    assert!(received.ends_with(" (localhost)"), "{received}");
    let received = send_from("127.0.0.2");
    assert!(received.ends_with(" ([127.0.0.2])"), "{received}");

    // identtcp asks the client's IDENT service too. A stand-in answers
    // on 127.0.0.1 port 113 when this test may bind it (as root);
    // otherwise nothing answers there and the session goes on at once.
    let mut identd = std::process::Command::new("python3")
        .args(["-c", IDENTD])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(identd.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    set_ident("identtcp");
    assert_ok(&i.sbin("imsimta", &["restart"]), "imsimta restart");
    let t = std::time::Instant::now();
    let received = send_from("127.0.0.1");
    let _ = identd.kill();
    let _ = identd.wait();
    match first.trim() {
        "listening" => assert!(
            received.ends_with(" (tester@localhost [127.0.0.1])"),
            "{received}"
        ),
        _ => {
            assert!(received.ends_with(" (localhost [127.0.0.1])"), "{received}");
            assert!(
                t.elapsed() < Duration::from_secs(4),
                "no wait for a refusal"
            );
        }
    }
}

/// A stand-in IDENT service (RFC 1413) on 127.0.0.1 port 113 that names
/// every connection's user `tester`; prints `listening`, or `cannot`
/// when the port may not be bound.
const IDENTD: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(('127.0.0.1', 113))
except OSError:
    print('cannot', flush=True); sys.exit(0)
s.listen(5)
print('listening', flush=True)
while True:
    c, _ = s.accept()
    line = c.makefile('rb').readline().decode()
    a, b = line.strip().split(',')
    c.sendall(('%s, %s : USERID : UNIX : tester\r\n' % (a.strip(), b.strip())).encode())
    c.close()
"#;

/// The stand-in DNS server of [`DNS`] with the given records, named as
/// the MTA's resolver in option.dat; stopped when dropped.
struct StandInDns(std::process::Child);

impl StandInDns {
    fn start(i: &Install, records: &[&str]) -> StandInDns {
        let port = epistle_tests::free_port();
        let child = std::process::Command::new("python3")
            .args(["-c", DNS, &port.to_string()])
            .args(records)
            .spawn()
            .unwrap();
        i.edit_config("option.dat", |t| {
            format!("{t}\nDNS_SERVER=127.0.0.1:{port}\n")
        });
        StandInDns(child)
    }
}

impl Drop for StandInDns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running install (user joe) whose tcp_local channel, with
/// `keywords`, delivers to a stand-in SMTP server and asks a stand-in DNS
/// server holding `records`.
fn outbound_through_stand_ins(records: &[&str], keywords: &str) -> (Install, Sink, StandInDns) {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    let sink = Sink::start(&i);
    let dns = StandInDns::start(&i, records);
    i.edit_config("imta.cnf", |t| {
        t.replacen(
            "tcp_local smtp mx single_sys",
            &format!("tcp_local port {} {keywords}", sink.port),
            1,
        )
    });
    i.cnbuild();
    i.start();
    (i, sink, dns)
}

#[test]
fn outbound_mail_follows_mx_records() {
    let (i, sink, _dns) = outbound_through_stand_ins(
        &[
            "mx:partner.test:20:mx2.partner.test",
            "mx:partner.test:10:mx1.partner.test",
            "a:mx1.partner.test:127.0.0.1",
            "a:mx2.partner.test:127.0.0.1",
            "nullmx:nomail.test",
        ],
        "smtp mx single_sys",
    );
    let sink_dir = sink.dir.clone();
    i.smtp_script(
        r#"
s = smtp()
assert s.sendmail('joe@example.com', ['friend@partner.test'], b'Subject: by mx\r\n\r\nx\r\n') == {}
assert s.sendmail('joe@example.com', ['a@nomail.test', 'b@nowhere.test'], b'Subject: nowhere\r\n\r\nx\r\n') == {}
s.quit()
"#,
    );
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::read_dir(&sink_dir)
            .map(|d| d.count() >= 1)
            .unwrap_or(false)),
        "the MX host got the message"
    );
    let got = std::fs::read_to_string(sink_dir.join("msg1")).unwrap();
    assert!(
        got.contains("RCPT TO:<friend@partner.test>") && got.contains("Subject: by mx"),
        "{got}"
    );
    let log = i.wait_mail_log(|l| l.contains(" D ") && l.contains("friend@partner.test"));
    assert!(
        log.contains("mx1.partner.test [127.0.0.1]"),
        "the preferred MX: {log}"
    );
    // A null MX and a domain that does not exist come back at once.
    let notice = text(&i.wait_messages("user/joe/INBOX", 1)[0]);
    assert!(
        notice
            .contains("Final-Recipient: rfc822;a@nomail.test\r\nAction: failed\r\nStatus: 5.1.10"),
        "{notice}"
    );
    assert!(
        notice
            .contains("Final-Recipient: rfc822;b@nowhere.test\r\nAction: failed\r\nStatus: 5.1.2"),
        "{notice}"
    );
    drop(sink);
}

/// `nomx`: the domain's own address, whatever its MX records say;
/// `interfaceaddress`: connections leave from that address.
#[test]
fn outbound_channel_keywords_nomx_and_interfaceaddress() {
    // The MX has no address: only nomx can reach the domain.
    let (i, sink, _dns) = outbound_through_stand_ins(
        &[
            "mx:direct.test:10:mx.unreachable.test",
            "a:direct.test:127.0.0.1",
        ],
        "interfaceaddress 127.0.0.2 nomx backoff \"pt1s\" smtp single_sys",
    );
    let sink_dir = sink.dir.clone();
    i.smtp_script(
        r#"
s = smtp()
assert s.sendmail('joe@example.com', ['friend@direct.test'], b'Subject: no mx\r\n\r\nx\r\n') == {}
s.quit()
"#,
    );
    assert!(
        wait_for(Duration::from_secs(20), || sink_dir.join("msg1").exists()),
        "the domain's own address got the message"
    );
    let got = std::fs::read_to_string(sink_dir.join("msg1")).unwrap();
    assert!(
        got.contains("RCPT TO:<friend@direct.test>") && got.contains("Subject: no mx"),
        "{got}"
    );
    assert!(
        got.contains("\nPEER 127.0.0.2\n"),
        "sent from interfaceaddress: {got}"
    );
    drop(sink);
}
