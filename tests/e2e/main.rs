//! End-to-end tests: the real `faasight` binary driven by real clients.
//! One test binary, one module per area (each extra binary costs a long link).

mod alerts;
mod bad_input;
mod cloudwatch;
mod coalesced;
mod dashboards;
mod durability;
mod invocations;
mod otlp_clients;
mod pg_wire;
mod query_api;
mod query_layer;
mod rules_golden;
mod sql_golden;
mod support;
mod traces;
