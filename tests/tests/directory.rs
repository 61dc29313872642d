//! One suite, two backends: every lookup the services make, run against
//! the embedded LDIF directory and against a real OpenLDAP slapd loaded
//! with the same LDIF, for schema 2 (one tree) and schema 1 (DC tree).

use std::sync::Arc;
use std::time::Duration;

use epistle_directory::cache::Cache;
use epistle_directory::embedded::EmbeddedDirectory;
use epistle_directory::ldap::{LdapDirectory, LdapSettings};
use epistle_directory::model::DeliveryOption;
use epistle_directory::verified::VerifiedLogins;
use epistle_directory::{
    Auth, Backend, Delivery, Denied, DirError, Directory, Limit, Recipient, Schema, Settings,
    Status,
};
use epistle_tests::slapd::{ROOT_DN, ROOT_PW, Slapd};

fn fixture() -> std::path::PathBuf {
    epistle_tests::repo_root().join("tests/fixtures/directory.ldif")
}

fn settings(schema: Schema) -> Settings {
    let root = if schema == Schema::Two {
        "o=usergroup"
    } else {
        "o=internet"
    };
    Settings::for_schema(schema, root, "example.com")
}

fn embedded(schema: Schema) -> (tempfile::TempDir, Directory) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.ldif");
    std::fs::copy(fixture(), &path).unwrap();
    let backend = Backend::Embedded(Arc::new(EmbeddedDirectory::open(&path).unwrap()));
    (
        dir,
        Directory::new(backend, settings(schema), Cache::disabled()),
    )
}

fn ldap_settings(urls: Vec<String>) -> LdapSettings {
    LdapSettings {
        urls,
        bind_dn: ROOT_DN.into(),
        bind_pw: ROOT_PW.into(),
        timeout: Duration::from_secs(3),
        pool_size: 2,
        starttls: false,
        check_cert: true,
    }
}

fn slapd_with_fixture() -> Slapd {
    let s = Slapd::start();
    s.ldapadd(&fixture());
    s
}

fn ldap(slapd: &Slapd, schema: Schema, cache: Cache) -> Directory {
    let backend = Backend::Ldap(Arc::new(
        LdapDirectory::new(ldap_settings(vec![slapd.url()])).unwrap(),
    ));
    Directory::new(backend, settings(schema), cache)
}

fn user(r: Option<Recipient>) -> Box<epistle_directory::User> {
    match r {
        Some(Recipient::User(u)) => u,
        other => panic!("expected a user, got {other:?}"),
    }
}

fn group(r: Option<Recipient>) -> Box<epistle_directory::Group> {
    match r {
        Some(Recipient::Group(g)) => g,
        other => panic!("expected a group, got {other:?}"),
    }
}

