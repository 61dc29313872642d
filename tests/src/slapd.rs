//! A private OpenLDAP slapd for one test: a temporary cn=config directory
//! with the standard schemas and Epistle's messaging schema, two mdb
//! databases (o=usergroup and o=internet), listening on a free loopback
//! port; stopped when dropped. tests/run installs slapd and ldap-utils.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ROOT_DN: &str = "cn=Directory Manager";
pub const ROOT_PW: &str = "directory secret";
pub const SUFFIXES: &[&str] = &["o=usergroup", "o=internet"];

pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The ldaps:// port, when started with TLS.
    pub tls_port: Option<u16>,
    child: Option<Child>,
}

fn find(candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("none of {candidates:?} exists: install slapd and ldap-utils (tests/run does)")
        })
}

/// comm_dssetup's silent options for this test directory.
pub fn dssetup_args(url: &str, schema: &str, modify: bool) -> Vec<String> {
    let modify = if modify { "yes" } else { "no" };
    [
        "-i",
        "yes",
        "-c",
        url,
        "-d",
        "slapd-test",
        "-r",
        "o=internet",
        "-u",
        "o=usergroup",
        "-s",
        "yes",
        "-D",
        ROOT_DN,
        "-w",
        ROOT_PW,
        "-b",
        "yes",
        "-t",
        schema,
        "-m",
        modify,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Slapd {
    /// A slapd with Epistle's messaging schema loaded.
    pub fn start() -> Slapd {
        Slapd::start_with(true)
    }

    /// A slapd with only the standard schemas, as comm_dssetup finds a
    /// fresh directory. Its cn=config belongs to the Directory Manager.
    pub fn start_with(messaging_schema: bool) -> Slapd {
        Slapd::launch(messaging_schema, false)
    }

    /// With the messaging schema, a self-signed certificate, StartTLS on
    /// the plain port and an ldaps:// port.
    pub fn start_tls() -> Slapd {
        Slapd::launch(true, true)
    }

    fn launch(messaging_schema: bool, tls: bool) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let mut tls_conf = String::new();
        if tls {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            let out = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-keyout",
                ])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tls_conf = format!(
                "olcTLSCertificateFile: {}\nolcTLSCertificateKeyFile: {}\n",
                cert.display(),
                key.display()
            );
        }
        let schema_dir = find(&["/etc/ldap/schema", "/etc/openldap/schema"]);
        let module_dir = find(&["/usr/lib/ldap", "/usr/lib/openldap", "/usr/lib64/openldap"]);
        let ours = crate::repo_root().join("data/ldap/epistle-messaging.ldif");
        let conf = dir.path().join("slapd.d");
        std::fs::create_dir_all(&conf).unwrap();
        let mut ldif = format!(
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {pid}\n{tls_conf}\n\
             dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
             olcModulePath: {modules}\nolcModuleLoad: back_mdb\n\n\
             dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n",
            pid = dir.path().join("slapd.pid").display(),
            modules = module_dir.display(),
        );
        for s in ["core", "cosine", "inetorgperson", "dyngroup"] {
            ldif.push_str(&format!(
                "include: file://{}/{s}.ldif\n\n",
                schema_dir.display()
            ));
        }
        if messaging_schema {
            ldif.push_str(&format!("include: file://{}\n\n", ours.display()));
        }
        ldif.push_str(
            "dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n\
             objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\nolcSizeLimit: unlimited\n\n\
             dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\nolcDatabase: {0}config\n\
             olcRootDN: cn=Directory Manager\nolcAccess: {0}to * by * none\n\n",
        );
        // OpenLDAP allows a root password only for a root DN under the
        // database's suffix, while Sun's directories use the bare
        // "cn=Directory Manager": that DN is a real entry in a small
        // database of its own, and the root DN of the others.
        let mut suffixes: Vec<&str> = SUFFIXES.to_vec();
        suffixes.push(ROOT_DN);
        for (i, suffix) in suffixes.iter().enumerate() {
            let db = dir.path().join(format!("db{i}"));
            std::fs::create_dir_all(&db).unwrap();
            ldif.push_str(&format!(
                "dn: olcDatabase={{{n}}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\n\
                 olcDatabase: {{{n}}}mdb\nolcDbDirectory: {db}\nolcSuffix: {suffix}\nolcRootDN: {ROOT_DN}\n\
                 olcDbMaxSize: 104857600\n\
                 {index}\
                 olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none\n\
                 olcAccess: {{1}}to * by * read\n\n",
                n = i + 1,
                db = db.display(),
                index = if messaging_schema {
                    "olcDbIndex: objectClass eq\nolcDbIndex: uid,mail,mailAlternateAddress,mailEquivalentAddress eq\n"
                } else {
                    "olcDbIndex: objectClass eq\n"
                },
            ));
        }
        let config = dir.path().join("config.ldif");
        std::fs::write(&config, ldif).unwrap();
        let slapadd = find(&["/usr/sbin/slapadd", "/usr/local/sbin/slapadd"]);
        let out = Command::new(&slapadd)
            .args(["-n0", "-F"])
            .arg(&conf)
            .arg("-l")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd of the test config failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = dir.path().join("root.ldif");
        std::fs::write(
            &root,
            format!(
                "dn: {ROOT_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
                 cn: Directory Manager\nuserPassword: {ROOT_PW}\n"
            ),
        )
        .unwrap();
        let out = Command::new(&slapadd)
            .args(["-F"])
            .arg(&conf)
            .args(["-b", ROOT_DN, "-l"])
            .arg(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd of the root entry failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let tls_port = tls.then(crate::free_port);
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        if let Some(p) = tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let slapd = find(&["/usr/sbin/slapd", "/usr/local/libexec/slapd"]);
        let child = Command::new(slapd)
            .args(["-d", "0", "-h", &urls, "-F"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let me = Slapd {
            dir,
            port,
            tls_port,
            child: Some(child),
        };
        assert!(
            crate::wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "slapd did not start listening"
        );
        me
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Loads LDIF entries with ldapadd as the root DN.
    pub fn ldapadd(&self, ldif: &Path) {
        let out = Command::new("ldapadd")
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW, "-f"])
            .arg(ldif)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ldapadd failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (to test what an unreachable directory does).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
