//! The kvs node as a library: what `main.rs` wires together, and what benchmarks and
//! tests reach directly.
//!
//! - [`backup`]: backups and restores of a node's data;
//! - [`config`]: the YAML config, its defaults and checks;
//! - [`cluster`]: membership (SWIM over authenticated UDP) in the running node, feeding
//!   replication (`kvs_sync::driver`, over QUIC) its peers;
//! - [`http_server`]: the HTTP server, one thread per core, with header and idle timeouts
//!   and a connection cap;
//! - [`node`]: a running node (store, group commit, HTTP API, purge, shutdown);
//! - [`private_files`]: files and directories only the node's user may read;
//! - [`store`]: LMDB behind a write-ahead log, and group commit;
//! - [`daemon`]: `kvs start` (following a bootstrap with [`sync_progress`] on a terminal),
//!   `stop`, `restart`, `status`; [`init`]: `kvs init NAME --join CONFIG`;
//! - [`client`], [`client_output`], [`http_client`], [`bench`]: the command-line client
//!   (and what it prints) and load generator.

pub mod backup;
pub mod bench;
pub mod client;
pub mod client_output;
pub mod cluster;
pub mod compact;
pub mod config;
pub mod daemon;
pub mod http_client;
pub mod http_server;
pub mod init;
pub mod node;
pub mod private_files;
pub mod stdout;
pub mod store;
pub mod sync_progress;
pub mod watch;
