//! The dissemination queue: encoded updates waiting to be piggy-backed.
//!
//! At most one update per member is queued (a newer fact replaces an older one). Packing
//! takes the least-sent updates first (newest first among equals) until the byte budget is
//! full, and an update is dropped once sent `limit` times (`λ·log N`, computed by the
//! caller from the current cluster size).

use kvs_net::NodeId;

/// One queued update.
#[derive(Debug)]
struct Item {
    id: NodeId,
    bytes: Vec<u8>,
    sent: u32,
    order: u64,
}

/// Updates waiting for retransmission.
#[derive(Debug, Default)]
pub(crate) struct Broadcasts {
    items: Vec<Item>,
    next: u64,
}

impl Broadcasts {
    /// Queues the encoded update about `id`, replacing any pending one about it.
    pub(crate) fn push(&mut self, id: NodeId, bytes: Vec<u8>) {
        self.items.retain(|item| item.id != id);
        self.items.push(Item {
            id,
            bytes,
            sent: 0,
            order: self.next,
        });
        self.next += 1;
    }

    /// Whether anything is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends to `out` the least-sent updates that fit in `budget` bytes in total, skipping
    /// those about members in `skip` (already in the datagram); counts the sends and drops updates
    /// sent `limit` times.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, budget: usize, limit: u32, skip: &[NodeId]) {
        if self.items.is_empty() {
            return;
        }
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.sort_by_key(|&i| (self.items[i].sent, u64::MAX - self.items[i].order));
        for i in order {
            let item = &mut self.items[i];
            if out.len() + item.bytes.len() > budget || skip.contains(&item.id) {
                continue;
            }
            out.extend_from_slice(&item.bytes);
            item.sent += 1;
        }
        self.items.retain(|item| item.sent < limit);
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
