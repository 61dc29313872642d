//! Messages survive the MTA's processes being killed: while several
//! clients send, the job controller, the dispatcher and SMTP server
//! processes are killed with SIGKILL again and again; the watcher (and
//! the dispatcher, for its servers) start them again. Every message that
//! got 250 is delivered exactly once; a message whose session broke
//! before 250 is delivered at most once; nothing else arrives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use epistle_tests::{Install, assert_ok, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CLIENTS: &str = r#"
import os, smtplib, sys, threading, time
port, out, stop, threads = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
results, lock = [], threading.Lock()
def record(mid, ok):
    with lock: results.append('%s %s' % (mid, 'OK' if ok else 'FAIL'))
def client(t):
    n, s = 0, None
    # Until the killer is done (a bound keeps a broken test finite).
    while not os.path.exists(stop) and n < 5000:
        mid = 't%d-m%d' % (t, n)
        n += 1
        try:
            if s is None:
                s = smtplib.SMTP('127.0.0.1', port, timeout=15)
                s.ehlo('load%d' % t)
            s.sendmail('load@example.org', ['joe@example.com'],
                       ('Subject: %s\r\nX-Id: %s\r\n\r\n%s\r\n' % (mid, mid, 'x' * 2000)).encode())
            record(mid, True)
            if n % 5 == 0:
                s.quit(); s = None
        except Exception:
            # Never resent under the same id: whether it was queued is unknown.
            record(mid, False)
            try: s.close()
            except Exception: pass
            s = None
            time.sleep(0.05)
ths = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
for th in ths: th.start()
for th in ths: th.join()
open(out, 'w').write('\n'.join(results) + '\n')
"#;

#[test]
fn every_accepted_message_is_delivered_exactly_once_through_kill_9() {
    let i = Install::configured();
    i.add_user("joe", "joe secret", &[]);
    for (n, v) in [
        ("local.autorestart", "yes"),
        ("local.autorestart.timeout", "1"),
    ] {
        assert_ok(&i.configutil(&["-o", n, "-v", v]), "configutil");
    }
    // A retry soon after a delivery that broke off.
    i.edit_config("imta.cnf", |t| {
        t.replace(
            "backoff \"pt5m\" \"pt10m\" \"pt30m\" \"pt1h\" \"pt2h\" \"pt4h\"",
            "backoff \"pt2s\"",
        )
    });
    i.cnbuild();
    i.start();
    let results = i.dir.path().join("results");
    let stop = i.dir.path().join("stop");
    let mut clients = std::process::Command::new("python3")
        .args(["-c", CLIENTS, &i.ports.smtp.to_string()])
        .arg(&results)
        .arg(&stop)
        .arg("4")
        .spawn()
        .unwrap();
    // Kill something every 0.6 s, round robin, while the clients send,
    // until each daemon has died four times: each dies about every
    // 1.8 s, more than the autorestart window, so the watcher keeps
    // restarting them.
    let mut round = 0usize;
    let mut kills: HashMap<&str, usize> = HashMap::new();
    let started = Instant::now();
    while kills.len() < 3 || kills.values().any(|n| *n < 4) {
        assert!(
            clients.try_wait().unwrap().is_none(),
            "the clients stopped early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the daemons could not be killed often enough: {kills:?}"
        );
        std::thread::sleep(Duration::from_millis(600));
        let (name, pids) = match round % 3 {
            0 => (
                "job_controller",
                i.pid("job_controller").into_iter().collect::<Vec<_>>(),
            ),
            1 => ("tcp_smtp_server", i.pids_of("tcp_smtp_server")),
            _ => ("dispatcher", i.pid("dispatcher").into_iter().collect()),
        };
        round += 1;
        if let Some(&pid) = pids.get(round % pids.len().max(1)).or(pids.first())
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            *kills.entry(name).or_default() += 1;
        }
    }
    std::fs::write(&stop, "").unwrap();
    assert!(clients.wait().unwrap().success());
    let outcome: Vec<(String, bool)> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, r)| (id.to_string(), r == "OK"))
        .collect();
    let accepted: Vec<&String> = outcome
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(id, _)| id)
        .collect();
    assert!(
        accepted.len() > 100,
        "most messages get through: {} of {}; kills {kills:?}",
        accepted.len(),
        outcome.len()
    );
    // Everything accepted arrives (the watcher has restarted whatever was
    // killed last).
    let ids_of = |i: &Install| -> Vec<String> {
        i.messages("user/joe/INBOX")
            .iter()
            .filter_map(|m| {
                let t = String::from_utf8_lossy(m);
                t.lines()
                    .find_map(|l| l.strip_prefix("X-Id: ").map(|s| s.trim().to_string()))
            })
            .collect()
    };
    let mut delivered = Vec::new();
    let all_there = wait_for(Duration::from_secs(90), || {
        delivered = ids_of(&i);
        accepted.iter().all(|a| delivered.contains(a))
    });
    // Late copies would show up now, if there were any.
    std::thread::sleep(Duration::from_secs(3));
    delivered = ids_of(&i);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for d in &delivered {
        *counts.entry(d.as_str()).or_default() += 1;
    }
    let known: HashMap<&str, bool> = outcome.iter().map(|(id, ok)| (id.as_str(), *ok)).collect();
    let missing: Vec<&&String> = accepted
        .iter()
        .filter(|a| !counts.contains_key(a.as_str()))
        .collect();
    assert!(
        all_there && missing.is_empty(),
        "accepted but not delivered: {missing:?}"
    );
    for (id, n) in &counts {
        match known.get(id) {
            Some(true) => assert_eq!(*n, 1, "{id} was accepted and delivered {n} times"),
            Some(false) => assert_eq!(*n, 1, "{id} (no 250) was delivered {n} times"),
            None => panic!("{id} was delivered but never sent"),
        }
    }
    eprintln!(
        "{} sent, {} accepted, {} delivered; kills {kills:?}",
        outcome.len(),
        accepted.len(),
        delivered.len()
    );
}
