//! The seal of a backup file: the SHA-256 of its LMDB data file, appended after it when
//! the backup is made, so that a restore tells a backup that changed since (a flipped
//! bit, a damaged disk, an edited page) before LMDB maps it. LMDB keeps no checksums: a
//! damaged page it reads is a crash or wrong data, not an error.
//!
//! Layout: the data file, then [`MAGIC`], the data file's length (u64, big-endian) and
//! its SHA-256. LMDB ignores bytes after the pages its meta page names, so a sealed
//! backup still opens as an LMDB file; a restore puts back the data file alone.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 16] = b"kvs-backup-seal1";
const SEAL_LEN: u64 = 16 + 8 + 32;

/// What a backup file's end says of it.
#[derive(Debug, PartialEq, Eq)]
pub enum Seal {
    /// Its data file, the first `data_len` bytes, is what was sealed.
    Intact {
        /// The length of the data file, at the start of the backup.
        data_len: u64,
    },
    /// It carries no seal (made by a kvs from before seals, or not by kvs at all).
    Missing,
}

/// The SHA-256 of the first `len` bytes of `file`.
fn digest_of(file: &mut File, len: u64) -> std::io::Result<[u8; 32]> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
        file.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        left -= want as u64;
    }
    Ok(hasher.finalize().into())
}

/// Appends the seal of the data file at `path` to it and syncs it; the file's new
/// length.
pub(super) fn seal(path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)?;
    let data_len = file.metadata()?.len();
    let digest = digest_of(&mut file, data_len)?;
    let mut trailer = Vec::with_capacity(SEAL_LEN as usize);
    trailer.extend_from_slice(MAGIC);
    trailer.extend_from_slice(&data_len.to_be_bytes());
    trailer.extend_from_slice(&digest);
    file.write_all(&trailer)?;
    file.sync_all()?;
    Ok(data_len + SEAL_LEN)
}

/// Reads the seal at the end of `path` and checks the data file against it: `Err` says
/// how the file differs from what was sealed (or why it could not be read).
pub fn check_seal(path: &Path) -> Result<Seal, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let Some(data_len) = len.checked_sub(SEAL_LEN) else {
        return Ok(Seal::Missing);
    };
    let mut trailer = [0u8; SEAL_LEN as usize];
    file.seek(SeekFrom::Start(data_len))
        .and_then(|_| file.read_exact(&mut trailer))
        .map_err(|e| e.to_string())?;
    let (magic, rest) = trailer.split_at(MAGIC.len());
    if magic != MAGIC {
        return Ok(Seal::Missing);
    }
    let (sealed_len, sealed_digest) = rest.split_at(8);
    let sealed_len = u64::from_be_bytes(sealed_len.try_into().unwrap_or_default());
    if sealed_len != data_len {
        return Err(format!(
            "its seal is for {sealed_len} bytes of data, and it holds {data_len}"
        ));
    }
    let digest = digest_of(&mut file, data_len).map_err(|e| e.to_string())?;
    if digest[..] != *sealed_digest {
        return Err("its data differs from the checksum taken when the backup was made".into());
    }
    Ok(Seal::Intact { data_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_checks_and_any_change_to_it_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.mdb");
        let data: Vec<u8> = (0..50_000u32).map(|n| (n % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(check_seal(&path), Ok(Seal::Missing));
        assert_eq!(seal(&path).unwrap(), data.len() as u64 + SEAL_LEN);
        let sealed = std::fs::read(&path).unwrap();
        assert_eq!(
            check_seal(&path),
            Ok(Seal::Intact {
                data_len: data.len() as u64
            })
        );
        // Every byte of the data, the length and the digest is covered.
        for at in [0, 4096, data.len() - 1, data.len() + 16, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 0x40;
            std::fs::write(&path, &changed).unwrap();
            let found = check_seal(&path);
            assert!(found.is_err(), "byte {at}: {found:?}");
        }
        // Cut short or added to, the seal is no longer at the end.
        std::fs::write(&path, &sealed[..sealed.len() - 1]).unwrap();
        assert_eq!(check_seal(&path), Ok(Seal::Missing));
        let mut longer = sealed.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert_eq!(check_seal(&path), Ok(Seal::Missing));
    }
}
