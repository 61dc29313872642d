//! start-msg, stop-msg, status-msg and the watcher on a real installation,
//! with the test tree's stand-in daemon in place of imapd and popd.

use std::time::{Duration, Instant};

use epistle_tests::{Install, assert_ok, greeting, stderr, stdout, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Installed and configured with stand-ins, quick probes, not yet started.
fn suite(extra: &[(&str, &str)]) -> Install {
    let i = Install::new();
    i.add_standin("imapd");
    i.add_standin("popd");
    i.configure();
    let mut settings = vec![
        ("local.probe.interval", "1"),
        ("local.probe.imap.timeout", "2"),
        ("local.probe.pop.timeout", "2"),
    ];
    settings.extend_from_slice(extra);
    for (n, v) in settings {
        assert_ok(&i.configutil(&["-o", n, "-v", v]), "configutil");
    }
    i
}

fn start(i: &Install, args: &[&str]) -> std::process::Output {
    i.sbin("start-msg", args)
}

#[test]
fn start_status_stop() {
    let i = suite(&[]);
    let out = start(&i, &[]);
    assert_ok(&out, "start-msg");
    let text = stdout(&out);
    assert!(text.contains("Launching watcher"), "{text}");
    assert!(text.contains("Starting imap server"), "{text}");
    assert!(text.contains("Starting pop server"), "{text}");
    assert!(text.contains("Starting store server"), "{text}");
    assert!(text.contains("Starting dispatcher server"), "{text}");
    assert!(text.contains("http server is not installed"), "{text}");
    // They answer at once: start-msg returned only when they accepted.
    assert!(greeting(i.ports.smtp).unwrap().starts_with("220 "));
    assert!(greeting(i.ports.imap).unwrap().starts_with("* OK"));
    assert!(greeting(i.ports.pop).unwrap().starts_with("+OK"));
    let imap_pid = i.pid("imap").expect("imap pid file");

    let again = start(&i, &["imap"]);
    assert_ok(&again, "start-msg imap (running)");
    assert!(
        stdout(&again).contains("already running"),
        "{}",
        stdout(&again)
    );

    let status = i.sbin("status-msg", &[]);
    assert_ok(&status, "status-msg");
    let s = stdout(&status);
    let imap_line = s
        .lines()
        .find(|l| l.starts_with("imap "))
        .expect("imap line");
    assert!(
        imap_line.contains("running") && imap_line.contains(&imap_pid.to_string()),
        "{s}"
    );
    assert!(
        imap_line.contains(&format!("127.0.0.1:{}", i.ports.imap)),
        "{s}"
    );
    assert!(
        s.lines()
            .any(|l| l.starts_with("watcher ") && l.contains(&i.ports.watcher.to_string())),
        "{s}"
    );

    let stop = i.sbin("stop-msg", &["pop"]);
    assert_ok(&stop, "stop-msg pop");
    assert!(greeting(i.ports.pop).is_none(), "pop still answers");
    let stop_again = i.sbin("stop-msg", &["pop"]);
    assert_ok(&stop_again, "stop-msg pop (stopped)");
    assert!(
        stdout(&stop_again).contains("not running"),
        "{}",
        stdout(&stop_again)
    );

    assert_ok(&i.sbin("stop-msg", &[]), "stop-msg");
    assert!(greeting(i.ports.imap).is_none(), "imap still answers");
    assert!(!i.data.join("run/watcher.sock").exists());
    let status = i.sbin("status-msg", &[]);
    assert_eq!(status.status.code(), Some(3), "{}", stdout(&status));
    let nothing = i.sbin("stop-msg", &[]);
    assert_ok(&nothing, "stop-msg with nothing running");
}

#[test]
fn a_taken_port_fails_start_naming_port_service_and_log() {
    let i = suite(&[]);
    let _holder = std::net::TcpListener::bind(("127.0.0.1", i.ports.imap)).unwrap();
    let out = start(&i, &[]);
    assert!(
        !out.status.success(),
        "start-msg succeeded with port {} taken",
        i.ports.imap
    );
    let err = stderr(&out);
    assert!(err.contains("imap"), "{err}");
    assert!(err.contains(&i.ports.imap.to_string()), "{err}");
    assert!(err.contains("service.imap.port"), "{err}");
    assert!(err.contains("log/imap/imap"), "{err}");
    // The others still started.
    assert!(greeting(i.ports.pop).unwrap().starts_with("+OK"));
}

#[test]
fn a_killed_daemon_is_restarted_and_a_second_death_gives_up() {
    let i = suite(&[]);
    assert_ok(&start(&i, &[]), "start-msg");
    let first = i.pid("imap").unwrap();
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    let t0 = Instant::now();
    assert!(
        wait_for(Duration::from_secs(5), || i
            .pid("imap")
            .is_some_and(|p| p != first)
            && greeting(i.ports.imap).is_some()),
        "imap was not restarted"
    );
    eprintln!(
        "imap serving again {} ms after SIGKILL",
        t0.elapsed().as_millis()
    );
    let status = stdout(&i.sbin("status-msg", &[]));
    let line = status.lines().find(|l| l.starts_with("imap ")).unwrap();
    assert!(
        line.split_whitespace().nth(4) == Some("1"),
        "restart count: {status}"
    );

    // A second death within local.autorestart.timeout: left down, loudly.
    let second = i.pid("imap").unwrap();
    kill(Pid::from_raw(second), Signal::SIGKILL).unwrap();
    assert!(wait_for(Duration::from_secs(5), || stdout(
        &i.sbin("status-msg", &[])
    )
    .contains("given-up")));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        greeting(i.ports.imap).is_none(),
        "imap was restarted after its second death"
    );
    let log = std::fs::read_to_string(i.data.join("log/watcher/watcher")).unwrap();
    assert!(log.contains("Critical: imap failed twice"), "{log}");
    // The administrator starts it again by hand.
    assert_ok(&start(&i, &["imap"]), "start-msg imap after giving up");
    assert!(greeting(i.ports.imap).is_some());
}

