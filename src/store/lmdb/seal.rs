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

/// A backup's seal: the length of the data file at its start and that file's SHA-256.
#[derive(Debug, PartialEq, Eq)]
pub struct Seal {
    /// The length of the data file, at the start of the backup.
    pub data_len: u64,
    digest: [u8; 32],
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

/// The seal at the end of `path`; `None` when the file carries none (made by a kvs from
/// before seals, not by kvs at all, or cut short). `Err` when it cannot be read, or its
/// length does not fit the file.
pub fn read_seal(path: &Path) -> Result<Option<Seal>, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let Some(data_len) = len.checked_sub(SEAL_LEN) else {
        return Ok(None);
    };
    let mut trailer = [0u8; SEAL_LEN as usize];
    file.seek(SeekFrom::Start(data_len))
        .and_then(|_| file.read_exact(&mut trailer))
        .map_err(|e| e.to_string())?;
    let (magic, rest) = trailer.split_at(MAGIC.len());
    if magic != MAGIC {
        return Ok(None);
    }
    let (sealed_len, sealed_digest) = rest.split_at(8);
    let sealed_len = u64::from_be_bytes(sealed_len.try_into().unwrap_or_default());
    if sealed_len != data_len {
        return Err(format!(
            "its seal is for {sealed_len} bytes of data, and it holds {data_len}"
        ));
    }
    Ok(Some(Seal {
        data_len,
        digest: sealed_digest.try_into().unwrap_or_default(),
    }))
}

impl Seal {
    /// Checks bytes against this seal as they are copied: feed it the data file's bytes,
    /// then [`SealCheck::finish`].
    pub fn check(&self) -> SealCheck {
        SealCheck {
            hasher: Sha256::new(),
            fed: 0,
            data_len: self.data_len,
            digest: self.digest,
        }
    }
}

/// A check of a copy against a [`Seal`], fed as the copy is made, so that the bytes
/// checked are the bytes copied (a file read twice may differ between the reads).
pub struct SealCheck {
    hasher: Sha256,
    fed: u64,
    data_len: u64,
    digest: [u8; 32],
}

impl SealCheck {
    /// Takes the next bytes of the data file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.fed += bytes.len() as u64;
    }

    /// Whether the bytes fed are the data file that was sealed.
    pub fn finish(self) -> Result<(), String> {
        if self.fed != self.data_len {
            return Err(format!(
                "{} bytes of its data could be read, of {}",
                self.fed, self.data_len
            ));
        }
        let digest: [u8; 32] = self.hasher.finalize().into();
        match digest == self.digest {
            true => Ok(()),
            false => {
                Err("its data differs from the checksum taken when the backup was made".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seal of `path` checked over the file's own bytes.
    fn checked(path: &Path) -> Result<Option<u64>, String> {
        let Some(seal) = read_seal(path)? else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let mut check = seal.check();
        check.update(&bytes[..seal.data_len as usize]);
        check.finish().map(|()| Some(seal.data_len))
    }

    #[test]
    fn a_sealed_file_checks_and_any_change_to_it_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.mdb");
        let data: Vec<u8> = (0..50_000u32).map(|n| (n % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(checked(&path), Ok(None));
        assert_eq!(seal(&path).unwrap(), data.len() as u64 + SEAL_LEN);
        let sealed = std::fs::read(&path).unwrap();
        assert_eq!(checked(&path), Ok(Some(data.len() as u64)));
        // Every byte of the data, the length and the digest is covered.
        for at in [0, 4096, data.len() - 1, data.len() + 16, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 0x40;
            std::fs::write(&path, &changed).unwrap();
            let found = checked(&path);
            assert!(found.is_err(), "byte {at}: {found:?}");
        }
        // Cut short or added to, the seal is no longer at the end.
        std::fs::write(&path, &sealed[..sealed.len() - 1]).unwrap();
        assert_eq!(checked(&path), Ok(None));
        let mut longer = sealed.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert_eq!(checked(&path), Ok(None));
        // Fewer bytes fed than sealed: a copy that came out short.
        std::fs::write(&path, &sealed).unwrap();
        let mut short = read_seal(&path).unwrap().unwrap().check();
        short.update(&data[..100]);
        assert!(short.finish().is_err());
    }
}
