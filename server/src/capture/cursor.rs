//! The position in the change log that consumers persist and resume from.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in the change log: every change has one, and "changes after C" means every
/// change whose cursor is greater than C. Ordered; `Cursor::START` is before everything.
///
/// On the wire it is an opaque string (`"<xid>:<id>"`, both decimal); clients must not
/// interpret it. Parse untrusted text with [`str::parse`], which rejects anything that is not
/// exactly that form with a [`CursorParseError`] (never a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    // Field order matters: the derived ordering is (xid, id), the log's order.
    xid: u64,
    id: i64,
}

impl Cursor {
    /// Before the first change ever logged.
    pub const START: Cursor = Cursor { xid: 0, id: 0 };
    /// After every possible change (an upper bound for ranges).
    pub const END: Cursor = Cursor {
        xid: u64::MAX,
        id: i64::MAX,
    };

    /// Built by the storage layer from a log row or a snapshot's xmin.
    pub(crate) fn new(xid: u64, id: i64) -> Cursor {
        Cursor { xid, id }
    }

    /// The position just before every change of transactions with id `xid` or later: the
    /// cursor of a snapshot whose xmin is `xid`.
    pub(crate) fn before_xid(xid: u64) -> Cursor {
        Cursor { xid, id: 0 }
    }

    /// The transaction id part (the storage layer binds it as `xid8`).
    pub(crate) fn xid(self) -> u64 {
        self.xid
    }

    pub(crate) fn id(self) -> i64 {
        self.id
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.xid, self.id)
    }
}

/// Text that is not a cursor this server issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid cursor (expected the opaque string the server sent)")]
pub struct CursorParseError;

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Cursor, CursorParseError> {
        fn digits(s: &str) -> Option<&str> {
            // Only ASCII digits: no sign, no whitespace, no `+`, and bounded length.
            (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
        }
        let (x, i) = s.split_once(':').ok_or(CursorParseError)?;
        let xid = digits(x)
            .and_then(|x| x.parse::<u64>().ok())
            .ok_or(CursorParseError)?;
        let id = digits(i)
            .and_then(|i| i.parse::<i64>().ok())
            .ok_or(CursorParseError)?;
        Ok(Cursor { xid, id })
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cursor, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_orders_like_the_log() {
        let a = Cursor::new(100, 7);
        assert_eq!(a.to_string().parse::<Cursor>(), Ok(a));
        assert!(Cursor::new(100, 7) < Cursor::new(100, 8));
        assert!(Cursor::new(100, 900) < Cursor::new(101, 1));
        assert!(Cursor::START < Cursor::before_xid(5));
        assert!(Cursor::before_xid(5) < Cursor::new(5, 1));
        assert_eq!(Cursor::END.to_string().parse::<Cursor>(), Ok(Cursor::END));
        let json = serde_json::to_string(&a).unwrap_or_default();
        assert_eq!(json, "\"100:7\"");
        assert_eq!(serde_json::from_str::<Cursor>(&json).ok(), Some(a));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            ":",
            "1:",
            ":1",
            "1:2:3",
            "-1:2",
            "1:-2",
            "+1:2",
            " 1:2",
            "1 :2",
            "a:b",
            "99999999999999999999999:1",
            "1:9223372036854775808",
            "18446744073709551616:0",
            "１:2",
        ] {
            assert_eq!(bad.parse::<Cursor>(), Err(CursorParseError), "{bad:?}");
        }
        assert!(serde_json::from_str::<Cursor>("\"x\"").is_err());
        assert!(serde_json::from_str::<Cursor>("12").is_err());
    }
}
