//! The position in the change log that consumers persist and resume from, and its wire
//! form for clients: the position plus the identity of the database whose log it is in
//! ([`LogId`], [`WireCursor`]), so a cursor from another database (a restore into a new
//! cluster, another deployment) is recognized instead of being read as a position here.

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

/// Which change log a cursor belongs to: the Postgres cluster (its `system_identifier`,
/// fixed at `initdb` and kept by physical replicas and backups) and the database in it (its
/// oid). Two databases, or the same dump restored into a new cluster, have different ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogId(u64);

impl LogId {
    /// From the cluster's system identifier (0 when the server may not read it) and the
    /// database's oid, mixed so that neither part can be read back from the tag.
    pub fn new(system_identifier: i64, database_oid: u32) -> LogId {
        // splitmix64's finalizer: a fixed, well-spread mix (not a secret, just opaque).
        let mut z = (system_identifier as u64)
            ^ u64::from(database_oid).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        LogId(z ^ (z >> 31))
    }

    /// `at` as clients see it.
    pub fn wire(self, at: Cursor) -> WireCursor {
        WireCursor {
            at,
            log: Some(self),
        }
    }
}

/// A cursor as a client holds it: `"<xid>:<id>:<log>"`, the log id as 16 hex digits.
/// Cursors issued before the log id existed (`"<xid>:<id>"`) still parse, with `log: None`;
/// the server then checks only that the position exists in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireCursor {
    pub at: Cursor,
    pub log: Option<LogId>,
}

impl fmt::Display for WireCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.log {
            Some(LogId(log)) => write!(f, "{}:{log:016x}", self.at),
            None => write!(f, "{}", self.at),
        }
    }
}

impl FromStr for WireCursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<WireCursor, CursorParseError> {
        let Some((at, log)) = s.rsplit_once(':').filter(|(at, _)| at.contains(':')) else {
            return Ok(WireCursor {
                at: s.parse()?,
                log: None,
            });
        };
        let hex = log.len() == 16 && log.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex {
            return Err(CursorParseError);
        }
        let log = u64::from_str_radix(log, 16).map_err(|_| CursorParseError)?;
        Ok(WireCursor {
            at: at.parse()?,
            log: Some(LogId(log)),
        })
    }
}

/// Why a client's cursor cannot be resumed from in this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error("cursor from another database")]
    OtherLog,
    #[error("cursor ahead of the change log")]
    Ahead,
    #[error("cursor names no position in the change log")]
    Unknown,
}

impl WireCursor {
    /// Check the cursor against this database's log: `log` is its id, `watermark_xid` the
    /// current snapshot xmin, `floor` the retention floor, `exists` whether a change sits at
    /// exactly `self.at`. Every cursor the server issues passes: a snapshot's or caught-up
    /// position is `(xid, 0)` with `xid` at or below a watermark (which only grows), any
    /// other is a transaction's last change, which stays in the log until the floor passes
    /// it. A cursor at or below the floor is left to catch-up, which answers "resync".
    pub fn place(
        self,
        log: LogId,
        watermark_xid: u64,
        floor: Cursor,
        exists: bool,
    ) -> Result<Cursor, Unplaceable> {
        if self.log.is_some_and(|l| l != log) {
            return Err(Unplaceable::OtherLog);
        }
        let at = self.at;
        if at.xid > watermark_xid || (at.xid == watermark_xid && at.id > 0) {
            return Err(Unplaceable::Ahead);
        }
        if at.id > 0 && at > floor && !exists {
            return Err(Unplaceable::Unknown);
        }
        Ok(at)
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

    #[test]
    fn only_positions_this_log_has_or_had_are_placed() {
        let log = LogId::new(1, 2);
        let other = LogId::new(1, 3);
        let floor = Cursor::new(50, 500);
        let place = |w: WireCursor, exists| w.place(log, 100, floor, exists);
        // Issued cursors: a watermark position, a transaction's last change, the start.
        assert_eq!(
            place(log.wire(Cursor::before_xid(100)), false),
            Ok(Cursor::before_xid(100))
        );
        assert_eq!(
            place(log.wire(Cursor::before_xid(70)), false),
            Ok(Cursor::before_xid(70))
        );
        assert_eq!(
            place(log.wire(Cursor::new(80, 900)), true),
            Ok(Cursor::new(80, 900))
        );
        assert_eq!(place(log.wire(Cursor::START), false), Ok(Cursor::START));
        // Below the floor: placed here, resynced by catch-up.
        assert_eq!(
            place(log.wire(Cursor::new(40, 1)), false),
            Ok(Cursor::new(40, 1))
        );
        // The old format is checked by position only.
        let old = WireCursor {
            at: Cursor::new(80, 900),
            log: None,
        };
        assert_eq!(place(old, true), Ok(Cursor::new(80, 900)));
        // What cannot be placed.
        assert_eq!(
            place(other.wire(Cursor::new(80, 900)), true),
            Err(Unplaceable::OtherLog)
        );
        assert_eq!(
            place(log.wire(Cursor::new(99_999_999, 0)), false),
            Err(Unplaceable::Ahead)
        );
        assert_eq!(
            place(log.wire(Cursor::new(100, 1)), false),
            Err(Unplaceable::Ahead)
        );
        assert_eq!(
            place(
                WireCursor {
                    at: Cursor::new(101, 0),
                    log: None
                },
                false
            ),
            Err(Unplaceable::Ahead)
        );
        assert_eq!(
            place(log.wire(Cursor::new(80, 1_000_000)), false),
            Err(Unplaceable::Unknown)
        );
    }

    #[test]
    fn wire_cursors_carry_the_log_and_old_ones_still_parse() {
        let log = LogId::new(7_300_000_000_000_000_001, 16_384);
        let at = Cursor::new(100, 7);
        let text = log.wire(at).to_string();
        assert_eq!(text.matches(':').count(), 2, "{text}");
        assert!(text.starts_with("100:7:"), "{text}");
        assert_eq!(text.parse::<WireCursor>(), Ok(log.wire(at)));
        // Other databases: another oid in the same cluster, or another cluster.
        assert_ne!(LogId::new(7_300_000_000_000_000_001, 16_385), log);
        assert_ne!(LogId::new(7_300_000_000_000_000_002, 16_384), log);
        // The format before log ids.
        assert_eq!(
            "100:7".parse::<WireCursor>(),
            Ok(WireCursor { at, log: None })
        );
        for bad in [
            "100:7:",
            "100:7:xyz",
            "100:7:0123456789ABCDEF",
            "100:7:0123456789abcde",
            "100:7:0123456789abcdef0",
            "100:7:0123456789abcdef:1",
            ":7:0123456789abcdef",
            "100::0123456789abcdef",
            "garbage",
        ] {
            assert_eq!(bad.parse::<WireCursor>(), Err(CursorParseError), "{bad:?}");
        }
    }
}
