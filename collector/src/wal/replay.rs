//! Reading a segment back at start-up.

use std::fs;
use std::path::Path;

use super::{
    MAX_RECORD_LEN, RECORD_HEADER_LEN, RECORD_HEADER_LEN_V1, Record, Result, SEGMENT_HEADER_LEN,
    SEGMENT_MAGIC, SEGMENT_MAGIC_V1, io_err,
};

/// How reading a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Every record was read: the file ended, or what follows the last
    /// record was left there by an earlier use of the file.
    Clean,
    /// The last record was incomplete or failed its checksum and no valid
    /// record followed it: a write cut short by a crash, never acknowledged.
    TornTail { offset: u64 },
    /// A bad record with a valid record of the segment after it, or a bad
    /// header: the valid prefix is kept and the segment should be
    /// quarantined.
    Corrupt { offset: u64, reason: String },
}

/// The records of one segment and how reading ended.
#[derive(Debug)]
pub struct SegmentReplay {
    pub records: Vec<Record>,
    pub outcome: ReplayOutcome,
    /// Where the valid records end: the bytes the segment holds for replay.
    pub valid_len: u64,
}

/// Reads every valid record of segment `id`, stopping at the first bad one.
pub fn read_segment(path: &Path, id: u64) -> Result<SegmentReplay> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    Ok(parse_segment(&bytes, id))
}

/// The two record layouts: since `FSWAL002` every record carries its
/// segment id (which the checksum covers); `FSWAL001` records do not.
#[derive(Clone, Copy)]
struct Layout {
    /// The segment id the records must carry; `None` for `FSWAL001`.
    id: Option<u64>,
}

impl Layout {
    fn header_len(self) -> usize {
        match self.id {
            Some(_) => RECORD_HEADER_LEN,
            None => RECORD_HEADER_LEN_V1,
        }
    }
}

pub(crate) fn parse_segment(bytes: &[u8], id: u64) -> SegmentReplay {
    let mut records = Vec::new();
    let ended = |records, outcome, valid_len: usize| SegmentReplay {
        records,
        outcome,
        valid_len: valid_len as u64,
    };
    if bytes.len() < SEGMENT_HEADER_LEN {
        // A segment is created with its header synced before any record is
        // written, so a short header means nothing was ever acknowledged in it.
        let outcome = if bytes.is_empty() {
            ReplayOutcome::Clean
        } else {
            ReplayOutcome::TornTail { offset: 0 }
        };
        return ended(records, outcome, 0);
    }
    let corrupt = |reason: String| ReplayOutcome::Corrupt { offset: 0, reason };
    let layout = match &bytes[..8] {
        m if m == SEGMENT_MAGIC => Layout { id: Some(id) },
        m if m == SEGMENT_MAGIC_V1 => Layout { id: None },
        _ => return ended(records, corrupt("bad segment magic".into()), 0),
    };
    let named = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if named != id {
        let reason = format!("the header names segment {named}, the file segment {id}");
        return ended(records, corrupt(reason), 0);
    }
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        match parse_record(&bytes[pos..], layout) {
            Ok((record, used)) => {
                records.push(record);
                pos += used;
            }
            Err(reason) => {
                let offset = pos as u64;
                let rest = &bytes[pos..];
                let outcome = if let Some(found) = next_valid_record(rest, layout) {
                    let reason = match found {
                        Found::At(at) => {
                            format!("{reason}; a valid record follows at {}", pos + at)
                        }
                        Found::Unchecked => format!("{reason}; bytes follow that were not checked"),
                    };
                    ReplayOutcome::Corrupt { offset, reason }
                } else if torn(rest, layout) {
                    ReplayOutcome::TornTail { offset }
                } else {
                    ReplayOutcome::Clean
                };
                return ended(records, outcome, pos);
            }
        }
    }
    ended(records, ReplayOutcome::Clean, pos)
}

/// What [`next_valid_record`] found after a bad record.
enum Found {
    /// A valid record of the segment, at this offset.
    At(usize),
    /// Bytes that may hold one and were not all checked (an `FSWAL001`
    /// segment, or a search past its budget): taken as corruption, which
    /// costs a quarantined copy, where taking them for a clean end could
    /// hide one.
    Unchecked,
}

/// Checks of candidate records a search may make, in bytes, per byte
/// searched: bodies are the clients' bytes and could hold the segment's id
/// again and again, each a candidate whose checksum costs its length.
const SEARCH_BUDGET_PER_BYTE: usize = 4;

/// Whether a valid record of the segment follows the bad one at the start
/// of `rest`. `FSWAL002` records are looked for by their segment id, and a
/// candidate is then checked whole; an `FSWAL001` segment was only ever
/// appended to, so any bytes after a bad record that is not its last write
/// may be one.
fn next_valid_record(rest: &[u8], layout: Layout) -> Option<Found> {
    let Some(id) = layout.id else {
        return (!torn(rest, layout)).then_some(Found::Unchecked);
    };
    let needle = id.to_le_bytes();
    let finder = memchr::memmem::Finder::new(&needle);
    let mut budget = rest.len().saturating_mul(SEARCH_BUDGET_PER_BYTE);
    let mut from = 1;
    while from + needle.len() <= rest.len() {
        let at = from + finder.find(&rest[from..])?;
        from = at + 1;
        // The id sits at bytes 8..16 of a record header.
        let Some(start) = at.checked_sub(8).filter(|&s| s >= 1) else {
            continue;
        };
        let claimed = u32::from_le_bytes(rest[start..start + 4].try_into().expect("4 bytes"));
        let cost = (claimed as usize).min(rest.len() - start);
        let Some(left) = budget.checked_sub(cost) else {
            return Some(Found::Unchecked);
        };
        budget = left;
        if parse_record(&rest[start..], layout).is_ok() {
            return Some(Found::At(start));
        }
    }
    None
}

/// True when the bad record at the start of `rest` was the segment's last
/// write, cut short: too few bytes for a header, only zeros (some file
/// systems leave zeros where a write was cut), or, for `FSWAL002`, a header
/// naming this segment; for `FSWAL001`, a record that reaches the end.
fn torn(rest: &[u8], layout: Layout) -> bool {
    let header_len = layout.header_len();
    if rest.len() < header_len || rest.iter().all(|b| *b == 0) {
        return true;
    }
    match layout.id {
        Some(id) => rest[8..16] == id.to_le_bytes(),
        None => {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            len <= MAX_RECORD_LEN && header_len + len >= rest.len()
        }
    }
}

fn parse_record(rest: &[u8], layout: Layout) -> Result<(Record, usize), String> {
    let header_len = layout.header_len();
    if rest.len() < header_len {
        return Err("short record header".into());
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if !(9..=MAX_RECORD_LEN).contains(&len) {
        return Err(format!("record length {len} out of range"));
    }
    let end = header_len + len;
    let Some(checked) = rest.get(8..end) else {
        return Err("record shorter than its length".into());
    };
    if let Some(id) = layout.id
        && rest[8..16] != id.to_le_bytes()
    {
        return Err("record of another segment".into());
    }
    // `FSWAL002`: the checksum covers the segment id and the payload.
    if crc32fast::hash(checked) != crc {
        return Err("record checksum mismatch".into());
    }
    let payload = &rest[header_len..end];
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
