//! NAME
//!   comm_dssetup - prepare an LDAP directory for Epistle
//!
//! SYNOPSIS
//!   comm_dssetup                      (asks each question)
//!   comm_dssetup -i yes|no -c URL -d instance -r DC_tree -u UG_suffix
//!                -s yes|no -D "DirectoryManagerDN" -w password -b yes|no
//!                -t 1|1.5|2 -m yes|no [-S schema_dir]
//!
//! DESCRIPTION
//!   Adds Epistle's messaging schema to the server's cn=config (-s), the
//!   indexes mail lookups need on the user/group database (-i), and the
//!   suffix entries (-b; for schema 1 and 1.5 also the DC tree root -r).
//!   It first writes what it will do as dssetup_YYYYMMDDHHMMSS.ldif and a
//!   dssetup_YYYYMMDDHHMMSS.sh that applies it with ldapmodify, in $TMPDIR
//!   (default /var/tmp), then applies it itself with -m yes. Only what is
//!   missing is planned, so running it twice changes nothing the second
//!   time. For OpenLDAP, -c is the server's URL (ldap://host:389) and the
//!   bind DN must be allowed to change cn=config; -d names the instance in
//!   the summary only.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use epistle_config::MsgSvrBase;
use epistle_directory::ldap::{LdapDirectory, LdapSettings};
use epistle_directory::provision::Layout;
use epistle_directory::{DirError, Entry, Filter, Schema, Scope, ldif};

/// Indexes the lookups use (attribute, index types).
const INDEXES: &[(&str, &str)] = &[
    ("objectClass", "eq"),
    ("uid", "eq"),
    ("mail", "eq,sub"),
    ("mailAlternateAddress", "eq"),
    ("mailEquivalentAddress", "eq"),
    ("uniqueMember", "eq"),
    ("sunPreferredDomain", "eq"),
    ("associatedDomain", "eq"),
];

#[derive(Debug, Clone)]
struct Answers {
    indexes: bool,
    server: String,
    instance: String,
    dc_root: String,
    ug_suffix: String,
    schema_update: bool,
    dm_dn: String,
    dm_pw: String,
    users_groups: bool,
    schema: String,
    modify: bool,
    schema_dir: std::path::PathBuf,
}

/// One planned change.
enum Change {
    Add(Entry),
    AddValues {
        dn: String,
        attr: String,
        values: Vec<String>,
    },
}

