//! Per-key permissions: twelve bits written as three hex digits.
//!
//! The digits are, from left to right, the owner's, the group's and everyone
//! else's; within a digit, create is 8, delete 4, write 2 and read 1. `f31`
//! (the default of `default_permissions`) gives the owner everything, the
//! group write and read, and others read. The text form is exactly three hex
//! digits (either case on input, lowercase on output); anything else is an
//! error, never a silent default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// The permission bits of one key (only the low 12 bits are ever set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Permissions(u16);

/// Whose digit applies to a principal, see [`Permissions::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Class {
    /// The principal owns the key.
    Owner,
    /// The principal is a member of the key's group.
    Group,
    /// Everyone else, anonymous clients included.
    Other,
}

/// One of the four permission bits of a digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// Read the key (1).
    Read,
    /// Overwrite the key (2).
    Write,
    /// Delete the key (4).
    Delete,
    /// Create keys below this key (8).
    Create,
}

/// A permission string that is not exactly three hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("permissions must be exactly three hex digits (owner, group, others), like \"f31\"")]
pub(crate) struct PermissionsError;

impl Permissions {
    /// The spec's default for new keys: owner all, group write+read, others read.
    pub(crate) const DEFAULT: Self = Self(0xf31);
    /// No bit for anyone.
    pub(crate) const NONE: Self = Self(0);

    /// Builds permissions from bits; `None` when a bit above the 12th is set.
    pub(crate) fn from_bits(bits: u16) -> Option<Self> {
        (bits <= 0xfff).then_some(Self(bits))
    }

    /// The 12 bits.
    pub(crate) fn bits(self) -> u16 {
        self.0
    }

    /// The 4-bit digit of a class.
    pub(crate) fn digit(self, class: Class) -> u8 {
        let shift = match class {
            Class::Owner => 8,
            Class::Group => 4,
            Class::Other => 0,
        };
        // Masked to 4 bits, so the cast never truncates anything that matters.
        ((self.0 >> shift) & 0xf) as u8
    }

    /// Whether the digit of `class` has the bit of `access`.
    pub(crate) fn allows(self, class: Class, access: Access) -> bool {
        self.digit(class) & access.bit() != 0
    }
}

impl Access {
    /// The bit of this access within a digit.
    pub(crate) fn bit(self) -> u8 {
        match self {
            Self::Create => 8,
            Self::Delete => 4,
            Self::Write => 2,
            Self::Read => 1,
        }
    }

    /// The lowercase name used in error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Write => "write",
            Self::Read => "read",
        }
    }
}

impl Default for Permissions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for Permissions {
    type Err = PermissionsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = text.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err(PermissionsError);
        }
        // Three ASCII hex digits always fit in 12 bits.
        u16::from_str_radix(text, 16)
            .ok()
            .and_then(Self::from_bits)
            .ok_or(PermissionsError)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03x}", self.0)
    }
}

impl Serialize for Permissions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESSES: [Access; 4] = [Access::Read, Access::Write, Access::Delete, Access::Create];

    #[test]
    fn parses_and_formats_the_default() {
        let p: Permissions = "f31".parse().expect("valid");
        assert_eq!(p, Permissions::DEFAULT);
        assert_eq!(p.bits(), 0xf31);
        assert_eq!(p.to_string(), "f31");
    }

    #[test]
    fn accepts_either_case_and_formats_lowercase() {
        for text in ["F31", "f31", "F3a", "ABC", "abc", "aBc"] {
            let p: Permissions = text.parse().expect(text);
            assert_eq!(p.to_string(), text.to_ascii_lowercase());
        }
    }

    #[test]
    fn keeps_leading_zeros() {
        for (text, bits) in [("000", 0), ("001", 1), ("010", 0x10), ("fff", 0xfff)] {
            let p: Permissions = text.parse().expect(text);
            assert_eq!(p.bits(), bits);
            assert_eq!(p.to_string(), text);
        }
    }

    #[test]
    fn rejects_everything_else() {
        let bad = [
            "",
            "f",
            "f3",
            "f310",
            "0f31",
            " f31",
            "f31 ",
            "f 1",
            "g31",
            "+f3",
            "-f3",
            "0x1",
            "f3\n",
            "１２３",
            "é12",
            "f3\u{0}",
            "fff0",
            "1000",
        ];
        for text in bad {
            assert_eq!(
                text.parse::<Permissions>(),
                Err(PermissionsError),
                "{text:?}"
            );
        }
    }

    #[test]
    fn from_bits_rejects_more_than_twelve_bits() {
        assert_eq!(Permissions::from_bits(0xfff), Some(Permissions(0xfff)));
        assert_eq!(Permissions::from_bits(0x1000), None);
        assert_eq!(Permissions::from_bits(u16::MAX), None);
    }

    #[test]
    fn digits_map_to_classes() {
        let p: Permissions = "f31".parse().expect("valid");
        assert_eq!(p.digit(Class::Owner), 0xf);
        assert_eq!(p.digit(Class::Group), 0x3);
        assert_eq!(p.digit(Class::Other), 0x1);
    }

    #[test]
    fn every_bit_of_every_digit() {
        let classes = [(Class::Owner, 8), (Class::Group, 4), (Class::Other, 0)];
        for (class, shift) in classes {
            for access in ACCESSES {
                let only =
                    Permissions::from_bits(u16::from(access.bit()) << shift).expect("12 bits");
                for (other_class, _) in classes {
                    for other_access in ACCESSES {
                        let expected = other_class == class && other_access == access;
                        assert_eq!(only.allows(other_class, other_access), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn default_semantics() {
        let p = Permissions::DEFAULT;
        assert!(ACCESSES.iter().all(|a| p.allows(Class::Owner, *a)));
        assert!(p.allows(Class::Group, Access::Read));
        assert!(p.allows(Class::Group, Access::Write));
        assert!(!p.allows(Class::Group, Access::Delete));
        assert!(!p.allows(Class::Group, Access::Create));
        assert!(p.allows(Class::Other, Access::Read));
        assert!(!p.allows(Class::Other, Access::Write));
        assert!(
            !ACCESSES
                .iter()
                .any(|a| Permissions::NONE.allows(Class::Owner, *a))
        );
    }

    #[test]
    fn serde_uses_the_text_form() {
        let json = serde_json::to_string(&Permissions::DEFAULT).expect("serialize");
        assert_eq!(json, "\"f31\"");
        let back: Permissions = serde_json::from_str("\"F31\"").expect("deserialize");
        assert_eq!(back, Permissions::DEFAULT);
        assert!(serde_json::from_str::<Permissions>("\"f3\"").is_err());
        assert!(serde_json::from_str::<Permissions>("3889").is_err());
    }
}
