//! Parquet storage: the Hive layout and the atomic writer.

pub mod layout;
pub mod parquet;
pub mod take;
