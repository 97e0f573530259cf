//! Helpers shared by integration tests: real databases started and stopped by the tests.

pub mod postgres;
