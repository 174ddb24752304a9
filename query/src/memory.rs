//! One query's memory: a share of the shared pool with its own ceiling, so
//! that a single heavy query fails with a clear error instead of taking the
//! memory every other query (and the server) needs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// Reservations of one query: counted against `limit`, then granted by
/// the shared pool (which enforces the total and spills fairly).
#[derive(Debug)]
pub struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        QueryPool {
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query pool of {} bytes within {}",
            self.limit, self.shared
        )
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// `1.5 MiB`, `64.0 KiB`, `512 bytes`.
pub(crate) fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", mib(bytes))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "faasight-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::SeqCst);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::SeqCst);
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::SeqCst);
        if before.saturating_add(additional) > self.limit {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query needs more than its memory limit of {:.1} MiB (--query-max-memory): \
                 {} asked for {:.1} MiB more with {:.1} MiB in use",
                mib(self.limit),
                reservation.consumer().name(),
                mib(additional),
                mib(before)
            )));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn a_query_stops_at_its_own_limit_and_at_the_shared_one() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 600));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 600));
        let ra = MemoryConsumer::new("a").register(&a);
        ra.try_grow(500).expect("within both limits");
        let err = ra.try_grow(200).expect_err("over the query's limit");
        assert!(err.to_string().contains("--query-max-memory"), "{err}");
        assert_eq!(shared.reserved(), 500);
        let rb = MemoryConsumer::new("b").register(&b);
        rb.try_grow(400).expect("fits the rest");
        assert!(rb.try_grow(200).is_err(), "the shared pool is full");
        assert_eq!(b.reserved(), 400);
        drop(ra);
        assert_eq!(a.reserved(), 0);
        assert_eq!(shared.reserved(), 400);
        rb.try_grow(200).expect("freed memory is available again");
    }
}
