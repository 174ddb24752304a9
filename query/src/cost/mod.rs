//! Cost: the price catalog and the SQL functions that apply it.

pub mod catalog;
pub mod udf;

pub use catalog::{CatalogError, PriceCatalog};
pub use udf::cost_udfs;
