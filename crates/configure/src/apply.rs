//! Carrying out a validated set of answers: the configuration-and-data
//! directory and its links, msg.conf / local.conf, the instantiated
//! templates, the TLS key pair, ownership, the configure log and saveState.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use epistle_config::{MsgSvrBase, write_atomically};
use nix::unistd::{Group, Uid, User, chown};

use crate::state::{Answers, EMBEDDED};
use epistle_directory::Schema;

/// Free space below which configure refuses to go on, and below which it
/// warns (the guide plans 1 GB for binaries, data and configuration).
const MIN_FREE: u64 = 100 << 20;
const WARN_FREE: u64 = 1 << 30;

/// Sub-directories of the configuration-and-data directory.
const DATA_DIRS: &[&str] = &[
    "config",
    "log",
    "queue",
    "store",
    "store/mboxlist",
    "store/partition/primary",
    "run",
    "setup",
];

/// `install/configure_YYYYMMDDHHMMSS.log`: what configure did, step by step
/// (passwords never appear in it).
pub struct ConfigureLog {
    file: fs::File,
    pub path: PathBuf,
}

impl ConfigureLog {
    pub fn create(base: &MsgSvrBase, stamp: &str) -> anyhow::Result<Self> {
        fs::create_dir_all(base.install())
            .with_context(|| format!("cannot create {}", base.install().display()))?;
        let path = base.install().join(format!("configure_{stamp}.log"));
        let file =
            fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ConfigureLog { file, path })
    }

    pub fn step(&mut self, what: &str) {
        let _ = writeln!(
            self.file,
            "[{}] {what}",
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
        );
        println!("{what}");
    }
}

/// Checks what can only be checked on this machine: the system user and
/// group, free disk space, and whether a configuration is already there.
pub fn preflight(base: &MsgSvrBase, a: &Answers) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let user = User::from_name(&a.system_user).ok().flatten();
    let group = Group::from_name(&a.system_group).ok().flatten();
    if Uid::effective().is_root() {
        if user.is_none() || group.is_none() {
            bail!(
                "SYSTEM_USER/SYSTEM_GROUP: {}:{} does not exist, and configure does not create \
                 system accounts. Create them first, for example:\n  groupadd {}\n  useradd -g {} {}",
                a.system_user,
                a.system_group,
                a.system_group,
                a.system_group,
                a.system_user
            );
        }
    } else {
        let me = User::from_uid(Uid::effective()).ok().flatten();
        let my_name = me.as_ref().map(|u| u.name.clone()).unwrap_or_default();
        if a.system_user != my_name {
            bail!(
                "SYSTEM_USER: configure runs as {my_name}, not root, so it cannot give the files \
                 to {}; run it as root, or answer {my_name}",
                a.system_user
            );
        }
        if group.is_none() {
            bail!("SYSTEM_GROUP: group {} does not exist", a.system_group);
        }
    }

    if Uid::effective().is_root()
        && let Some(u) = &user
    {
        reachable_by(&a.data_dir, u)?;
    }

    let existing = a.data_dir.join("config");
    let has_config = ["msg.conf", "local.conf"]
        .iter()
        .any(|f| existing.join(f).exists());
    if has_config && !a.overwrite {
        bail!(
            "{} already holds a configuration, and configure would overwrite it. To keep it and \
             point this installation at it, run useconfig; to replace it, run configure -force \
             (OVERWRITE = yes in a state file)",
            existing.display()
        );
    }
    for link in ["config", "log", "data"] {
        let p = base.root().join(link);
        if let Ok(meta) = fs::symlink_metadata(&p)
            && !meta.file_type().is_symlink()
            && !(meta.is_dir() && dir_is_empty(&p))
        {
            bail!(
                "{} exists and is not a link; move it away first",
                p.display()
            );
        }
    }

    let free = free_space(&a.data_dir)?;
    if free < MIN_FREE {
        bail!(
            "CONFIG_DATA_DIR: only {} MB free under {}; at least {} MB are needed",
            free >> 20,
            a.data_dir.display(),
            MIN_FREE >> 20
        );
    }
    if free < WARN_FREE {
        warnings.push(format!(
            "only {} MB free under {}: plan at least 1 GB, plus room for mailboxes, queues and logs",
            free >> 20,
            a.data_dir.display()
        ));
    }
    Ok(warnings)
}

