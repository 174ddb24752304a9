//! faasight-query: the read half of faasight.
//!
//! ```text
//! catalog (tables over buffer + Parquet) → engine (DataFusion, read-only,
//!   limits) → format (json/csv/ndjson/arrow) → api (HTTP)
//! ```

pub mod api;
pub mod catalog;
pub mod coop;
pub mod cost;
pub mod datetime;
pub mod engine;
pub mod format;
pub mod grouping;
pub mod memory;
pub mod percentile;
pub mod rules;
pub mod safety;
pub mod traces;

pub use engine::{QueryConfig, QueryEngine, QueryError};
