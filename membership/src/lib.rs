//! kvs-membership: SWIM with Lifeguard (placeholder until the membership issue).