async fn suite(d: &Directory) {
    // Domains, aliases and status.
    let dom = d.domain("example.com").await.unwrap().expect("example.com");
    assert_eq!(dom.canonical, "example.com");
    assert_eq!(dom.base_dn.to_lowercase(), "o=example.com,o=usergroup");
    assert_eq!(dom.status, Status::Active);
    let alias = d
        .domain("EXAMPLE.NET")
        .await
        .unwrap()
        .expect("alias example.net");
    assert_eq!(alias.canonical, "example.com");
    assert!(d.domain("nowhere.example").await.unwrap().is_none());
    assert!(d.domain("not a domain").await.unwrap().is_none());
    assert_eq!(
        d.domain("inactive.test").await.unwrap().unwrap().status,
        Status::Inactive
    );

    // Users by login: uid, uid@domain, uid@alias.
    let joe = d.user_by_login("joe").await.unwrap().expect("joe");
    assert_eq!(joe.uid, "joe");
    assert_eq!(joe.mail.as_deref(), Some("joe@example.com"));
    assert_eq!(joe.alternates, ["joseph@example.com"]);
    assert_eq!(joe.equivalents, ["jb@example.com"]);
    assert_eq!(joe.mail_host.as_deref(), Some("store1.example.com"));
    assert_eq!(joe.disk_quota, Limit::Max(10 << 20));
    assert_eq!(joe.message_quota, Limit::Max(1000));
    assert_eq!(joe.delivery, [DeliveryOption::Mailbox]);
    assert!(joe.sieve.as_deref().unwrap().contains("fileinto"));
    assert_eq!(joe.autoreply.subject.as_deref(), Some("Away"));
    assert_eq!(joe.autoreply.timeout_hours, Some(24));
    for login in ["joe@example.com", "JOE@example.com", "joe@example.net"] {
        let u = d
            .user_by_login(login)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{login}"));
        assert_eq!(u.dn.to_lowercase(), joe.dn.to_lowercase(), "{login}");
    }
    assert!(d.user_by_login("nobody").await.unwrap().is_none());
    assert!(
        d.user_by_login("joe@nowhere.example")
            .await
            .unwrap()
            .is_none()
    );

    // Filter injection: crafted logins match nobody.
    for hostile in [
        "*",
        "*)(uid=*",
        "joe)(|(uid=*",
        "*)(|(objectClass=*",
        "j*",
        "\\2a",
        "joe\u{0}",
        "(uid=joe)",
    ] {
        assert!(
            d.user_by_login(hostile).await.unwrap().is_none(),
            "login {hostile:?} found someone"
        );
        assert!(
            matches!(
                d.authenticate(hostile, "secret").await.unwrap(),
                Auth::Denied(_)
            ),
            "login {hostile:?} authenticated"
        );
        assert!(
            d.recipient(&format!("{hostile}@example.com"))
                .await
                .unwrap()
                .is_none_or(|r| match r {
                    Recipient::User(u) => u.uid == "catchall",
                    Recipient::Group(_) => false,
                })
        );
    }

    // Addresses: mail, alternate, equivalent, alias domain, catch-all.
    for a in [
        "joe@example.com",
        "joseph@example.com",
        "jb@example.com",
        "JOE@EXAMPLE.NET",
        "<joe@example.com>",
    ] {
        assert_eq!(user(d.recipient(a).await.unwrap()).uid, "joe", "{a}");
    }
    assert_eq!(
        user(d.recipient("someone-else@example.com").await.unwrap()).uid,
        "catchall"
    );
    assert!(d.recipient("joe@nowhere.example").await.unwrap().is_none());
    assert!(d.recipient("no-at-sign").await.unwrap().is_none());

    // Delivery options and quotas.
    let ann = user(d.recipient("ann@example.com").await.unwrap());
    assert_eq!(
        ann.delivery,
        [DeliveryOption::Forward, DeliveryOption::Mailbox]
    );
    assert_eq!(ann.forwarding, ["ann@elsewhere.example.org"]);
    assert_eq!(
        ann.disk_quota,
        Limit::Max(0),
        "mailQuota 0 means nothing allowed"
    );
    assert_eq!(ann.message_quota, Limit::Unlimited);

    // Groups: static members, nested group with a loop, dynamic group.
    let staff = group(d.recipient("staff@example.com").await.unwrap());
    assert_eq!(staff.allowed_broadcasters, ["mailto:joe@example.com"]);
    assert_eq!(staff.errors_to.as_deref(), Some("joe@example.com"));
    let mut members = d.expand(&staff).await.unwrap();
    members.sort();
    assert_eq!(
        members,
        ["ann@example.com", "joe@example.com", "partner@example.org"]
    );
    let mut dept = d
        .expand(&group(d.recipient("dept42@example.com").await.unwrap()))
        .await
        .unwrap();
    dept.sort();
    assert_eq!(
        dept,
        [
            "ann@example.com",
            "archive@example.org",
            "crypt5@example.com",
            "joe@example.com"
        ]
    );
    let closed = group(d.recipient("closed@example.com").await.unwrap());
    assert_eq!(closed.status.delivery(), Delivery::Reject);

    // Status: what SMTP and logins do.
    let held = user(d.recipient("held@example.com").await.unwrap());
    assert_eq!(held.status, Status::Hold);
    assert_eq!(held.status.delivery(), Delivery::Hold);
    assert_eq!(
        d.authenticate("held", "secret").await.unwrap(),
        Auth::Denied(Denied::NotActive(Status::Hold))
    );
    assert_eq!(
        d.authenticate("gone", "secret").await.unwrap(),
        Auth::Denied(Denied::NotActive(Status::Deleted))
    );
    let sleeper = d
        .user_by_login("sleeper@inactive.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sleeper.status,
        Status::Inactive,
        "the domain's status applies to its users"
    );
    assert_eq!(sleeper.status.delivery(), Delivery::TryLater);
    assert_eq!(
        d.authenticate("sleeper@inactive.test", "secret")
            .await
            .unwrap(),
        Auth::Denied(Denied::NotActive(Status::Inactive))
    );

    // Every password scheme.
    for uid in [
        "joe", "ann", "crypt5", "crypt6", "bcrypt", "md5", "pbkdf2", "argon",
    ] {
        match d.authenticate(uid, "secret").await.unwrap() {
            Auth::Ok(u) => assert_eq!(u.uid, uid),
            other => panic!("{uid}: {other:?}"),
        }
        assert_eq!(
            d.authenticate(uid, "Secret").await.unwrap(),
            Auth::Denied(Denied::BadPassword),
            "{uid}"
        );
        assert_eq!(
            d.authenticate(uid, "").await.unwrap(),
            Auth::Denied(Denied::BadPassword),
            "{uid}"
        );
    }
    assert_eq!(
        d.authenticate("nobody", "secret").await.unwrap(),
        Auth::Denied(Denied::NoSuchUser)
    );
    // A wrong password on an inactive account says "bad password", not
    // the account's state.
    assert_eq!(
        d.authenticate("held", "wrong").await.unwrap(),
        Auth::Denied(Denied::BadPassword)
    );
}

