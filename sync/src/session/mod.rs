//! One anti-entropy session with one peer, sans IO: [`Session`] takes the peer's
//! messages and returns what to send back, reading and merging through a [`Store`]. The
//! driver only moves frames (see `protocol.rs` for the exchange). Time comes in as an
//! argument; nothing here touches a socket or a clock.
//!
//! The sides take turns, and a turn may be long: where the peer's hash of a subtree is 0
//! (it holds nothing there, as on a new node), this side streams every version it holds
//! below it unasked, a chunk of leaves per [`Session::poll_output`] call, before the
//! turn's last message. The peer only reads during that time, so neither side ever waits
//! on the other's flow control.
//!
//! A side that holds nothing at the start gets everything the peer holds: when the
//! first versions arrive it tells its store ([`Store::begin_bulk_load`]), and again when
//! the session ends (the driver does when the session fails: [`Session::bulk_loading`]).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::admission::{Admission, RefusalCounts};

mod local;
mod versions;

pub use self::local::{Exchange, exchange_locally, exchange_with};
pub use self::versions::approximate_size;
use crate::merkle::{DEPTH, FANOUT, Leaf, MerkleTree, entry_hash, key_hash, level_width};
use crate::protocol::{Message, Standing, VERSIONS_BUDGET};
use crate::{Store, StoreError};

/// Differing leaves whose entries go in one `Entries` message at most.
const CHUNK_LEAVES: usize = 1024;
/// The level whose hashes `Hello` carries.
const HELLO_LEVEL: usize = 2;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `items` holds no value twice.
fn all_distinct<T: std::hash::Hash + Eq>(items: impl ExactSizeIterator<Item = T>) -> bool {
    let count = items.len();
    items.collect::<HashSet<T>>().len() == count
}

fn protocol(what: impl Into<String>) -> SessionError {
    SessionError::Protocol(what.into())
}

/// What a session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Leaves found to differ.
    pub leaves_differing: u64,
    /// Versions sent to the peer.
    pub versions_sent: u64,
    /// Versions received from the peer.
    pub versions_received: u64,
    /// Received versions that superseded the held ones and were stored.
    pub versions_stored: u64,
    /// Received versions refused by the admission checks.
    pub refused: RefusalCounts,
    /// Versions a stale side buried instead of sending (deleted while it was away).
    pub buried: u64,
    /// Versions a stale side kept back from a peer that cannot tell whether they were
    /// deleted meanwhile (a joining one).
    pub withheld: u64,
}

impl SessionStats {
    /// Whether the session found the two sides equal: nothing differed, nothing moved.
    pub fn found_equal(&self) -> bool {
        self.leaves_differing == 0
            && self.versions_sent == 0
            && self.versions_received == 0
            && self.buried == 0
            && self.withheld == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: `Hello` not sent yet. Responder: waiting for `Hello`.
    Start,
    /// Initiator: waiting for the level-2 `Nodes` (or `Done`).
    AwaitLevel2,
    /// Responder: waiting for the level-3 `Nodes` (or `Done`).
    AwaitLevel3,
    /// Initiator: waiting for `Versions`, `Entries` or `Done`.
    AwaitEntries,
    /// Responder: waiting for `Versions` and then `Want`.
    AwaitWant,
    Done,
}

/// What a turn sends once its unasked versions are out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    /// The initiator's leaf hashes of the level-3 nodes that differ.
    Nodes(Message),
    /// The responder's next chunk of entries, or `Done`.
    NextChunk,
    /// `Done`.
    Finish,
}

