//! Files only the node's user may read: the config (it holds `cluster_secret` and
//! `jwt_secret`), the data dir, backups and the write-ahead log. Files are created 0600 and
//! directories 0700, whatever the umask; [`exposed`] tells whether an existing file is
//! readable by group or others.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The mode of private files.
pub const FILE_MODE: u32 = 0o600;
/// The mode of private directories.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they
/// are).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates (or truncates) `path` for writing, mode 0600: an existing file is made
/// private too, since what is written to it is (`kvs backup --out` over a 0644 file kept
/// that mode, and a backup holds the cluster's secrets; found by a black-box audit).
pub fn create(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Writes `bytes` to the new file `path` (refusing an existing one), mode 0600.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.write_all(bytes)
}

/// Sets `path`'s mode to 0600.
pub fn restrict(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
}

/// Whether `path` exists and group or others may read it.
pub fn exposed(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_dirs_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!((mode(&root.path().join("a")), mode(&dir)), (0o700, 0o700));
        let file = dir.join("f");
        write_new(&file, b"x").unwrap();
        assert!(
            write_new(&file, b"y").is_err(),
            "an existing file is refused"
        );
        assert_eq!(mode(&file), 0o600);
        assert!(!exposed(&file));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(exposed(&file));
        restrict(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        drop(create(&dir.join("g")).unwrap());
        assert_eq!(mode(&dir.join("g")), 0o600);
        let shared = dir.join("shared");
        std::fs::write(&shared, b"old").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create(&shared).unwrap());
        assert_eq!(
            mode(&shared),
            0o600,
            "an existing file written over is made private"
        );
        assert!(!exposed(&dir.join("missing")));
    }
}