/// The daemons run as the system user: every existing directory above
/// the data directory must let that user through.
fn reachable_by(dir: &Path, user: &User) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let groups = nix::unistd::getgrouplist(
        &std::ffi::CString::new(user.name.as_str()).unwrap_or_default(),
        user.gid,
    )
    .unwrap_or_else(|_| vec![user.gid]);
    for p in dir.ancestors().skip(1) {
        let Ok(m) = fs::metadata(p) else { continue };
        let mode = m.mode();
        let ok = if m.uid() == user.uid.as_raw() {
            mode & 0o100 != 0
        } else if groups.iter().any(|g| g.as_raw() == m.gid()) {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            bail!(
                "CONFIG_DATA_DIR: the system user {} cannot reach {} because {} is mode {:o}; \
                 allow it through (for example chmod o+x {}) or choose another directory",
                user.name,
                dir.display(),
                p.display(),
                mode & 0o7777,
                p.display()
            );
        }
    }
    Ok(())
}

fn dir_is_empty(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// Free bytes on the file system that holds `dir` (or its nearest
/// existing ancestor).
fn free_space(dir: &Path) -> anyhow::Result<u64> {
    let mut p = dir.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    let st = nix::sys::statvfs::statvfs(&p)
        .with_context(|| format!("cannot measure free space on {}", p.display()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Carries out the configuration. `stamp` is the YYYYMMDDHHMMSS of this run.
pub fn apply(
    base: &MsgSvrBase,
    a: &Answers,
    stamp: &str,
    log: &mut ConfigureLog,
) -> anyhow::Result<()> {
    let embedded = a.ug_directory.eq_ignore_ascii_case(EMBEDDED);
    // Reach the LDAP directory before changing anything here: a directory
    // that cannot be reached leaves this host untouched.
    let ldap_schema = if embedded {
        None
    } else {
        log.step(&format!(
            "Connecting to the user/group directory {}",
            a.ug_directory
        ));
        Some(block_on(detect_schema(a))?)
    };
    log.step(&format!(
        "Configuring {} with data in {}",
        base.root().display(),
        a.data_dir.display()
    ));
    for d in DATA_DIRS {
        let p = a.data_dir.join(d);
        fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    fs::set_permissions(a.data_dir.join("run"), fs::Permissions::from_mode(0o750))?;

    log.step("Linking config, log and data into msg_svr_base");
    relink(&base.root().join("data"), &a.data_dir)?;
    relink(&base.root().join("config"), &a.data_dir.join("config"))?;
    relink(&base.root().join("log"), &a.data_dir.join("log"))?;

    let files = base.config_files();
    if a.overwrite {
        for f in ["msg.conf", "local.conf"] {
            let _ = fs::remove_file(files.dir().join(f));
        }
    }
    log.step("Writing msg.conf.defaults, msg.conf and local.conf");
    files.write_defaults()?;
    files
        .update(&site_values(
            a,
            ldap_schema.unwrap_or(epistle_directory::Schema::Two),
        ))
        .context("cannot write the site configuration")?;
    if !a.params.is_empty() {
        let extra: Vec<_> = a
            .params
            .iter()
            .map(|(n, v)| (n.clone(), Some(v.clone())))
            .collect();
        files
            .update(&extra)
            .context("cannot apply the param.* settings")?;
        log.step(&format!(
            "Applied {} extra parameter(s) from the state file",
            a.params.len()
        ));
    }

    match ldap_schema {
        None => {
            let default = epistle_config::params::lookup("local.directory.file")
                .map(|p| p.default)
                .unwrap_or_default();
            let path = base.resolve(default);
            if a.overwrite || !path.exists() {
                log.step(&format!(
                    "Creating the embedded directory {}",
                    path.display()
                ));
                let entries = directory_entries(a, epistle_directory::Schema::Two)?;
                epistle_directory::embedded::EmbeddedDirectory::create(&path, &entries)
                    .map_err(|e| anyhow::anyhow!("cannot create the embedded directory: {e}"))?;
            } else {
                log.step(&format!(
                    "Keeping the embedded directory {}",
                    path.display()
                ));
            }
        }
        Some(schema) => {
            log.step(&format!(
                "Adding the default domain and administrators to {}",
                a.ug_directory
            ));
            let added = block_on(provision_ldap(a, schema))?;
            log.step(&format!("{added} entries added to the directory"));
        }
    }

    log.step("Instantiating the configuration templates");
    instantiate_templates(base, a)?;
    if base.config().join("imta.cnf").exists() {
        log.step("Compiling the MTA configuration (imsimta cnbuild)");
        compile_mta_config(base)?;
    }

    let cert = files.dir().join("server-cert.pem");
    let key = files.dir().join("server-key.pem");
    if a.tls_cert.is_empty() {
        log.step(&format!(
            "Generating a self-signed TLS certificate for {}",
            a.hostname
        ));
        let (c, k) = self_signed(&a.hostname)?;
        write_atomically(&cert, c.as_bytes(), 0o644)?;
        write_atomically(&key, k.as_bytes(), 0o600)?;
    } else {
        log.step(&format!("Installing the TLS certificate {}", a.tls_cert));
        let c = fs::read(&a.tls_cert)
            .with_context(|| format!("TLS_CERT: cannot read {}", a.tls_cert))?;
        let k =
            fs::read(&a.tls_key).with_context(|| format!("TLS_KEY: cannot read {}", a.tls_key))?;
        write_atomically(&cert, &c, 0o644)?;
        write_atomically(&key, &k, 0o600)?;
    }

    log.step("Writing saveState");
    // The saved answers never carry OVERWRITE: replaying them elsewhere
    // must not replace a configuration by surprise.
    let mut saved = a.clone();
    saved.overwrite = false;
    let state = saved.to_state(&chrono::Local::now().to_rfc2822());
    for dir in [
        base.install().join(format!("configure_{stamp}")),
        a.data_dir.join("setup").join(format!("configure_{stamp}")),
    ] {
        fs::create_dir_all(&dir)?;
        write_atomically(&dir.join("saveState"), state.as_bytes(), 0o600)?;
    }

    if Uid::effective().is_root() {
        log.step(&format!(
            "Giving {} to {}:{}",
            a.data_dir.display(),
            a.system_user,
            a.system_group
        ));
        let u = User::from_name(&a.system_user)?.context("system user vanished")?;
        let g = Group::from_name(&a.system_group)?.context("system group vanished")?;
        chown_tree(&a.data_dir, u.uid, g.gid)?;
    }
    log.step(&format!(
        "Configuration complete. Start the services with {}/sbin/start-msg",
        base.root().display()
    ));
    Ok(())
}

/// The base of the directory for the default domain, with the
/// administrators of Table 5-2 that live there: the service administrator
/// (`uid=admin`) and the end user administrator, both members of the
/// Service Administrators group, with the one password configure asked
/// for, hashed.
fn directory_entries(
    a: &Answers,
    schema: epistle_directory::Schema,
) -> anyhow::Result<Vec<epistle_directory::Entry>> {
    use epistle_directory::provision::{Layout, NewUser};
    let hash = epistle_directory::password::hash(&a.admin_password).map_err(anyhow::Error::msg)?;
    let dcroot = if schema == epistle_directory::Schema::Two {
        a.ug_suffix.clone()
    } else {
        "o=internet".to_string()
    };
    let layout = Layout {
        schema,
        suffix: a.ug_suffix.clone(),
        dcroot,
    };
    let admin = NewUser {
        uid: "admin".into(),
        given_name: "Service".into(),
        surname: "Administrator".into(),
        password_hash: hash.clone(),
        mail: None,
        mail_host: Some(a.hostname.clone()),
    };
    let mut entries = layout.base_entries(&a.default_domain, &a.org_dn, &admin);
    let end_user_admin = NewUser {
        uid: format!("msg-admin-{}", a.hostname),
        given_name: "End User".into(),
        surname: "Administrator".into(),
        password_hash: hash,
        mail: None,
        mail_host: Some(a.hostname.clone()),
    }
    .entry(&a.org_dn, &a.default_domain);
    if let Some(group) = entries.iter_mut().find(|e| e.dn == layout.admins_group()) {
        group.add("uniqueMember", end_user_admin.dn.clone());
    }
    entries.push(end_user_admin);
    Ok(entries)
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn ldap_of(a: &Answers) -> anyhow::Result<epistle_directory::ldap::LdapDirectory> {
    Ok(epistle_directory::ldap::LdapDirectory::new(
        epistle_directory::ldap::LdapSettings {
            urls: vec![a.ug_directory.trim_end_matches('/').to_string()],
            bind_dn: a.ug_binddn.clone(),
            bind_pw: a.ug_password.clone(),
            timeout: std::time::Duration::from_secs(15),
            pool_size: 1,
            starttls: false,
            check_cert: true,
        },
    )?)
}

/// Schema 1 when the directory has the DC tree comm_dssetup makes for it
/// (o=internet), else schema 2.
async fn detect_schema(a: &Answers) -> anyhow::Result<epistle_directory::Schema> {
    use epistle_directory::{Filter, Schema, Scope};
    let ldap = ldap_of(a)?;
    let any = Filter::Present("objectClass".into());
    let suffix = ldap.search(&a.ug_suffix, Scope::Base, &any).await.map_err(|e| {
        anyhow::anyhow!(
            "UG_DIRECTORY: {e}; check the URL, bind DN and password, and that comm_dssetup prepared the directory"
        )
    })?;
    if suffix.is_empty() {
        anyhow::bail!(
            "UG_SUFFIX: {} does not exist in {}; run comm_dssetup -b yes first",
            a.ug_suffix,
            a.ug_directory
        );
    }
    let dc = ldap.search("o=internet", Scope::Base, &any).await?;
    Ok(if dc.is_empty() {
        Schema::Two
    } else {
        Schema::One
    })
}

/// Adds what the directory lacks of the default domain and administrators.
async fn provision_ldap(a: &Answers, schema: epistle_directory::Schema) -> anyhow::Result<usize> {
    use epistle_directory::{Filter, Scope};
    let ldap = ldap_of(a)?;
    let any = Filter::Present("objectClass".into());
    let mut added = 0;
    for e in directory_entries(a, schema)? {
        if ldap.search(&e.dn, Scope::Base, &any).await?.is_empty() {
            let dn = e.dn.clone();
            ldap.add(e)
                .await
                .map_err(|err| anyhow::anyhow!("cannot add {dn}: {err}"))?;
            added += 1;
        }
    }
    Ok(added)
}

/// The initial site values, from the answers.
fn site_values(a: &Answers, schema: epistle_directory::Schema) -> Vec<(String, Option<String>)> {
    let yes = |b: bool| Some(if b { "yes" } else { "no" }.to_string());
    let s = |v: &str| Some(v.to_string());
    let (ug_host, ug_port, ug_ssl) = split_ldap_url(&a.ug_directory);
    let (cf_host, cf_port, cf_ssl) = split_ldap_url(&a.config_directory);
    let embedded = a.ug_directory.eq_ignore_ascii_case(EMBEDDED);
    let admin_dn = format!("uid=msg-admin-{},ou=People,{}", a.hostname, a.org_dn);
    let mut v = vec![
        ("local.hostname", s(&a.hostname)),
        ("local.defdomain", s(&a.default_domain)),
        ("service.defaultdomain", s(&a.default_domain)),
        ("local.postmaster", s(&a.postmaster)),
        ("local.orgdn", s(&a.org_dn)),
        ("local.serveruid", s(&a.system_user)),
        ("local.servergid", s(&a.system_group)),
        ("local.components", s(&a.components.join(","))),
        ("local.imta.enable", yes(a.has("mta"))),
        ("local.store.enable", yes(a.has("store"))),
        ("service.imap.enable", yes(a.has("store"))),
        ("service.pop.enable", yes(a.has("store"))),
        ("service.http.enable", yes(a.has("webmail"))),
        ("local.mmp.enable", yes(a.has("mmp"))),
        (
            "local.directory.backend",
            s(if embedded { "embedded" } else { "ldap" }),
        ),
        ("local.ugldapbasedn", s(&a.ug_suffix)),
        ("local.ugldapbinddn", s(&a.ug_binddn)),
        (
            "local.ugldapbindcred",
            s(if embedded {
                &a.admin_password
            } else {
                &a.ug_password
            }),
        ),
        (
            "service.dcroot",
            s(if schema == Schema::Two {
                &a.ug_suffix
            } else {
                "o=internet"
            }),
        ),
        (
            "local.schemaversion",
            s(match schema {
                Schema::One => "1",
                Schema::OnePointFive => "1.5",
                Schema::Two => "2",
            }),
        ),
        ("local.enduseradmindn", s(&admin_dn)),
        ("local.enduseradmincred", s(&a.admin_password)),
        ("local.service.pab.ldapbinddn", s(&admin_dn)),
        ("local.service.pab.ldappasswd", s(&a.admin_password)),
    ];
    if let Some(h) = ug_host {
        v.push(("local.ugldaphost", Some(h)));
        v.push(("local.ugldapport", Some(ug_port.to_string())));
        v.push(("local.ugldapusessl", yes(ug_ssl)));
    }
    if let Some(h) = cf_host {
        v.push(("local.ldaphost", Some(h)));
        v.push(("local.ldapport", Some(cf_port.to_string())));
        v.push(("local.ldapusessl", yes(cf_ssl)));
        v.push(("local.ldapsiedn", s(&a.config_binddn)));
        v.push(("local.ldapsiecred", s(&a.config_password)));
    }
    v.into_iter().map(|(n, val)| (n.to_string(), val)).collect()
}

/// `ldap://host:port` → (host, port, ssl); `embedded` → no host.
fn split_ldap_url(url: &str) -> (Option<String>, u16, bool) {
    let lower = url.to_ascii_lowercase();
    let (rest, ssl) = match (
        lower.strip_prefix("ldaps://"),
        lower.strip_prefix("ldap://"),
    ) {
        (Some(r), _) => (r.to_string(), true),
        (None, Some(r)) => (r.to_string(), false),
        _ => return (None, 389, false),
    };
    let rest = rest.trim_end_matches('/');
    let default = if ssl { 636 } else { 389 };
    match rest
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
    {
        Some((h, p)) => (Some(h.to_string()), p, ssl),
        None => (Some(rest.to_string()), default, ssl),
    }
}

/// Replaces a link (or an empty directory left by the installer).
pub fn relink(link: &Path, target: &Path) -> anyhow::Result<()> {
    if let Ok(meta) = fs::symlink_metadata(link) {
        if meta.file_type().is_symlink() {
            fs::remove_file(link)?;
        } else if meta.is_dir() {
            fs::remove_dir(link)
                .with_context(|| format!("{} is not empty; move it away first", link.display()))?;
        }
    }
    symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

/// Copies each file of `lib/config-templates` into `config/`, replacing
/// `@@NAME@@` markers. A file the site already has is left alone unless
/// the configuration is being overwritten.
fn instantiate_templates(base: &MsgSvrBase, a: &Answers) -> anyhow::Result<()> {
    let dir = base.templates();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    let host_network = host_network(&a.hostname);
    let vars = [
        ("HOSTNAME", a.hostname.as_str()),
        ("DEFAULT_DOMAIN", a.default_domain.as_str()),
        ("POSTMASTER", a.postmaster.as_str()),
        ("HOST_NETWORK", host_network.as_str()),
        ("ORG_DN", a.org_dn.as_str()),
        ("UG_SUFFIX", a.ug_suffix.as_str()),
    ];
    for e in entries {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let target = base.config().join(e.file_name());
        if target.exists() && !a.overwrite {
            continue;
        }
        let mut text = fs::read_to_string(e.path())
            .with_context(|| format!("cannot read {}", e.path().display()))?;
        for (k, v) in vars {
            text = text.replace(&format!("@@{k}@@"), v);
        }
        write_atomically(&target, text.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// What `imsimta cnbuild` does, so the MTA starts with a compiled
/// configuration.
fn compile_mta_config(base: &MsgSvrBase) -> anyhow::Result<()> {
    use epistle_mta::compiled::{COMPILED_NAME, CompiledConfig};
    let now = chrono::Utc::now().timestamp();
    let compiled = CompiledConfig::build(&base.config(), now)
        .context("the MTA configuration templates do not compile")?;
    compiled.save(&base.config().join(COMPILED_NAME))?;
    Ok(())
}

/// The host's network for the INTERNAL_IP table: the /24 of what its
/// name resolves to; only 127.0.0.1 itself when that is a loopback
/// address (or nothing resolves), since a loopback /24 would make every
/// other loopback address internal too.
fn host_network(hostname: &str) -> String {
    use std::net::{IpAddr, ToSocketAddrs};
    let address = (hostname, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.find(|a| a.is_ipv4()))
        .map(|a| a.ip());
    match address {
        Some(IpAddr::V4(ip)) if !ip.is_loopback() => format!("{ip}/24"),
        _ => "127.0.0.1/32".into(),
    }
}

/// A self-signed certificate for `host` (and localhost), valid ten years.
pub fn self_signed(host: &str) -> anyhow::Result<(String, String)> {
    use chrono::Datelike;
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string(), "localhost".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Epistle");
    let now = chrono::Utc::now();
    params.not_before = rcgen::date_time_ymd(now.year(), now.month() as u8, now.day() as u8);
    params.not_after = rcgen::date_time_ymd(now.year() + 10, now.month() as u8, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn chown_tree(p: &Path, uid: Uid, gid: nix::unistd::Gid) -> anyhow::Result<()> {
    chown(p, Some(uid), Some(gid)).with_context(|| format!("cannot chown {}", p.display()))?;
    if fs::symlink_metadata(p)?.is_dir() {
        for e in fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldap_urls() {
        assert_eq!(
            split_ldap_url("ldap://dir.example.com:1389"),
            (Some("dir.example.com".into()), 1389, false)
        );
        assert_eq!(
            split_ldap_url("ldaps://dir.example.com/"),
            (Some("dir.example.com".into()), 636, true)
        );
        assert_eq!(split_ldap_url("embedded"), (None, 389, false));
    }

    #[test]
    fn certificate_is_pem() {
        let (c, k) = self_signed("mail.example.com").unwrap();
        assert!(c.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(k.contains("PRIVATE KEY"));
    }
}
