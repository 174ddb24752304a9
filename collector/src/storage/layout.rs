//! Where Parquet files live: `DATA_DIR/<table>/date=YYYY-MM-DD/hour=HH/<flush>-<uuid>.parquet`.
//!
//! The file name starts with the id of the WAL segment whose flush wrote it
//! (20 digits), which start-up recovery compares with the WAL checkpoint.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};

pub const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Start of the hour containing `micros`.
pub fn hour_start(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR
}

/// `date=YYYY-MM-DD/hour=HH` for the hour starting at `hour_start_micros`.
pub fn partition_dir(hour_start_micros: i64) -> String {
    let dt = DateTime::<Utc>::from_timestamp_micros(hour_start_micros).unwrap_or_default();
    format!(
        "date={:04}-{:02}-{:02}/hour={:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour()
    )
}

/// Parses `date=YYYY-MM-DD/hour=HH` back into the hour start.
pub fn parse_partition(date: &str, hour: &str) -> Option<i64> {
    let date = date.strip_prefix("date=")?;
    let hour: u32 = hour.strip_prefix("hour=")?.parse().ok()?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(hour, 0, 0)?.and_utc().timestamp_micros())
}

pub fn file_name(flush_id: u64) -> String {
    format!("{flush_id:020}-{}.parquet", uuid::Uuid::new_v4().simple())
}

/// The flush id a file name starts with.
pub fn flush_id_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".parquet")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

pub fn table_dir(data_dir: &Path, table: &str) -> PathBuf {
    data_dir.join(table)
}

/// Every directory entry inside the `date=…/hour=…` partitions under `root`
/// (a table directory), with the start of its hour. Directories that are not
/// partitions and ones that cannot be read are skipped; a missing `root` has
/// no entries.
pub fn partition_entries(root: &Path) -> Vec<(i64, fs::DirEntry)> {
    let mut out = Vec::new();
    let Ok(dates) = fs::read_dir(root) else {
        return out;
    };
    for date in dates.flatten() {
        let Ok(hours) = fs::read_dir(date.path()) else {
            continue;
        };
        for hour in hours.flatten() {
            let (d, h) = (date.file_name(), hour.file_name());
            let (Some(d), Some(h)) = (d.to_str(), h.to_str()) else {
                continue;
            };
            let Some(hour_start) = parse_partition(d, h) else {
                continue;
            };
            let Ok(entries) = fs::read_dir(hour.path()) else {
                continue;
            };
            out.extend(entries.flatten().map(|e| (hour_start, e)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_round_trips() {
        let t = 1_700_000_123_456_789; // 2023-11-14T22:15:23Z
        let h = hour_start(t);
        assert_eq!(partition_dir(h), "date=2023-11-14/hour=22");
        assert_eq!(parse_partition("date=2023-11-14", "hour=22"), Some(h));
        assert_eq!(parse_partition("date=2023-13-14", "hour=22"), None);
    }

    #[test]
    fn flush_id_is_read_back() {
        let name = file_name(42);
        assert_eq!(flush_id_of(Path::new(&name)), Some(42));
        assert_eq!(flush_id_of(Path::new("x.parquet")), None);
    }
}
