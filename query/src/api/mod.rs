//! Query APIs.

pub mod errors;
pub mod http;
