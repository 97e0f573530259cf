//! actix-web handlers, one module per dialect plus admin, health and the dashboard.

pub mod admin;
pub mod anthropic;
pub mod dashboard;
pub mod forward;
pub mod health;
pub mod ollama;
pub mod openai;
