//! stored's appending thread. Appends (deliveries, IMAP APPEND) are
//! handed to one thread, which takes everything that gathered while it
//! made the last batch durable as its next batch
//! ([`Store::append_many`]: shared flushes, one transaction). A request
//! waits for its result as a task, holding no thread: blocking inside the
//! runtime instead would take a thread, and its wake-ups, per append in
//! flight.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};

use epistle_store::{AppendArgs, AppendResult, Store, StoreError};
use tokio::sync::oneshot;

/// Most appends in one batch (one transaction).
const MAX_BATCH: usize = 256;

type Waiting = (AppendArgs, oneshot::Sender<AppendResult>);

pub struct Appender {
    queue: mpsc::Sender<Waiting>,
}

impl Appender {
    pub fn start(store: Arc<Store>) -> std::io::Result<Appender> {
        let (queue, waiting) = mpsc::channel::<Waiting>();
        std::thread::Builder::new()
            .name("appender".into())
            .spawn(move || work(&store, &waiting))?;
        Ok(Appender { queue })
    }

    /// Appends, with the batch this append joins.
    pub async fn append(&self, args: AppendArgs) -> AppendResult {
        let (reply, result) = oneshot::channel();
        if self.queue.send((args, reply)).is_err() {
            return Err(failed());
        }
        result.await.unwrap_or_else(|_| Err(failed()))
    }
}

fn failed() -> StoreError {
    StoreError::Io("the append failed unexpectedly; see the store log".into())
}

fn work(store: &Store, waiting: &mpsc::Receiver<Waiting>) {
    while let Ok(first) = waiting.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (args, replies): (Vec<AppendArgs>, Vec<_>) = batch.into_iter().unzip();
        let n = args.len();
        // A bug fails this batch's appends; the thread goes on.
        let results = std::panic::catch_unwind(AssertUnwindSafe(|| store.append_many(args)))
            .ok()
            .filter(|r| r.len() == n)
            .unwrap_or_else(|| (0..n).map(|_| Err(failed())).collect());
        for (result, reply) in results.into_iter().zip(replies) {
            // A client gone since it asked: nothing to do.
            let _ = reply.send(result);
        }
    }
}
