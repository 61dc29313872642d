//! What every Epistle daemon shares. A daemon's `main` reads as its start-up
//! story:
//!
//! ```text
//! let mut d = Daemon::init("imap", "imapd")?;       // config, log, pid file
//! let l = d.bind_tcp("service.imap.port", "imap")?;  // bind (maybe as root)
//! d.drop_privileges()?;                              // then become mailsrv
//! d.ready()?;                                        // tell the watcher
//! serve(l, Signals::new()?).await;                   // until TERM
//! ```
//!
//! A failure before `ready` goes through [`Daemon::fail`], which logs it,
//! tells the watcher why (so start-msg can name the reason and the log) and
//! exits non-zero.

pub mod access;
pub mod logfile;
pub mod logging;
pub mod privileges;
pub mod signals;
pub mod tls;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use epistle_config::{Config, MsgSvrBase};
use epistle_ipc::watcher::{Listener, Request, SERVICE_ENV};

pub use logging::LogHandle;

/// A byte stream a protocol session runs over, plain or TLS, so that
/// STARTTLS can swap one for the other under the session.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
pub use signals::{SignalEvent, Signals};

/// Reads what the peer sent next and appends it to `buf`; `Ok(0)` at the
/// end of the stream. The bytes land in a buffer on the stack of the
/// poll that finds them, so a session waiting for input keeps no read
/// buffer, neither in its future nor on the heap: with many thousands
/// of idle sessions, that is most of what one costs.
pub fn read_appending<'a>(
    stream: &'a mut (impl tokio::io::AsyncRead + Unpin + ?Sized),
    buf: &'a mut Vec<u8>,
) -> impl std::future::Future<Output = std::io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        let mut chunk = [0u8; 8192];
        let mut read = tokio::io::ReadBuf::new(&mut chunk);
        std::task::ready!(std::pin::Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        std::task::Poll::Ready(Ok(read.filled().len()))
    })
}

/// Makes the allocator give large blocks back to the system when they are
/// freed. glibc raises its mmap threshold each time such a block is freed,
/// after which a password check's 19 MiB argon2 buffer comes from the heap
/// and stays resident for the life of the process: a fixed threshold keeps
/// a daemon's memory to what its sessions hold. And the threads share two
/// heaps instead of one each: a daemon's threads come and go (work that
/// may block runs on a thread of its own), and every heap a thread made
/// keeps its free space.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator tuning; called at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft limit on open descriptors to the hard limit: a server
/// holding thousands of sessions needs a descriptor for each (imapd two:
/// the client and its store connection), and the usual soft default of
/// 1024 would refuse connections long before memory runs short.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A running daemon's identity, configuration and resources.
pub struct Daemon {
    pub service: String,
    pub program: String,
    pub base: MsgSvrBase,
    pub config: Config,
    pub log: LogHandle,
    listeners: Vec<Listener>,
    /// `None` for worker processes another daemon starts.
    pid_file: Option<PidFile>,
    /// The connection to the watcher, opened at init while the daemon may
    /// still be root, so that reporting works after privileges are dropped.
    watcher: Option<UnixStream>,
}

impl Daemon {
    /// Loads the configuration, opens the service log and writes the pid
    /// file. Errors here go to stderr, since there is no log yet.
    pub fn init(service: &str, program: &str) -> anyhow::Result<Daemon> {
        let mut d = Daemon::init_worker(service, program)?;
        d.pid_file = Some(PidFile::create(d.base.pid_file(service)).with_context(|| {
            format!("cannot write the pid file under {}", d.base.run().display())
        })?);
        d.watcher = match std::env::var_os(SERVICE_ENV) {
            None => None, // started by hand, not by the watcher
            Some(_) => {
                let path = d.base.watcher_socket();
                let s = UnixStream::connect(&path)
                    .with_context(|| format!("cannot reach the watcher at {}", path.display()))?;
                s.set_write_timeout(Some(Duration::from_secs(5)))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                Some(s)
            }
        };
        Ok(d)
    }

    /// What [`Daemon::init`] does for a worker process another daemon
    /// starts and watches (the dispatcher's SMTP servers, the job
    /// controller's channel programs): configuration and log, but no pid
    /// file and no watcher link.
    pub fn init_worker(service: &str, program: &str) -> anyhow::Result<Daemon> {
        return_large_allocations();
        raise_descriptor_limit();
        let base = MsgSvrBase::locate();
        let config = base.config_files().load().map_err(|errs| {
            let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
            anyhow::anyhow!(
                "the configuration has errors; correct them with configutil:\n{}",
                lines.join("\n")
            )
        })?;
        let log = logging::init(&base, &config, service, program).with_context(|| {
            format!(
                "cannot open the log of {service} under {}",
                base.log().display()
            )
        })?;
        for name in config.unknown() {
            tracing::warn!("unknown parameter {name} in the site configuration is ignored");
        }
        Ok(Daemon {
            service: service.to_string(),
            program: program.to_string(),
            base,
            config,
            log,
            listeners: Vec::new(),
            pid_file: None,
            watcher: None,
        })
    }

