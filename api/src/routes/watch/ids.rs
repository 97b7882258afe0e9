//! The ids of `/watch` events: what names a change (the same on every node), the tag
//! of the node's store life that events sent in arrival order add, and the
//! `Last-Event-ID` a client sends back.

use kvs_sync::Version;

/// The time a change to `version` happened: its timestamp, or for an expiry the time
/// the value expired (the purge's tombstone keeps the value's timestamp and uuid), at
/// least a millisecond after the timestamp: a value can expire at or before its own
/// timestamp (its TTL counts from the writer's clock, the timestamp is causal, later
/// than the version it replaced), and its expiry must not share the put's name.
pub(super) fn change_at(version: &Version, expired: bool) -> u64 {
    match version.dead_since() {
        Some(at) if expired => at.max(version.id.timestamp.saturating_add(1)),
        _ => version.id.timestamp,
    }
}

/// What names a change: `<time>.<uuid>` (see [`change_at`]), so that the expiry of a
/// value has a name of its own (a client that drops repeated ids, or a resume from the
/// put, must not lose the expiry). The same on every node.
pub(super) fn change_id(version: &Version, expired: bool) -> String {
    format!("{}.{}", change_at(version, expired), version.id.uuid)
}

/// The id of an event sent in the order changes reached this node (live, or replayed
/// from [`kvs_sync::Arrivals`]): the change's name and the tag of this node's store life,
/// which a resume finds its place by. A replay by time sends bare change names.
pub(super) fn arrival_id(change_id: &str, tag: u32) -> String {
    format!("{change_id}.{tag:08x}")
}

/// A Last-Event-ID: `<time>.<uuid>.<tag>` as sent in arrival order, `<time>.<uuid>` as
/// sent in a replay by time, or a bare time.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LastEvent {
    pub(super) at: u64,
    pub(super) uuid: Option<uuid::Uuid>,
    pub(super) tag: Option<u32>,
}

impl LastEvent {
    /// `None` for anything else (a time with something else after the `.` would resume
    /// from it and send that event again).
    pub(super) fn parse(id: &str) -> Option<Self> {
        let mut parts = id.split('.');
        let at = parts
            .next()
            .filter(|at| at.bytes().all(|b| b.is_ascii_digit()))?
            .parse()
            .ok()?;
        let uuid = parts.next().map(uuid::Uuid::try_parse).transpose().ok()?;
        let tag = match parts.next() {
            Some(tag)
                if tag.len() == 8
                    && tag
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Some(u32::from_str_radix(tag, 16).ok()?)
            }
            Some(_) => return None,
            None => None,
        };
        match parts.next() {
            Some(_) => None,
            None => Some(Self { at, uuid, tag }),
        }
    }

    /// The name of the change it names, if it names one.
    pub(super) fn change_id(&self) -> Option<String> {
        self.uuid.map(|uuid| format!("{}.{uuid}", self.at))
    }
}

#[cfg(test)]
mod tests {
    use super::super::by_time::changes_of;
    use super::super::tests::replayed;
    use super::*;

    #[test]
    fn an_expiry_is_named_apart_from_its_put_even_at_the_values_own_time() {
        let mut value = replayed("k", 100).version;
        // A TTL that ran out before the causal timestamp (a skewed clock).
        value.expires_at = Some(90);
        let purged = Version {
            data: None,
            ..value.clone()
        };
        assert_ne!(change_id(&value, false), change_id(&value, true));
        assert_eq!(change_at(&value, true), 101);
        // The purge's tombstone streams under the name a replay gives the value's expiry.
        assert_eq!(change_id(&purged, true), change_id(&value, true));
        let changes: Vec<(u64, &str)> = changes_of(std::slice::from_ref(&value), 1000)
            .into_iter()
            .map(|(at, kind, _)| (at, kind))
            .collect();
        assert_eq!(changes, [(100, "put"), (101, "expire")]);
        value.expires_at = Some(150);
        assert_eq!(change_at(&value, true), 150);
    }

    #[test]
    fn a_last_event_id_is_an_id_as_sent_or_a_bare_timestamp() {
        let name = change_id(&replayed("k", 17).version, false);
        let uuid = Some(uuid::Uuid::from_u128(17));
        let parsed = |id: &str| LastEvent::parse(id);
        assert_eq!(
            parsed(&name),
            Some(LastEvent {
                at: 17,
                uuid,
                tag: None
            })
        );
        assert_eq!(
            parsed(&arrival_id(&name, 0xa1b2c3d4)),
            Some(LastEvent {
                at: 17,
                uuid,
                tag: Some(0xa1b2c3d4)
            })
        );
        assert_eq!(
            parsed("17"),
            Some(LastEvent {
                at: 17,
                uuid: None,
                tag: None
            })
        );
        assert_eq!(
            parsed(&arrival_id(&name, 5)).unwrap().change_id(),
            Some(name.clone())
        );
        for bad in [
            "17.garbage",
            "17.",
            "abc",
            "abc.00000000-0000-0000-0000-000000000011",
            "",
            &format!("{name}."),
            &format!("{name}.a1b2c3"),
            &format!("{name}.a1b2c3dx"),
            &format!("{name}.+a1b2c3d"),
            "+17",
            &format!("{name}.A1B2C3D4"),
            &format!("{name}.a1b2c3d4.0"),
        ] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }
}