/// One side of a diff session; see the module doc.
pub struct Session {
    initiator: bool,
    state: State,
    /// The tree as the session started.
    tree: MerkleTree,
    /// Responder: differing leaves whose entries are still to be sent.
    leaves: VecDeque<Leaf>,
    /// Responder: key hash -> key of the chunk being repaired.
    chunk_keys: HashMap<u64, String>,
    /// Leaves whose versions go to the peer unasked (it holds nothing there).
    push_leaves: VecDeque<Leaf>,
    /// Set while every version goes to the peer unasked, in key order, because it holds
    /// nothing at all (a new node): the key the next batch follows, if any.
    send_all: Option<Option<String>>,
    /// The message that ends the current turn, once `push_leaves` are sent.
    after: Option<After>,
    rules: Admission,
    stats: SessionStats,
    /// This side's standing ([`Session::with_standing`]).
    standing: Standing,
    /// The peer's standing, once it said it.
    peer_standing: Option<Standing>,
    /// This side's floor ([`Session::with_floor`]).
    floor: u64,
    /// The peer's floor, once it said it (with its standing).
    peer_floor: u64,
    /// The `origin_joined_at` of this node's own writes, and the time before which they
    /// reached every peer ([`Session::writing_as`]).
    own_origin: Option<(u64, u64)>,
    /// Whether this side held nothing at the start (and has not begun a bulk load yet).
    held_nothing: bool,
    /// Whether this side began a bulk load of its store that the session has not ended.
    bulk_load: bool,
    /// Responder: whether it told its standing already ([`Session::early_standing`]).
    standing_told: bool,
}

impl Session {
    /// The side that opens the session; call [`Self::start`] first.
    pub fn initiator(rules: Admission) -> Self {
        Self::new(true, rules)
    }

    /// The side that accepts a session.
    pub fn responder(rules: Admission) -> Self {
        Self::new(false, rules)
    }

    fn new(initiator: bool, rules: Admission) -> Self {
        Self {
            initiator,
            state: State::Start,
            tree: MerkleTree::new(),
            leaves: VecDeque::new(),
            chunk_keys: HashMap::new(),
            push_leaves: VecDeque::new(),
            send_all: None,
            after: None,
            rules,
            stats: SessionStats::default(),
            standing: Standing::Established,
            peer_standing: None,
            floor: 0,
            peer_floor: 0,
            own_origin: None,
            held_nothing: false,
            bulk_load: false,
            standing_told: false,
        }
    }

    /// The initiator's opening messages (nothing for a responder).
    pub fn start(&mut self, store: &dyn Store) -> Result<Vec<Message>, SessionError> {
        if !self.initiator || self.state != State::Start {
            return Ok(Vec::new());
        }
        self.tree = store.merkle()?;
        self.held_nothing = self.tree.root() == 0;
        self.state = State::AwaitLevel2;
        Ok(vec![Message::Hello {
            root: self.tree.root(),
            level2: self.tree.level(HELLO_LEVEL).to_vec(),
            standing: self.standing,
            floor: self.floor,
        }])
    }

    /// Whether this side opened the session.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Whether the session is over (successfully).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether this side's turn goes on: call [`Self::poll_output`] (and send what it
    /// returns) until it is false, before waiting for the peer.
    pub fn has_output(&self) -> bool {
        !self.push_leaves.is_empty() || self.send_all.is_some() || self.after.is_some()
    }

    /// The next messages of this side's turn: versions of the next chunk of unasked
    /// leaves, then the message that ends the turn.
    pub fn poll_output(&mut self, store: &dyn Store) -> Result<Vec<Message>, SessionError> {
        if let Some(after) = self.send_all.take() {
            let held = store.versions_after(after.as_deref(), VERSIONS_BUDGET)?;
            if let Some((last, _)) = held.last() {
                self.send_all = Some(Some(last.clone()));
                return self.pack_versions(held, |_| true, store);
            }
        }
        if !self.push_leaves.is_empty() {
            let take = self.push_leaves.len().min(CHUNK_LEAVES);
            let leaves: Vec<Leaf> = self.push_leaves.drain(..take).collect();
            let held = store.leaf_versions(&leaves)?;
            return self.pack_versions(held, |_| true, store);
        }
        match self.after.take() {
            Some(After::Nodes(message)) => {
                self.state = State::AwaitEntries;
                Ok(vec![message])
            }
            Some(After::NextChunk) => self.next_chunk(store),
            Some(After::Finish) => self.finish(store),
            None => Ok(Vec::new()),
        }
    }

