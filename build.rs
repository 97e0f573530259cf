// `embed_migrations!` reads `migrations/` at compile time; cargo does not watch that folder
// on its own, so a new migration would otherwise not be embedded until src changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