#[tokio::test]
async fn embedded_schema_2() {
    let (_dir, d) = embedded(Schema::Two);
    suite(&d).await;
}

#[tokio::test]
async fn embedded_schema_1() {
    let (_dir, d) = embedded(Schema::One);
    suite(&d).await;
}

#[tokio::test]
async fn ldap_schema_2() {
    let s = slapd_with_fixture();
    suite(&ldap(&s, Schema::Two, Cache::disabled())).await;
}

#[tokio::test]
async fn ldap_schema_1() {
    let s = slapd_with_fixture();
    suite(&ldap(&s, Schema::One, Cache::disabled())).await;
}

#[tokio::test]
async fn ldap_bind_authentication() {
    let s = slapd_with_fixture();
    let mut st = settings(Schema::Two);
    st.bind_auth = true;
    let backend = Backend::Ldap(Arc::new(
        LdapDirectory::new(ldap_settings(vec![s.url()])).unwrap(),
    ));
    let d = Directory::new(backend, st, Cache::disabled());
    // slapd checks {SSHA} itself when we bind as the user.
    assert!(matches!(
        d.authenticate("joe", "secret").await.unwrap(),
        Auth::Ok(_)
    ));
    assert_eq!(
        d.authenticate("joe", "wrong").await.unwrap(),
        Auth::Denied(Denied::BadPassword)
    );
}

#[tokio::test]
async fn ldap_fails_over_to_the_next_server() {
    let s = slapd_with_fixture();
    let dead = format!("ldap://127.0.0.1:{}", epistle_tests::free_port());
    let backend = Backend::Ldap(Arc::new(
        LdapDirectory::new(ldap_settings(vec![dead, s.url()])).unwrap(),
    ));
    let d = Directory::new(backend, settings(Schema::Two), Cache::disabled());
    assert_eq!(d.user_by_login("joe").await.unwrap().unwrap().uid, "joe");
}

