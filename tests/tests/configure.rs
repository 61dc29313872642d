//! configure (silent), useconfig and the layout they leave.

use epistle_tests::{Install, assert_ok, stderr, stdout};

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn entries(dir: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}

#[test]
fn silent_configure_lays_out_the_installation() {
    let i = Install::new();
    for d in [
        "sbin/configure",
        "sbin/configutil",
        "sbin/start-msg",
        "lib/watcher",
        "lib/Epistle_MsgSvr",
        "lib/config-templates/mappings",
    ] {
        assert!(i.base.join(d).exists(), "{d} missing after install.sh");
    }
    i.configure();
    assert_eq!(std::fs::read_link(i.base.join("data")).unwrap(), i.data);
    assert_eq!(
        std::fs::read_link(i.base.join("config")).unwrap(),
        i.data.join("config")
    );
    assert_eq!(
        std::fs::read_link(i.base.join("log")).unwrap(),
        i.data.join("log")
    );
    for d in [
        "queue",
        "store/mboxlist",
        "store/partition/primary",
        "run",
        "setup",
    ] {
        assert!(i.data.join(d).is_dir(), "{d} missing");
    }
    let logs = entries(&i.base.join("install"), "configure_");
    let log = logs
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("configure log");
    let text = read(log);
    assert!(text.contains("Configuration complete"), "{text}");
    assert!(
        !text.contains("test password"),
        "the log shows the password"
    );
    let state_dir = logs
        .iter()
        .find(|p| p.is_dir())
        .expect("configure_TS directory");
    let state = read(&state_dir.join("saveState"));
    assert!(state.contains("POSTMASTER = pma@example.com"));
    let setup_copy = i
        .data
        .join("setup")
        .join(state_dir.file_name().unwrap())
        .join("saveState");
    assert_eq!(read(&setup_copy), state);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state_dir.join("saveState"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Templates were instantiated.
    let aliases = read(&i.data.join("config/aliases"));
    assert!(aliases.contains("postmaster: pma@example.com"), "{aliases}");
    assert!(
        read(&i.data.join("config/server-cert.pem")).starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(read(&i.data.join("config/msg.conf.defaults")).contains("service.imap.port = 143"));
    // configutil sees what configure wrote.
    assert_eq!(
        stdout(&i.configutil(&["-o", "local.defdomain"])).trim(),
        "example.com"
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.imap.port"])).trim(),
        i.ports.imap.to_string()
    );
}

#[test]
fn a_saved_state_configures_a_second_host_identically() {
    let first = Install::new();
    first.configure();
    let saved = entries(&first.base.join("install"), "configure_")
        .into_iter()
        .find(|p| p.is_dir())
        .unwrap()
        .join("saveState");
    let second = Install::new();
    // Edited as the guide says: here only the data directory changes.
    let edited = read(&saved).replace(
        &format!("CONFIG_DATA_DIR = {}", first.data.display()),
        &format!("CONFIG_DATA_DIR = {}", second.data.display()),
    );
    assert_ok(
        &second.configure_with(&edited, &[]),
        "configure from saveState",
    );
    for f in [
        "msg.conf",
        "local.conf",
        "aliases",
        "mappings",
        "imta.cnf",
        "msg.conf.defaults",
    ] {
        assert_eq!(
            read(&first.data.join("config").join(f)),
            read(&second.data.join("config").join(f)),
            "{f} differs"
        );
    }
}

#[test]
fn invalid_answers_are_named_and_change_nothing() {
    let i = Install::new();
    let good = i.state();
    let cases = [
        (
            "DEFAULT_DOMAIN",
            good.replace(
                "DEFAULT_DOMAIN = example.com",
                "DEFAULT_DOMAIN = not a domain",
            ),
        ),
        (
            "POSTMASTER",
            good.replace(
                "POSTMASTER = pma@example.com",
                "POSTMASTER = postmaster@example.com",
            ),
        ),
        (
            "POSTMASTER",
            good.replace("POSTMASTER = pma@example.com", "POSTMASTER = pma"),
        ),
        (
            "HOSTNAME",
            good.replace("HOSTNAME = mail.example.com", "HOSTNAME = mail"),
        ),
        ("line 3", {
            let mut lines: Vec<&str> = good.lines().collect();
            lines.insert(2, "this line is wrong");
            lines.join("\n")
        }),
        (
            "COMPONENTS",
            good.replace("COMPONENTS = mta,store,webmail", "COMPONENTS = store"),
        ),
        (
            "service.imap.port",
            good.replace(
                &format!("param.service.imap.port = {}", i.ports.imap),
                "param.service.imap.port = 99999",
            ),
        ),
    ];
    for (named, state) in cases {
        let out = i.configure_with(&state, &[]);
        assert!(!out.status.success(), "accepted a state with a bad {named}");
        assert!(
            stderr(&out).contains(named),
            "error does not name {named}:\n{}",
            stderr(&out)
        );
        assert!(
            !i.base.join("config").exists(),
            "a failed configure left config behind"
        );
    }
    let unqualified = i.configure_with(
        &good.replace("HOSTNAME = mail.example.com", "HOSTNAME = mail"),
        &[],
    );
    assert!(
        stderr(&unqualified).contains("/etc/hosts"),
        "{}",
        stderr(&unqualified)
    );
}

#[test]
fn state_needs_nodisplay_and_noconsole() {
    let i = Install::new();
    let path = i.dir.path().join("s");
    std::fs::write(&path, i.state()).unwrap();
    let out = i.sbin("configure", &["-state", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("-nodisplay and -noconsole"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_existing_configuration_is_not_overwritten_unless_forced() {
    let i = Install::new();
    i.configure();
    assert_ok(
        &i.configutil(&["-o", "service.http.port", "-v", "8080"]),
        "set",
    );
    let again = i.configure_with(&i.state(), &[]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("overwrite"), "{}", stderr(&again));
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port"])).trim(),
        "8080"
    );
    assert_ok(
        &i.configure_with(&i.state(), &["-force"]),
        "configure -force",
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port"])).trim(),
        "80"
    );
}

#[test]
fn useconfig_points_a_second_node_at_the_shared_configuration() {
    let first = Install::new();
    first.configure();
    let ts = entries(&first.base.join("install"), "configure_")
        .into_iter()
        .find(|p| p.is_dir())
        .unwrap();
    let setup_copy = first.data.join("setup").join(ts.file_name().unwrap());
    let second = Install::new();
    let out = second.sbin("useconfig", &[setup_copy.to_str().unwrap()]);
    assert_ok(&out, "useconfig");
    assert_eq!(
        std::fs::read_link(second.base.join("config")).unwrap(),
        first.data.join("config")
    );
    assert_eq!(
        stdout(&second.configutil(&["-o", "local.hostname"])).trim(),
        "mail.example.com"
    );
    // A node already pointing elsewhere needs -force.
    let third = Install::new();
    third.configure();
    let out = third.sbin("useconfig", &[setup_copy.to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("-force"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn interactive_configure_asks_and_takes_defaults() {
    use std::io::Write;
    let i = Install::new();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap();
    let group = nix::unistd::Group::from_gid(user.gid).unwrap().unwrap();
    // One answer per question; empty lines take the bracketed default.
    let answers = [
        i.data.display().to_string(), // data directory
        "mail".into(),                // not qualified: asked again
        "mail.example.org".into(),
        "store".into(), // store without the MTA: asked again
        String::new(),  // components: default
        user.name.clone(),
        group.name.clone(),
        String::new(),                   // configuration directory: embedded
        String::new(),                   // user/group directory: embedded
        String::new(),                   // suffix
        "postmaster@example.org".into(), // refused
        "pma@example.org".into(),
        "short".into(), // too short: asked again
        "long enough password".into(),
        "long enough password".into(),
        String::new(), // domain: example.org from the host name
        String::new(), // organization DN
        String::new(), // TLS: generate
        String::new(), // configure now: yes
    ];
    let mut child = std::process::Command::new(i.base.join("sbin/configure"))
        .arg("-nodisplay")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all((answers.join("\n") + "\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out, "interactive configure");
    let text = stdout(&out);
    assert!(
        text.contains("[/var/opt/epistle]"),
        "defaults are not shown in brackets:\n{text}"
    );
    assert!(text.contains("not a fully qualified host name"), "{text}");
    assert!(text.contains("needs the MTA"), "{text}");
    assert!(
        text.contains("must not begin with \"postmaster\""),
        "{text}"
    );
    assert!(
        text.contains("Default e-mail domain [example.org]"),
        "{text}"
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "local.defdomain"])).trim(),
        "example.org"
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "local.orgdn"])).trim(),
        "o=example.org,o=usergroup"
    );
}

#[test]
fn interactive_configure_stops_cleanly_when_input_ends() {
    let i = Install::new();
    let out = std::process::Command::new(i.base.join("sbin/configure"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert!(!i.base.join("config").exists());
}

#[test]
fn reinstalling_upgrades_programs_and_keeps_the_configuration() {
    let i = Install::new();
    i.configure();
    assert_ok(
        &i.configutil(&["-o", "service.http.port", "-v", "8080"]),
        "set",
    );
    let out = std::process::Command::new("bash")
        .arg(epistle_tests::repo_root().join("install/install.sh"))
        .args(["--no-build", "--prefix"])
        .arg(&i.base)
        .arg("--bindir")
        .arg(epistle_tests::bin_dir())
        .output()
        .unwrap();
    assert_ok(&out, "install.sh again");
    assert!(
        stdout(&out).contains("Kept the existing configuration"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        stdout(&i.configutil(&["-o", "service.http.port"])).trim(),
        "8080"
    );
    assert_eq!(
        std::fs::read_link(i.base.join("config")).unwrap(),
        i.data.join("config")
    );
}

/// As root, configure refuses a data directory the system user could not
/// reach, and says which directory to open.
#[test]
fn the_system_user_must_reach_the_data_directory() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: nothing to check");
        return;
    }
    let i = Install::new();
    std::fs::set_permissions(
        i.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap();
    let group = nix::unistd::Group::from_gid(me.gid).unwrap().unwrap();
    let state = i
        .state()
        .replace(
            &format!("SYSTEM_USER = {}", me.name),
            "SYSTEM_USER = nobody",
        )
        .replace(
            &format!("SYSTEM_GROUP = {}", group.name),
            "SYSTEM_GROUP = nogroup",
        );
    let out = i.configure_with(&state, &[]);
    assert!(!out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach") && stderr(&out).contains("chmod o+x"),
        "{}",
        stderr(&out)
    );
    assert!(!i.base.join("config").exists());
}
