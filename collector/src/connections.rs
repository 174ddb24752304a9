//! How many client connections the process holds at once.
//!
//! Every connection holds a file descriptor, and so do the WAL, the flush
//! and queries. Without a bound, a few hundred clients more than the
//! process's descriptor limit (idle ones, or a flood) left the flush
//! failing with "Too many open files" until they went away, and the accept
//! loops retrying every 100 ms. [`ConnectionBudget`] is shared by every
//! listening port: a connection beyond it is accepted and closed at once
//! (the client sees the connection reset instead of waiting in the
//! kernel's backlog), and a warning says so, at most every
//! [`WARN_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The least time between two warnings about refused connections.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Descriptors kept for everything but client connections: at most this
/// many, and at most a quarter of the limit.
pub const RESERVED_FILES: u64 = 1024;

/// The connections a process may hold with `open_files` descriptors.
pub fn budget_for(open_files: u64) -> usize {
    let reserved = RESERVED_FILES.min(open_files / 4);
    usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX)
}

/// Connections the process may still accept (see the module doc).
#[derive(Debug)]
pub struct ConnectionBudget {
    permits: Arc<Semaphore>,
    limit: usize,
    refused_total: AtomicU64,
    /// When the last warning was logged, and the refusals counted then.
    warned: Mutex<Option<(Instant, u64)>>,
}

/// A connection counted against the budget until dropped.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl ConnectionBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Arc::new(ConnectionBudget {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            refused_total: AtomicU64::new(0),
            warned: Mutex::new(None),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections counted now.
    pub fn open(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Connections refused since start.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }

    /// Counts a new connection on `port`, or refuses it when the budget is
    /// spent (the caller closes it).
    pub fn admit(&self, port: &str) -> Option<Admitted> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(Admitted { _permit: permit });
        }
        let total = self.refused_total.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        let counted = warned.map_or(0, |(_, counted)| counted);
        if warned.is_none_or(|(at, _)| now.duration_since(at) >= WARN_EVERY) {
            *warned = Some((now, total));
            tracing::warn!(
                port,
                open = self.limit,
                refused = total - counted,
                "connection limit reached: new connections are closed until some end \
                 (the limit follows the process's open-file limit, `ulimit -n`)"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_descriptors_for_the_rest_of_the_process() {
        assert_eq!(budget_for(1_048_576), 1_048_576 - 1024);
        assert_eq!(budget_for(20_000), 20_000 - 1024);
        assert_eq!(budget_for(1024), 768);
        assert_eq!(budget_for(400), 300);
        assert_eq!(budget_for(0), 0);
    }

    #[test]
    fn connections_past_the_budget_are_refused_until_one_ends() {
        let budget = ConnectionBudget::new(2);
        let first = budget.admit("test").expect("first");
        let _second = budget.admit("test").expect("second");
        assert_eq!(budget.open(), 2);
        assert!(budget.admit("test").is_none());
        assert!(budget.admit("test").is_none());
        assert_eq!(budget.refused_total(), 2);
        drop(first);
        assert_eq!(budget.open(), 1);
        let _third = budget.admit("test").expect("third, after the first ended");
        assert_eq!((budget.open(), budget.refused_total()), (2, 2));
    }
}
