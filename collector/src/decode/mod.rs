//! Decoders: request bodies → normalized rows of the tables.

pub mod attrs;
pub mod columns;
pub mod otlp;
