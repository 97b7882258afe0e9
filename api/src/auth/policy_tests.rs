//! The policy matrix: every class × every operation × allowing and denying
//! permission digits, plus scopes, anonymous flags and absent keys.

use super::*;
use crate::auth::permissions::Permissions;

const OWNER: &str = "u-owner";
const GROUP: &str = "g-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Owner,
    GroupMember,
    Other,
    Anonymous,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Delete,
    CreateBelow,
    ChangeMeta,
}

const WHO: [Who; 5] = [
    Who::Owner,
    Who::GroupMember,
    Who::Other,
    Who::Anonymous,
    Who::Admin,
];
const OPS: [Op; 5] = [
    Op::Read,
    Op::Write,
    Op::Delete,
    Op::CreateBelow,
    Op::ChangeMeta,
];
const ALL_FLAGS: AnonymousAccess = AnonymousAccess {
    read: true,
    write: true,
};

fn subject(user_id: &str, groups: &[&str], scopes: &[Scope]) -> Principal {
    Principal::User(Subject {
        user_id: user_id.into(),
        groups: groups.iter().map(ToString::to_string).collect(),
        scopes: scopes.to_vec(),
    })
}

fn principal(who: Who) -> Principal {
    let rw = [Scope::Read, Scope::Write];
    match who {
        // The owner is in the key's group too: the owner digit must decide.
        Who::Owner => subject(OWNER, &["g-other", GROUP], &rw),
        Who::GroupMember => subject("u-member", &["g-other", GROUP], &rw),
        Who::Other => subject("u-stranger", &["g-other"], &rw),
        Who::Anonymous => Principal::Anonymous,
        Who::Admin => subject("u-admin", &[], &[Scope::Admin]),
    }
}

fn meta(bits: u16) -> KeyMeta {
    KeyMeta {
        owner: Some(OWNER.into()),
        group: Some(GROUP.into()),
        permissions: Permissions::from_bits(bits).expect("12 bits"),
    }
}

fn access(op: Op) -> Access {
    match op {
        Op::Read => Access::Read,
        Op::Write | Op::ChangeMeta => Access::Write,
        Op::Delete => Access::Delete,
        Op::CreateBelow => Access::Create,
    }
}

fn shift(who: Who) -> u16 {
    match who {
        Who::Owner => 8,
        Who::GroupMember => 4,
        _ => 0,
    }
}

fn operation(op: Op, meta: &KeyMeta) -> Operation<'_> {
    match op {
        Op::Read => Operation::Read(Some(meta)),
        Op::Write => Operation::Write(meta),
        Op::Delete => Operation::Delete(Some(meta)),
        Op::CreateBelow => Operation::Create(Some(meta)),
        Op::ChangeMeta => Operation::ChangeMeta(meta),
    }
}

fn decide(
    principal: &Principal,
    operation: Operation<'_>,
    anonymous: AnonymousAccess,
) -> Result<(), Denied> {
    authorize(&AccessRequest {
        principal,
        operation,
        anonymous,
    })
}

fn expected(who: Who, op: Op, digit_allows: bool) -> Result<(), Denied> {
    let forbid = |r| Err(Denied::Forbidden(r));
    match (who, op) {
        (Who::Admin, _) | (Who::Owner, Op::ChangeMeta) => Ok(()),
        (_, Op::ChangeMeta) if who != Who::Anonymous => forbid(Reason::NotOwner),
        (Who::Anonymous, Op::Delete | Op::ChangeMeta) => Err(Denied::Unauthorized),
        (Who::Anonymous, _) if !digit_allows => Err(Denied::Unauthorized),
        _ if !digit_allows => forbid(Reason::Permission(access(op))),
        _ => Ok(()),
    }
}

#[test]
fn the_matrix() {
    for who in WHO {
        for op in OPS {
            let bit = u16::from(access(op).bit()) << shift(who);
            // Only the principal's own bit set; then every bit but that one.
            for (bits, digit_allows) in [(bit, true), (0xfff & !bit, false)] {
                let meta = meta(bits);
                let got = decide(&principal(who), operation(op, &meta), ALL_FLAGS);
                assert_eq!(
                    got,
                    expected(who, op, digit_allows),
                    "{who:?} {op:?} {bits:03x}"
                );
            }
        }
    }
}

#[test]
fn admin_passes_even_with_no_bits_and_no_flags() {
    let admin = principal(Who::Admin);
    let m = meta(0);
    for op in OPS {
        assert_eq!(
            decide(&admin, operation(op, &m), AnonymousAccess::default()),
            Ok(()),
            "{op:?}"
        );
    }
    assert_eq!(
        decide(&admin, Operation::Admin, AnonymousAccess::default()),
        Ok(())
    );
    assert_eq!(
        decide(&admin, Operation::ReadMeta(&m), AnonymousAccess::default()),
        Ok(())
    );
}

