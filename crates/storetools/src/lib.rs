//! What the store tools share: reaching stored, and a progress line on a
//! terminal.

use std::io::{IsTerminal, Write};

use epistle_config::MsgSvrBase;
use epistle_ipc::store_client::StoreClient;

/// A tool's `main`: runs `run` with the arguments on a small runtime and
/// turns an error into `TOOL: message` and exit status 1.
pub fn main_with<F, Fut>(tool: &str, run: F) -> std::process::ExitCode
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{tool}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A connection to the running store server, or an error telling what to do.
pub async fn connect(tool: &str) -> anyhow::Result<StoreClient> {
    let socket = MsgSvrBase::locate().store_socket();
    let (c, _) = StoreClient::connect(&socket)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; {tool} needs the store running (start-msg store)"))?;
    Ok(c)
}

/// "N messages" updated in place on stderr when it is a terminal.
pub struct Progress {
    on: bool,
    count: u64,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            on: std::io::stderr().is_terminal(),
            count: 0,
        }
    }

    pub fn tick(&mut self, what: &str) {
        self.count += 1;
        if self.on && self.count.is_multiple_of(50) {
            eprint!("\r{} messages ({what})\x1b[K", self.count);
            let _ = std::io::stderr().flush();
        }
    }

    pub fn done(&self) {
        if self.on {
            eprintln!("\r{} messages\x1b[K", self.count);
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}
