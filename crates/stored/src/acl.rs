//! What a connection acting for a user (ActAs) may ask for: each request
//! against the RFC 4314 rights it needs on the mailboxes it touches.
//! Flags a user may not set are dropped from an append, as the RFC asks.

use epistle_ipc::store::{StoreError, StoreRequest};
use epistle_store::acl::{allowed_flags, right_for_flag};
use epistle_store::{MailboxName, Store};

/// Refuses unless `user` has `right` on `name`.
pub fn need(s: &Store, user: &str, name: &str, right: char) -> Result<(), StoreError> {
    let rights = s.rights(name, user)?;
    if rights.contains(right) {
        Ok(())
    } else if rights.contains('l') || rights.contains('r') {
        Err(StoreError::Refused(format!(
            "{user} lacks the {right:?} right on {name}"
        )))
    } else {
        // Someone who may not even see the mailbox learns nothing about it.
        Err(StoreError::NoMailbox(name.to_string()))
    }
}

/// May `user` create `name`: in their own account, or with `k` on the
/// parent mailbox.
fn may_create(s: &Store, user: &str, name: &str) -> Result<(), StoreError> {
    let n = MailboxName::parse(name)?;
    if n.owner() == user {
        return Ok(());
    }
    match n.parent() {
        Some(p) => need(s, user, &p.to_string(), 'k'),
        None => Err(StoreError::Refused(format!(
            "{user} may not create mailboxes in another account"
        ))),
    }
}

fn own(user: &str, other: &str, what: &str) -> Result<(), StoreError> {
    if user == other {
        Ok(())
    } else {
        Err(StoreError::Refused(format!(
            "{user} may not {what} of {other}"
        )))
    }
}

pub fn authorize(s: &Store, user: &str, req: &mut StoreRequest) -> Result<(), StoreError> {
    match req {
        // Filtered by the `l` right after the listing.
        StoreRequest::List { .. } => Ok(()),
        StoreRequest::Create { name, .. } => may_create(s, user, name),
        StoreRequest::Delete { name } => need(s, user, name, 'x'),
        StoreRequest::Rename { old, new } => {
            need(s, user, old, 'x')?;
            may_create(s, user, new)
        }
        StoreRequest::Subscribe { user: u, .. } => own(user, u, "change the subscriptions"),
        StoreRequest::Subscriptions { user: u } => own(user, u, "read the subscriptions"),
        StoreRequest::QuotaUsage { user: u } => own(user, u, "read the quota"),
        StoreRequest::SharedWith { user: u } => own(user, u, "list the mailboxes shared"),
        StoreRequest::Status { name }
        | StoreRequest::Messages { name, .. }
        | StoreRequest::MailboxDir { name }
        | StoreRequest::Open { name, .. }
        | StoreRequest::Structures { name, .. } => need(s, user, name, 'r'),
        StoreRequest::StageDir { name } => need(s, user, name, 'i'),
        StoreRequest::Append { name, flags, .. } => {
            need(s, user, name, 'i')?;
            let rights = s.rights(name, user)?;
            *flags = allowed_flags(flags, &rights);
            Ok(())
        }
        StoreRequest::StoreFlags { name, flags, .. } => {
            need(s, user, name, 'r')?;
            for f in flags.iter() {
                need(s, user, name, right_for_flag(f))?;
            }
            Ok(())
        }
        StoreRequest::Copy { from, to, .. } => {
            need(s, user, from, 'r')?;
            need(s, user, to, 'i')
        }
        StoreRequest::Move { from, to, .. } => {
            need(s, user, from, 'r')?;
            need(s, user, from, 't')?;
            need(s, user, from, 'e')?;
            need(s, user, to, 'i')
        }
        StoreRequest::Expunge { name, .. } => need(s, user, name, 'e'),
        StoreRequest::Remove { name, .. } => {
            need(s, user, name, 't')?;
            need(s, user, name, 'e')
        }
        StoreRequest::GetAcl { name }
        | StoreRequest::SetAcl { name, .. }
        | StoreRequest::SetSpecialUse { name, .. } => need(s, user, name, 'a'),
        StoreRequest::SpecialUses { prefix } => {
            if prefix.starts_with(&format!("user/{user}/")) {
                Ok(())
            } else {
                Err(StoreError::Refused(format!(
                    "{user} may read the special-use attributes of their own mailboxes only"
                )))
            }
        }
        StoreRequest::MyRights { name } => {
            let rights = s.rights(name, user)?;
            if rights.is_empty() {
                Err(StoreError::NoMailbox(name.clone()))
            } else {
                Ok(())
            }
        }
        StoreRequest::DeleteUser { .. }
        | StoreRequest::MoveUser { .. }
        | StoreRequest::Reconstruct { .. }
        | StoreRequest::Expire { .. } => {
            Err(StoreError::Refused("only the system may do that".into()))
        }
        StoreRequest::Watch { .. } | StoreRequest::ActAs { .. } => Ok(()),
    }
}
