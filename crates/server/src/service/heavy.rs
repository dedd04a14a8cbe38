//! The pool of heavy computations (report refreshes, what-ifs, scenario tables, impact
//! reports), bounded: beyond the configured number of jobs running or queued, a new one is
//! refused at once (503, counted as `heavy_queue_full`): a queue without bound would only make
//! every answer late.
//!
//! The pool has one thread per core but one. The computations' parallel parts (the grid, the
//! liquidation-price searches) fan out over that pool only: on rayon's global pool they would
//! take every core at once, and the cached reads in flight would wait behind them (and behind
//! its idle threads' spinning). Jobs beyond the pool's threads queue in it.

use crate::error::ServiceError;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The threads, shared by every service of the process (they are the cores).
fn pool() -> Result<&'static rayon::ThreadPool, ServiceError> {
    static POOL: std::sync::OnceLock<Result<rayon::ThreadPool, String>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(crate::cores_but_one())
            .thread_name(|i| format!("pmargin-heavy-{i}"))
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ServiceError::internal(format!("cannot start the worker pool: {e}")))
}

/// One service's bound on the heavy pool.
pub struct Heavy {
    max: usize,
    queued: Arc<AtomicUsize>,
}

/// A place in the queue, given back when the job is done (or dropped unrun).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Heavy {
    /// At most `max` (at least one) jobs running or queued.
    pub fn new(max: usize) -> Heavy {
        Heavy {
            max: max.max(1),
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Jobs running or queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Runs `f` on the pool and waits for it without holding an async worker; 503 at once when
    /// the queue is full, counted in `metrics`. A panic in `f` is this job's 500, and the pool
    /// goes on.
    pub async fn run<T: Send + 'static, E: From<ServiceError> + Send + 'static>(
        &self,
        metrics: &Metrics,
        f: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            metrics.refused("heavy_queue_full");
            return Err(ServiceError::unavailable(format!(
                "{} heavy computations are already running or queued; retry shortly",
                self.max
            ))
            .into());
        }
        let slot = Slot(self.queued.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        pool().map_err(E::from)?.spawn(move || {
            // A panic in a pool job would abort the process: it becomes this request's 500.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            // The place is free before the answer: a caller sees its own job's place given back.
            drop(slot);
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                Err(ServiceError::internal("worker failed: the computation panicked").into())
            }
            Err(_) => Err(ServiceError::internal("worker pool closed").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[tokio::test]
    async fn heavy_work_fans_out_over_all_cores_but_one() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let heavy = Heavy::new(4);
        let (threads, name) = heavy
            .run::<_, ServiceError>(&Metrics::default(), || {
                let name = std::thread::current().name().unwrap_or("").to_string();
                // What a report's parallel searches would spread over.
                Ok((rayon::current_num_threads(), name))
            })
            .await
            .expect("the job runs");
        assert_eq!(threads, cores.saturating_sub(1).max(1));
        assert!(name.starts_with("pmargin-heavy-"), "ran on thread `{name}`");
        assert_eq!(heavy.queued(), 0, "the slot is given back");
    }

    #[tokio::test]
    async fn a_heavy_job_that_panics_is_an_internal_error_and_the_pool_goes_on() {
        let heavy = Heavy::new(4);
        let metrics = Metrics::default();
        let failed = heavy
            .run::<(), ServiceError>(&metrics, || panic!("a bug in a computation"))
            .await;
        let e = failed.expect_err("a panic is an error");
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("panicked"), "{}", e.message);
        let after = heavy.run::<_, ServiceError>(&metrics, || Ok(6 * 7)).await;
        assert_eq!(after.expect("the pool still serves"), 42);
        assert_eq!(heavy.queued(), 0);
    }
}
