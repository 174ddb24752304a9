//! The SQL catalog: faasight's tables over the buffer and Parquet files.

pub mod alerts;
pub mod id_filter;
pub mod invocations;
pub mod prune;
pub mod tables;
pub mod views;
