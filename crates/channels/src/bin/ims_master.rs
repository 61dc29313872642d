//! ims_master: the ims-ms channel program. The job controller starts it
//! when store deliveries are due; it delivers each message into the
//! recipients' mailboxes through stored (see
//! `epistle_channels::store_delivery`), with `Return-Path:` first, and
//! exits when nothing is due. A message for a full mailbox waits
//! `store.quotagraceperiod` hours for room (`holdexquota`, the default),
//! or goes back to its sender at once when the channel says `noexquota`.

use std::time::Duration;

use epistle_channels::master::{self, Context, Deliver, Job, Outcome};
use epistle_channels::store_delivery::StoreDelivery;
use epistle_mta::header::with_return_path;

struct ImsMaster(StoreDelivery);

impl Deliver for ImsMaster {
    async fn deliver(&mut self, ctx: &Context, job: &Job) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(job.envelope.recipients.len());
        // Final delivery: the envelope sender goes into the message.
        let message = with_return_path(&job.message, &job.envelope.from);
        for r in &job.envelope.recipients {
            let o = self
                .0
                .deliver(ctx.directory.as_deref(), &r.address, &message, job.age())
                .await;
            out.push(o);
        }
        out
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    master::program_main("ims_master", "ims-ms", |ctx| {
        // Over quota: held for store.quotagraceperiod hours (holdexquota,
        // the default), or returned at once (noexquota).
        let returns_at_once = ctx
            .mta
            .imta
            .channel(&ctx.channel)
            .is_some_and(|c| c.has("noexquota"));
        let grace = if returns_at_once {
            Duration::ZERO
        } else {
            Duration::from_secs(
                ctx.config
                    .get_u64("store.quotagraceperiod")
                    .saturating_mul(3600),
            )
        };
        Ok(ImsMaster(StoreDelivery::new(
            ctx.base.store_socket(),
            grace,
        )))
    })
    .await;
}
