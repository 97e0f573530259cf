//! Routing: where a request goes (placement, memory estimates, aliases, the `auto` classifier).

pub mod aliases;
pub mod auto;
pub mod catalog;
pub mod classifier;
pub mod features;
pub mod memory;
pub mod placer;
pub mod select;
