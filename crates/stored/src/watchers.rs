//! Who watches which mailbox. A change event goes only to the sessions
//! watching its mailbox, queued on their connections; nobody else is
//! woken, however many sessions are open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use epistle_ipc::frame::FrameSender;
use epistle_ipc::store::{EventFrames, StoreEvent};

/// Bytes of frames a connection may leave unread before events for it
/// are dropped (its sessions see the state on their next request; a
/// reply is never dropped).
const EVENT_LAG_LIMIT: usize = 16 * 1024 * 1024;

/// A session on a connection.
#[derive(Clone)]
pub struct Watcher {
    pub out: Arc<FrameSender>,
    pub session: u32,
}

impl Watcher {
    fn is(&self, other: &Watcher) -> bool {
        self.session == other.session && Arc::ptr_eq(&self.out, &other.out)
    }
}

#[derive(Default)]
pub struct Watchers {
    by_mailbox: Mutex<HashMap<String, Vec<Watcher>>>,
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Watcher>>> {
        self.by_mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, mailbox: &str, w: &Watcher) {
        let mut map = self.lock();
        let list = map.entry(mailbox.to_string()).or_default();
        if !list.iter().any(|x| x.is(w)) {
            list.push(w.clone());
        }
    }

    pub fn remove(&self, mailbox: &str, w: &Watcher) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(mailbox) {
            list.retain(|x| !x.is(w));
            if list.is_empty() {
                map.remove(mailbox);
            }
        }
    }

    /// Queues `event` for every session watching its mailbox.
    pub fn publish(&self, event: &StoreEvent) {
        let targets: Vec<Watcher> = match self.lock().get(event.mailbox()) {
            Some(list) => list.clone(),
            None => return,
        };
        let frames = match EventFrames::new(event) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(target: "Store", "cannot send an event on {}: {e}", event.mailbox());
                return;
            }
        };
        for w in targets {
            match w
                .out
                .send_within(&frames.frame_for(w.session), EVENT_LAG_LIMIT)
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(target: "Store", "a store client reads too slowly: an event on {} was dropped", event.mailbox());
                }
                // A watch a request added as its connection went.
                Err(_) => self.remove(event.mailbox(), &w),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epistle_ipc::frame;
    use epistle_ipc::store::ServerFrame;

    #[tokio::test]
    async fn an_event_goes_to_the_watchers_of_its_mailbox_only() {
        let (a, mut a_peer) = tokio::net::UnixStream::pair().unwrap();
        let (_, wr) = a.into_split();
        let out = FrameSender::new(wr);
        let ws = Watchers::default();
        let one = Watcher {
            out: out.clone(),
            session: 1,
        };
        let two = Watcher {
            out: out.clone(),
            session: 2,
        };
        ws.add("user/joe/INBOX", &one);
        ws.add("user/joe/INBOX", &one);
        ws.add("user/joe/Sent", &two);
        ws.publish(&StoreEvent::Gone {
            mailbox: "user/joe/INBOX".into(),
        });
        ws.remove("user/joe/INBOX", &one);
        ws.publish(&StoreEvent::Gone {
            mailbox: "user/joe/INBOX".into(),
        });
        ws.publish(&StoreEvent::Gone {
            mailbox: "user/joe/Sent".into(),
        });
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(frame::read::<ServerFrame>(&mut a_peer).await.unwrap());
        }
        assert_eq!(
            got,
            vec![
                ServerFrame::Event {
                    session: 1,
                    event: StoreEvent::Gone {
                        mailbox: "user/joe/INBOX".into()
                    }
                },
                ServerFrame::Event {
                    session: 2,
                    event: StoreEvent::Gone {
                        mailbox: "user/joe/Sent".into()
                    }
                },
            ]
        );
        assert!(ws.lock().get("user/joe/INBOX").is_none());
        // A watch left by a connection that is gone goes at the next event.
        let (b, _b_peer) = tokio::net::UnixStream::pair().unwrap();
        let closed = FrameSender::new(b.into_split().1);
        closed.close();
        let stale = Watcher {
            out: closed,
            session: 3,
        };
        ws.add("user/joe/Sent", &stale);
        ws.publish(&StoreEvent::Gone {
            mailbox: "user/joe/Sent".into(),
        });
        assert_eq!(ws.lock().get("user/joe/Sent").map(Vec::len), Some(1));
    }
}
