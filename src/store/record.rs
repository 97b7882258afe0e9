//! The on-disk form of a version: a fixed header that listings read without decoding
//! the value, then the rest (ownership and the value, zstd-compressed when large) in
//! bincode.

use kvs_sync::{StoreError, Version, VersionId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The record format; bumped when the layout changes.
const FORMAT: u8 = 1;
const TOMBSTONE: u8 = 1;
/// format, flags, timestamp, origin_joined_at, uuid, expires_at (0 = never).
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 16 + 8;

#[derive(Serialize, Deserialize)]
enum StoredData {
    Raw(String),
    Zstd(Vec<u8>),
}

#[derive(Serialize, Deserialize)]
struct Body {
    owner: Option<String>,
    group: Option<String>,
    permissions: u16,
    data: Option<StoredData>,
}

/// What a listing needs of a record.
pub(super) struct Header {
    pub(super) id: VersionId,
    pub(super) tombstone: bool,
    pub(super) expires_at: Option<u64>,
}

impl Header {
    /// The header of `version`.
    pub(super) fn of(version: &Version) -> Self {
        Self {
            id: version.id,
            tombstone: version.is_tombstone(),
            expires_at: version.expires_at,
        }
    }

    /// When the key stopped being present (see `Version::dead_since`): the index time of
    /// a tombstone.
    pub(super) fn dead_since(&self) -> Option<u64> {
        match (self.tombstone, self.expires_at) {
            (true, expires_at) => Some(self.id.timestamp.max(expires_at.unwrap_or(0))),
            (false, expires_at) => expires_at,
        }
    }

    pub(super) fn is_live(&self, now_ms: u64) -> bool {
        !self.tombstone && self.expires_at.is_none_or(|at| at > now_ms)
    }
}

fn corrupt(key: &str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// Encodes a version; values of at least `compress_from` bytes are compressed.
pub(super) fn encode(
    version: &Version,
    compress_from: Option<usize>,
) -> Result<Vec<u8>, StoreError> {
    let mut out =
        Vec::with_capacity(HEADER_LEN + 64 + version.data.as_ref().map_or(0, String::len));
    out.push(FORMAT);
    out.push(if version.is_tombstone() { TOMBSTONE } else { 0 });
    out.extend_from_slice(&version.id.timestamp.to_be_bytes());
    out.extend_from_slice(&version.id.origin_joined_at.to_be_bytes());
    out.extend_from_slice(version.id.uuid.as_bytes());
    out.extend_from_slice(&version.expires_at.unwrap_or(0).to_be_bytes());
    let data = match &version.data {
        None => None,
        Some(text) if compress_from.is_some_and(|min| text.len() >= min) => Some(StoredData::Zstd(
            zstd::bulk::compress(text.as_bytes(), 1)
                .map_err(|e| StoreError::Backend(format!("zstd: {e}")))?,
        )),
        Some(text) => Some(StoredData::Raw(text.clone())),
    };
    let body = Body {
        owner: version.owner.clone(),
        group: version.group.clone(),
        permissions: version.permissions,
        data,
    };
    bincode::serde::encode_into_std_write(&body, &mut out, bincode::config::standard())
        .map_err(|e| StoreError::Backend(format!("encoding a record: {e}")))?;
    Ok(out)
}

/// Reads the header of a record.
pub(super) fn decode_header(key: &str, bytes: &[u8]) -> Result<Header, StoreError> {
    if bytes.len() < HEADER_LEN || bytes[0] != FORMAT {
        return Err(corrupt(key, "bad record header"));
    }
    let u64_at = |at: usize| {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(buf)
    };
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&bytes[18..34]);
    let expires_at = u64_at(34);
    Ok(Header {
        id: VersionId {
            timestamp: u64_at(2),
            origin_joined_at: u64_at(10),
            uuid: Uuid::from_bytes(uuid),
        },
        tombstone: bytes[1] & TOMBSTONE != 0,
        expires_at: (expires_at != 0).then_some(expires_at),
    })
}

/// Decodes a whole record.
pub(super) fn decode(key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
    let header = decode_header(key, bytes)?;
    let (body, _): (Body, usize) =
        bincode::serde::decode_from_slice(&bytes[HEADER_LEN..], bincode::config::standard())
            .map_err(|e| corrupt(key, e))?;
    let data = match body.data {
        None => None,
        Some(StoredData::Raw(text)) => Some(text),
        Some(StoredData::Zstd(packed)) => {
            let mut decoder =
                zstd::stream::Decoder::new(packed.as_slice()).map_err(|e| corrupt(key, e))?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut decoder, &mut text).map_err(|e| corrupt(key, e))?;
            Some(text)
        }
    };
    Ok(Version {
        id: header.id,
        data,
        owner: body.owner,
        group: body.group,
        permissions: body.permissions,
        expires_at: header.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(data: Option<&str>) -> Version {
        Version {
            id: VersionId {
                timestamp: 42,
                origin_joined_at: 7,
                uuid: Uuid::new_v4(),
            },
            data: data.map(str::to_owned),
            owner: Some("o".into()),
            group: None,
            permissions: 0xf31,
            expires_at: Some(99),
        }
    }

    #[test]
    fn roundtrip_raw_compressed_and_tombstone() {
        let big = "x".repeat(5000);
        for (v, compress) in [
            (version(Some("[1]")), Some(1024)),
            (version(Some(&big)), Some(1024)),
            (version(Some(&big)), None),
            (version(None), Some(1)),
        ] {
            let bytes = encode(&v, compress).unwrap();
            assert_eq!(decode("k", &bytes).unwrap(), v);
        }
        let packed = encode(&version(Some(&big)), Some(1024)).unwrap();
        assert!(packed.len() < 1000, "compressed: {} bytes", packed.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode(&version(Some("1")), None).unwrap();
        for bad in [
            &b""[..],
            &b"\x01"[..],
            &good[..HEADER_LEN - 1],
            &[9u8; 60][..],
        ] {
            assert!(decode("k", bad).is_err());
        }
        let mut truncated = good.clone();
        truncated.truncate(HEADER_LEN + 1);
        assert!(decode("k", &truncated).is_err());
    }
}