    /// What the session did so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Takes the peer's next message at wall time `now_ms`; returns what to send.
    pub fn handle(
        &mut self,
        message: Message,
        store: &dyn Store,
        now_ms: u64,
    ) -> Result<Vec<Message>, SessionError> {
        self.rules.now_ms = now_ms;
        match (self.state, message) {
            (State::Done, _) => Err(protocol("message after the end")),
            (_, Message::Done) => {
                self.end(store)?;
                Ok(Vec::new())
            }
            (state, Message::Versions(versions)) if state != State::Start => {
                if std::mem::take(&mut self.held_nothing) {
                    store.begin_bulk_load()?;
                    self.bulk_load = true;
                }
                self.merge(versions, store)?;
                Ok(Vec::new())
            }
            (
                State::Start,
                Message::Hello {
                    root,
                    level2,
                    standing,
                    floor,
                },
            ) if !self.initiator => {
                self.peer_standing = Some(standing);
                self.peer_floor = floor;
                self.on_hello(root, &level2, store)
            }
            (State::AwaitLevel2, Message::Standing { standing, floor })
                if self.peer_standing.is_none() =>
            {
                self.peer_standing = Some(standing);
                self.peer_floor = floor;
                Ok(Vec::new())
            }
            (
                State::AwaitLevel2,
                Message::Nodes {
                    level,
                    parents,
                    hashes,
                },
            ) => self.on_nodes(level, &parents, &hashes),
            (
                State::AwaitLevel3,
                Message::Nodes {
                    level,
                    parents,
                    hashes,
                },
            ) => self.on_leaves(level, &parents, &hashes),
            (State::AwaitEntries, Message::Entries { leaves, entries }) => {
                self.on_entries(&leaves, &entries, store)
            }
            (State::AwaitWant, Message::Want { differing, lacking }) => {
                self.on_want(&differing, &lacking, store)
            }
            (state, message) => Err(protocol(format!(
                "unexpected {} in {state:?}",
                message_name(&message)
            ))),
        }
    }

    /// Ends the session with `Done`.
    fn finish(&mut self, store: &dyn Store) -> Result<Vec<Message>, SessionError> {
        self.end(store)?;
        Ok(vec![Message::Done])
    }

    /// The session is over: a bulk load it began ends too.
    fn end(&mut self, store: &dyn Store) -> Result<(), SessionError> {
        self.state = State::Done;
        if std::mem::take(&mut self.bulk_load) {
            store.end_bulk_load()?;
        }
        Ok(())
    }

    /// Whether this side began a bulk load of its store that it has not ended yet: the
    /// driver ends it when the session fails ([`Store::end_bulk_load`]).
    pub fn bulk_loading(&self) -> bool {
        self.bulk_load
    }

    /// Responder: compares level 2 and sends its children of the nodes that differ.
    fn on_hello(
        &mut self,
        root: u64,
        level2: &[u64],
        store: &dyn Store,
    ) -> Result<Vec<Message>, SessionError> {
        if level2.len() != level_width(HELLO_LEVEL) {
            return Err(protocol("hello with a wrong number of hashes"));
        }
        self.tree = store.merkle()?;
        let mut out: Vec<Message> = self.tell_standing().into_iter().collect();
        if root == self.tree.root() {
            out.extend(self.finish(store)?);
            return Ok(out);
        }
        self.held_nothing = self.tree.root() == 0;
        if root == 0 && level2.iter().all(|&hash| hash == 0) {
            // The initiator holds nothing: everything goes, in key order.
            self.send_all = Some(None);
            self.after = Some(After::Finish);
            return Ok(out);
        }
        let differing = differing(self.tree.level(HELLO_LEVEL), level2);
        self.state = State::AwaitLevel3;
        out.push(self.children_of(HELLO_LEVEL, differing));
        Ok(out)
    }

    /// Our children of `parents` on `level`.
    fn children_of(&self, level: usize, parents: Vec<u32>) -> Message {
        let mut hashes = Vec::with_capacity(parents.len() * FANOUT);
        for &parent in &parents {
            hashes.extend_from_slice(self.tree.children(level, parent as usize).unwrap_or(&[]));
        }
        Message::Nodes {
            level: level as u8,
            parents,
            hashes,
        }
    }

