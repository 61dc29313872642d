//! comm_dssetup against a fresh slapd (standard schemas only): silent runs
//! for schema 1 and 2, the generated files, and a second run that finds
//! nothing to do.

use std::sync::Arc;

use epistle_directory::cache::Cache;
use epistle_directory::ldap::{LdapDirectory, LdapSettings};
use epistle_directory::{Backend, Directory, Filter, Schema, Scope, Settings};
use epistle_tests::slapd::{ROOT_DN, ROOT_PW, Slapd, dssetup_args};
use epistle_tests::{Install, assert_ok, stderr, stdout};

fn dssetup(i: &Install, tmp: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(i.base.join("sbin/comm_dssetup"))
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("MSG_SVR_BASE")
        .output()
        .unwrap()
}

fn ldap(s: &Slapd) -> LdapDirectory {
    LdapDirectory::new(LdapSettings {
        urls: vec![s.url()],
        bind_dn: ROOT_DN.into(),
        bind_pw: ROOT_PW.into(),
        timeout: std::time::Duration::from_secs(5),
        pool_size: 1,
        starttls: false,
        check_cert: true,
    })
    .unwrap()
}

#[tokio::test]
async fn schema_1_setup_then_the_directory_serves_epistle() {
    let slapd = Slapd::start_with(false);
    let i = Install::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = slapd.url();
    let owned = dssetup_args(&url, "1", true);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let out = dssetup(&i, tmp.path(), &args);
    assert_ok(&out, "comm_dssetup -t 1");
    let text = stdout(&out);
    assert!(text.contains("Schema Type               : 1"), "{text}");
    let files: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("dssetup_") && f.ends_with(".sh")),
        "{files:?}"
    );
    let ldif_file = files.iter().find(|f| f.ends_with(".ldif")).unwrap();
    let ldif_text = std::fs::read_to_string(tmp.path().join(ldif_file)).unwrap();
    assert!(
        ldif_text.contains("changetype: add") && ldif_text.contains("olcDbIndex"),
        "{ldif_text}"
    );

    // Schema, indexes and suffixes are in place.
    let l = ldap(&slapd);
    let any = Filter::Present("objectClass".into());
    let schemas = l
        .search("cn=schema,cn=config", Scope::One, &any)
        .await
        .unwrap();
    assert!(
        schemas
            .iter()
            .any(|s| s.get("cn").unwrap().ends_with("epistle-messaging"))
    );
    let db = l
        .search(
            "cn=config",
            Scope::One,
            &Filter::eq("olcSuffix", "o=usergroup"),
        )
        .await
        .unwrap();
    assert!(
        db[0]
            .get_all("olcDbIndex")
            .iter()
            .any(|v| v.starts_with("mailAlternateAddress")),
        "{:?}",
        db[0]
    );
    assert_eq!(
        l.search("o=internet", Scope::Base, &any)
            .await
            .unwrap()
            .len(),
        1
    );

    // Safe to run twice.
    let again = dssetup(&i, tmp.path(), &args);
    assert_ok(&again, "comm_dssetup a second time");
    assert!(
        stdout(&again).contains("nothing to change"),
        "{}",
        stdout(&again)
    );

    // The directory now takes Epistle's entries and answers its lookups.
    let fixture = epistle_tests::repo_root().join("tests/fixtures/directory.ldif");
    let body = std::fs::read_to_string(&fixture).unwrap();
    // The suffixes exist already: load the rest.
    let rest: String = body
        .split("\n\n")
        .filter(|rec| !rec.contains("dn: o=usergroup\n") && !rec.contains("dn: o=internet\n"))
        .collect::<Vec<_>>()
        .join("\n\n");
    let path = tmp.path().join("entries.ldif");
    std::fs::write(&path, rest).unwrap();
    slapd.ldapadd(&path);
    let settings = Settings::for_schema(Schema::One, "o=internet", "example.com");
    let d = Directory::new(Backend::Ldap(Arc::new(l)), settings, Cache::disabled());
    assert_eq!(
        d.user_by_login("joe@example.net")
            .await
            .unwrap()
            .unwrap()
            .uid,
        "joe"
    );
}

#[tokio::test]
async fn schema_2_setup_and_a_dry_run() {
    let slapd = Slapd::start_with(false);
    let i = Install::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = slapd.url();
    let owned = dssetup_args(&url, "2", false);
    let dry: Vec<&str> = owned.iter().map(String::as_str).collect();
    let out = dssetup(&i, tmp.path(), &dry);
    assert_ok(&out, "comm_dssetup -m no");
    assert!(
        stdout(&out).contains("No changes were made"),
        "{}",
        stdout(&out)
    );
    let l = ldap(&slapd);
    let any = Filter::Present("objectClass".into());
    assert!(
        l.search("o=usergroup", Scope::Base, &any)
            .await
            .unwrap()
            .is_empty(),
        "-m no changed the directory"
    );

    let owned = dssetup_args(&url, "2", true);
    let apply: Vec<&str> = owned.iter().map(String::as_str).collect();
    assert_ok(&dssetup(&i, tmp.path(), &apply), "comm_dssetup -t 2");
    assert_eq!(
        l.search("o=usergroup", Scope::Base, &any)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        l.search("o=internet", Scope::Base, &any)
            .await
            .unwrap()
            .is_empty(),
        "schema 2 needs no DC tree"
    );

    let bad = dssetup(&i, tmp.path(), &["-t", "3", "-w", "x"]);
    assert!(
        !bad.status.success() && stderr(&bad).contains("-t takes 1, 1.5 or 2"),
        "{}",
        stderr(&bad)
    );
    let wrong_pw = dssetup(&i, tmp.path(), &["-c", &url, "-w", "wrong", "-t", "2"]);
    assert!(!wrong_pw.status.success(), "accepted a wrong password");
}

#[tokio::test]
async fn interactive_questions_and_summary() {
    use std::io::Write;
    let slapd = Slapd::start_with(false);
    let i = Install::new();
    let tmp = tempfile::tempdir().unwrap();
    // continue, server, instance, manager DN, password, users/groups,
    // suffix, schema type, update schema, indexes, modify now.
    let answers = [
        "",
        &slapd.url(),
        "",
        "",
        ROOT_PW,
        "",
        "",
        "2",
        "",
        "",
        "yes",
    ]
    .join("\n")
        + "\n";
    let mut child = std::process::Command::new(i.base.join("sbin/comm_dssetup"))
        .env("TMPDIR", tmp.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out, "interactive comm_dssetup");
    let text = stdout(&out);
    for q in [
        "Please enter the directory manager DN [cn=Directory Manager]",
        "Please enter the Schema Type (1, 1.5, 2) [1]",
        "Here is a summary",
        "User/Group Root           : o=usergroup",
    ] {
        assert!(text.contains(q), "missing {q:?} in:\n{text}");
    }
    assert!(
        !text.contains("DC Tree base suffix"),
        "schema 2 asks no DC tree question"
    );
    let l = ldap(&slapd);
    assert_eq!(
        l.search(
            "o=usergroup",
            Scope::Base,
            &Filter::Present("objectClass".into())
        )
        .await
        .unwrap()
        .len(),
        1
    );
}
