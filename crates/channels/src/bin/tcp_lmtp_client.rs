//! tcp_lmtp_client: the program of the lmtp_* channels. The job controller
//! starts it when messages for a store host are due; it delivers each
//! over LMTP to the channel's `daemon` host (see
//! `epistle_channels::outbound`) and exits when nothing is due.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    epistle_channels::outbound::run_program("tcp_lmtp_client", "lmtp_store", true).await;
}
