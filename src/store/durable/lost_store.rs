//! A data dir whose store is gone while its write-ahead log is there: refused at open,
//! rather than opened as a new, empty store.

use std::path::Path;

use kvs_sync::StoreError;

/// Refuses a data dir whose store is gone: its write-ahead log's folder, made right
/// after the store's first commit, is there, but `data.mdb` is missing or empty (deleted,
/// or emptied by a crash on a file system that allocates late). Opened, it would be a new,
/// empty store (found by an audit: the node came up empty, with new secrets and a new
/// root token, its audit chain broken for good).
pub(super) fn refuse_a_lost_data_file(dir: &Path, wal_dir: &Path) -> Result<(), StoreError> {
    if !wal_dir.is_dir() {
        return Ok(());
    }
    let data_file = dir.join("data.mdb");
    let lost = match std::fs::metadata(&data_file) {
        Ok(found) if found.len() > 0 => return Ok(()),
        Ok(_) => "is empty",
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => "is missing",
        Err(error) => {
            return Err(StoreError::Backend(format!(
                "{}: {error}",
                data_file.display()
            )));
        }
    };
    Err(StoreError::Backend(format!(
        "{} {lost}, but this data dir held a store (its write-ahead log is in {}): \
         restore a backup into it (kvs restore), or move the data dir away to start a new, \
         empty node",
        data_file.display(),
        wal_dir.display()
    )))
}
