//! NAME
//!   commadmin - provision domains, users, groups and administrators
//!
//! SYNOPSIS
//!   commadmin domain create|delete|modify|search -D login -w password -d domain [...]
//!   commadmin user   create|delete|modify|search -D login -w password -l uid [-n domain] [...]
//!   commadmin group  create|delete|modify|search -D login -w password -G name [-n domain] [...]
//!   commadmin admin  create|delete|search        -D login -w password [-l uid] [-n domain]
//!
//! DESCRIPTION
//!   Works on the configured directory, embedded or LDAP. -D and -w name a
//!   member of the Service Administrators group (configure creates "admin"
//!   with the administrator password). -n picks the domain (default:
//!   service.defaultdomain). -i FILE runs the action once per line of FILE,
//!   each line holding more options. -X host and -p port reach another LDAP
//!   server, -s over TLS. Prints OK for each change made.
//!
//!   user create: -l uid -W password [-F given] [-L surname] [-E mail] [-H mailhost] [-A attr:value]
//!   user modify: -l uid [-W password] [-H mailhost] [-A [+|-]attr:value ...]
//!                (+ adds a value, - removes one, neither replaces; e.g.
//!                -A mailQuota:10M -A mailUserStatus:hold
//!                -A +mailAlternateAddress:jb@example.com
//!                -A mailDeliveryOption:forward -A +mailForwardingAddress:x@y)
//!   user delete: -l uid   (marks the account deleted, as the original)
//!   group create: -G name [-E mail] [-m member-address ...]
//!   group modify: -G name [-m address-to-add ...] [-M address-to-remove ...] [-A ...]
//!   domain create: -d domain [-H preferred mailhost]; delete marks it deleted
//!   admin create|delete: -l uid [-n domain]: adds to or removes from the
//!                Service Administrators group

mod options;

use anyhow::{Context as _, anyhow, bail};
use epistle_config::MsgSvrBase;
use epistle_directory::provision::{Layout, NewUser, group_entry};
use epistle_directory::{
    Auth, DirError, Directory, Dn, Entry, Filter, Recipient, Scope, ldif, password,
};
use options::{Options, split_line};
use std::process::ExitCode;

