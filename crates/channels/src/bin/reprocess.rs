//! reprocess: the reprocess channel program (and the program of a channel
//! an `expandchannel` keyword names). Its messages' recipients are
//! addresses still to be expanded: those an SMTP session took past its
//! source channel's `expandlimit` without looking them up, or mail sent
//! to `user%domain@reprocess`. Each is resolved as the SMTP server would
//! have done it (rewrite rules, aliases, the directory's users,
//! forwarding and groups, with this channel as the source channel; then
//! SEND_ACCESS and MAIL_ACCESS as the session would have asked them),
//! and the message is queued on for every address found, ORCPT and
//! NOTIFY kept. An address that leads nowhere goes back to the sender as
//! a failure notice; a directory that cannot be reached defers it.

use epistle_channels::master::{self, Context, Deliver, Diagnostic, Job, Outcome};
use epistle_mta::access::{self, AccessFlags};
use epistle_mta::queuefile::{Envelope, Recipient};
use epistle_mta::resolve::{BITBUCKET_CHANNEL, Resolver, Route};
use epistle_mta::smtp::Reply;

struct Reprocess;

/// The address to expand: a queued recipient as given, or for one routed
/// here by a rewrite rule (`$U@reprocess-daemon`), the address it stands
/// for (`user%domain` becomes `user@domain`).
fn address_to_expand(recipient: &str, tag: &str) -> String {
    match recipient.rsplit_once('@') {
        Some((local, host)) if host.eq_ignore_ascii_case(tag) => match local.rsplit_once('%') {
            Some((user, domain)) => format!("{user}@{domain}"),
            None => local.to_string(),
        },
        _ => recipient.to_string(),
    }
}

fn diagnostic(reply: &Reply) -> Diagnostic {
    let fallback = if reply.code >= 500 { "5.1.1" } else { "4.4.3" };
    Diagnostic::new(reply.enhanced.unwrap_or(fallback), reply.lines.join(" "))
}

/// SEND_ACCESS and MAIL_ACCESS for each address found, as the SMTP
/// session would have asked them: `source|from|channel|address`, with the
/// session's flags and the recipient's NOTIFY, and for MAIL_ACCESS the
/// connection's transport in front, all from the queue file's origin. A
/// message that did not come by SMTP has no connection to ask MAIL_ACCESS
/// about. A refusal of any refuses the recipient (`Err`, failed or, for
/// a table's own 4xx, deferred); `$B` sends that address to the bitbucket.
fn access_checks(
    ctx: &Context,
    job: &Job,
    recipient: &Recipient,
    routes: &mut [Route],
) -> Result<(), Outcome> {
    let env = &job.envelope;
    let origin = env.origin.as_ref();
    let flags = AccessFlags::of_session(
        origin.map_or("", |o| o.flags.as_str()),
        recipient.notify.as_deref(),
    );
    for route in routes.iter_mut() {
        let probe = format!(
            "{}|{}|{}|{}",
            env.source_channel, env.from, route.channel, route.address
        );
        let mail_probe = origin.map(|o| format!("{}|{probe}", o.transport));
        let asked = [("SEND_ACCESS", Some(probe)), ("MAIL_ACCESS", mail_probe)];
        for (table, probe) in asked {
            let Some(probe) = probe else { continue };
            let Some(answer) = access::ask(&ctx.mta.mappings, table, &probe, flags) else {
                continue;
            };
            if let Some(r) = &answer.refusal {
                // A table's own 4xx defers; a refusal is otherwise final.
                let temporary = r.code.is_some_and(|c| c < 500);
                let default = if temporary { "4.7.1" } else { "5.7.1" };
                let status = r.enhanced.clone().unwrap_or_else(|| default.into());
                let diagnostic = Diagnostic::new(&status, r.text.clone());
                return Err(match temporary {
                    true => Outcome::Deferred(diagnostic),
                    false => Outcome::Failed(diagnostic),
                });
            }
            if answer.bitbucket {
                route.channel = BITBUCKET_CHANNEL.to_string();
            }
        }
    }
    Ok(())
}

