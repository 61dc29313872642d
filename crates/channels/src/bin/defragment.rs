//! defragment: the defragment channel program. Channels with the
//! `defragment` keyword send it the `message/partial` parts they are
//! given; it puts each message back together once all its parts are
//! queued, and sends a part on alone after the channel's first `notices`
//! age (see `epistle_channels::defragment`).

use epistle_channels::defragment::{DEFRAGMENT_CHANNEL, Defragment};
use epistle_channels::master;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    master::program_main("defragment", DEFRAGMENT_CHANNEL, |_| Ok(Defragment)).await;
}
