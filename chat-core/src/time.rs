//! Timestamps: RFC 3339 in UTC on the wire (`2026-02-24T10:30:00Z`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A point in time with microsecond precision, serialized as RFC 3339 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to microseconds so that it survives a
    /// round trip through storage unchanged.
    pub fn now() -> Self {
        Self::from_unix_micros(Self(OffsetDateTime::now_utc()).unix_micros())
    }

    /// Microseconds since the Unix epoch (what storage keeps).
    pub fn unix_micros(self) -> i64 {
        // i64 microseconds cover ±292,000 years; the cast cannot truncate for
        // any time `OffsetDateTime` can hold in practice.
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    /// Builds a timestamp from microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Self {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self(dt)
    }

    /// Parses RFC 3339 text (any offset; it is converted to UTC).
    pub fn parse(s: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339).map(|t| Self(t.to_offset(UtcOffset::UTC)))
    }

    /// The underlying `time` value.
    pub fn as_offset_date_time(self) -> OffsetDateTime {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

// By hand: the wire form is a string, which no derive can see through the
// hand-written serde impls above.
#[cfg(feature = "schema")]
const TIMESTAMP_DOC: &str =
    "RFC 3339 time in UTC, e.g. `2026-02-24T10:30:00Z` (microsecond precision).";

#[cfg(feature = "schema")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(TIMESTAMP_DOC))
            .examples(["2026-02-24T10:30:00Z"])
            .into()
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for Timestamp {}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": TIMESTAMP_DOC,
            "examples": ["2026-02-24T10:30:00Z"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_serialize_without_fraction() {
        let t = Timestamp::parse("2026-02-24T10:30:00Z").expect("parses");
        assert_eq!(t.to_string(), "2026-02-24T10:30:00Z");
    }

    #[test]
    fn micros_round_trip() {
        let t = Timestamp::parse("2026-02-24T10:30:00.123456Z").expect("parses");
        assert_eq!(Timestamp::from_unix_micros(t.unix_micros()), t);
        assert_eq!(t.to_string(), "2026-02-24T10:30:00.123456Z");
    }

    #[test]
    fn offsets_are_normalized_to_utc() {
        let t = Timestamp::parse("2026-02-24T12:30:00+02:00").expect("parses");
        assert_eq!(t.to_string(), "2026-02-24T10:30:00Z");
    }
}