struct Ctx {
    dir: Directory,
    layout: Layout,
    default_domain: String,
    verbose: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help" || a == "-?") {
        println!(
            "usage: commadmin domain|user|group|admin create|delete|modify|search -D login -w password [options]"
        );
        return if args.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("commadmin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> anyhow::Result<bool> {
    let [object, action, rest @ ..] = args.as_slice() else {
        bail!(
            "name an object (domain, user, group, admin) and an action (create, delete, modify, search)"
        );
    };
    let opts = Options::parse(rest.iter().cloned()).map_err(anyhow::Error::msg)?;
    let base = MsgSvrBase::locate();
    let mut cfg = base
        .config_files()
        .load()
        .map_err(|errs| anyhow!("the configuration has errors: {}", errs[0]))?;
    if let Some(host) = opts.get('X') {
        let host = match opts.get('p') {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        cfg = cfg
            .with("local.directory.backend", "ldap")
            .with("local.ugldaphost", &host);
        if opts.has('s') {
            cfg = cfg.with("local.ugldapusessl", "yes");
        }
    }
    let dir = epistle_directory::open(&base, &cfg)
        .await
        .context("cannot open the directory")?;
    let settings = dir.settings().clone();
    let ctx = Ctx {
        layout: Layout {
            schema: settings.schema,
            suffix: cfg.get("local.ugldapbasedn").to_string(),
            dcroot: settings.dcroot.clone(),
        },
        default_domain: settings.default_domain.clone(),
        verbose: opts.has('v'),
        dir,
    };
    authorize(&ctx, &opts).await?;

    // One run per batch line, or one for the command line alone.
    let batches: Vec<(usize, Options)> = match opts.get('i') {
        None => vec![(0, opts.clone())],
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            let mut out = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let words = split_line(line).map_err(|e| anyhow!("{path} line {}: {e}", n + 1))?;
                let o = Options::parse(words).map_err(|e| anyhow!("{path} line {}: {e}", n + 1))?;
                out.push((n + 1, opts.merged(&o)));
            }
            out
        }
    };
    let mut ok = true;
    for (line, o) in batches {
        let result = match (object.as_str(), action.as_str()) {
            ("user", "create") => user_create(&ctx, &o).await,
            ("user", "modify") => user_modify(&ctx, &o).await,
            ("user", "delete") => user_delete(&ctx, &o).await,
            ("user", "search") => user_search(&ctx, &o).await,
            ("group", "create") => group_create(&ctx, &o).await,
            ("group", "modify") => group_modify(&ctx, &o).await,
            ("group", "delete") => group_delete(&ctx, &o).await,
            ("group", "search") => group_search(&ctx, &o).await,
            ("domain", "create") => domain_create(&ctx, &o).await,
            ("domain", "modify") => domain_modify(&ctx, &o).await,
            ("domain", "delete") => domain_delete(&ctx, &o).await,
            ("domain", "search") => domain_search(&ctx, &o).await,
            ("admin", "create") => admin_change(&ctx, &o, true).await,
            ("admin", "delete") => admin_change(&ctx, &o, false).await,
            ("admin", "search") => admin_search(&ctx).await,
            (obj, act) => bail!("unknown operation {obj} {act}"),
        };
        match result {
            Ok(()) => {}
            Err(e) if line > 0 => {
                eprintln!("commadmin: line {line}: {e:#}");
                ok = false;
            }
            Err(e) => return Err(e),
        }
        ctx.dir.invalidate();
    }
    Ok(ok)
}

/// -D / -w must name a member of the Service Administrators group.
async fn authorize(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    let login = o.require('D', "login").map_err(anyhow::Error::msg)?;
    let pw = o.require('w', "password").map_err(anyhow::Error::msg)?;
    let user = match ctx.dir.authenticate(login, pw).await? {
        Auth::Ok(u) => u,
        Auth::Denied(d) => bail!("{login} cannot log in: {}", d.reason()),
    };
    let group = read(ctx, &ctx.layout.admins_group()).await?;
    let me = Dn::parse(&user.dn)?;
    let member = group
        .iter()
        .flat_map(|g| g.get_all("uniqueMember"))
        .any(|m| Dn::parse(m).is_ok_and(|d| d == me));
    if !member {
        bail!("{login} is not a member of {}", ctx.layout.admins_group());
    }
    Ok(())
}

async fn read(ctx: &Ctx, dn: &str) -> Result<Option<Entry>, DirError> {
    Ok(ctx
        .dir
        .backend()
        .search(dn, Scope::Base, &Filter::Present("objectClass".into()))
        .await?
        .into_iter()
        .next())
}

fn done(ctx: &Ctx, what: &str) {
    if ctx.verbose {
        println!("{what}");
    }
    println!("OK");
}

fn domain_name<'a>(ctx: &'a Ctx, o: &'a Options) -> &'a str {
    o.get('n').unwrap_or(&ctx.default_domain)
}

async fn hosted(ctx: &Ctx, name: &str) -> anyhow::Result<epistle_directory::Domain> {
    ctx.dir.domain(name).await?.ok_or_else(|| {
        anyhow!("domain {name} is not hosted here (create it with commadmin domain create)")
    })
}

async fn user_entry(ctx: &Ctx, o: &Options) -> anyhow::Result<Entry> {
    let uid = o.require('l', "uid").map_err(anyhow::Error::msg)?;
    let domain = domain_name(ctx, o);
    match ctx.dir.user_by_login(&format!("{uid}@{domain}")).await? {
        Some(u) => Ok(u.entry),
        None => bail!("no user {uid} in {domain}"),
    }
}

