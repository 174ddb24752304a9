//! Appending to one segment file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use super::{Error, MAX_RECORD_LEN, RECORD_HEADER_LEN, Result, SEGMENT_MAGIC, io_err, sync_dir};

/// Frames one record: header (length, checksum) and payload.
pub fn encode_record(
    kind: u8,
    received_at_micros: i64,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let payload_len = 1 + 8 + body.len();
    if payload_len > MAX_RECORD_LEN {
        return Err(Error::RecordTooLarge(payload_len));
    }
    let start = out.len();
    out.reserve(RECORD_HEADER_LEN + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&received_at_micros.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The open segment new records go to.
#[derive(Debug)]
pub struct SegmentWriter {
    id: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

impl SegmentWriter {
    /// Creates segment `id` with its header, durable before returning.
    pub fn create(path: PathBuf, id: u64) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(SEGMENT_MAGIC);
        header.extend_from_slice(&id.to_le_bytes());
        file.write_all(&header).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(io_err(dir))?;
        }
        Ok(SegmentWriter {
            id,
            path,
            file,
            len: header.len() as u64,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= super::SEGMENT_HEADER_LEN as u64
    }

    /// Appends already framed records (not yet durable).
    pub fn write(&mut self, framed: &[u8]) -> Result<()> {
        self.file.write_all(framed).map_err(io_err(&self.path))?;
        self.len += framed.len() as u64;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}