#[test]
fn a_daemon_that_stops_answering_its_probe_is_restarted() {
    let i = suite(&[]);
    assert_ok(&start(&i, &[]), "start-msg");
    let wedged = i.pid("pop").unwrap();
    kill(Pid::from_raw(wedged), Signal::SIGUSR1).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || i
            .pid("pop")
            .is_some_and(|p| p != wedged)
            && greeting(i.ports.pop).is_some_and(|g| g.starts_with("+OK"))),
        "a wedged pop was not restarted"
    );
    let log = std::fs::read_to_string(i.data.join("log/watcher/watcher")).unwrap();
    assert!(log.contains("no answer to its probe"), "{log}");
}

#[test]
fn without_autorestart_a_dead_daemon_stays_down() {
    let i = suite(&[("local.autorestart", "no")]);
    assert_ok(&start(&i, &[]), "start-msg");
    let pid = i.pid("imap").unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert!(wait_for(Duration::from_secs(5), || stdout(
        &i.sbin("status-msg", &[])
    )
    .contains("failed")));
    std::thread::sleep(Duration::from_secs(1));
    assert!(greeting(i.ports.imap).is_none());
}

#[test]
fn in_ha_mode_the_watcher_exits_when_it_gives_up() {
    let i = suite(&[]);
    assert_ok(&start(&i, &["ha"]), "start-msg ha");
    let watcher = i.pid("watcher").unwrap();
    for _ in 0..2 {
        let pid = i.pid("imap").unwrap();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        wait_for(Duration::from_secs(5), || {
            i.pid("imap").is_some_and(|p| p != pid)
        });
    }
    assert!(
        wait_for(Duration::from_secs(10), || kill(
            Pid::from_raw(watcher),
            None
        )
        .is_err()
            || !i.data.join("run/watcher.sock").exists()),
        "the HA watcher did not exit"
    );
    assert!(
        wait_for(Duration::from_secs(5), || greeting(i.ports.pop).is_none()),
        "pop left running"
    );
}