#[test]
fn anonymous_needs_the_flags() {
    let anon = Principal::Anonymous;
    let m = meta(0xfff);
    let off = AnonymousAccess::default();
    for op in OPS {
        assert_eq!(
            decide(&anon, operation(op, &m), off),
            Err(Denied::Unauthorized),
            "{op:?}"
        );
    }
    let read_only = AnonymousAccess {
        read: true,
        write: false,
    };
    assert_eq!(decide(&anon, Operation::Read(Some(&m)), read_only), Ok(()));
    assert_eq!(decide(&anon, Operation::List, read_only), Ok(()));
    assert_eq!(decide(&anon, Operation::Read(None), read_only), Ok(()));
    assert_eq!(
        decide(&anon, Operation::Write(&m), read_only),
        Err(Denied::Unauthorized)
    );
    assert_eq!(
        decide(&anon, Operation::Create(None), read_only),
        Err(Denied::Unauthorized)
    );
    let write_only = AnonymousAccess {
        read: false,
        write: true,
    };
    assert_eq!(
        decide(&anon, Operation::Read(Some(&m)), write_only),
        Err(Denied::Unauthorized)
    );
    assert_eq!(
        decide(&anon, Operation::List, write_only),
        Err(Denied::Unauthorized)
    );
    assert_eq!(decide(&anon, Operation::Write(&m), write_only), Ok(()));
    assert_eq!(decide(&anon, Operation::Create(None), write_only), Ok(()));
}

#[test]
fn anonymous_never_deletes_reads_meta_administers_or_observes() {
    let anon = Principal::Anonymous;
    let m = meta(0xfff);
    for op in [
        Operation::Delete(Some(&m)),
        Operation::Delete(None),
        Operation::ReadMeta(&m),
        Operation::ChangeMeta(&m),
        Operation::Admin,
        Operation::Observe,
    ] {
        assert_eq!(
            decide(&anon, op, ALL_FLAGS),
            Err(Denied::Unauthorized),
            "{op:?}"
        );
    }
}

#[test]
fn anonymous_with_default_permissions() {
    // f31 on a key somebody owns: anonymous is "other", and may read, not overwrite
    // nor create below it.
    let anon = Principal::Anonymous;
    let owned = meta(Permissions::DEFAULT.bits());
    assert_eq!(
        decide(&anon, Operation::Read(Some(&owned)), ALL_FLAGS),
        Ok(())
    );
    for op in [Operation::Write(&owned), Operation::Create(Some(&owned))] {
        assert_eq!(
            decide(&anon, op, ALL_FLAGS),
            Err(Denied::Unauthorized),
            "{op:?}"
        );
    }
    // A key an anonymous client created is owned by `anonymous`: the owner's digit
    // applies to anonymous callers, who may overwrite it (with a TTL too) and create
    // below it, as a file of `nobody` to `nobody`; an authenticated user is "other"
    // there.
    let anonymous_key = KeyMeta::for_anonymous_key(Permissions::DEFAULT);
    for op in [
        Operation::Read(Some(&anonymous_key)),
        Operation::Write(&anonymous_key),
        Operation::WriteExpiring(&anonymous_key),
        Operation::Create(Some(&anonymous_key)),
    ] {
        assert_eq!(decide(&anon, op, ALL_FLAGS), Ok(()), "{op:?}");
    }
    let writer = subject("somebody", &[], &[Scope::Read, Scope::Write]);
    assert_eq!(
        decide(&writer, Operation::Write(&anonymous_key), ALL_FLAGS),
        Err(Denied::Forbidden(Reason::Permission(Access::Write)))
    );
    // A key nobody owns (written before auth was on) is not anonymous callers' own:
    // others' digit, read only.
    let ownerless = KeyMeta::for_new_key(None, Permissions::DEFAULT);
    assert_eq!(
        decide(&anon, Operation::Read(Some(&ownerless)), ALL_FLAGS),
        Ok(())
    );
    for op in [
        Operation::Write(&ownerless),
        Operation::WriteExpiring(&ownerless),
        Operation::Create(Some(&ownerless)),
    ] {
        assert_eq!(
            decide(&anon, op, ALL_FLAGS),
            Err(Denied::Unauthorized),
            "{op:?}"
        );
    }
    // The flags still gate first, and a delete always needs a token.
    let read_only = AnonymousAccess {
        read: true,
        write: false,
    };
    assert_eq!(
        decide(&anon, Operation::Write(&anonymous_key), read_only),
        Err(Denied::Unauthorized)
    );
    assert_eq!(
        decide(&anon, Operation::Delete(Some(&anonymous_key)), ALL_FLAGS),
        Err(Denied::Unauthorized)
    );
}

