//! The one duration format of the config and the command line: integer seconds (as ALB
//! writes them) or a humantime string such as `"250ms"`, `"60s"`, `"1d"`, `"1h30m"`.

use std::time::Duration;

use super::file::DurationValue;

/// Parse a duration written as text: `"250ms"`, `"60s"`, `"1h30m"`, or bare seconds `"60"`.
/// Used for the config's string durations and for command-line flags (`--ping-interval`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("a duration cannot be empty".to_string());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration `{text}` is too large"));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write integer seconds or a string such as \"250ms\", \"60s\", \"1h30m\"")
    })
}

impl DurationValue {
    /// The duration this value stands for.
    pub fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(s) if *s < 0 => {
                Err(format!("a duration cannot be negative (got {s})"))
            }
            DurationValue::Seconds(s) => Ok(Duration::from_secs(s.unsigned_abs())),
            DurationValue::Text(t) => parse(t),
        }
    }
}

/// Render a duration the way the config accepts it back: `60s`, `250ms`, `1h 30m`.
pub fn display(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_integer_seconds() {
        assert_eq!(
            DurationValue::Seconds(60).to_duration(),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(DurationValue::Seconds(0).to_duration(), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_negative_seconds() {
        assert!(DurationValue::Seconds(-1).to_duration().is_err());
    }

    #[test]
    fn accepts_humantime_strings() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("7days"), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn accepts_bare_seconds_as_text() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "  ",
            "fast",
            "10 parsecs",
            "-5s",
            "1.5.3s",
            "99999999999999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn error_names_the_text() {
        let e = parse("soon").unwrap_err();
        assert!(e.contains("`soon`"), "{e}");
    }

    #[test]
    fn display_round_trips() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(60),
            Duration::from_secs(5_400),
            Duration::ZERO,
        ] {
            assert_eq!(parse(&display(d)), Ok(d));
        }
    }
}
