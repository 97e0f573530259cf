//! The `corral` binary: the command line lives in `corral::cli`.

use std::process::ExitCode;

/// mimalloc: the request path allocates many small short-lived buffers across threads,
/// which it serves faster than glibc malloc under load. Its v2 line (the `v2` feature):
/// v3 costs more CPU per proxied request for a little less resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    corral::cli::main()
}
