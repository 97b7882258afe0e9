//! kvs: the node binary.

fn main() {}
