//! Integration tests: one binary, one module per area, against `corral sim` upstreams.
mod cluster;
mod support_redis;
