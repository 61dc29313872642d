//! defragment: the defragment channel program. Channels with the
//! `defragment` keyword send it the `message/partial` parts they are
//! given; it puts each message back together once all its parts are
//! queued, and sends a part on alone after the channel's first `notices`
//! age (see `epistle_channels::defragment`).

use epistle_channels::defragment::{DEFRAGMENT_CHANNEL, Defragment};
use epistle_channels::master::{self, Context};
use epistle_daemon::Daemon;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let channel = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFRAGMENT_CHANNEL.into());
    let d = match Daemon::init_worker("defragment", "defragment") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("defragment: {e:#}");
            std::process::exit(1);
        }
    };
    let ctx = match Context::load(&channel, d.base.clone(), d.config.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("defragment: {e:#}");
            std::process::exit(1);
        }
    };
    if let Err(e) = master::run(&ctx, &mut Defragment).await {
        tracing::error!("defragment: {e:#}");
        std::process::exit(1);
    }
}
