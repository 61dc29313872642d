//! tcp_smtp_client: the program of the tcp_* channels. The job controller
//! starts it when outbound messages are due; it delivers each to the
//! recipients' mail hosts over SMTP (see `epistle_channels::outbound`)
//! and exits when nothing is due.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    epistle_channels::outbound::run_program("tcp_smtp_client", "tcp_local", false).await;
}
