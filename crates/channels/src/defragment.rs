//! `message/partial` reassembly (RFC 2046 §5.2.2), as the original's
//! `defragment` keyword and defragment channel do it.
//!
//! A channel program whose channel has `defragment` sends a part it is
//! given to the `defragment` channel's queue instead of delivering it
//! ([`divert`]). The defragment program ([`Defragment`]) looks, for each
//! part, for the other parts of the same message to the same recipients
//! in its queue: with all of them there, it puts the whole message back
//! together, queues it for the recipients' channels and removes the
//! parts; otherwise the part waits (retried on the channel's backoff).
//! A part still alone when it is as old as the channel's first `notices`
//! age is sent on as it is. Whatever leaves the defragment channel has it
//! as source channel, so it is never diverted again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use epistle_mta::partial::{self, Part};
use epistle_mta::queuefile::{Envelope, Recipient};
use epistle_mta::resolve::Resolver;
use epistle_mta::retry::{Notices, Priority};

use crate::master::{Context, Deliver, Diagnostic, Job, Outcome, queue_on};

/// The channel that holds parts.
pub const DEFRAGMENT_CHANNEL: &str = "defragment";

/// Sends a `message/partial` part for a channel with `defragment` to the
/// defragment channel; `None` when the job is delivered normally.
pub async fn divert(ctx: &Context, job: &Job) -> Option<Vec<Outcome>> {
    let imta = &ctx.mta.imta;
    let wants = imta
        .channel(&ctx.channel)
        .and_then(|c| c.last_of(&["defragment", "nodefragment"]))
        .is_some_and(|k| k.name == "defragment");
    if !wants
        || ctx.channel.eq_ignore_ascii_case(DEFRAGMENT_CHANNEL)
        || job
            .envelope
            .source_channel
            .eq_ignore_ascii_case(DEFRAGMENT_CHANNEL)
        || imta.channel(DEFRAGMENT_CHANNEL).is_none()
    {
        return None;
    }
    let part = partial::part_of(&job.message)?;
    let recipients: Vec<(String, Recipient)> = job
        .envelope
        .recipients
        .iter()
        .map(|r| (DEFRAGMENT_CHANNEL.to_string(), r.clone()))
        .collect();
    let envelope = job.envelope.clone();
    let n = recipients.len();
    let outcome = match queue_on(ctx, envelope, recipients, job.message.clone(), "").await {
        Ok(()) => Outcome::Delivered(format!(
            "part {} of message/partial {} held for reassembly",
            part.number, part.id
        )),
        Err(why) => Outcome::Deferred(Diagnostic::new(
            "4.3.0",
            format!("cannot hold a message/partial part: {why}"),
        )),
    };
    Some(vec![outcome; n])
}

/// The defragment channel's delivery step.
pub struct Defragment;

/// A waiting part of the same message, read from the queue.
struct Sibling {
    part: Part,
    path: PathBuf,
    message: Vec<u8>,
}

fn same_recipients(a: &Envelope, b: &Envelope) -> bool {
    let set = |e: &Envelope| {
        let mut v: Vec<String> = e
            .recipients
            .iter()
            .map(|r| r.address.to_ascii_lowercase())
            .collect();
        v.sort();
        v
    };
    set(a) == set(b)
}

/// The other waiting parts of `part`'s message to the same recipients.
fn siblings(ctx: &Context, job: &Job, part: &Part) -> Vec<Sibling> {
    let Ok(entries) = ctx.queue.entries(&ctx.channel) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| !e.held && e.path != job.path) {
        let Ok(data) = std::fs::read(&e.path) else {
            continue;
        };
        let Ok((env, at)) = Envelope::decode(&data) else {
            continue;
        };
        let message = &data[at..];
        match partial::part_of(message) {
            Some(p) if p.id == part.id && same_recipients(&env, &job.envelope) => {
                out.push(Sibling {
                    part: p,
                    path: e.path.clone(),
                    message: message.to_vec(),
                })
            }
            _ => {}
        }
    }
    out
}

