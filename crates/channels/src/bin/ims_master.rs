//! ims_master: the ims-ms channel program. The job controller starts it
//! when store deliveries are due; it delivers each message into the
//! recipients' mailboxes through stored and exits when nothing is due.
//!
//! Per recipient: the owner (and folder, for `uid+folder` addresses) from
//! the store address; the directory says whether the account takes mail
//! now; stored appends (creating the INBOX of a new user). A full mailbox
//! is retried until `store.quotagraceperiod` hours have passed, then
//! returned.

use std::time::Duration;

use epistle_channels::master::{self, Context, Deliver, Diagnostic, Job, Outcome};
use epistle_daemon::Daemon;
use epistle_directory::Delivery;
use epistle_ipc::store::StoreError;
use epistle_ipc::store_client::StoreClient;
use epistle_mta::resolve::store_owner;

struct StoreDelivery {
    store: Option<StoreClient>,
}

impl StoreDelivery {
    async fn client(&mut self, ctx: &Context) -> Result<StoreClient, Diagnostic> {
        if let Some(c) = &self.store {
            return Ok(c.clone());
        }
        match StoreClient::connect(&ctx.base.store_socket()).await {
            Ok((c, _events)) => {
                self.store = Some(c.clone());
                Ok(c)
            }
            Err(e) => Err(Diagnostic::new(
                "4.3.0",
                format!("message store unavailable: {e}"),
            )),
        }
    }

    async fn one(&mut self, ctx: &Context, job: &Job, address: &str) -> Outcome {
        let Some((owner, folder)) = store_owner(address) else {
            return Outcome::Failed(Diagnostic::new(
                "5.1.1",
                format!("{address} is not a message store address"),
            ));
        };
        let Some(dir) = &ctx.directory else {
            return Outcome::Deferred(Diagnostic::new("4.4.3", "directory unavailable"));
        };
        let user = match dir.user_by_login(&owner).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                return Outcome::Failed(Diagnostic::new("5.1.1", format!("no such user {owner}")));
            }
            Err(e) => {
                return Outcome::Deferred(Diagnostic::new("4.4.3", format!("directory: {e}")));
            }
        };
        match user.status.delivery() {
            Delivery::Accept => {}
            Delivery::Hold | Delivery::TryLater => {
                return Outcome::Deferred(Diagnostic::new(
                    "4.2.1",
                    format!("mailbox of {owner} is {}", user.status.as_str()),
                ));
            }
            Delivery::Reject => {
                return Outcome::Failed(Diagnostic::new(
                    "5.2.1",
                    format!("mailbox of {owner} is {}", user.status.as_str()),
                ));
            }
        }
        let store = match self.client(ctx).await {
            Ok(s) => s,
            Err(d) => return Outcome::Deferred(d),
        };
        let now = chrono::Utc::now().timestamp();
        let inbox = format!("user/{owner}/INBOX");
        let target = folder
            .map(|f| format!("user/{owner}/{f}"))
            .unwrap_or_else(|| inbox.clone());
        let mut result = store.deliver(&target, &job.message, &[], now).await;
        if target != inbox
            && matches!(
                result,
                Err(StoreError::NoMailbox(_) | StoreError::Invalid(_))
            )
        {
            // fileinto a folder that is not there: the INBOX takes it.
            result = store.deliver(&inbox, &job.message, &[], now).await;
        }
        match result {
            Ok((uid, _)) => {
                tracing::info!(target: "Store", "append:{uid}:{inbox}:{}", job.message.len());
                Outcome::Delivered(format!("delivered to {target} as UID {uid}"))
            }
            Err(StoreError::OverQuota(why)) => {
                let grace = Duration::from_secs(
                    ctx.config
                        .get_u64("store.quotagraceperiod")
                        .saturating_mul(3600),
                );
                let d = Diagnostic::new("4.2.2", format!("mailbox full: {why}"));
                if job.age() >= grace {
                    Outcome::Failed(Diagnostic {
                        status: "5.2.2".into(),
                        ..d
                    })
                } else {
                    Outcome::Deferred(d)
                }
            }
            Err(e @ (StoreError::Io(_) | StoreError::Db(_))) => {
                self.store = None; // reconnect next time
                Outcome::Deferred(Diagnostic::new("4.3.0", e.to_string()))
            }
            Err(e) => Outcome::Failed(Diagnostic::new("5.2.0", e.to_string())),
        }
    }
}

impl Deliver for StoreDelivery {
    async fn deliver(&mut self, ctx: &Context, job: &Job) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(job.envelope.recipients.len());
        for r in &job.envelope.recipients {
            out.push(self.one(ctx, job, &r.address).await);
        }
        out
    }
}

#[tokio::main]
async fn main() {
    let channel = std::env::args().nth(1).unwrap_or_else(|| "ims-ms".into());
    let d = match Daemon::init_worker("ims_master", "ims_master") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ims_master: {e:#}");
            std::process::exit(1);
        }
    };
    let ctx = match Context::load(&channel, d.base.clone(), d.config.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("ims_master: {e:#}");
            std::process::exit(1);
        }
    };
    let mut delivery = StoreDelivery { store: None };
    if let Err(e) = master::run(&ctx, &mut delivery).await {
        tracing::error!("ims_master: {e:#}");
        std::process::exit(1);
    }
}
