//! The dissemination queue: encoded updates waiting to be piggy-backed.
//!
//! At most one update per member is queued (a newer fact replaces an older one). Packing
//! takes the least-sent updates first (newest first among equals) until the byte budget is
//! full, and an update is dropped once sent `limit` times (`λ·log N`, computed by the
//! caller from the current cluster size).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use kvs_net::NodeId;

/// Queue position: fewest sends first, then newest first.
type Key = (u32, Reverse<u64>);

/// Packing stops after this many updates that did not fit the room left.
const MAX_SKIPPED: usize = 16;

/// One queued update.
#[derive(Debug)]
struct Item {
    id: NodeId,
    bytes: Vec<u8>,
}

/// Updates waiting for retransmission, in packing order.
#[derive(Debug, Default)]
pub(crate) struct Broadcasts {
    queue: BTreeMap<Key, Item>,
    keys: BTreeMap<NodeId, Key>,
    next: u64,
}

impl Broadcasts {
    /// Queues the encoded update about `id`, replacing any pending one about it.
    pub(crate) fn push(&mut self, id: NodeId, bytes: Vec<u8>) {
        if let Some(old) = self.keys.remove(&id) {
            self.queue.remove(&old);
        }
        let key = (0, Reverse(self.next));
        self.next += 1;
        self.keys.insert(id.clone(), key);
        self.queue.insert(key, Item { id, bytes });
    }

    /// Whether anything is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Appends to `out` the least-sent updates that fit in `budget` bytes in total, skipping
    /// those about members in `skip` (already in the datagram); counts the sends and drops
    /// updates sent `limit` times.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, budget: usize, limit: u32, skip: &[NodeId]) {
        let mut taken = Vec::new();
        let mut skipped = 0;
        for (key, item) in &self.queue {
            if skipped == MAX_SKIPPED {
                break;
            }
            if out.len() + item.bytes.len() > budget || skip.contains(&item.id) {
                skipped += 1;
                continue;
            }
            out.extend_from_slice(&item.bytes);
            taken.push(*key);
        }
        for key in taken {
            let Some(item) = self.queue.remove(&key) else {
                continue;
            };
            let next = (key.0 + 1, key.1);
            if next.0 < limit {
                self.keys.insert(item.id.clone(), next);
                self.queue.insert(next, item);
            } else {
                self.keys.remove(&item.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_sent_first_within_budget_then_dropped() {
        let mut q = Broadcasts::default();
        q.push(NodeId::from("a"), vec![1; 10]);
        q.push(NodeId::from("b"), vec![2; 10]);
        let mut out = Vec::new();
        q.fill(&mut out, 15, 2, &[]);
        assert_eq!(
            out,
            vec![2; 10],
            "newest first among equals, budget respected"
        );
        let mut out = Vec::new();
        q.fill(&mut out, 15, 2, &[]);
        assert_eq!(out, vec![1; 10], "then the least sent");
        let mut out = Vec::new();
        q.fill(&mut out, 100, 2, &[]);
        assert_eq!(out.len(), 20);
        assert!(q.is_empty(), "each sent twice: dropped");
    }

    #[test]
    fn newer_fact_replaces_older() {
        let mut q = Broadcasts::default();
        q.push(NodeId::from("a"), vec![1; 4]);
        q.push(NodeId::from("a"), vec![2; 4]);
        let mut out = Vec::new();
        q.fill(&mut out, 100, 5, &[]);
        assert_eq!(out, vec![2; 4]);
    }
}
