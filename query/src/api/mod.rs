//! Query APIs.

pub mod errors;
pub mod http;
pub mod pg;
pub mod tempo;