    /// Binds the TCP port named by `port_param` on `service.listenaddr`;
    /// `None` when the port is 0 (turned off). The error names the address,
    /// the parameter and what to do.
    pub fn bind_tcp(
        &mut self,
        port_param: &str,
        protocol: &str,
    ) -> anyhow::Result<Option<TcpListener>> {
        let port = self.config.get_port(port_param);
        if port == 0 {
            return Ok(None);
        }
        let host = match self
            .config
            .get("service.listenaddr")
            .split_whitespace()
            .next()
        {
            None => "0.0.0.0",
            Some(h) => h,
        };
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .or_else(|_| format!("[{host}]:{port}").parse())
            .with_context(|| format!("service.listenaddr {host:?} is not an IP address"))?;
        let fix = format!("choose another with configutil -o {port_param} -v PORT");
        self.bind_addr(addr, protocol, port_param, &fix).map(Some)
    }

    /// Binds `addr`; `origin` names where the port was chosen (a parameter,
    /// or a file and section) and `fix` how to choose another, for the
    /// error.
    pub fn bind_addr(
        &mut self,
        addr: SocketAddr,
        protocol: &str,
        origin: &str,
        fix: &str,
    ) -> anyhow::Result<TcpListener> {
        let port = addr.port();
        let listener = TcpListener::bind(addr).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on port {port} ({origin}) at {addr}: {e}; free the port or {fix}"
            )
        })?;
        listener.set_nonblocking(true)?;
        self.listeners.push(Listener {
            addr: listener.local_addr()?.to_string(),
            protocol: protocol.to_string(),
            param: origin.to_string(),
        });
        Ok(listener)
    }

    /// Becomes `local.serveruid`/`local.servergid` when running as root.
    pub fn drop_privileges(&self) -> anyhow::Result<()> {
        let mut owned = vec![
            self.base.service_log_dir(&self.config, &self.service),
            self.log.path(),
        ];
        owned.extend(self.pid_file.as_ref().map(|p| p.path.clone()));
        privileges::drop_to(
            self.config.get("local.serveruid"),
            self.config.get("local.servergid"),
            &owned,
        )
    }

    /// Tells the watcher (when it started us) that we serve.
    pub fn ready(&self) -> anyhow::Result<()> {
        tracing::info!(
            "{} started; listening on {}",
            self.service,
            self.listeners
                .iter()
                .map(|l| l.addr.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.tell_watcher(&Request::Ready {
            service: self.service.clone(),
            pid: std::process::id(),
            listeners: self.listeners.clone(),
        })
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Logs why the daemon cannot start, tells the watcher and stderr, and
    /// exits with status 1.
    pub fn fail(&self, err: &anyhow::Error) -> ! {
        let reason = format!("{err:#}");
        tracing::error!("{} cannot start: {reason}", self.service);
        let _ = self.tell_watcher(&Request::Failed {
            service: self.service.clone(),
            pid: std::process::id(),
            reason: reason.clone(),
        });
        eprintln!("{}: {reason}", self.program);
        std::process::exit(1)
    }

    /// Re-reads the configuration after HUP; on errors the old one stays.
    pub fn reload(&mut self) {
        match self.base.config_files().load() {
            Ok(cfg) => {
                self.log.reconfigure(&cfg);
                self.config = cfg;
                tracing::info!("configuration reloaded");
            }
            Err(errs) => {
                for e in errs {
                    tracing::error!("configuration not reloaded: {e}");
                }
            }
        }
    }

    fn tell_watcher(&self, msg: &Request) -> anyhow::Result<()> {
        let Some(mut s) = self.watcher.as_ref() else {
            return Ok(());
        };
        epistle_ipc::frame::write_blocking(&mut s, msg).context("cannot report to the watcher")?;
        // Wait for the acknowledgement: after it, the watcher knows.
        let _: epistle_ipc::watcher::Reply =
            epistle_ipc::frame::read_blocking(&mut s).context("the watcher did not acknowledge")?;
        Ok(())
    }
}

/// Binds a daemon's Unix socket (mode 0600: the mail system's user and
/// root only), refusing when another live process already answers there;
/// a stale socket file left by a killed process is replaced.
pub fn bind_unix(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if UnixStream::connect(path).is_ok() {
        anyhow::bail!("another process already answers on {}", path.display());
    }
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// `data/run/<service>.pid`, removed when the daemon exits normally.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn create(path: PathBuf) -> std::io::Result<PidFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("pid.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{}", std::process::id())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(PidFile { path })
    }

    /// The pid recorded in a pid file, if any.
    pub fn read(path: &std::path::Path) -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if PidFile::read(&self.path) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A protocol greeting from its `service.*.banner` template: `%h` the
/// host, `%p` the protocol, `%P` the product, `%V` its version, `%%` a
/// percent sign. Line breaks are dropped, so a banner cannot forge a
/// second protocol line.
pub fn banner(template: &str, host: &str, protocol: &str) -> String {
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            if c != '\r' && c != '\n' {
                out.push(c);
            }
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(protocol),
            Some('P') => out.push_str("Epistle"),
            Some('V') => out.push_str(env!("CARGO_PKG_VERSION")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod banner_tests {
    #[test]
    fn placeholders() {
        assert_eq!(
            super::banner("%h %p service (%P %V) 100%% %x\r\n* BYE", "mail", "IMAP4"),
            format!(
                "mail IMAP4 service (Epistle {}) 100% %x* BYE",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
