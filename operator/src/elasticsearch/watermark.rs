//! The low disk watermark as Elasticsearch reads it (pure): a used share of the volume
//! ("85%", "0.85") or an amount of free space to keep ("2gb"). The allocator puts no new shard
//! copy on a data node past it, so a scale-down must fit the leaving data below it.

use std::fmt;

/// How much of a data volume the allocator keeps free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowWatermark {
    /// `threshold_enabled: false`: disk usage is not checked.
    Disabled,
    /// At most this share of the volume is used, in basis points (85% = 8500).
    UsedShare(u32),
    /// At least these bytes stay free.
    FreeBytes(u64),
}

impl LowWatermark {
    /// Elasticsearch's default.
    pub const DEFAULT: LowWatermark = LowWatermark::UsedShare(8500);

    /// The watermark from the settings a pilot read; `None` when Elasticsearch would not
    /// accept the value either.
    pub fn parse(enabled: bool, low: &str) -> Option<Self> {
        if !enabled {
            return Some(LowWatermark::Disabled);
        }
        let low = low.trim().to_ascii_lowercase();
        if let Some(percent) = low.strip_suffix('%') {
            let p: f64 = percent.trim().parse().ok()?;
            return (0.0..=100.0)
                .contains(&p)
                .then(|| LowWatermark::UsedShare((p * 100.0).round() as u32));
        }
        if let Ok(ratio) = low.parse::<f64>() {
            return (0.0..=1.0)
                .contains(&ratio)
                .then(|| LowWatermark::UsedShare((ratio * 10_000.0).round() as u32));
        }
        byte_size(&low).map(LowWatermark::FreeBytes)
    }

    /// The free bytes the allocator keeps on a volume of `total` bytes. A share ignores
    /// Elasticsearch's `max_headroom` cap, which only ever lowers the reserve: on volumes over
    /// ~1.3 TB this errs towards refusing.
    pub fn reserve(self, total: Option<u64>) -> Option<u64> {
        match self {
            LowWatermark::Disabled => Some(0),
            LowWatermark::FreeBytes(b) => Some(b),
            LowWatermark::UsedShare(bp) => {
                let free_share = u128::from(10_000u32.saturating_sub(bp));
                Some((u128::from(total?) * free_share / 10_000) as u64)
            }
        }
    }
}

impl fmt::Display for LowWatermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LowWatermark::Disabled => write!(f, "disk threshold disabled"),
            LowWatermark::UsedShare(bp) if bp % 100 == 0 => write!(f, "{}% used", bp / 100),
            LowWatermark::UsedShare(bp) => write!(f, "{}.{:02}% used", bp / 100, bp % 100),
            LowWatermark::FreeBytes(b) => write!(f, "{b} bytes free"),
        }
    }
}

/// An Elasticsearch byte size ("500mb", "1.5g", "0b"): binary units, case-insensitive.
fn byte_size(text: &str) -> Option<u64> {
    const UNITS: [(&str, u32); 11] = [
        ("pb", 5),
        ("tb", 4),
        ("gb", 3),
        ("mb", 2),
        ("kb", 1),
        ("p", 5),
        ("t", 4),
        ("g", 3),
        ("m", 2),
        ("k", 1),
        ("b", 0),
    ];
    let (number, power) = UNITS
        .iter()
        .find_map(|(unit, power)| text.strip_suffix(unit).map(|n| (n.trim(), *power)))?;
    let n: f64 = number.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| (n * 1024f64.powi(power as i32)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_ratios_and_sizes_as_elasticsearch_reads_them() {
        let parse = |s| LowWatermark::parse(true, s);
        assert_eq!(parse("85%"), Some(LowWatermark::DEFAULT));
        assert_eq!(parse("0.85"), Some(LowWatermark::DEFAULT));
        assert_eq!(parse(" 87.5% "), Some(LowWatermark::UsedShare(8750)));
        assert_eq!(parse("2gb"), Some(LowWatermark::FreeBytes(2 << 30)));
        assert_eq!(parse("1.5G"), Some(LowWatermark::FreeBytes(3 << 29)));
        assert_eq!(parse("500mb"), Some(LowWatermark::FreeBytes(500 << 20)));
        assert_eq!(parse("0b"), Some(LowWatermark::FreeBytes(0)));
        for bad in ["", "85", "120%", "-1gb", "lots", "2 parsecs"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            LowWatermark::parse(false, "whatever"),
            Some(LowWatermark::Disabled)
        );
    }

    #[test]
    fn reserves_and_descriptions() {
        assert_eq!(LowWatermark::DEFAULT.reserve(Some(1000)), Some(150));
        assert_eq!(LowWatermark::DEFAULT.reserve(None), None);
        assert_eq!(LowWatermark::FreeBytes(7).reserve(None), Some(7));
        assert_eq!(LowWatermark::Disabled.reserve(None), Some(0));
        assert_eq!(LowWatermark::DEFAULT.to_string(), "85% used");
        assert_eq!(LowWatermark::UsedShare(8750).to_string(), "87.50% used");
        assert_eq!(LowWatermark::FreeBytes(9).to_string(), "9 bytes free");
    }
}