/// Applies `-A [+|-]attr:value` changes to an entry.
fn apply_attrs(e: &mut Entry, changes: &[String]) -> anyhow::Result<()> {
    for c in changes {
        let (op, rest) = match c.chars().next() {
            Some('+') => ('+', &c[1..]),
            Some('-') => ('-', &c[1..]),
            _ => ('=', c.as_str()),
        };
        let (attr, value) = rest
            .split_once(':')
            .ok_or_else(|| anyhow!("-A {c}: expected attr:value"))?;
        let attr = attr.trim();
        if attr.is_empty()
            || !attr
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        {
            bail!("-A {c}: {attr:?} is not an attribute name");
        }
        if attr.eq_ignore_ascii_case("userPassword") {
            bail!("set passwords with -W, which stores them hashed");
        }
        match op {
            '+' => e.add(attr, value),
            '-' => {
                if !e.remove_value(attr, value) {
                    bail!("{} has no {attr} value {value:?}", e.dn);
                }
            }
            _ if value.is_empty() => e.set(attr, Vec::new()),
            _ => e.set(attr, vec![value.to_string()]),
        }
    }
    Ok(())
}

async fn user_create(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("lWFLEHAn").map_err(anyhow::Error::msg)?;
    let uid = o.require('l', "uid").map_err(anyhow::Error::msg)?;
    if !uid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        || uid.len() > 64
    {
        bail!("{uid:?} is not a valid uid (letters, digits, . _ -)");
    }
    let pw = o.require('W', "password").map_err(anyhow::Error::msg)?;
    let domain = hosted(ctx, domain_name(ctx, o)).await?;
    if ctx
        .dir
        .user_by_login(&format!("{uid}@{}", domain.name))
        .await?
        .is_some()
    {
        bail!("user {uid} already exists in {}", domain.name);
    }
    let mail = o.get('E').map(str::to_string);
    let address = mail
        .clone()
        .unwrap_or_else(|| format!("{uid}@{}", domain.canonical));
    if ctx
        .dir
        .recipient(&address)
        .await?
        .is_some_and(|r| !matches!(&r, Recipient::User(u) if u.uid == "catchall"))
    {
        bail!("the address {address} is already taken");
    }
    let new = NewUser {
        uid: uid.to_string(),
        given_name: o.get('F').unwrap_or("").to_string(),
        surname: o.get('L').unwrap_or("").to_string(),
        password_hash: password::hash(pw).map_err(anyhow::Error::msg)?,
        mail,
        mail_host: o.get('H').map(str::to_string),
    };
    let mut e = new.entry(&domain.base_dn, &domain.canonical);
    apply_attrs(&mut e, o.all('A'))?;
    let dn = e.dn.clone();
    ctx.dir.backend().add(e).await?;
    done(ctx, &format!("created {dn}"));
    Ok(())
}

async fn user_modify(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("lWHAn").map_err(anyhow::Error::msg)?;
    let mut e = user_entry(ctx, o).await?;
    if let Some(pw) = o.get('W') {
        e.set(
            "userPassword",
            vec![password::hash(pw).map_err(anyhow::Error::msg)?],
        );
    }
    if let Some(h) = o.get('H') {
        e.set("mailHost", vec![h.to_string()]);
    }
    apply_attrs(&mut e, o.all('A'))?;
    let dn = e.dn.clone();
    ctx.dir.backend().replace(e).await?;
    done(ctx, &format!("modified {dn}"));
    Ok(())
}

async fn user_delete(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("ln").map_err(anyhow::Error::msg)?;
    let mut e = user_entry(ctx, o).await?;
    e.set("inetUserStatus", vec!["deleted".into()]);
    e.set("mailUserStatus", vec!["deleted".into()]);
    let dn = e.dn.clone();
    ctx.dir.backend().replace(e).await?;
    done(ctx, &format!("marked {dn} deleted"));
    Ok(())
}

