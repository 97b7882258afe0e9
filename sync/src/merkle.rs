//! The merkle tree over a replica's keyspace: what two replicas compare to find where
//! their data differs without sending it.
//!
//! The shape is fixed, so that every replica's tree lines up node for node: a root and
//! [`DEPTH`] levels of fan-out [`FANOUT`], ending in [`LEAVES`] leaves. A key belongs to
//! the leaf named by the first two bytes of its SHA-256. Each held version (tombstones
//! included) contributes an *entry hash* of its key and version id, and every node holds
//! the XOR of the entry hashes below it. XOR makes the tree order-free (two replicas with
//! the same versions have the same tree whatever order the writes came in) and
//! incremental: replacing a version XORs the old entry out and the new one in along one
//! path of [`DEPTH`]` + 1` nodes, so a write never rescans anything.
//!
//! Hashes are 64 bits: peers are authenticated, so collisions only matter by chance
//! (2^-64 per compared node); an entry that lands in a colliding subtree is still found
//! by a later round once anything else below it changes.

use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use crate::VersionId;

/// Children per inner node.
pub const FANOUT: usize = 16;
/// Levels below the root; the leaves are level `DEPTH`.
pub const DEPTH: usize = 4;
/// Leaves of the tree (`FANOUT^DEPTH`): about 15 keys each at 1,000,000 keys.
pub const LEAVES: usize = 65_536;
/// Nodes of the whole tree, root included.
const NODES: usize = 1 + 16 + 256 + 4096 + LEAVES;

/// The index of a leaf.
pub type Leaf = u16;

/// Where each level starts in the flat node array.
const fn level_offset(level: usize) -> usize {
    let mut offset = 0;
    let mut width = 1;
    let mut l = 0;
    while l < level {
        offset += width;
        width *= FANOUT;
        l += 1;
    }
    offset
}

/// Nodes on `level` (1 for the root).
pub const fn level_width(level: usize) -> usize {
    let mut width = 1;
    let mut l = 0;
    while l < level {
        width *= FANOUT;
        l += 1;
    }
    width
}

fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The leaf `key` belongs to.
pub fn leaf_of(key: &str) -> Leaf {
    leaf_of_digest(&key_digest(key))
}

fn leaf_of_digest(digest: &[u8; 32]) -> Leaf {
    u16::from_be_bytes([digest[0], digest[1]])
}

/// A short name of `key` for the diff protocol (the first 8 bytes of its SHA-256).
pub fn key_hash(key: &str) -> u64 {
    let digest = key_digest(key);
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// What the version `id` of `key` contributes to the tree.
pub fn entry_hash(key: &str, id: &VersionId) -> u64 {
    entry_hash_of_digest(&key_digest(key), id)
}

/// [`entry_hash`] from the key's SHA-256, computed once per change.
fn entry_hash_of_digest(key_digest: &[u8; 32], id: &VersionId) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(key_digest);
    hasher.update(id.timestamp.to_be_bytes());
    hasher.update(id.origin_joined_at.to_be_bytes());
    hasher.update(id.uuid.as_bytes());
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// Leaves per chunk of the leaf level: the unit the leaves are copied in on write.
pub const LEAF_CHUNK: usize = 256;
/// Nodes above the leaves, root included.
const INNER_NODES: usize = NODES - LEAVES;

type LeafChunk = [u64; LEAF_CHUNK];

/// The merkle tree of one replica; see the module doc.
///
/// A clone is a snapshot that shares the nodes with the original until either side
/// changes, and a change then copies only the inner levels (35 KB) and the chunk of
/// leaves it touches (2 KB), not the whole tree (560 KB): a session's snapshot of the
/// store's tree costs little even while the store is written.
#[derive(Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// The root and the levels above the leaves, flat, level by level.
    inner: Arc<Vec<u64>>,
    /// The leaves, [`LEAF_CHUNK`] at a time.
    leaves: Arc<Vec<Arc<LeafChunk>>>,
}

impl std::fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MerkleTree(root {:016x})", self.root())
    }
}

impl Default for MerkleTree {
    fn default() -> Self {
        Self::new()
    }
}

impl MerkleTree {
    /// The tree of an empty keyspace (every node 0), shared until written.
    pub fn new() -> Self {
        static EMPTY: OnceLock<MerkleTree> = OnceLock::new();
        EMPTY
            .get_or_init(|| {
                let chunk = Arc::new([0; LEAF_CHUNK]);
                Self {
                    inner: Arc::new(vec![0; INNER_NODES]),
                    leaves: Arc::new(vec![chunk; LEAVES / LEAF_CHUNK]),
                }
            })
            .clone()
    }

    /// A tree whose leaves are `leaves` (inner nodes computed); `None` unless exactly
    /// [`LEAVES`] are given.
    pub fn from_leaves(leaves: &[u64]) -> Option<Self> {
        if leaves.len() != LEAVES {
            return None;
        }
        let mut tree = Self::new();
        for (leaf, &hash) in leaves.iter().enumerate() {
            tree.apply_delta(leaf as Leaf, hash);
        }
        Some(tree)
    }

    /// XORs `delta` into `leaf` and every node above it.
    pub fn apply_delta(&mut self, leaf: Leaf, delta: u64) {
        if delta == 0 {
            return;
        }
        let leaf = usize::from(leaf);
        let chunks = Arc::make_mut(&mut self.leaves);
        Arc::make_mut(&mut chunks[leaf / LEAF_CHUNK])[leaf % LEAF_CHUNK] ^= delta;
        let inner = Arc::make_mut(&mut self.inner);
        let mut index = leaf / FANOUT;
        for level in (0..DEPTH).rev() {
            inner[level_offset(level) + index] ^= delta;
            index /= FANOUT;
        }
    }