    /// The children that differ between ours and the peer's `hashes` of `parents`, with
    /// the peer's hash of each.
    fn differing_children(
        &self,
        level: u8,
        parents: &[u32],
        hashes: &[u64],
    ) -> Result<Vec<(u32, u64)>, SessionError> {
        let level = usize::from(level);
        if level >= DEPTH || hashes.len() != parents.len() * FANOUT {
            return Err(protocol("nodes message of the wrong shape"));
        }
        // A node listed twice (never by an honest peer) would have its leaves read and
        // streamed once per copy.
        if !all_distinct(parents.iter().copied()) {
            return Err(protocol("a node listed twice"));
        }
        let mut out = Vec::new();
        for (&parent, theirs) in parents.iter().zip(hashes.chunks_exact(FANOUT)) {
            let ours = self
                .tree
                .children(level, parent as usize)
                .ok_or_else(|| protocol("no such node"))?;
            out.extend(
                differing(ours, theirs)
                    .into_iter()
                    .map(|c| (parent * FANOUT as u32 + c, theirs[c as usize])),
            );
        }
        Ok(out)
    }

    /// Initiator: from the responder's level-3 hashes to our leaves under those that
    /// differ; the subtrees the responder holds nothing of are streamed to it first.
    fn on_nodes(
        &mut self,
        level: u8,
        parents: &[u32],
        hashes: &[u64],
    ) -> Result<Vec<Message>, SessionError> {
        if usize::from(level) != HELLO_LEVEL {
            return Err(protocol("expected level-2 parents"));
        }
        let differing = self.differing_children(level, parents, hashes)?;
        if self.peer_holds_nothing(parents, hashes) {
            self.send_all = Some(None);
            self.after = Some(After::Finish);
            return Ok(Vec::new());
        }
        let mut compare = Vec::new();
        for (node, theirs) in differing {
            if theirs == 0 {
                let leaves = self
                    .tree
                    .children(HELLO_LEVEL + 1, node as usize)
                    .unwrap_or(&[]);
                let first = node * FANOUT as u32;
                let held = (0..FANOUT as u32).filter(|&c| leaves[c as usize] != 0);
                self.push_leaves.extend(held.map(|c| (first + c) as Leaf));
            } else {
                compare.push(node);
            }
        }
        self.stats.leaves_differing += self.push_leaves.len() as u64;
        self.after = Some(match compare.is_empty() {
            true => After::Finish,
            false => After::Nodes(self.children_of(HELLO_LEVEL + 1, compare)),
        });
        Ok(Vec::new())
    }

    /// Initiator: whether the responder, whose level-3 hashes under the level-2
    /// `parents` that differ are `hashes`, holds nothing: all of them are 0, and every
    /// level-2 node where this side holds anything differs.
    fn peer_holds_nothing(&self, parents: &[u32], hashes: &[u64]) -> bool {
        let listed: HashSet<u32> = parents.iter().copied().collect();
        hashes.iter().all(|&hash| hash == 0)
            && self
                .tree
                .level(HELLO_LEVEL)
                .iter()
                .enumerate()
                .all(|(node, &ours)| ours == 0 || listed.contains(&(node as u32)))
    }

    /// Responder: from the initiator's leaves to its unasked versions (where it holds
    /// nothing) and then the first chunk of entries.
    fn on_leaves(
        &mut self,
        level: u8,
        parents: &[u32],
        hashes: &[u64],
    ) -> Result<Vec<Message>, SessionError> {
        if usize::from(level) != HELLO_LEVEL + 1 {
            return Err(protocol("expected level-3 parents"));
        }
        for (leaf, theirs) in self.differing_children(level, parents, hashes)? {
            match theirs {
                0 => self.push_leaves.push_back(leaf as Leaf),
                _ => self.leaves.push_back(leaf as Leaf),
            }
        }
        self.stats.leaves_differing += (self.push_leaves.len() + self.leaves.len()) as u64;
        self.after = Some(After::NextChunk);
        Ok(Vec::new())
    }

