//! tcp_smtp_client: the program of the tcp_* channels. The job controller
//! starts it when outbound messages are due; it delivers each to the
//! recipients' mail hosts over SMTP (see `epistle_channels::outbound`)
//! and exits when nothing is due.

use epistle_channels::master::{self, Context};
use epistle_channels::outbound::Outbound;
use epistle_daemon::Daemon;

#[tokio::main]
async fn main() {
    let channel = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp_local".into());
    let d = match Daemon::init_worker("tcp_smtp_client", "tcp_smtp_client") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tcp_smtp_client: {e:#}");
            std::process::exit(1);
        }
    };
    let result = async {
        let ctx = Context::load(&channel, d.base.clone(), d.config.clone()).await?;
        let mut outbound = Outbound::new(&ctx, false)?;
        master::run(&ctx, &mut outbound).await
    };
    if let Err(e) = result.await {
        tracing::error!("tcp_smtp_client {channel}: {e:#}");
        std::process::exit(1);
    }
}