fn print_entries(entries: &[Entry]) {
    let shown: Vec<Entry> = entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.set("userPassword", Vec::new());
            e
        })
        .collect();
    print!("{}", ldif::write(&shown).trim_start_matches("version: 1\n"));
}

async fn user_search(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("lEn").map_err(anyhow::Error::msg)?;
    let domain = hosted(ctx, domain_name(ctx, o)).await?;
    let mut parts = vec![Filter::eq("objectClass", "inetOrgPerson")];
    if let Some(uid) = o.get('l') {
        parts.push(Filter::eq("uid", uid));
    }
    if let Some(mail) = o.get('E') {
        parts.push(Filter::Or(vec![
            Filter::eq("mail", mail),
            Filter::eq("mailAlternateAddress", mail),
        ]));
    }
    let found = ctx
        .dir
        .backend()
        .search(&domain.base_dn, Scope::Sub, &Filter::And(parts))
        .await?;
    if found.is_empty() {
        bail!("no matching user in {}", domain.name);
    }
    print_entries(&found);
    Ok(())
}

async fn group_entry_of(
    ctx: &Ctx,
    o: &Options,
) -> anyhow::Result<(epistle_directory::Domain, Entry)> {
    let name = o.require('G', "group name").map_err(anyhow::Error::msg)?;
    let domain = hosted(ctx, domain_name(ctx, o)).await?;
    let f = Filter::And(vec![
        Filter::eq("objectClass", "inetMailGroup"),
        Filter::eq("cn", name),
    ]);
    let mut hits = ctx
        .dir
        .backend()
        .search(&domain.base_dn, Scope::Sub, &f)
        .await?;
    match hits.len() {
        0 => bail!("no group {name} in {}", domain.name),
        1 => Ok((domain, hits.remove(0))),
        n => bail!("{n} groups are called {name} in {}", domain.name),
    }
}

async fn group_create(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("GEmAn").map_err(anyhow::Error::msg)?;
    let name = o.require('G', "group name").map_err(anyhow::Error::msg)?;
    let domain = hosted(ctx, domain_name(ctx, o)).await?;
    let mail = o
        .get('E')
        .map(str::to_string)
        .unwrap_or_else(|| format!("{name}@{}", domain.canonical));
    if ctx
        .dir
        .recipient(&mail)
        .await?
        .is_some_and(|r| !matches!(&r, Recipient::User(u) if u.uid == "catchall"))
    {
        bail!("the address {mail} is already taken");
    }
    let mut e = group_entry(name, &domain.base_dn, &mail);
    for m in o.all('m') {
        e.add("mgrpRFC822MailMember", m.clone());
    }
    apply_attrs(&mut e, o.all('A'))?;
    let dn = e.dn.clone();
    ctx.dir.backend().add(e).await?;
    done(ctx, &format!("created {dn}"));
    Ok(())
}

async fn group_modify(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("GmMAn").map_err(anyhow::Error::msg)?;
    let (_, mut e) = group_entry_of(ctx, o).await?;
    for m in o.all('m') {
        e.add("mgrpRFC822MailMember", m.clone());
    }
    for m in o.all('M') {
        if !e.remove_value("mgrpRFC822MailMember", m) {
            bail!("{m} is not a member of {}", e.dn);
        }
    }
    apply_attrs(&mut e, o.all('A'))?;
    let dn = e.dn.clone();
    ctx.dir.backend().replace(e).await?;
    done(ctx, &format!("modified {dn}"));
    Ok(())
}

async fn group_delete(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("Gn").map_err(anyhow::Error::msg)?;
    let (_, e) = group_entry_of(ctx, o).await?;
    ctx.dir.backend().delete(&e.dn).await?;
    done(ctx, &format!("deleted {}", e.dn));
    Ok(())
}

