//! Reading a segment back at start-up.

use std::fs;
use std::path::Path;

use super::{
    MAX_RECORD_LEN, RECORD_HEADER_LEN, Record, Result, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, io_err,
};

/// How reading a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Every byte belonged to a valid record.
    Clean,
    /// The last record was incomplete or failed its checksum and nothing
    /// followed it: a write cut short by a crash, never acknowledged.
    TornTail { offset: u64 },
    /// A bad record with more bytes after it, or a bad header: the valid
    /// prefix is kept and the segment should be quarantined.
    Corrupt { offset: u64, reason: String },
}

/// The records of one segment and how reading ended.
#[derive(Debug)]
pub struct SegmentReplay {
    pub records: Vec<Record>,
    pub outcome: ReplayOutcome,
}

/// Reads every valid record of a segment, stopping at the first bad one.
pub fn read_segment(path: &Path) -> Result<SegmentReplay> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    Ok(parse_segment(&bytes))
}

pub(crate) fn parse_segment(bytes: &[u8]) -> SegmentReplay {
    let mut records = Vec::new();
    if bytes.len() < SEGMENT_HEADER_LEN {
        // A segment is created with its header synced before any record is
        // written, so a short header means nothing was ever acknowledged in it.
        let outcome = if bytes.is_empty() {
            ReplayOutcome::Clean
        } else {
            ReplayOutcome::TornTail { offset: 0 }
        };
        return SegmentReplay { records, outcome };
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return SegmentReplay {
            records,
            outcome: ReplayOutcome::Corrupt {
                offset: 0,
                reason: "bad segment magic".into(),
            },
        };
    }
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        match parse_record(&bytes[pos..]) {
            Ok((record, used)) => {
                records.push(record);
                pos += used;
            }
            Err(reason) => {
                let offset = pos as u64;
                let outcome = if record_reaches_end(&bytes[pos..]) {
                    ReplayOutcome::TornTail { offset }
                } else {
                    ReplayOutcome::Corrupt { offset, reason }
                };
                return SegmentReplay { records, outcome };
            }
        }
    }
    SegmentReplay {
        records,
        outcome: ReplayOutcome::Clean,
    }
}

/// True when the bad record at the start of `rest` extends to (or past) the
/// end of the file, i.e. it was the last write.
fn record_reaches_end(rest: &[u8]) -> bool {
    if rest.len() < RECORD_HEADER_LEN || rest.iter().all(|b| *b == 0) {
        // Some filesystems leave zeros after a crash where a write was cut.
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    len <= MAX_RECORD_LEN && RECORD_HEADER_LEN + len >= rest.len()
}

fn parse_record(rest: &[u8]) -> Result<(Record, usize), String> {
    if rest.len() < RECORD_HEADER_LEN {
        return Err("short record header".into());
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if !(9..=MAX_RECORD_LEN).contains(&len) {
        return Err(format!("record length {len} out of range"));
    }
    let end = RECORD_HEADER_LEN + len;
    let Some(payload) = rest.get(RECORD_HEADER_LEN..end) else {
        return Err("record shorter than its length".into());
    };
    if crc32fast::hash(payload) != crc {
        return Err("record checksum mismatch".into());
    }
    let kind = payload[0];
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&payload[1..9]);
    Ok((
        Record {
            kind,
            received_at_micros: i64::from_le_bytes(ts),
            body: payload[9..].to_vec(),
        },
        end,
    ))
}
