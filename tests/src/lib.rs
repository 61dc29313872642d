//! The test harness: a throw-away installation in a temporary directory,
//! laid out by install/install.sh from the programs cargo built, configured
//! silently by configure on free loopback ports, and driven through the
//! same commands an administrator types.

pub mod slapd;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The directory holding the built programs (target/debug).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    for p in ["configure", "configutil", "start-msg", "watcher", "standin"] {
        assert!(
            dir.join(p).is_file(),
            "{} is missing: build every program first (cargo build --bins), as tests/run does",
            dir.join(p).display()
        );
    }
    dir
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .to_path_buf()
}

/// A TCP port nobody listens on right now, and not handed out before by
/// this test process: the kernel may offer a port just released again,
/// and one installation's services would then collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Ports of one test installation.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub imap: u16,
    pub pop: u16,
    pub watcher: u16,
    /// dispatcher.cnf's SMTP (25), submission (587) and SMTPS (465).
    pub smtp: u16,
    pub submission: u16,
    pub smtps: u16,
}

/// One installation under a temporary directory: `base` is msg_svr_base,
/// `data` the configuration-and-data directory.
pub struct Install {
    pub dir: tempfile::TempDir,
    pub base: PathBuf,
    pub data: PathBuf,
    pub ports: Ports,
}

