//! esi-cli (in progress).
fn main() {}