    /// Responder: the entries of the next chunk of leaves, or `Done`.
    fn next_chunk(&mut self, store: &dyn Store) -> Result<Vec<Message>, SessionError> {
        if self.leaves.is_empty() {
            return self.finish(store);
        }
        let take = self.leaves.len().min(CHUNK_LEAVES);
        let leaves: Vec<Leaf> = self.leaves.drain(..take).collect();
        let held = store.leaf_entries(&leaves)?;
        let entries = held
            .iter()
            .map(|(key, id)| (key_hash(key), entry_hash(key, id)))
            .collect();
        self.chunk_keys = held
            .into_iter()
            .map(|(key, _)| (key_hash(&key), key))
            .collect();
        self.state = State::AwaitWant;
        Ok(vec![Message::Entries { leaves, entries }])
    }

    /// Initiator: sends our versions of the keys whose entries differ, and asks for the
    /// responder's keys we lack.
    fn on_entries(
        &mut self,
        leaves: &[u16],
        theirs: &[(u64, u64)],
        store: &dyn Store,
    ) -> Result<Vec<Message>, SessionError> {
        // A leaf listed twice (never by an honest peer) would have its keys read and
        // sent once per copy.
        if !all_distinct(leaves.iter().copied()) {
            return Err(protocol("a leaf listed twice"));
        }
        self.stats.leaves_differing += leaves.len() as u64;
        let ours = store.leaf_entries(leaves)?;
        let their_entries: HashMap<u64, u64> = theirs.iter().copied().collect();
        let mut our_entries = HashSet::with_capacity(ours.len());
        let mut send = Vec::new();
        for (key, id) in ours {
            let pair = (key_hash(&key), entry_hash(&key, &id));
            if their_entries.get(&pair.0) != Some(&pair.1) {
                send.push(key);
            }
            our_entries.insert(pair);
        }
        let our_keys: HashSet<u64> = our_entries.iter().map(|(key, _)| *key).collect();
        let (mut differing, mut lacking) = (Vec::new(), Vec::new());
        for &(key, entry) in theirs {
            if our_entries.contains(&(key, entry)) {
                continue;
            }
            match our_keys.contains(&key) {
                true => differing.push(key),
                false => lacking.push(key),
            }
        }
        let lacks = |key: &str| !their_entries.contains_key(&key_hash(key));
        let mut out = self.versions_of(send, lacks, store)?;
        out.push(Message::Want { differing, lacking });
        Ok(out)
    }

    /// Responder: sends the wanted versions, then the next chunk.
    fn on_want(
        &mut self,
        differing: &[u64],
        lacking: &[u64],
        store: &dyn Store,
    ) -> Result<Vec<Message>, SessionError> {
        // Each key once, however often a (hostile) peer repeats its hash: every copy
        // would be read and sent again, the whole answer held in memory.
        let mut asked = HashSet::new();
        let wanted = differing
            .iter()
            .chain(lacking)
            .filter(|hash| asked.insert(**hash))
            .filter_map(|hash| self.chunk_keys.get(hash).cloned())
            .collect();
        let lacking: HashSet<u64> = lacking.iter().copied().collect();
        let lacks = |key: &str| lacking.contains(&key_hash(key));
        let mut out = self.versions_of(wanted, lacks, store)?;
        out.extend(self.next_chunk(store)?);
        Ok(out)
    }
}

/// Indexes where `ours` and `theirs` differ.
fn differing(ours: &[u64], theirs: &[u64]) -> Vec<u32> {
    ours.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u32)
        .collect()
}

fn message_name(message: &Message) -> &'static str {
    match message {
        Message::Hello { .. } => "hello",
        Message::Standing { .. } => "standing",
        Message::Nodes { .. } => "nodes",
        Message::Entries { .. } => "entries",
        Message::Versions(_) => "versions",
        Message::Want { .. } => "want",
        Message::Done => "done",
    }
}
