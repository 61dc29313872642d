//! dirbench: directory figures (a benchmark, not a test). Starts a private
//! slapd with N users, then prints authentications per second and lookup
//! latency (p50/p99) through the directory cache and without it, next to
//! the same search done by `ldapsearch`, and the same lookups on the
//! embedded directory.
//!
//!   cargo run --release -p epistle-tests --bin dirbench [-- USERS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use epistle_directory::cache::Cache;
use epistle_directory::embedded::EmbeddedDirectory;
use epistle_directory::ldap::{LdapDirectory, LdapSettings};
use epistle_directory::provision::{Layout, NewUser};
use epistle_directory::{Auth, Backend, Directory, Schema, Settings, ldif};
use epistle_tests::slapd::{ROOT_DN, ROOT_PW, Slapd};

fn settings() -> Settings {
    Settings::for_schema(Schema::Two, "o=usergroup", "example.com")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let total: Duration = times.iter().sum();
    println!(
        "{what:<44} p50 {:>8.1} us  p99 {:>8.1} us  ({:.0}/s)",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.len() as f64 / total.as_secs_f64()
    );
}

async fn lookups(d: &Directory, users: usize, rounds: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(rounds);
    for n in 0..rounds {
        let a = format!("user{}@example.com", n % users);
        let t = Instant::now();
        assert!(d.recipient(&a).await.unwrap().is_some(), "{a}");
        times.push(t.elapsed());
    }
    times
}

async fn auths(d: &Directory, uids: &[&str], rounds: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(rounds);
    for n in 0..rounds {
        let t = Instant::now();
        assert!(matches!(
            d.authenticate(uids[n % uids.len()], "bench secret")
                .await
                .unwrap(),
            Auth::Ok(_)
        ));
        times.push(t.elapsed());
    }
    times
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let users: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let slapd = Slapd::start();
    let layout = Layout {
        schema: Schema::Two,
        suffix: "o=usergroup".into(),
        dcroot: "o=usergroup".into(),
    };
    let org = "o=example.com,o=usergroup";
    // {SSHA} (what most migrated directories hold) and {ARGON2} (what
    // Epistle writes) of "bench secret".
    let ssha = ssha_hash("bench secret");
    let argon = epistle_directory::password::hash("bench secret").unwrap();
    let admin = NewUser {
        uid: "admin".into(),
        password_hash: argon.clone(),
        ..Default::default()
    };
    let mut entries = layout.base_entries("example.com", org, &admin);
    for n in 0..users {
        let hash = if n == 1 { argon.clone() } else { ssha.clone() };
        entries.push(
            NewUser {
                uid: format!("user{n}"),
                password_hash: hash,
                ..Default::default()
            }
            .entry(org, "example.com"),
        );
    }
    let text = ldif::write(&entries);
    let path = slapd.dir.path().join("bench.ldif");
    std::fs::write(&path, &text).unwrap();
    slapd.ldapadd(&path);
    println!(
        "{users} users in slapd and in the embedded directory; {} lookups each\n",
        2000
    );

    let ldap = |cache: Cache| {
        let l = LdapDirectory::new(LdapSettings {
            urls: vec![slapd.url()],
            bind_dn: ROOT_DN.into(),
            bind_pw: ROOT_PW.into(),
            timeout: Duration::from_secs(10),
            pool_size: 4,
            starttls: false,
            check_cert: true,
        })
        .unwrap();
        Directory::new(Backend::Ldap(Arc::new(l)), settings(), cache)
    };
    let uncached = ldap(Cache::disabled());
    let cached = ldap(Cache::new(Duration::from_secs(600), 100_000));
    lookups(&cached, users, users).await; // warm the cache
    report(
        "LDAP lookup by address, no cache",
        lookups(&uncached, users, 2000).await,
    );
    report(
        "LDAP lookup by address, through the cache",
        lookups(&cached, users, 2000).await,
    );

    let mut ls = Vec::new();
    for n in 0..200 {
        let t = Instant::now();
        let out = std::process::Command::new("ldapsearch")
            .args(["-x", "-LLL", "-H", &slapd.url(), "-D", ROOT_DN, "-w", ROOT_PW, "-b", org])
            .arg(format!("(|(mail=user{n}@example.com)(mailAlternateAddress=user{n}@example.com)(mailEquivalentAddress=user{n}@example.com))"))
            .output()
            .unwrap();
        assert!(out.status.success());
        ls.push(t.elapsed());
    }
    report("ldapsearch, same search (a process each)", ls);

    let ssha_uids: Vec<String> = (2..users.min(200)).map(|n| format!("user{n}")).collect();
    let ssha_refs: Vec<&str> = ssha_uids.iter().map(String::as_str).collect();
    report(
        "LDAP authentication {SSHA}, no cache",
        auths(&uncached, &ssha_refs, 1000).await,
    );
    report(
        "LDAP authentication {SSHA}, cached user lookup",
        auths(&cached, &ssha_refs, 1000).await,
    );
    report(
        "LDAP authentication {ARGON2} (new passwords)",
        auths(&cached, &["user1"], 50).await,
    );

    let emb_path = slapd.dir.path().join("embedded.ldif");
    EmbeddedDirectory::create(&emb_path, &entries).unwrap();
    let emb = Directory::new(
        Backend::Embedded(Arc::new(EmbeddedDirectory::open(&emb_path).unwrap())),
        settings(),
        Cache::disabled(),
    );
    report(
        "embedded lookup by address, no cache",
        lookups(&emb, users, 2000).await,
    );
    report(
        "embedded authentication {SSHA}",
        auths(&emb, &ssha_refs, 1000).await,
    );
}

/// An {SSHA} value made by slappasswd, OpenLDAP's own tool.
fn ssha_hash(pw: &str) -> String {
    let out = std::process::Command::new("slappasswd")
        .args(["-h", "{SSHA}", "-s", pw])
        .output()
        .expect("slappasswd (from the slapd package)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