impl Deliver for Reprocess {
    async fn deliver(&mut self, ctx: &Context, job: &Job) -> Vec<Outcome> {
        // Mail is routed again because something changed (a user taken
        // off hold for `imsimta process_held`): each message is resolved
        // afresh, not from answers up to `local.ugldap.cachettl` old.
        if let Some(dir) = ctx.directory.as_deref() {
            dir.invalidate();
        }
        let resolver = Resolver {
            config: &ctx.mta,
            directory: ctx.directory.as_deref(),
        };
        let tag = ctx
            .mta
            .imta
            .channel(&ctx.channel)
            .map_or(String::new(), |c| c.tag.clone());
        let mut outcomes = Vec::with_capacity(job.envelope.recipients.len());
        // Queue recipients found, each with the index of the one it came from.
        let mut found: Vec<(usize, String, Recipient)> = Vec::new();
        for (i, r) in job.envelope.recipients.iter().enumerate() {
            let address = address_to_expand(&r.address, &tag);
            let resolved = resolver
                .resolve(&address, &job.envelope.from, &ctx.channel)
                .await;
            let routes = match resolved {
                Ok(res) => res.routes,
                Err(reply) if reply.code >= 500 => {
                    outcomes.push(Outcome::Failed(diagnostic(&reply)));
                    continue;
                }
                Err(reply) => {
                    outcomes.push(Outcome::Deferred(diagnostic(&reply)));
                    continue;
                }
            };
            // Back into this channel would go round for ever.
            let mut onward: Vec<_> = routes
                .into_iter()
                .filter(|route| !route.channel.eq_ignore_ascii_case(&ctx.channel))
                .collect();
            if let Err(refused) = access_checks(ctx, job, r, &mut onward) {
                outcomes.push(refused);
                continue;
            }
            if onward.is_empty() {
                outcomes.push(Outcome::Failed(Diagnostic::new(
                    "5.4.6",
                    format!("{address} leads only back to the {} channel", ctx.channel),
                )));
                continue;
            }
            outcomes.push(Outcome::Delivered(format!(
                "expanded into {} address(es)",
                onward.len()
            )));
            let orcpt = r
                .orcpt
                .clone()
                .or_else(|| Some(format!("rfc822;{address}")));
            for route in onward {
                found.push((
                    i,
                    route.channel,
                    Recipient {
                        address: route.address,
                        orcpt: orcpt.clone(),
                        notify: r.notify.clone(),
                    },
                ));
            }
        }
        if found.is_empty() {
            return outcomes;
        }
        let envelope = Envelope {
            recipients: Vec::new(),
            source_channel: ctx.channel.clone(),
            ..job.envelope.clone()
        };
        let recipients = found
            .iter()
            .map(|(_, ch, r)| (ch.clone(), r.clone()))
            .collect();
        if let Err(why) = master::queue_on(ctx, envelope, recipients, job.message.clone(), "").await
        {
            // Nothing was queued (all or none): the expanded ones wait.
            let again =
                Diagnostic::new("4.3.0", format!("cannot queue the expanded message: {why}"));
            for (i, _, _) in &found {
                outcomes[*i] = Outcome::Deferred(again.clone());
            }
        }
        outcomes
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    master::program_main("reprocess", "reprocess", |_| Ok(Reprocess)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_routed_here_stand_for_their_percent_form() {
        let tag = "reprocess-daemon";
        assert_eq!(
            address_to_expand("joe%example.com@reprocess-daemon", tag),
            "joe@example.com"
        );
        assert_eq!(
            address_to_expand("a%b%c.example@REPROCESS-daemon", tag),
            "a%b@c.example"
        );
        assert_eq!(
            address_to_expand("list@example.com", tag),
            "list@example.com"
        );
        assert_eq!(address_to_expand("joe@reprocess-daemon", tag), "joe");
    }
}
