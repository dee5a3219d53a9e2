//! Durations (`250ms`, `30s`, `15m`, `24h`, `7d`, `0`) and sizes (`65536`, `64KiB`, `100MB`)
//! as the configuration writes them.
//!
//! ```
//! use gatehouse::config::units::{parse_duration, parse_size};
//! assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
//! assert_eq!(parse_size("64KiB").unwrap(), 65536);
//! assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// A duration written as a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurationStr(pub Duration);

/// A size in bytes, written as an integer or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

/// Parses `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d`; a bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| {
            format!("duration {text:?} has no unit: write it like \"250ms\", \"30s\", \"15m\" or \"24h\"")
        })?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} does not start with a number"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => {
            return Err(format!(
                "duration {text:?} has unknown unit {unit:?}: use ms, s, m, h or d"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration {text:?} is out of range"))
}

/// Parses a byte count: an integer, or a number with `B`, `KB`/`MB`/`GB` (powers of 1000)
/// or `KiB`/`MiB`/`GiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("size {text:?} does not start with a whole number"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "size {text:?} has unknown unit {other:?}: use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is out of range"))
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: de::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationStr, E> {
                parse_duration(v).map(DurationStr).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationStr, E> {
                if v == 0 {
                    Ok(DurationStr(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "duration {v} has no unit: write it as a string like \"{v}s\" or \"{v}ms\""
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationStr, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom("a duration cannot be negative")),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationStr, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit: write it as a string like \"{v}s\""
                )))
            }
        }
        de.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: de::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes (65536) or with a unit (\"64KiB\")")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        de.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("30 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("s").unwrap_err().contains("number"));
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("12XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
