//! Delivery into the message store, the step ims_master and the LMTP
//! server share. Per recipient: the owner (and folder, for `uid+folder`
//! addresses) from the store address; the directory says whether the
//! account takes mail now; stored appends (creating the INBOX of a new
//! user). A full mailbox is a temporary failure until
//! `store.quotagraceperiod` hours after the message arrived, then a
//! permanent one.

use std::path::PathBuf;
use std::time::Duration;

use epistle_directory::{Delivery, Directory};
use epistle_ipc::store::StoreError;
use epistle_ipc::store_client::StoreClient;
use epistle_mta::resolve::store_owner;

use crate::master::{Diagnostic, Outcome};

/// A connection to stored, made on first use and again after a failure.
pub struct StoreDelivery {
    socket: PathBuf,
    /// How long a message may wait for a full mailbox.
    pub quota_grace: Duration,
    store: Option<StoreClient>,
}

impl StoreDelivery {
    pub fn new(socket: PathBuf, quota_grace: Duration) -> StoreDelivery {
        StoreDelivery {
            socket,
            quota_grace,
            store: None,
        }
    }

    async fn client(&mut self) -> Result<StoreClient, Diagnostic> {
        if let Some(c) = &self.store {
            return Ok(c.clone());
        }
        match StoreClient::connect(&self.socket).await {
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

    /// Delivers `message` (queued `age` ago) to one store address.
    pub async fn deliver(
        &mut self,
        directory: Option<&Directory>,
        address: &str,
        message: &[u8],
        age: Duration,
    ) -> Outcome {
        let Some((owner, folder)) = store_owner(address) else {
            return Outcome::Failed(Diagnostic::new(
                "5.1.1",
                format!("{address} is not a message store address"),
            ));
        };
        let Some(dir) = directory else {
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
        let store = match self.client().await {
            Ok(s) => s,
            Err(d) => return Outcome::Deferred(d),
        };
        let now = chrono::Utc::now().timestamp();
        let inbox = format!("user/{owner}/INBOX");
        let target = folder
            .map(|f| format!("user/{owner}/{f}"))
            .unwrap_or_else(|| inbox.clone());
        let mut result = store.deliver(&target, message, &[], now).await;
        if target != inbox
            && matches!(
                result,
                Err(StoreError::NoMailbox(_) | StoreError::Invalid(_))
            )
        {
            // fileinto a folder that is not there: the INBOX takes it.
            result = store.deliver(&inbox, message, &[], now).await;
        }
        match result {
            Ok((uid, _)) => {
                tracing::info!(target: "Store", "append:{uid}:{target}:{}", message.len());
                Outcome::Delivered(format!("delivered to {target} as UID {uid}"))
            }
            Err(StoreError::OverQuota(why)) => {
                let d = Diagnostic::new("4.2.2", format!("mailbox full: {why}"));
                if age >= self.quota_grace {
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
