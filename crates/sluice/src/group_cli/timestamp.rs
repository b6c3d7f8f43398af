//! Times for `--to-datetime`: epoch milliseconds or an RFC 3339 date-time (parsed by `time`).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Parses epoch milliseconds or an RFC 3339 date-time (the zone is required: `Z` or `+HH:MM`).
pub(super) fn parse_timestamp_ms(value: &str) -> Result<i64, String> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    let at = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        format!(
            "`{value}` is neither epoch milliseconds nor an RFC 3339 time with a time zone, like 2024-05-01T12:00:00Z ({e})"
        )
    })?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("`{value}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ms("1714564800000"), Ok(1_714_564_800_000));
        assert_eq!(
            parse_timestamp_ms("2024-05-01T12:00:00Z"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-05-01T14:00:00.25+02:00"),
            Ok(1_714_564_800_250)
        );
        assert_eq!(
            parse_timestamp_ms("2024-05-01T07:30:00.123456-04:30"),
            Ok(1_714_564_800_123)
        );
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_timestamp_ms("2000-02-29T00:00:00Z"),
            Ok(951_782_400_000)
        );
        assert!(parse_timestamp_ms("2023-02-29T00:00:00Z").is_err());
        assert!(parse_timestamp_ms("2024-05-01T12:00:00")
            .unwrap_err()
            .contains("time zone"));
        assert!(parse_timestamp_ms("2024-05-01 12:00").is_err());
        assert!(parse_timestamp_ms("yesterday").is_err());
        assert!(parse_timestamp_ms("2024-05-01T12:00:00+2:00").is_err());
    }
}
