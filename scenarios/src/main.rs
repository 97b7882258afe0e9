//! kvs-sim: plays scenario files.

fn main() {}
