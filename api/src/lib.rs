//! kvs-api: the HTTP API of a node.
