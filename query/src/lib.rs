//! faasight-query: the read half of faasight.
//!
//! ```text
//! catalog (tables over buffer + Parquet) → engine (DataFusion, read-only,
//!   limits) → format (json/csv/ndjson/arrow) → api (HTTP)
//! ```

pub mod api;
pub mod bounded;
pub mod bounded_plan;
pub mod catalog;
pub mod coop;
pub mod cost;
pub mod datetime;
pub mod dictionary;
pub mod engine;
pub mod format;
pub mod grouping;
pub mod memory;
pub mod percentile;
pub mod rules;
pub mod safety;
pub mod traces;

pub use engine::{QueryConfig, QueryEngine, QueryError};

#[cfg(test)]
mod testing {
    /// A xorshift64 generator: reproducible test data without a dependency.
    pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }
}