async fn group_search(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("Gn").map_err(anyhow::Error::msg)?;
    let (_, e) = group_entry_of(ctx, o).await?;
    print_entries(&[e]);
    Ok(())
}

async fn domain_create(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("dHA").map_err(anyhow::Error::msg)?;
    let name = o
        .require('d', "domain")
        .map_err(anyhow::Error::msg)?
        .to_ascii_lowercase();
    if !name.contains('.') || !epistle_config::params::valid_domain(&name) {
        bail!("{name:?} is not a domain name");
    }
    if ctx.dir.domain(&name).await?.is_some() {
        bail!("domain {name} already exists");
    }
    let org = ctx.layout.org_dn(&name);
    let mut entries = ctx.layout.domain_entries(&name, &org);
    if let Some(first) = entries.first_mut() {
        if let Some(h) = o.get('H') {
            first.add("preferredMailHost", h);
        }
        apply_attrs(first, o.all('A'))?;
    }
    for e in entries {
        match ctx.dir.backend().add(e).await {
            Ok(()) | Err(DirError::AlreadyExists(_)) => {} // shared DC tree nodes (dc=com)
            Err(err) => return Err(err.into()),
        }
    }
    done(ctx, &format!("created {org}"));
    Ok(())
}

async fn domain_node(ctx: &Ctx, o: &Options) -> anyhow::Result<Entry> {
    let name = o.require('d', "domain").map_err(anyhow::Error::msg)?;
    let d = hosted(ctx, name).await?;
    Ok(d.entry)
}

async fn domain_modify(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("dHA").map_err(anyhow::Error::msg)?;
    let mut e = domain_node(ctx, o).await?;
    if let Some(h) = o.get('H') {
        e.set("preferredMailHost", vec![h.to_string()]);
    }
    apply_attrs(&mut e, o.all('A'))?;
    let dn = e.dn.clone();
    ctx.dir.backend().replace(e).await?;
    done(ctx, &format!("modified {dn}"));
    Ok(())
}

async fn domain_delete(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("d").map_err(anyhow::Error::msg)?;
    let mut e = domain_node(ctx, o).await?;
    e.set("inetDomainStatus", vec!["deleted".into()]);
    e.set("mailDomainStatus", vec!["deleted".into()]);
    let dn = e.dn.clone();
    ctx.dir.backend().replace(e).await?;
    done(ctx, &format!("marked {dn} deleted"));
    Ok(())
}

async fn domain_search(ctx: &Ctx, o: &Options) -> anyhow::Result<()> {
    o.only("d").map_err(anyhow::Error::msg)?;
    print_entries(&[domain_node(ctx, o).await?]);
    Ok(())
}

async fn admin_change(ctx: &Ctx, o: &Options, add: bool) -> anyhow::Result<()> {
    o.only("ln").map_err(anyhow::Error::msg)?;
    let user = user_entry(ctx, o).await?;
    let dn = ctx.layout.admins_group();
    let mut group = read(ctx, &dn)
        .await?
        .ok_or_else(|| anyhow!("{dn} does not exist"))?;
    if add {
        group.add("uniqueMember", user.dn.clone());
    } else if !group.remove_value("uniqueMember", &user.dn) {
        bail!("{} is not an administrator", user.dn);
    } else if group.get_all("uniqueMember").is_empty() {
        bail!("{} is the last administrator; add another first", user.dn);
    }
    ctx.dir.backend().replace(group).await?;
    done(
        ctx,
        &format!("{} {}", if add { "added" } else { "removed" }, user.dn),
    );
    Ok(())
}

async fn admin_search(ctx: &Ctx) -> anyhow::Result<()> {
    let dn = ctx.layout.admins_group();
    let group = read(ctx, &dn)
        .await?
        .ok_or_else(|| anyhow!("{dn} does not exist"))?;
    for m in group.get_all("uniqueMember") {
        println!("{m}");
    }
    Ok(())
}
