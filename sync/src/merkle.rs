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

/// The merkle tree of one replica; see the module doc.
///
/// A clone is a snapshot that shares the nodes until either side changes (copy on
/// write), so that a session's snapshot of the store's tree costs nothing unless the
/// store is written while the session runs.
#[derive(Clone, PartialEq, Eq)]
pub struct MerkleTree {
    nodes: Arc<Vec<u64>>,
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
        static EMPTY: OnceLock<Arc<Vec<u64>>> = OnceLock::new();
        Self {
            nodes: Arc::clone(EMPTY.get_or_init(|| Arc::new(vec![0; NODES]))),
        }
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
        let nodes = Arc::make_mut(&mut self.nodes);
        let mut index = usize::from(leaf);
        for level in (0..=DEPTH).rev() {
            nodes[level_offset(level) + index] ^= delta;
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
        self.nodes[0]
    }

    /// The nodes of `level`, left to right.
    pub fn level(&self, level: usize) -> &[u64] {
        let start = level_offset(level.min(DEPTH));
        &self.nodes[start..start + level_width(level.min(DEPTH))]
    }

    /// The [`FANOUT`] children of node `index` on `level` (`level < DEPTH`); `None` for
    /// a node that does not exist.
    pub fn children(&self, level: usize, index: usize) -> Option<&[u64]> {
        if level >= DEPTH || index >= level_width(level) {
            return None;
        }
        let start = level_offset(level + 1) + index * FANOUT;
        Some(&self.nodes[start..start + FANOUT])
    }

    /// The leaves, left to right.
    pub fn leaves(&self) -> &[u64] {
        self.level(DEPTH)
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
            .filter(|&l| tree.leaves()[l] != before.leaves()[l])
            .collect();
        assert_eq!(changed, vec![leaf]);
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
        let rebuilt = MerkleTree::from_leaves(tree.leaves()).unwrap();
        assert_eq!(rebuilt, tree);
        assert!(MerkleTree::from_leaves(&[0; 3]).is_none());
    }
}