impl Change {
    fn ldif(&self) -> String {
        match self {
            Change::Add(e) => {
                let body = ldif::write(std::slice::from_ref(e));
                let body = body
                    .trim_start_matches("version: 1\n")
                    .trim_start_matches('\n');
                let (dn_line, rest) = body.split_once('\n').unwrap_or((body, ""));
                format!("{dn_line}\nchangetype: add\n{rest}")
            }
            Change::AddValues { dn, attr, values } => {
                let mut out = format!("dn: {dn}\nchangetype: modify\nadd: {attr}\n");
                for v in values {
                    out.push_str(&format!("{attr}: {v}\n"));
                }
                out.push_str("-\n");
                out
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Change::Add(e) => format!("add {}", e.dn),
            Change::AddValues { dn, attr, values } => {
                format!("add {attr} {} to {dn}", values.join(", "))
            }
        }
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("comm_dssetup: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn yes_no(v: &str, opt: &str) -> anyhow::Result<bool> {
    epistle_config::params::parse_bool(v).ok_or_else(|| anyhow!("{opt} takes yes or no, not {v:?}"))
}

fn default_schema_dir() -> std::path::PathBuf {
    let base = MsgSvrBase::locate();
    let installed = base.lib().join("ldap");
    if installed.is_dir() {
        installed
    } else {
        // Run from a source tree.
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ldap")
    }
}

fn parse_args(args: &[String]) -> anyhow::Result<Answers> {
    let mut a = Answers {
        indexes: true,
        server: "ldap://127.0.0.1:389".into(),
        instance: "slapd".into(),
        dc_root: "o=internet".into(),
        ug_suffix: "o=usergroup".into(),
        schema_update: true,
        dm_dn: "cn=Directory Manager".into(),
        dm_pw: String::new(),
        users_groups: true,
        schema: "1".into(),
        modify: true,
        schema_dir: default_schema_dir(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-i" => a.indexes = yes_no(&value()?, "-i")?,
            "-c" => a.server = value()?,
            "-d" => a.instance = value()?,
            "-r" => a.dc_root = value()?,
            "-u" => a.ug_suffix = value()?,
            "-s" => a.schema_update = yes_no(&value()?, "-s")?,
            "-D" => a.dm_dn = value()?,
            "-w" => a.dm_pw = value()?,
            "-b" => a.users_groups = yes_no(&value()?, "-b")?,
            "-t" => a.schema = value()?,
            "-m" => a.modify = yes_no(&value()?, "-m")?,
            "-S" => a.schema_dir = value()?.into(),
            other => bail!("unknown option {other}; see comm_dssetup -h"),
        }
    }
    Ok(a)
}

fn check(a: &Answers) -> anyhow::Result<()> {
    if !["1", "1.5", "2"].contains(&a.schema.as_str()) {
        bail!("-t takes 1, 1.5 or 2, not {}", a.schema);
    }
    for (opt, dn) in [("-u", &a.ug_suffix), ("-r", &a.dc_root), ("-D", &a.dm_dn)] {
        epistle_directory::Dn::parse(dn).map_err(|e| anyhow!("{opt}: {e}"))?;
    }
    if a.dm_pw.is_empty() {
        bail!("-w: the Directory Manager password is required");
    }
    if !a.server.starts_with("ldap://") && !a.server.starts_with("ldaps://") {
        bail!("-c: give the directory server as ldap://host:port or ldaps://host:port");
    }
    Ok(())
}

/// The interactive questions, in the guide's order.
fn interactive(mut a: Answers) -> anyhow::Result<Answers> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut ask = |q: &str, d: &str| -> anyhow::Result<String> {
        print!("{q} [{d}]: ");
        std::io::stdout().flush()?;
        let line = lines
            .next()
            .ok_or_else(|| anyhow!("input ended; nothing was changed"))??;
        Ok(if line.trim().is_empty() {
            d.to_string()
        } else {
            line.trim().to_string()
        })
    };
    println!(
        "Welcome to the directory preparation tool for Epistle Messaging Server {}.",
        env!("CARGO_PKG_VERSION")
    );
    println!("It adds Epistle's schema, indexes and base entries to your LDAP directory.\n");
    if !yes_no(&ask("Do you want to continue", "y")?, "answer")? {
        bail!("cancelled");
    }
    a.server = ask("Directory server URL", &a.server)?;
    a.instance = ask("Directory server instance", &a.instance)?;
    a.dm_dn = ask("Please enter the directory manager DN", &a.dm_dn)?;
    a.dm_pw = ask("Password", "")?;
    a.users_groups = yes_no(
        &ask("Will this directory server be used for users/groups", "Yes")?,
        "answer",
    )?;
    if a.users_groups {
        a.ug_suffix = ask("Please enter the Users/Groups base suffix", &a.ug_suffix)?;
    }
    println!(
        "There are 3 possible schema types:\n 1   - schema 1 (DC tree)\n 1.5 - schema 2 objects with a DC tree\n 2   - schema 2 native (one tree)"
    );
    a.schema = ask("Please enter the Schema Type (1, 1.5, 2)", &a.schema)?;
    if a.schema != "2" {
        a.dc_root = ask("Please enter the DC Tree base suffix", &a.dc_root)?;
    }
    a.schema_update = yes_no(
        &ask("Do you want to update the schema files", "yes")?,
        "answer",
    )?;
    if a.users_groups {
        a.indexes = yes_no(
            &ask("Do you want to configure new indexes", "yes")?,
            "answer",
        )?;
    }
    summary(&a);
    println!("Now ready to generate a shell script and ldif file to modify the directory.");
    a.modify = yes_no(
        &ask("Do you want to modify the directory now", "yes")?,
        "answer",
    )?;
    Ok(a)
}

fn summary(a: &Answers) {
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("\nHere is a summary of the settings that you chose:");
    println!("Directory Server          : {}", a.server);
    println!("Server Instance           : {}", a.instance);
    println!("Users/Groups Directory    : {}", yn(a.users_groups));
    println!("Update Schema             : {}", yn(a.schema_update));
    println!("Schema Type               : {}", a.schema);
    if a.schema == "2" {
        println!("DC Root                   : {}", a.ug_suffix);
    } else {
        println!("DC Root                   : {}", a.dc_root);
    }
    println!("User/Group Root           : {}", a.ug_suffix);
    println!("Add New Indexes           : {}", yn(a.indexes));
    println!("Schema Directory          : {}", a.schema_dir.display());
    println!("Directory Manager DN      : {}\n", a.dm_dn);
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: comm_dssetup -i yes|no -c URL -d instance -r DC_tree -u UG_suffix -s yes|no\n\
             \x20                   -D \"DirectoryManagerDN\" -w password -b yes|no -t 1|1.5|2 -m yes|no [-S schema_dir]"
        );
        return Ok(());
    }
    let mut a = parse_args(&args)?;
    if args.is_empty() {
        a = interactive(a)?;
    } else {
        summary(&a);
    }
    check(&a)?;

    let ldap = LdapDirectory::new(LdapSettings {
        urls: vec![a.server.clone()],
        bind_dn: a.dm_dn.clone(),
        bind_pw: a.dm_pw.clone(),
        timeout: Duration::from_secs(15),
        pool_size: 1,
        starttls: false,
        check_cert: true,
    })?;
    let plan = plan(&ldap, &a).await?;