impl Install {
    /// Runs install.sh into a new temporary msg_svr_base. (Not `Default`:
    /// it installs things.)
    #[allow(clippy::new_without_default)]
    pub fn new() -> Install {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let data = dir.path().join("data");
        let out = Command::new("bash")
            .arg(repo_root().join("install/install.sh"))
            .args(["--no-build", "--prefix"])
            .arg(&base)
            .arg("--bindir")
            .arg(bin_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ports = Ports {
            imap: free_port(),
            pop: free_port(),
            watcher: free_port(),
            smtp: free_port(),
            submission: free_port(),
            smtps: free_port(),
        };
        Install {
            dir,
            base,
            data,
            ports,
        }
    }

    /// Puts the test tree's stand-in daemon in place of lib/PROGRAM.
    pub fn add_standin(&self, program: &str) {
        std::fs::copy(
            bin_dir().join("standin"),
            self.base.join("lib").join(program),
        )
        .unwrap();
    }

    /// A saveState for this installation: embedded directory, the current
    /// user, loopback ports, quick probes.
    pub fn state(&self) -> String {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
            .unwrap()
            .unwrap();
        let group = nix::unistd::Group::from_gid(user.gid).unwrap().unwrap();
        format!(
            "CONFIG_DATA_DIR = {data}\nHOSTNAME = mail.example.com\nCOMPONENTS = mta,store,webmail\n\
             SYSTEM_USER = {user}\nSYSTEM_GROUP = {group}\nCONFIG_DIRECTORY = embedded\n\
             UG_DIRECTORY = embedded\nUG_SUFFIX = o=usergroup\nPOSTMASTER = pma@example.com\n\
             ADMIN_PASSWORD = \"test password\"\nDEFAULT_DOMAIN = example.com\n\
             param.service.listenaddr = 127.0.0.1\nparam.service.imap.port = {imap}\n\
             param.service.imap.enablesslport = no\nparam.service.pop.port = {pop}\n\
             param.service.pop.enablesslport = no\nparam.local.watcher.port = {watcher}\n",
            data = self.data.display(),
            user = user.name,
            group = group.name,
            imap = self.ports.imap,
            pop = self.ports.pop,
            watcher = self.ports.watcher,
        )
    }

    /// Writes `state` to a file and runs configure silently with it.
    pub fn configure_with(&self, state: &str, extra: &[&str]) -> Output {
        let path = self.dir.path().join(format!("state-{}", free_port()));
        std::fs::write(&path, state).unwrap();
        let mut args = vec!["-nodisplay", "-noconsole", "-state", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.sbin("configure", &args);
        // Tests run side by side: no installation may take port 25.
        if out.status.success() && self.base.join("config/dispatcher.cnf").exists() {
            self.use_test_smtp_ports();
        }
        out
    }

    /// Configures with [`Install::state`], failing the test on an error.
    pub fn configure(&self) {
        let out = self.configure_with(&self.state(), &[]);
        assert_ok(&out, "configure");
    }

    /// A new installation configured with [`Install::state`], its
    /// dispatcher on this test's loopback ports.
    pub fn configured() -> Install {
        let i = Install::new();
        i.configure();
        i
    }

    /// Points dispatcher.cnf at this test's loopback ports and compiles
    /// it, as an administrator would.
    pub fn use_test_smtp_ports(&self) {
        let i = self;
        i.edit_config("dispatcher.cnf", |t| {
            t.replace(
                "PORT=25\n",
                &format!("PORT={}\nINTERFACE_ADDRESS=127.0.0.1\n", i.ports.smtp),
            )
            .replace(
                "PORT=587\n",
                &format!("PORT={}\nINTERFACE_ADDRESS=127.0.0.1\n", i.ports.submission),
            )
            .replace("TLS_PORT=465\n", &format!("TLS_PORT={}\n", i.ports.smtps))
        });
        i.cnbuild();
    }

    /// Rewrites a file of config/.
    pub fn edit_config(&self, name: &str, edit: impl FnOnce(&str) -> String) {
        let path = self.base.join("config").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, edit(&text)).unwrap();
    }

    /// `imsimta cnbuild`, failing the test on an error.
    pub fn cnbuild(&self) {
        assert_ok(&self.sbin("imsimta", &["cnbuild"]), "imsimta cnbuild");
    }

    /// `start-msg` of every enabled service, failing the test on an error.
    pub fn start(&self) {
        assert_ok(&self.sbin("start-msg", &[]), "start-msg");
    }

    /// `start-msg SERVICE`, failing the test on an error.
    pub fn start_service(&self, service: &str) {
        assert_ok(
            &self.sbin("start-msg", &[service]),
            &format!("start-msg {service}"),
        );
    }

    /// `stop-msg SERVICE`, failing the test on an error.
    pub fn stop_service(&self, service: &str) {
        assert_ok(
            &self.sbin("stop-msg", &[service]),
            &format!("stop-msg {service}"),
        );
    }

    /// Creates a user in the default domain with `commadmin`.
    pub fn add_user(&self, uid: &str, password: &str, extra: &[&str]) {
        let mut args = vec!["-W", password, "-F", uid, "-L", "Test"];
        args.extend_from_slice(extra);
        self.commadmin_user("create", uid, &args);
    }

    /// `commadmin user modify` of `uid` with `extra` options (`-A attr:value`
    /// and the like), failing the test on an error.
    pub fn modify_user(&self, uid: &str, extra: &[&str]) {
        self.commadmin_user("modify", uid, extra);
    }

    fn commadmin_user(&self, verb: &str, uid: &str, extra: &[&str]) {
        let mut args = vec![
            "user",
            verb,
            "-D",
            "admin",
            "-w",
            "test password",
            "-l",
            uid,
        ];
        args.extend_from_slice(extra);
        assert_ok(
            &self.sbin("commadmin", &args),
            &format!("commadmin user {verb}"),
        );
    }

    /// Every message in a mailbox (`user/joe/INBOX`), oldest first,
    /// read through stored.
    pub fn messages(&self, mailbox: &str) -> Vec<Vec<u8>> {
        let socket = self.base.join("data/run/stored.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let Ok((c, _)) = epistle_ipc::store_client::StoreClient::connect(&socket).await else {
                return Vec::new();
            };
            let Ok(open) = c.open(mailbox, false).await else {
                return Vec::new();
            };
            open.messages
                .iter()
                .filter_map(|m| {
                    std::fs::read(epistle_ipc::store::message_file(&open.dir, m.uid)).ok()
                })
                .collect()
        })
    }

    /// Waits until a mailbox holds `n` messages; returns them.
    pub fn wait_messages(&self, mailbox: &str, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        wait_for(Duration::from_secs(20), || {
            got = self.messages(mailbox);
            got.len() >= n
        });
        assert!(
            got.len() >= n,
            "{mailbox} holds {} messages, not {n}; mail.log_current:\n{}",
            got.len(),
            std::fs::read_to_string(self.base.join("log/mail.log_current")).unwrap_or_default()
        );
        got
    }

    /// Waits until a line of `log/mail.log_current` satisfies `pred`
    /// (records are written just after the work they record); returns
    /// the log, failing the test if no line does.
    pub fn wait_mail_log(&self, pred: impl Fn(&str) -> bool) -> String {
        let path = self.base.join("log/mail.log_current");
        let mut text = String::new();
        let found = wait_for(Duration::from_secs(20), || {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            text.lines().any(&pred)
        });
        assert!(found, "no such record in mail.log_current:\n{text}");
        text
    }

    /// Runs a Python 3 SMTP client script against this installation:
    /// `port` is the SMTP port and `smtp()` an `smtplib.SMTP` connected to
    /// it; smtplib, socket, ssl, subprocess, sys and time are imported.
    pub fn smtp_script(&self, body: &str) -> String {
        let script = format!(
            "import smtplib, socket, ssl, subprocess, sys, time\n\
             port = int(sys.argv[1])\n\
             def smtp():\n    return smtplib.SMTP('127.0.0.1', port, timeout=20)\n{body}"
        );
        self.python(&script, &[&self.ports.smtp.to_string()])
    }

    /// Runs a Python 3 script with arguments; the test fails when the
    /// script does (a failed assertion prints its traceback).
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .unwrap();
        assert_ok(&out, "python script");
        stdout(&out)
    }

    /// Pids of the processes running `lib/<program>` of this installation.
    pub fn pids_of(&self, program: &str) -> Vec<i32> {
        let exe = self.base.join("lib").join(program);
        let exe = exe.canonicalize().unwrap_or(exe);
        let mut out = Vec::new();
        for d in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = d.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(d.path().join("exe")).is_ok_and(|e| e == exe) {
                out.push(pid);
            }
        }
        out
    }

    /// Runs an admin command from sbin/.
    pub fn sbin(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new(self.base.join("sbin").join(cmd))
            .args(args)
            .env_remove("MSG_SVR_BASE")
            .output()
            .unwrap()
    }

    pub fn configutil(&self, args: &[&str]) -> Output {
        self.sbin("configutil", args)
    }

    /// The pid a service's pid file names.
    pub fn pid(&self, service: &str) -> Option<i32> {
        std::fs::read_to_string(self.data.join("run").join(format!("{service}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        // Leave nothing running behind a test, pass or fail.
        if self.base.join("data/run/watcher.sock").exists() {
            let _ = self.sbin("stop-msg", &["-f"]);
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fetches `url` with curl as `user:password`, certificates unchecked
/// (the installations' are self-signed); fails the test on an error.
pub fn curl(url: &str, credentials: &str, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-S", "-k", "--max-time", "20", "-u", credentials])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert_ok(&out, "curl");
    stdout(&out)
}

pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Reads the first line a server sends on `port`.
pub fn greeting(port: u16) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    (!line.is_empty()).then_some(line)
}