#[test]
fn scopes_gate_before_bits() {
    let m = meta(0xfff);
    let read_only = subject(OWNER, &[], &[Scope::Read]);
    let write_only = subject(OWNER, &[], &[Scope::Write]);
    let none = subject(OWNER, &[], &[]);
    let no_write = Err(Denied::Forbidden(Reason::MissingScope(Scope::Write)));
    let no_read = Err(Denied::Forbidden(Reason::MissingScope(Scope::Read)));
    for op in [Op::Write, Op::Delete, Op::CreateBelow, Op::ChangeMeta] {
        assert_eq!(
            decide(&read_only, operation(op, &m), ALL_FLAGS),
            no_write,
            "{op:?}"
        );
        assert_eq!(
            decide(&write_only, operation(op, &m), ALL_FLAGS),
            Ok(()),
            "{op:?}"
        );
        assert_eq!(
            decide(&none, operation(op, &m), ALL_FLAGS),
            no_write,
            "{op:?}"
        );
    }
    for op in [
        Operation::Read(Some(&m)),
        Operation::Read(None),
        Operation::List,
        Operation::ReadMeta(&m),
        Operation::Observe,
    ] {
        assert_eq!(decide(&write_only, op, ALL_FLAGS), no_read, "{op:?}");
        assert_eq!(decide(&read_only, op, ALL_FLAGS), Ok(()), "{op:?}");
    }
    // Absent keys and ancestor-less creates still need the scope.
    assert_eq!(
        decide(&read_only, Operation::Create(None), ALL_FLAGS),
        no_write
    );
    assert_eq!(
        decide(&read_only, Operation::Delete(None), ALL_FLAGS),
        no_write
    );
}

#[test]
fn admin_endpoints_need_the_admin_scope() {
    let m = meta(0xfff);
    let rw = subject(OWNER, &[GROUP], &[Scope::Read, Scope::Write]);
    assert_eq!(
        decide(&rw, Operation::Admin, ALL_FLAGS),
        Err(Denied::Forbidden(Reason::NotAdmin))
    );
    let mixed = subject("x", &[], &[Scope::Read, Scope::Admin]);
    assert_eq!(decide(&mixed, Operation::Admin, ALL_FLAGS), Ok(()));
    assert_eq!(
        decide(&mixed, Operation::Delete(Some(&meta(0))), ALL_FLAGS),
        Ok(())
    );
    assert_eq!(decide(&rw, Operation::Write(&m), ALL_FLAGS), Ok(()));
}

#[test]
fn absent_keys_and_top_level_creates_need_only_the_scope() {
    let stranger = principal(Who::Other);
    assert_eq!(decide(&stranger, Operation::Read(None), ALL_FLAGS), Ok(()));
    assert_eq!(
        decide(&stranger, Operation::Delete(None), ALL_FLAGS),
        Ok(())
    );
    assert_eq!(
        decide(&stranger, Operation::Create(None), ALL_FLAGS),
        Ok(())
    );
}

#[test]
fn read_meta_needs_owner_or_read_bit() {
    let no_read = meta(0xfff & !0x111);
    assert_eq!(
        decide(
            &principal(Who::Owner),
            Operation::ReadMeta(&no_read),
            ALL_FLAGS
        ),
        Ok(())
    );
    let denied = Err(Denied::Forbidden(Reason::Permission(Access::Read)));
    assert_eq!(
        decide(
            &principal(Who::GroupMember),
            Operation::ReadMeta(&no_read),
            ALL_FLAGS
        ),
        denied
    );
    assert_eq!(
        decide(
            &principal(Who::Other),
            Operation::ReadMeta(&meta(0x001)),
            ALL_FLAGS
        ),
        Ok(())
    );
}

#[test]
fn class_resolution() {
    let Principal::User(owner) = principal(Who::Owner) else {
        panic!("user")
    };
    let Principal::User(member) = principal(Who::GroupMember) else {
        panic!("user")
    };
    let Principal::User(other) = principal(Who::Other) else {
        panic!("user")
    };
    let m = meta(0xf31);
    assert_eq!(owner.class_on(&m), Class::Owner);
    assert_eq!(member.class_on(&m), Class::Group);
    assert_eq!(other.class_on(&m), Class::Other);
    let unowned = KeyMeta::for_new_key(None, Permissions::DEFAULT);
    assert_eq!(owner.class_on(&unowned), Class::Other);
    // Only the owner of an unowned key is... nobody: ChangeMeta needs admin.
    let denied = Err(Denied::Forbidden(Reason::NotOwner));
    assert_eq!(
        decide(
            &principal(Who::Owner),
            Operation::ChangeMeta(&unowned),
            ALL_FLAGS
        ),
        denied
    );
}