    /// Adds the entry of `key` at version `id`, or removes it if present (XOR).
    pub fn toggle(&mut self, key: &str, id: &VersionId) {
        self.replace(key, None, Some(id));
    }

    /// Replaces `key`'s entry at version `old` (if any) by the one at `new` (if any): one
    /// path up the tree, the key hashed once.
    pub fn replace(&mut self, key: &str, old: Option<&VersionId>, new: Option<&VersionId>) {
        let digest = key_digest(key);
        let delta = [old, new]
            .into_iter()
            .flatten()
            .fold(0, |delta, id| delta ^ entry_hash_of_digest(&digest, id));
        self.apply_delta(leaf_of_digest(&digest), delta);
    }

    /// The root hash: equal roots mean equal data (but for a 2^-64 chance).
    pub fn root(&self) -> u64 {
        self.inner[0]
    }

    /// The nodes of `level` above the leaves (`level < DEPTH`; deeper asks read the last
    /// inner level), left to right.
    pub fn level(&self, level: usize) -> &[u64] {
        let level = level.min(DEPTH - 1);
        let start = level_offset(level);
        &self.inner[start..start + level_width(level)]
    }

    /// The [`FANOUT`] children of node `index` on `level` (`level < DEPTH`); `None` for
    /// a node that does not exist.
    pub fn children(&self, level: usize, index: usize) -> Option<&[u64]> {
        if level >= DEPTH || index >= level_width(level) {
            return None;
        }
        let first = index * FANOUT;
        if level + 1 == DEPTH {
            let chunk = &self.leaves[first / LEAF_CHUNK];
            let start = first % LEAF_CHUNK;
            return Some(&chunk[start..start + FANOUT]);
        }
        let start = level_offset(level + 1) + first;
        Some(&self.inner[start..start + FANOUT])
    }

    /// The hash of one leaf (tests).
    #[cfg(test)]
    fn leaf(&self, leaf: Leaf) -> u64 {
        let leaf = usize::from(leaf);
        self.leaves[leaf / LEAF_CHUNK][leaf % LEAF_CHUNK]
    }

    /// Leaves `chunk * LEAF_CHUNK ..` `(chunk + 1) * LEAF_CHUNK`; `None` past the last.
    pub fn leaf_chunk(&self, chunk: usize) -> Option<&[u64]> {
        self.leaves.get(chunk).map(|leaves| &leaves[..])
    }

    /// The leaves, left to right (tests; the stores read them by chunk).
    #[cfg(test)]
    fn leaves(&self) -> impl Iterator<Item = u64> + '_ {
        self.leaves.iter().flat_map(|chunk| chunk.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(timestamp: u64) -> VersionId {
        VersionId {
            timestamp,
            origin_joined_at: 1,
            uuid: Uuid::from_u128(u128::from(timestamp)),
        }
    }

    #[test]
    fn shape_adds_up() {
        assert_eq!(level_width(DEPTH), LEAVES);
        assert_eq!(level_offset(DEPTH) + LEAVES, NODES);
        let tree = MerkleTree::new();
        assert_eq!(tree.level(0).len(), 1);
        assert_eq!(tree.level(2).len(), 256);
        assert!(tree.children(DEPTH, 0).is_none());
        assert!(tree.children(1, 16).is_none());
    }

    #[test]
    fn order_free_and_reversible() {
        let mut a = MerkleTree::new();
        let mut b = MerkleTree::new();
        for n in 0..200 {
            a.toggle(&format!("k{n}"), &id(n));
        }
        for n in (0..200).rev() {
            b.toggle(&format!("k{n}"), &id(n));
        }
        assert_eq!(a, b);
        assert_ne!(a.root(), 0);
        for n in 0..200 {
            a.toggle(&format!("k{n}"), &id(n));
        }
        assert_eq!(a, MerkleTree::new());
    }

    #[test]
    fn replace_moves_one_path() {
        let mut tree = MerkleTree::new();
        tree.toggle("a", &id(1));
        let before = tree.clone();
        tree.replace("a", Some(&id(1)), Some(&id(2)));
        assert_ne!(tree.root(), before.root());
        let leaf = usize::from(leaf_of("a"));
        let changed: Vec<usize> = (0..LEAVES)
            .filter(|&l| tree.leaf(l as Leaf) != before.leaf(l as Leaf))
            .collect();
        assert_eq!(changed, vec![leaf]);
        assert_eq!(
            before.leaf(leaf as Leaf),
            before.leaves().nth(leaf).unwrap()
        );
        tree.replace("a", Some(&id(2)), None);
        assert_eq!(tree, MerkleTree::new());
    }

    #[test]
    fn inner_nodes_are_the_xor_of_their_children() {
        let mut tree = MerkleTree::new();
        for n in 0..1000 {
            tree.toggle(&format!("key/{n}"), &id(n));
        }
        for level in 0..DEPTH {
            for (index, &hash) in tree.level(level).iter().enumerate() {
                let children = tree.children(level, index).unwrap();
                assert_eq!(children.iter().fold(0, |x, c| x ^ c), hash);
            }
        }
        let leaves: Vec<u64> = tree.leaves().collect();
        assert_eq!(leaves.len(), LEAVES);
        assert_eq!(
            tree.leaf_chunk(1).unwrap(),
            &leaves[LEAF_CHUNK..2 * LEAF_CHUNK]
        );
        assert!(tree.leaf_chunk(LEAVES / LEAF_CHUNK).is_none());
        let rebuilt = MerkleTree::from_leaves(&leaves).unwrap();
        assert_eq!(rebuilt, tree);
        assert!(MerkleTree::from_leaves(&[0; 3]).is_none());
    }
}
