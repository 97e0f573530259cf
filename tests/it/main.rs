//! Integration tests: one binary, one module per area, against `corral sim` upstreams.

mod store;
mod support;