#[tokio::test]
async fn an_unreachable_directory_is_a_temporary_failure() {
    let mut s = slapd_with_fixture();
    let d = ldap(&s, Schema::Two, Cache::disabled());
    assert!(d.user_by_login("joe").await.unwrap().is_some());
    s.stop();
    for r in [
        d.user_by_login("joe").await.map(|_| ()),
        d.recipient("joe@example.com").await.map(|_| ()),
        d.authenticate("joe", "secret").await.map(|_| ()),
    ] {
        match r {
            Err(e @ DirError::Unavailable(_)) => assert!(e.is_temporary()),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_cache_answers_without_the_directory() {
    let mut s = slapd_with_fixture();
    let d = ldap(&s, Schema::Two, Cache::new(Duration::from_secs(60), 1000));
    assert!(d.recipient("joe@example.com").await.unwrap().is_some());
    assert!(
        d.recipient("nobody-here@nowhere.example")
            .await
            .unwrap()
            .is_none()
    );
    s.stop();
    assert!(
        d.recipient("joe@example.com").await.unwrap().is_some(),
        "cached answer"
    );
    assert!(
        d.recipient("nobody-here@nowhere.example")
            .await
            .unwrap()
            .is_none(),
        "cached negative answer"
    );
    d.invalidate();
    assert!(d.recipient("joe@example.com").await.is_err());
}

#[tokio::test]
async fn the_embedded_file_is_reloaded_and_changed_atomically() {
    let (dir, d) = embedded(Schema::Two);
    let path = dir.path().join("directory.ldif");
    assert!(d.user_by_login("newbie").await.unwrap().is_none());
    // Someone edits the file: the next lookup sees it.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "\ndn: uid=newbie,ou=People,o=example.com,o=usergroup\nobjectClass: inetOrgPerson\nobjectClass: inetMailUser\n\
         uid: newbie\ncn: New\nsn: Bie\nmail: newbie@example.com\n",
    );
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, &text).unwrap();
    assert!(d.user_by_login("newbie").await.unwrap().is_some());
    // A broken edit keeps the last good directory in service.
    std::fs::write(&path, format!("{text}\nthis is not ldif\n")).unwrap();
    assert!(d.user_by_login("newbie").await.unwrap().is_some());
    let err = EmbeddedDirectory::open(&path).err().unwrap();
    let lines = text.lines().count();
    assert!(
        err.to_string().contains(&format!("line {}", lines + 2)),
        "{err}"
    );
    std::fs::write(&path, &text).unwrap();

    // Changes through the API from many threads at once lose nothing.
    let Backend::Embedded(e) = d.backend().clone() else {
        unreachable!()
    };
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut entry = epistle_directory::Entry::new(format!(
                    "uid=t{n},ou=People,o=example.com,o=usergroup"
                ));
                for (a, v) in [
                    ("objectClass", "inetOrgPerson"),
                    ("objectClass", "inetMailUser"),
                    ("cn", "T"),
                    ("sn", "T"),
                ] {
                    entry.add(a, v);
                }
                entry.add("uid", format!("t{n}"));
                entry.add("mail", format!("t{n}@example.com"));
                e.add(entry).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for n in 0..8 {
        assert!(
            d.user_by_login(&format!("t{n}")).await.unwrap().is_some(),
            "t{n} lost"
        );
    }
    // The file written is what ldapadd takes: parents first, valid LDIF.
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(epistle_directory::ldif::parse(&written).is_ok());
    assert!(
        matches!(
            e.delete("o=example.com,o=usergroup"),
            Err(DirError::Data(_))
        ),
        "deleted a non-leaf"
    );
    e.delete("uid=t0,ou=People,o=example.com,o=usergroup")
        .unwrap();
    assert!(d.user_by_login("t0").await.unwrap().is_none());
}

#[tokio::test]
async fn the_embedded_file_loads_into_slapd_unchanged() {
    // Moving to a real directory: the embedded file, as written by
    // Epistle, goes into slapd with ldapadd and gives the same answers.
    let (dir, d) = embedded(Schema::Two);
    let Backend::Embedded(e) = d.backend().clone() else {
        unreachable!()
    };
    let mut entry = epistle_directory::Entry::new("uid=moved,ou=People,o=example.com,o=usergroup");
    for (a, v) in [
        ("objectClass", "inetOrgPerson"),
        ("objectClass", "inetMailUser"),
        ("cn", "M"),
        ("sn", "M"),
        ("uid", "moved"),
    ] {
        entry.add(a, v);
    }
    entry.add("mail", "moved@example.com");
    e.add(entry).unwrap();
    let s = Slapd::start();
    s.ldapadd(&dir.path().join("directory.ldif"));
    let l = ldap(&s, Schema::Two, Cache::disabled());
    assert_eq!(
        user(l.recipient("moved@example.com").await.unwrap()).uid,
        "moved"
    );
    suite(&l).await;
}

#[tokio::test]
async fn search_templates_come_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.ldif");
    std::fs::copy(fixture(), &path).unwrap();
    let mut st = settings(Schema::Two);
    // Users log in with their address instead of their uid.
    st.user_template = "(&(objectClass=inetMailUser)(mail=%U@%V))".into();
    let backend = Backend::Embedded(Arc::new(EmbeddedDirectory::open(&path).unwrap()));
    let d = Directory::new(backend, st, Cache::disabled());
    assert_eq!(
        d.user_by_login("ann@example.com")
            .await
            .unwrap()
            .unwrap()
            .uid,
        "ann"
    );
    assert!(
        d.user_by_login("crypt5@example.com")
            .await
            .unwrap()
            .is_some()
    );
    let mut bad = settings(Schema::Two);
    bad.user_template = "(uid=%U".into();
    let backend = Backend::Embedded(Arc::new(EmbeddedDirectory::open(&path).unwrap()));
    let d = Directory::new(backend, bad, Cache::disabled());
    assert!(matches!(
        d.user_by_login("ann").await,
        Err(DirError::Data(_))
    ));
}

