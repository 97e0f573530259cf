//! Integration tests: one binary, one module per area, against `corral sim` upstreams.
mod cluster;
mod dedup;
mod fuzz;
mod keys_cli;
mod proxy;
mod security;
mod sim;
mod store;
mod support;
mod support_redis;