impl Defragment {
    /// How long a part waits for the others: the channel's first
    /// `notices` age.
    fn hold_period(ctx: &Context) -> std::time::Duration {
        let unit = epistle_mta::retry::return_unit(&ctx.mta.options);
        ctx.mta
            .imta
            .channel(&ctx.channel)
            .and_then(|c| Notices::for_channel(&ctx.mta.imta, c, Priority::Normal, unit).ok())
            .and_then(|n| n.ages.first().copied())
            .unwrap_or(unit * 2)
    }

    /// Queues `message` for the recipients' own channels, from the
    /// defragment channel.
    async fn send_on(ctx: &Context, job: &Job, message: Vec<u8>) -> Outcome {
        let resolver = Resolver {
            config: &ctx.mta,
            directory: None,
        };
        let imta = &ctx.mta.imta;
        let mut recipients = Vec::new();
        for r in &job.envelope.recipients {
            // A queued address names its channel by its tag
            // (`uid@ims-ms-daemon`); other ones are rewritten.
            let tagged = r
                .address
                .rsplit_once('@')
                .and_then(|(_, host)| imta.channel_by_tag(host))
                .map(|c| c.name.clone());
            let channel = tagged.or_else(|| {
                resolver
                    .rewrite(&r.address, &ctx.channel)
                    .ok()
                    .map(|w| w.channel)
            });
            match channel {
                Some(ch) if !ch.eq_ignore_ascii_case(&ctx.channel) => {
                    recipients.push((ch, r.clone()))
                }
                _ => {
                    return Outcome::Failed(Diagnostic::new(
                        "5.1.2",
                        format!("{} has no channel to go on to", r.address),
                    ));
                }
            }
        }
        let envelope = Envelope {
            recipients: Vec::new(),
            source_channel: ctx.channel.clone(),
            ..job.envelope.clone()
        };
        match queue_on(ctx, envelope, recipients, message, "").await {
            Ok(()) => Outcome::Delivered("sent on".into()),
            Err(why) => Outcome::Deferred(Diagnostic::new(
                "4.3.0",
                format!("cannot queue the message on: {why}"),
            )),
        }
    }
}

impl Deliver for Defragment {
    /// Two threads could each find the last part and join a message twice.
    const CONCURRENT: bool = false;

    async fn deliver(&mut self, ctx: &Context, job: &Job) -> Vec<Outcome> {
        let n = job.envelope.recipients.len();
        let Some(part) = partial::part_of(&job.message) else {
            // Not a part (sent here by name): on it goes.
            return vec![Defragment::send_on(ctx, job, job.message.clone()).await; n];
        };
        let mut by_number: BTreeMap<u32, (Part, &[u8])> = BTreeMap::new();
        let others = siblings(ctx, job, &part);
        by_number.insert(part.number, (part.clone(), &job.message));
        for s in &others {
            by_number
                .entry(s.part.number)
                .or_insert((s.part.clone(), &s.message));
        }
        let parts: Vec<Part> = by_number.values().map(|(p, _)| p.clone()).collect();
        let size: u64 = by_number.values().map(|(_, m)| m.len() as u64).sum();
        // A whole bigger than any message this MTA takes is not built:
        // its parts go on alone once they have waited.
        let fits = size <= epistle_mta::retry::message_limit(&ctx.mta.options);
        if fits && partial::complete(&parts) {
            let pieces: Vec<&[u8]> = by_number.values().map(|(_, m)| *m).collect();
            let whole = partial::reassemble(&pieces);
            let outcome = Defragment::send_on(ctx, job, whole).await;
            if let Outcome::Delivered(_) = outcome {
                // The whole message is queued: its other parts are done.
                for s in &others {
                    let _ = ctx.queue.retire(&s.path);
                }
                let what = format!("reassembled from {} parts", parts.len());
                return vec![Outcome::Delivered(what); n];
            }
            return vec![outcome; n];
        }
        if job.age() >= Defragment::hold_period(ctx) {
            return vec![Defragment::send_on(ctx, job, job.message.clone()).await; n];
        }
        let waiting = Diagnostic::new(
            "4.2.0",
            format!(
                "part {} of message/partial {} waits for the others",
                part.number, part.id
            ),
        );
        vec![Outcome::Deferred(waiting); n]
    }
}
