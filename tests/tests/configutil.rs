//! configutil against a configured installation.

use epistle_tests::{Install, assert_ok, stderr, stdout};
use std::process::Command;

#[test]
fn twenty_concurrent_writers_lose_nothing() {
    let i = Install::configured();
    let children: Vec<_> = (0..20)
        .map(|n| {
            // Half go to msg.conf, half to local.conf.
            let (name, value) = if n % 2 == 0 {
                (format!("logfile.svc{n}.maxlogfiles"), format!("{}", n + 1))
            } else {
                (format!("local.probe.svc{n}.timeout"), format!("{}", n + 1))
            };
            Command::new(i.base.join("sbin/configutil"))
                .args(["-o", &name, "-v", &value])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for n in 0..20 {
        let name = if n % 2 == 0 {
            format!("logfile.svc{n}.maxlogfiles")
        } else {
            format!("local.probe.svc{n}.timeout")
        };
        let out = i.configutil(&["-o", &name]);
        assert_ok(&out, "configutil -o");
        assert_eq!(stdout(&out).trim(), format!("{}", n + 1), "{name}");
    }
    // The values set at configure time survived too.
    assert_eq!(
        stdout(&i.configutil(&["-o", "local.hostname"])).trim(),
        "mail.example.com"
    );
}

#[test]
fn typed_values_are_validated() {
    let i = Install::configured();
    let before = std::fs::read_to_string(i.data.join("config/msg.conf")).unwrap();
    for (name, bad) in [
        ("service.imap.port", "70000"),
        ("service.imap.port", "imap"),
        ("local.autorestart", "perhaps"),
        ("logfile.imap.maxlogfilesize", "12Q"),
        ("logfile.imap.loglevel", "chatty"),
    ] {
        let out = i.configutil(&["-o", name, "-v", bad]);
        assert!(!out.status.success(), "{name}={bad} was accepted");
        assert!(
            stderr(&out).contains(name),
            "error does not name {name}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string(i.data.join("config/msg.conf")).unwrap(),
        before
    );
    let out = i.configutil(&["-o", "service.imap.prot"]);
    assert!(
        stderr(&out).contains("did you mean service.imap.port"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn set_show_default_clear_and_mark() {
    let i = Install::configured();
    assert_ok(
        &i.configutil(&["-o", "service.http.port", "-v", "8080"]),
        "set",
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port"])).trim(),
        "8080"
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port", "-H"])).trim(),
        "80"
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port", "-m"])).trim(),
        "8080 [NOT REFRESHABLE]"
    );
    assert_ok(
        &i.configutil(&["-o", "service.http.port", "-v", ""]),
        "clear",
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port"])).trim(),
        "80"
    );
    assert_ok(
        &i.configutil(&["-o", "service.imap.banner", "-v", "%h says \"hi\""]),
        "set text",
    );
    let listed = stdout(&i.configutil(&["-p", "service.imap.banner", "-m"]));
    assert_eq!(
        listed.trim(),
        "service.imap.banner = \"%h says \\\"hi\\\"\" [REFRESHABLE]"
    );
}

#[test]
fn prefix_lists_only_that_prefix() {
    let i = Install::configured();
    assert_ok(
        &i.configutil(&["-o", "logfile.imap.loglevel", "-v", "Debug"]),
        "set",
    );
    let out = stdout(&i.configutil(&["-p", "logfile."]));
    assert_eq!(out.trim(), "logfile.imap.loglevel = Debug");
    let all = stdout(&i.configutil(&[]));
    assert!(all.lines().count() > 40, "{all}");
    assert!(all.contains("service.imap.port = "));
    assert!(all.contains("logfile.imap.loglevel = Debug"));
    let imap = stdout(&i.configutil(&["-p", "service.imap"]));
    assert!(
        imap.lines().all(|l| l.starts_with("service.imap")),
        "{imap}"
    );
}

#[test]
fn import_is_all_or_nothing() {
    let i = Install::configured();
    let good = i.dir.path().join("good");
    std::fs::write(
        &good,
        "service.http.port = 8081\nlocal.autorestart.timeout = 300\n# comment\n",
    )
    .unwrap();
    assert_ok(&i.configutil(&["-i", good.to_str().unwrap()]), "import");
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port"])).trim(),
        "8081"
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "local.autorestart.timeout"])).trim(),
        "300"
    );

    let bad = i.dir.path().join("bad");
    std::fs::write(&bad, "service.http.port = 8082\nservice.pop.port = lots\n").unwrap();
    let out = i.configutil(&["-i", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("service.pop.port"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port"])).trim(),
        "8081"
    );

    std::fs::write(&bad, "service.http.port = 8082\nnot a line\n").unwrap();
    let out = i.configutil(&["-i", bad.to_str().unwrap()]);
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
}