/// ldaps:// and StartTLS reach the directory; a certificate nobody vouches
/// for is refused unless local.ldapcheckcert is off.
#[tokio::test]
async fn ldap_over_tls() {
    let s = Slapd::start_tls();
    s.ldapadd(&fixture());
    let over = |url: String, starttls: bool, check_cert: bool| {
        let mut st = ldap_settings(vec![url]);
        st.starttls = starttls;
        st.check_cert = check_cert;
        Directory::new(
            Backend::Ldap(Arc::new(LdapDirectory::new(st).unwrap())),
            settings(Schema::Two),
            Cache::disabled(),
        )
    };
    let ldaps = format!("ldaps://127.0.0.1:{}", s.tls_port.unwrap());
    for d in [
        over(ldaps.clone(), false, false),
        over(s.url(), true, false),
    ] {
        assert!(matches!(
            d.authenticate("joe", "secret").await.unwrap(),
            Auth::Ok(_)
        ));
    }
    for d in [over(ldaps, false, true), over(s.url(), true, true)] {
        assert!(
            matches!(d.user_by_login("joe").await, Err(DirError::Unavailable(_))),
            "a self-signed certificate was trusted"
        );
    }
}

/// A remembered login (local.ugldap.authcachettl) answers only for the
/// password it was checked with against the hash the directory holds now:
/// once the password changes, the old one is refused at once.
#[tokio::test]
async fn remembered_logins_follow_a_password_change() {
    let (dir, d) = embedded(Schema::Two);
    let d = d.with_verified_logins(VerifiedLogins::new(Duration::from_secs(600), 100));
    for _ in 0..2 {
        assert!(matches!(
            d.authenticate("joe", "secret").await.unwrap(),
            Auth::Ok(_)
        ));
    }
    assert_eq!(
        d.authenticate("joe", "wrong").await.unwrap(),
        Auth::Denied(Denied::BadPassword)
    );
    let path = dir.path().join("directory.ldif");
    let ldif = std::fs::read_to_string(&path).unwrap();
    let old = "userPassword: {SSHA}lHFzXul4wnzRItssVcTnvXWRjNgBAgMEBQYHCA==";
    assert!(ldif.contains(old), "joe's password is not in the fixture");
    let new = format!(
        "userPassword: {}",
        epistle_directory::password::hash("changed").unwrap()
    );
    std::fs::write(&path, ldif.replace(old, &new)).unwrap();
    assert_eq!(
        d.authenticate("joe", "secret").await.unwrap(),
        Auth::Denied(Denied::BadPassword)
    );
    assert!(matches!(
        d.authenticate("joe", "changed").await.unwrap(),
        Auth::Ok(_)
    ));
}