#[test]
fn the_boot_script_starts_reports_and_stops() {
    let i = suite(&[]);
    let script = i.base.join("lib/Epistle_MsgSvr");
    let run = |arg: &str| {
        std::process::Command::new(&script)
            .arg(arg)
            .env_remove("MSG_SVR_BASE")
            .output()
            .unwrap()
    };
    assert_ok(&run("start"), "Epistle_MsgSvr start");
    assert!(greeting(i.ports.imap).is_some());
    let status = run("status");
    assert!(stdout(&status).contains("imap"), "{}", stdout(&status));
    assert_ok(&run("restart"), "Epistle_MsgSvr restart");
    assert!(greeting(i.ports.imap).is_some());
    assert_ok(&run("stop"), "Epistle_MsgSvr stop");
    assert!(greeting(i.ports.imap).is_none());
    assert_eq!(run("status").status.code(), Some(3));
}

#[test]
fn hup_reloads_the_log_level() {
    let i = suite(&[]);
    assert_ok(&start(&i, &[]), "start-msg");
    let log = i.data.join("log/imap/imap");
    let read = || std::fs::read_to_string(&log).unwrap();
    // At the default level (Notice) a connection is not logged.
    greeting(i.ports.imap).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!read().contains("connection from"), "{}", read());
    assert_ok(
        &i.configutil(&["-o", "logfile.imap.loglevel", "-v", "Debug"]),
        "configutil",
    );
    // One HUP to the watcher reaches every service.
    kill(Pid::from_raw(i.pid("watcher").unwrap()), Signal::SIGHUP).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || read()
            .contains("configuration reloaded")),
        "{}",
        read()
    );
    greeting(i.ports.imap).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || read()
            .contains("Network Information: connection from")),
        "{}",
        read()
    );
}

/// As root, a daemon binds its port and then runs as the configured system
/// user. (Run as another user there is no privilege to drop, and the test
/// has nothing to check.)
#[test]
fn daemons_started_as_root_drop_to_the_system_user() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: privilege drop not exercised");
        return;
    }
    let i = Install::new();
    i.add_standin("imapd");
    i.add_standin("popd");
    // The system user must be able to reach its files.
    std::fs::set_permissions(
        i.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let state = i.state();
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap();
    let my_group = nix::unistd::Group::from_gid(me.gid).unwrap().unwrap();
    let state = state
        .replace(
            &format!("SYSTEM_USER = {}", me.name),
            "SYSTEM_USER = nobody",
        )
        .replace(
            &format!("SYSTEM_GROUP = {}", my_group.name),
            "SYSTEM_GROUP = nogroup",
        );
    assert_ok(
        &i.configure_with(&state, &[]),
        "configure as nobody:nogroup",
    );
    assert_ok(&start(&i, &[]), "start-msg");
    let pid = i.pid("imap").unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == nobody.uid.to_string()),
        "imap still runs as {uid_line}"
    );
    assert!(greeting(i.ports.imap).unwrap().starts_with("* OK"));
    assert_ok(&i.sbin("stop-msg", &[]), "stop-msg");
}

/// The loopback TCP port answers status, and refuses control: anyone on the
/// host can reach a TCP port.
#[test]
fn the_watcher_port_answers_status_only() {
    use epistle_ipc::frame;
    use epistle_ipc::watcher::{Reply, Request};
    let i = suite(&[]);
    assert_ok(&start(&i, &[]), "start-msg");
    let ask = |req: &Request| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", i.ports.watcher)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        frame::write_blocking(&mut s, req).unwrap();
        frame::read_blocking::<Reply>(&mut s).unwrap()
    };
    match ask(&Request::Status) {
        Reply::Status(st) => {
            let imap = st.services.iter().find(|s| s.name == "imap").unwrap();
            assert_eq!(imap.state, "running");
            assert_eq!(imap.pid, i.pid("imap").map(|p| p as u32));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ask(&Request::Shutdown { force: true }),
        Reply::Refused { .. }
    ));
    assert!(
        greeting(i.ports.imap).is_some(),
        "a TCP client stopped the suite"
    );
}