    let stamp = chrono_stamp();
    let dir = std::env::var_os("TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp".into());
    let ldif_path = dir.join(format!("dssetup_{stamp}.ldif"));
    let sh_path = dir.join(format!("dssetup_{stamp}.sh"));
    let mut text = format!("# comm_dssetup {stamp}: changes for {}\n\n", a.server);
    for c in &plan {
        text.push_str(&c.ldif());
        text.push('\n');
    }
    std::fs::write(&ldif_path, &text)
        .with_context(|| format!("cannot write {}", ldif_path.display()))?;
    let script = format!(
        "#!/bin/sh\n# Applies {ldif} to {server}; asks for the Directory Manager password.\n\
         exec ldapmodify -c -x -H '{server}' -D '{dn}' -W -f '{ldif}'\n",
        ldif = ldif_path.display(),
        server = a.server,
        dn = a.dm_dn.replace('\'', "'\\''"),
    );
    std::fs::write(&sh_path, script)
        .with_context(|| format!("cannot write {}", sh_path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sh_path, std::fs::Permissions::from_mode(0o700))?;
    }
    println!(
        "Generated {} and {}",
        sh_path.display(),
        ldif_path.display()
    );
    if plan.is_empty() {
        println!("The directory already has everything; nothing to change.");
        return Ok(());
    }
    for c in &plan {
        println!("  {}", c.describe());
    }
    if !a.modify {
        println!(
            "No changes were made to the directory; run {} to make them.",
            sh_path.display()
        );
        return Ok(());
    }
    for c in &plan {
        let result = match c {
            Change::Add(e) => ldap.add(e.clone()).await,
            Change::AddValues { dn, attr, values } => ldap.add_values(dn, attr, values).await,
        };
        match result {
            Ok(()) | Err(DirError::AlreadyExists(_)) => {}
            Err(e) => bail!("{}: {e}", c.describe()),
        }
    }
    println!(
        "The directory is ready for Epistle (schema type {}).",
        a.schema
    );
    Ok(())
}

fn chrono_stamp() -> String {
    // YYYYMMDDHHMMSS in local time, without another dependency.
    let out = std::process::Command::new("date")
        .arg("+%Y%m%d%H%M%S")
        .output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() == 14)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                .to_string()
        })
}

/// What is missing from the directory, in the order it must be added.
async fn plan(ldap: &LdapDirectory, a: &Answers) -> anyhow::Result<Vec<Change>> {
    let any = Filter::Present("objectClass".into());
    let mut plan = Vec::new();
    if a.schema_update {
        let schemas = ldap.search("cn=schema,cn=config", Scope::One, &any).await.map_err(|e| {
            anyhow!("cannot read cn=schema,cn=config ({e}); the bind DN must be allowed to change the server's configuration")
        })?;
        let present = schemas.iter().any(|s| {
            s.get("cn")
                .is_some_and(|cn| cn.ends_with("epistle-messaging"))
        });
        if !present {
            let path = a.schema_dir.join("epistle-messaging.ldif");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("-S: cannot read {}", path.display()))?;
            let mut entries = ldif::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            plan.extend(entries.drain(..).map(Change::Add));
        }
    }
    if a.users_groups && a.indexes {
        let dbs = ldap
            .search(
                "cn=config",
                Scope::One,
                &Filter::eq("olcSuffix", &a.ug_suffix),
            )
            .await
            .map_err(|e| anyhow!("cannot read cn=config ({e})"))?;
        let Some(db) = dbs.first() else {
            bail!(
                "no database of the server holds {}; create one for it first",
                a.ug_suffix
            );
        };
        let indexed: Vec<String> = db
            .get_all("olcDbIndex")
            .iter()
            .flat_map(|v| {
                v.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|s| s.to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .collect();
        let missing: Vec<String> = INDEXES
            .iter()
            .filter(|(attr, _)| !indexed.contains(&attr.to_ascii_lowercase()))
            .map(|(attr, kind)| format!("{attr} {kind}"))
            .collect();
        if !missing.is_empty() {
            plan.push(Change::AddValues {
                dn: db.dn.clone(),
                attr: "olcDbIndex".into(),
                values: missing,
            });
        }
    }
    if a.users_groups {
        let schema = match a.schema.as_str() {
            "1" => Schema::One,
            "1.5" => Schema::OnePointFive,
            _ => Schema::Two,
        };
        let layout = Layout {
            schema,
            suffix: a.ug_suffix.clone(),
            dcroot: a.dc_root.clone(),
        };
        let mut wanted = vec![layout.suffix_entry()];
        if schema != Schema::Two {
            let mut root = Entry::new(a.dc_root.clone());
            root.add("objectClass", "top");
            root.add("objectClass", "organization");
            root.add(
                "o",
                a.dc_root
                    .split(',')
                    .next()
                    .and_then(|r| r.split_once('='))
                    .map(|(_, v)| v)
                    .unwrap_or("internet"),
            );
            wanted.push(root);
        }
        for e in wanted {
            if ldap.search(&e.dn, Scope::Base, &any).await?.is_empty() {
                plan.push(Change::Add(e));
            }
        }
    }
    Ok(plan)
}
