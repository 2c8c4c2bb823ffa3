//! The service's idea of "now", passed in rather than read from the system clock everywhere, so
//! that tests can move time forward to expire sessions, links and lock-outs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Seconds since the Unix epoch: how every time is stored in the database.
pub type UnixTime = i64;

/// A source of the current time: the system clock, or a manual clock that tests advance.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    Manual(AtomicI64),
}

impl Clock {
    /// The real clock.
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: UnixTime) -> Self {
        Self(Arc::new(Source::Manual(AtomicI64::new(start))))
    }

    /// The current time in unix seconds.
    pub fn now(&self) -> UnixTime {
        match &*self.0 {
            Source::System => time::OffsetDateTime::now_utc().unix_timestamp(),
            Source::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `seconds` (no effect on the system clock).
    pub fn advance(&self, seconds: i64) {
        if let Source::Manual(t) = &*self.0 {
            t.fetch_add(seconds, Ordering::SeqCst);
        }
    }
}

/// Formats a unix time for people: `2026-11-22 22:15 UTC`.
pub fn format_time(t: UnixTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Formats a unix time as RFC 3339, for exports.
pub fn format_rfc3339(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Parses a `YYYY-MM-DD` date into the unix time of its first second (UTC).
pub fn parse_date(s: &str) -> Option<UnixTime> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.trim(), &format)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}