#[test]
fn principal_from_claims_uses_the_user_record_groups() {
    let claims = Claims {
        sub: "u1".into(),
        scopes: vec![Scope::Read],
        exp: 10,
        iat: 0,
        jti: "j".into(),
        nbf: None,
    };
    let user = User {
        id: "u1".into(),
        name: "alice".into(),
        groups: vec!["g1".into()],
        created_at: 0,
    };
    let want = subject("u1", &["g1"], &[Scope::Read]);
    assert_eq!(Principal::from_claims(&claims, &user), want);
}

#[test]
fn put_selects_write_or_create() {
    let current = meta(0xf31);
    let ancestor = meta(0x800);
    assert_eq!(
        Operation::put(Some(&current), Some(&ancestor), false),
        Operation::Write(&current)
    );
    assert_eq!(
        Operation::put(Some(&current), None, true),
        Operation::WriteExpiring(&current)
    );
    for expiring in [false, true] {
        assert_eq!(
            Operation::put(None, Some(&ancestor), expiring),
            Operation::Create(Some(&ancestor))
        );
        assert_eq!(
            Operation::put(None, None, expiring),
            Operation::Create(None)
        );
    }
}

/// A TTL on an existing key deletes it when it runs out: without the delete bit
/// (issue 11: a group member with W but not D expired the owner's key), it is refused.
#[test]
fn an_expiring_overwrite_needs_write_and_delete() {
    let member = principal(Who::GroupMember);
    let write_only = meta(0xf20);
    let write_delete = meta(0xf60);
    let delete_only = meta(0xf40);
    let expiring = |m| decide(&member, Operation::WriteExpiring(m), ALL_FLAGS);
    assert_eq!(
        expiring(&write_only),
        Err(Denied::Forbidden(Reason::Permission(Access::Delete)))
    );
    assert_eq!(
        expiring(&delete_only),
        Err(Denied::Forbidden(Reason::Permission(Access::Write)))
    );
    assert_eq!(expiring(&write_delete), Ok(()));
    // Anonymous writers (allow_anonymous_write) likewise, by the others digit.
    let anonymous = |bits| {
        let meta = meta(bits);
        decide(
            &Principal::Anonymous,
            Operation::WriteExpiring(&meta),
            ALL_FLAGS,
        )
    };
    assert_eq!(anonymous(0xfff), Ok(()));
    assert_eq!(anonymous(0xff6), Ok(()));
    assert_eq!(
        anonymous(0xff2),
        Err(Denied::Unauthorized),
        "an expiry is a delete"
    );
    assert_eq!(anonymous(0xf31), Err(Denied::Unauthorized));
    let admin = principal(Who::Admin);
    assert_eq!(
        decide(&admin, Operation::WriteExpiring(&meta(0)), ALL_FLAGS),
        Ok(())
    );
}

#[test]
fn ancestors_nearest_first() {
    assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a/b", "a"]);
    assert_eq!(ancestors("a").count(), 0);
    assert_eq!(ancestors("ä/ö/ü").collect::<Vec<_>>(), ["ä/ö", "ä"]);
}

#[test]
fn denials_map_to_statuses() {
    assert_eq!(
        (Denied::Unauthorized.status(), Denied::Unauthorized.code()),
        (401, "unauthorized")
    );
    assert_eq!(Denied::Unauthorized.www_authenticate(), Some("Bearer"));
    let f = Denied::Forbidden(Reason::Permission(Access::Create));
    assert_eq!(
        (f.status(), f.code(), f.www_authenticate()),
        (403, "forbidden", None)
    );
    assert_eq!(
        f.to_string(),
        "the key's permissions do not allow create here"
    );
    let s = Denied::Forbidden(Reason::MissingScope(Scope::Write));
    assert_eq!(s.to_string(), "the token lacks the write scope");
}

#[test]
fn admit_checks_revocation_and_user() {
    let claims = Claims {
        sub: "u1".into(),
        scopes: vec![Scope::Write],
        exp: 10,
        iat: 0,
        jti: "j".into(),
        nbf: None,
    };
    let user = User {
        id: "u1".into(),
        name: "alice".into(),
        groups: vec![],
        created_at: 0,
    };
    let other = User {
        id: "u2".into(),
        ..user.clone()
    };
    assert_eq!(
        admit(&claims, false, Some(&user)),
        Ok(subject("u1", &[], &[Scope::Write]))
    );
    assert_eq!(admit(&claims, true, Some(&user)), Err(TokenError::Revoked));
    assert_eq!(admit(&claims, false, None), Err(TokenError::UnknownUser));
    assert_eq!(
        admit(&claims, false, Some(&other)),
        Err(TokenError::UnknownUser)
    );
}
