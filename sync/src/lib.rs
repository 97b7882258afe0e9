//! kvs-sync: versions, the conflict rule and the Store trait.
