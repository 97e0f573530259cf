//! The `corral` command line; the library does the work.
fn main() {}
