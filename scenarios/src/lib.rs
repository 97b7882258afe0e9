//! kvs-scenarios: the deterministic simulator.
