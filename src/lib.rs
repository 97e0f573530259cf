//! corral: one endpoint in front of a fleet of LLM upstreams.
#![forbid(unsafe_code)]

pub mod actors;
pub mod api;
pub mod auth;
pub mod config;
pub mod dialect;
pub mod error;
pub mod ir;
pub mod metrics;
pub mod routing;
pub mod sim;
pub mod store;
pub mod upstream;
