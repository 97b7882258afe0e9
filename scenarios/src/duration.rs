//! Durations in scenario files: `250us`, `500ms`, `10s`, `1.5s`, `2m`, `1h`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration with a unit suffix.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("`{text}`: a duration cannot be negative"));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration `{text}` needs a unit (us, ms, s, m, h)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration `{text}`: `{number}` is not a number"))?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "duration `{text}`: unknown unit `{unit}` (us, ms, s, m, h)"
            ));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration `{text}` out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Serde adapter: `#[serde(deserialize_with = "duration::de")]`.
pub(crate) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Serde adapter for optional durations.
pub(crate) fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de(d).map(Some)
}

/// Formats a duration as scenario files write it (seconds with a fraction).
pub(crate) fn show(d: Duration) -> String {
    format!("{:.6}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_errors() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert!(parse("10").is_err());
        assert!(parse("10parsecs").is_err());
        assert!(parse("-1s").is_err_and(|e| e.contains("cannot be negative")));
        assert!(parse("1e99h").is_err());
    }
}
