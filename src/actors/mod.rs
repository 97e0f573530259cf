//! Actors (actix): thin shells around plain structs that own the gateway's live state.

pub mod backend;
pub mod cluster_sync;
pub mod key;
pub mod key_health;
pub mod log_writer;
pub mod messages;
pub mod supervisor;
