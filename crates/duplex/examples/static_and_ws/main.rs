//! Placeholder, replaced by the example.
fn main() {}
