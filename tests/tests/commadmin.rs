//! commadmin round trips on both backends: the embedded directory that
//! configure creates, and a slapd prepared with the same base entries.

use epistle_config::MsgSvrBase;
use epistle_directory::{Auth, Denied, Limit, Recipient, Status};
use epistle_tests::slapd::{ROOT_DN, ROOT_PW, Slapd, dssetup_args};
use epistle_tests::{Install, assert_ok, stderr, stdout};

const ADMIN: [&str; 4] = ["-D", "admin", "-w", "test password"];

fn commadmin(i: &Install, object: &str, action: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec![object, action];
    all.extend_from_slice(&ADMIN);
    all.extend_from_slice(args);
    i.sbin("commadmin", &all)
}

fn ok(i: &Install, object: &str, action: &str, args: &[&str]) -> String {
    let out = commadmin(i, object, action, args);
    assert_ok(&out, &format!("commadmin {object} {action} {args:?}"));
    stdout(&out)
}

async fn directory(i: &Install) -> epistle_directory::Directory {
    let base = MsgSvrBase::new(&i.base);
    let cfg = base.config_files().load().unwrap();
    epistle_directory::open(&base, &cfg).await.unwrap()
}

/// The same provisioning story on whichever backend `i` is configured with.
async fn round_trip(i: &Install) {
    // Refused: wrong password, or someone who is not an administrator.
    let out = i.sbin(
        "commadmin",
        &[
            "user", "search", "-D", "admin", "-w", "wrong", "-l", "admin",
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );

    ok(i, "domain", "create", &["-d", "example.org"]);
    let dup = commadmin(i, "domain", "create", &["-d", "example.org"]);
    assert!(!dup.status.success() && stderr(&dup).contains("already exists"));

    ok(
        i,
        "user",
        "create",
        &["-l", "joe", "-W", "joe secret", "-F", "Joe", "-L", "Bloggs"],
    );
    ok(
        i,
        "user",
        "create",
        &[
            "-l",
            "ann",
            "-W",
            "ann secret",
            "-L",
            "Other",
            "-n",
            "example.org",
            "-H",
            "store2.example.org",
        ],
    );
    let taken = commadmin(i, "user", "create", &["-l", "joe", "-W", "x"]);
    assert!(
        !taken.status.success() && stderr(&taken).contains("already exists"),
        "{}",
        stderr(&taken)
    );

    let d = directory(i).await;
    let joe = match d
        .authenticate("joe@example.com", "joe secret")
        .await
        .unwrap()
    {
        Auth::Ok(u) => u,
        other => panic!("{other:?}"),
    };
    assert_eq!(joe.mail.as_deref(), Some("joe@example.com"));
    assert!(
        joe.passwords()[0].starts_with("{ARGON2}"),
        "stored unhashed"
    );
    let ann = d.user_by_login("ann@example.org").await.unwrap().unwrap();
    assert_eq!(ann.mail_host.as_deref(), Some("store2.example.org"));

    // Another user cannot administer.
    let out = i.sbin(
        "commadmin",
        &[
            "user",
            "search",
            "-D",
            "joe",
            "-w",
            "joe secret",
            "-l",
            "joe",
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("not a member"),
        "{}",
        stderr(&out)
    );

    // Password, quota, status, forwarding, alternate address, mailHost.
    ok(
        i,
        "user",
        "modify",
        &[
            "-l",
            "joe",
            "-W",
            "new secret",
            "-H",
            "store9.example.com",
            "-A",
            "mailQuota:5M",
            "-A",
            "+mailAlternateAddress:jb@example.com",
            "-A",
            "mailDeliveryOption:forward",
            "-A",
            "+mailForwardingAddress:joe@elsewhere.example.net",
        ],
    );
    let d = directory(i).await;
    assert_eq!(
        d.authenticate("joe", "joe secret").await.unwrap(),
        Auth::Denied(Denied::BadPassword)
    );
    assert!(matches!(
        d.authenticate("joe", "new secret").await.unwrap(),
        Auth::Ok(_)
    ));
    let joe = match d.recipient("jb@example.com").await.unwrap() {
        Some(Recipient::User(u)) => u,
        other => panic!("{other:?}"),
    };
    assert_eq!(joe.disk_quota, Limit::Max(5 << 20));
    assert_eq!(joe.mail_host.as_deref(), Some("store9.example.com"));
    assert_eq!(joe.forwarding, ["joe@elsewhere.example.net"]);
    ok(
        i,
        "user",
        "modify",
        &["-l", "joe", "-A", "mailUserStatus:hold"],
    );
    assert_eq!(
        directory(i)
            .await
            .authenticate("joe", "new secret")
            .await
            .unwrap(),
        Auth::Denied(Denied::NotActive(Status::Hold))
    );
    ok(
        i,
        "user",
        "modify",
        &[
            "-l",
            "joe",
            "-A",
            "mailUserStatus:active",
            "-A",
            "-mailAlternateAddress:jb@example.com",
        ],
    );
    assert!(
        directory(i)
            .await
            .recipient("jb@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let bad = commadmin(
        i,
        "user",
        "modify",
        &["-l", "joe", "-A", "userPassword:plain"],
    );
    assert!(!bad.status.success() && stderr(&bad).contains("-W"));

    // Search shows the entry without its password.
    let found = ok(i, "user", "search", &["-l", "joe"]);
    assert!(
        found.contains("uid: joe") && !found.to_lowercase().contains("userpassword"),
        "{found}"
    );

    // Groups and members.
    ok(
        i,
        "group",
        "create",
        &[
            "-G",
            "staff",
            "-m",
            "joe@example.com",
            "-m",
            "partner@example.net",
        ],
    );
    ok(
        i,
        "group",
        "modify",
        &[
            "-G",
            "staff",
            "-m",
            "ann@example.org",
            "-M",
            "partner@example.net",
        ],
    );
    let d = directory(i).await;
    let staff = match d.recipient("staff@example.com").await.unwrap() {
        Some(Recipient::Group(g)) => g,
        other => panic!("{other:?}"),
    };
    let mut members = d.expand(&staff).await.unwrap();
    members.sort();
    assert_eq!(members, ["ann@example.org", "joe@example.com"]);

    // Administrators.
    ok(i, "admin", "create", &["-l", "ann", "-n", "example.org"]);
    assert_ok(
        &i.sbin(
            "commadmin",
            &[
                "admin",
                "search",
                "-D",
                "ann@example.org",
                "-w",
                "ann secret",
            ],
        ),
        "ann as admin",
    );
    ok(i, "admin", "delete", &["-l", "ann", "-n", "example.org"]);

    // A batch: one line per user; a bad line is named, the others done.
    let batch = i
        .dir
        .path()
        .join(format!("batch-{}", epistle_tests::free_port()));
    std::fs::write(
        &batch,
        "# new staff\n-l b1 -W \"b one secret\"\n-l \"bad uid\" -W x\n-l b2 -W b2-secret -F Bee\n",
    )
    .unwrap();
    let out = commadmin(i, "user", "create", &["-i", batch.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    let d = directory(i).await;
    assert!(matches!(
        d.authenticate("b1", "b one secret").await.unwrap(),
        Auth::Ok(_)
    ));
    assert!(matches!(
        d.authenticate("b2", "b2-secret").await.unwrap(),
        Auth::Ok(_)
    ));

    // Deleting marks, as the original: mail refused, logins refused.
    ok(i, "user", "delete", &["-l", "b2"]);
    ok(i, "group", "delete", &["-G", "staff"]);
    ok(i, "domain", "delete", &["-d", "example.org"]);
    let d = directory(i).await;
    assert_eq!(
        d.authenticate("b2", "b2-secret").await.unwrap(),
        Auth::Denied(Denied::NotActive(Status::Deleted))
    );
    assert!(
        d.recipient("staff@example.com")
            .await
            .unwrap()
            .is_none_or(|r| matches!(r, Recipient::User(_)))
    );
    assert_eq!(
        d.domain("example.org").await.unwrap().unwrap().status,
        Status::Deleted
    );
}

#[tokio::test]
async fn commadmin_on_the_embedded_directory() {
    let i = Install::new();
    i.configure();
    assert!(
        i.data.join("directory/directory.ldif").exists(),
        "configure made no embedded directory"
    );
    round_trip(&i).await;
}

/// The whole story on LDAP: comm_dssetup prepares a fresh slapd,
/// configure adds the default domain and administrators, commadmin
/// provisions.
#[tokio::test]
async fn commadmin_on_ldap() {
    let slapd = Slapd::start_with(false);
    let i = Install::new();
    let url = slapd.url();
    let args = dssetup_args(&url, "2", true);
    let setup = i.sbin(
        "comm_dssetup",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_ok(&setup, "comm_dssetup");
    let state = i.state().replace(
        "UG_DIRECTORY = embedded",
        &format!("UG_DIRECTORY = {url}\nUG_DIRECTORY_BINDDN = {ROOT_DN}\nUG_DIRECTORY_PASSWORD = \"{ROOT_PW}\""),
    );
    let out = i.configure_with(&state, &[]);
    assert_ok(&out, "configure against slapd");
    assert!(
        stdout(&out).contains("entries added to the directory"),
        "{}",
        stdout(&out)
    );
    assert!(!i.data.join("directory/directory.ldif").exists());
    assert_eq!(
        stdout(&i.configutil(&["-o", "local.schemaversion"])).trim(),
        "2"
    );
    round_trip(&i).await;
}

#[test]
fn configure_against_an_unreachable_directory_changes_nothing() {
    let i = Install::new();
    let dead = format!("ldap://127.0.0.1:{}", epistle_tests::free_port());
    let state = i.state().replace(
        "UG_DIRECTORY = embedded",
        &format!(
            "UG_DIRECTORY = {dead}\nUG_DIRECTORY_BINDDN = {ROOT_DN}\nUG_DIRECTORY_PASSWORD = x"
        ),
    );
    let out = i.configure_with(&state, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("UG_DIRECTORY"), "{}", stderr(&out));
    assert!(
        !i.base.join("config").exists(),
        "configure changed the host"
    );
}
