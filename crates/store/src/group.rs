//! Group commit: callers that arrive while a batch is being made durable
//! wait, and the next of them to run takes everything that has gathered
//! as one batch, so concurrent appends share their flushes. Nothing
//! waits for company: a lone caller runs at once.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard};

struct State<T, R> {
    next_id: u64,
    pending: Vec<(u64, T)>,
    done: HashMap<u64, R>,
    leader: bool,
}

pub struct GroupCommit<T, R> {
    state: Mutex<State<T, R>>,
    turn: Condvar,
}

impl<T, R> Default for GroupCommit<T, R> {
    fn default() -> Self {
        GroupCommit {
            state: Mutex::new(State {
                next_id: 0,
                pending: Vec::new(),
                done: HashMap::new(),
                leader: false,
            }),
            turn: Condvar::new(),
        }
    }
}

impl<T, R> GroupCommit<T, R> {
    fn lock(&self) -> MutexGuard<'_, State<T, R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `item` in a batch: `work` gets the batch and returns one
    /// result per item, in order; if it panics, every item of the batch
    /// gets `on_panic()`.
    pub fn run(
        &self,
        item: T,
        mut work: impl FnMut(Vec<T>) -> Vec<R>,
        on_panic: impl Fn() -> R,
    ) -> R {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.pending.push((id, item));
        loop {
            if let Some(r) = st.done.remove(&id) {
                return r;
            }
            if !st.leader {
                st.leader = true;
                let batch = std::mem::take(&mut st.pending);
                drop(st);
                let (ids, items): (Vec<u64>, Vec<T>) = batch.into_iter().unzip();
                let n = ids.len();
                let results = catch_unwind(AssertUnwindSafe(|| work(items)))
                    .ok()
                    .filter(|r| r.len() == n)
                    .unwrap_or_else(|| (0..n).map(|_| on_panic()).collect());
                st = self.lock();
                for (i, r) in ids.into_iter().zip(results) {
                    st.done.insert(i, r);
                }
                st.leader = false;
                self.turn.notify_all();
                continue;
            }
            st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_caller_gets_its_own_result_and_batches_form() {
        let g: Arc<GroupCommit<u32, u32>> = Arc::new(GroupCommit::default());
        let batches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16u32)
            .map(|k| {
                let (g, batches) = (g.clone(), batches.clone());
                std::thread::spawn(move || {
                    (0..50u32)
                        .map(|n| {
                            let item = k * 1000 + n;
                            g.run(
                                item,
                                |batch| {
                                    batches.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(std::time::Duration::from_micros(200));
                                    batch.into_iter().map(|x| x * 2).collect()
                                },
                                || u32::MAX,
                            )
                        })
                        .zip(0..)
                        .all(|(r, n)| r == (k * 1000 + n) * 2)
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert!(
            batches.load(Ordering::Relaxed) < 16 * 50,
            "some calls shared a batch"
        );
    }

    #[test]
    fn a_panicking_batch_fails_its_items_and_the_next_one_runs() {
        let g: GroupCommit<u32, Result<u32, ()>> = GroupCommit::default();
        assert_eq!(g.run(1, |_| panic!("boom"), || Err(())), Err(()));
        assert_eq!(
            g.run(2, |b| b.into_iter().map(Ok).collect(), || Err(())),
            Ok(2)
        );
    }
}
