//! Write-ahead log: where every acknowledged request lives until its rows are
//! in Parquet.
//!
//! # On-disk format
//! `DATA_DIR/wal/` holds segment files `<id>.wal` (`id` a zero-padded u64,
//! increasing) and a `checkpoint` file.
//!
//! A segment starts with an 16-byte header: the magic `FSWAL001` and the
//! segment id (u64 LE). Records follow back to back:
//!
//! ```text
//! [len: u32 LE][crc32: u32 LE][payload: len bytes]
//! payload = [kind: u8][received_at: i64 LE, µs since epoch][body]
//! ```
//!
//! `crc32` (IEEE) covers the payload. `kind` says how to decode `body` (OTLP
//! protobuf or JSON per signal, or invocation records, see [`RecordKind`]); the body is the request
//! as it arrived, after decompression, so writing it costs no re-encoding and
//! replay runs the same deterministic normalization as the live path (the
//! stored `received_at` stands in for "now").
//!
//! `checkpoint` holds one u64 LE: every segment with an id at or below it has
//! been flushed to Parquet.
//!
//! # Invariants
//! 1. A request is acknowledged only after its record is written and the
//!    segment `fdatasync`ed. Concurrent requests share one write and one
//!    sync (group commit).
//! 2. A flush seals the current segment (id `S`), opens `S + 1`, writes its
//!    Parquet files named `<S>-…parquet` (write, fsync, rename, fsync dir),
//!    then writes `checkpoint = S` atomically, and only then deletes segments
//!    `<= S`. When the checkpoint is renamed into place but its directory
//!    cannot be synced, a crash may find it or the one before: the flush
//!    then keeps its files and the segments `<= S` (invariant 3 reads every
//!    row once from either), publishes the files, and leaves the segments
//!    to the next flush.
//! 3. At start: Parquet files whose flush id is above the checkpoint belong to
//!    a flush that did not commit and are deleted (their rows are still in the
//!    WAL); segments above the checkpoint are replayed; segments at or below
//!    it are deleted. So a row is never both replayed and already in Parquet.
//! 4. Replay of a segment stops at the first record that is short or fails
//!    its checksum. When that record is the last thing in the file it is a
//!    torn tail (a crash mid-write, never acknowledged) and is dropped. When
//!    more bytes follow, the segment is corrupt: the valid prefix is
//!    recovered, a copy of the segment goes to `wal/quarantine/`, and start-up
//!    goes on.
//! 5. So a record written in part never sits before records acknowledged
//!    later: a write that fails (a full disk) is cut back out of the segment
//!    (truncated to the records before it) and its group refused; a segment
//!    that cannot be cut back, or whose sync failed, takes no more records,
//!    and the writer moves on to the next segment. A new segment whose
//!    header cannot be written is removed again, so that its id is free when
//!    the next attempt (the next group, or the next flush's rotation) comes.

mod replay;
mod segment;

pub use replay::{ReplayOutcome, SegmentReplay, read_segment};
pub use segment::{SegmentWriter, encode_record};

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wal io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("wal record of {0} bytes exceeds the limit")]
    RecordTooLarge(usize),
    /// The new checkpoint replaced the old one, but the directory holding
    /// it could not be synced: after a crash either one may be found.
    #[error("checkpoint {path} is in place but its directory could not be synced: {source}")]
    CheckpointUnsynced {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub const SEGMENT_MAGIC: &[u8; 8] = b"FSWAL001";
pub const SEGMENT_HEADER_LEN: usize = 16;
pub const RECORD_HEADER_LEN: usize = 8;
/// Larger records are refused on write and treated as corruption on replay.
pub const MAX_RECORD_LEN: usize = 1 << 30;

/// How a record's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    TracesProto = 1,
    TracesJson = 2,
    LogsProto = 3,
    LogsJson = 4,
    MetricsProto = 5,
    MetricsJson = 6,
    /// `POST /v1/invocations` (JSON array or NDJSON).
    InvocationsJson = 7,
    /// `POST /v1/lambda/telemetry`: `[u32 LE len][query][events JSON]`.
    TelemetryJson = 8,
    /// `POST /v1/firehose`: the delivery as it arrived.
    FirehoseJson = 9,
    /// Events read by the CloudWatch poller with their checkpoint
    /// (`cloudwatch::PolledBatch` as JSON).
    CloudWatchJson = 10,
}

impl RecordKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        use RecordKind::*;
        Some(match b {
            1 => TracesProto,
            2 => TracesJson,
            3 => LogsProto,
            4 => LogsJson,
            5 => MetricsProto,
            6 => MetricsJson,
            7 => InvocationsJson,
            8 => TelemetryJson,
            9 => FirehoseJson,
            10 => CloudWatchJson,
            _ => return None,
        })
    }
}

/// One decoded WAL record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub received_at_micros: i64,
    pub body: Vec<u8>,
}

/// The WAL directory: segment naming, checkpoint, quarantine.
#[derive(Debug, Clone)]
pub struct WalDir {
    dir: PathBuf,
    /// Makes the checkpoint's directory sync fail, as a failing disk would.
    #[cfg(test)]
    fail_checkpoint_dir_sync: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl WalDir {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(WalDir {
            dir,
            #[cfg(test)]
            fail_checkpoint_dir_sync: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.wal"))
    }

    /// Ids of the segments on disk, ascending.
    pub fn segments(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
                continue;
            };
            if let Ok(id) = stem.parse::<u64>() {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for id in self.segments()? {
            let p = self.segment_path(id);
            total += fs::metadata(&p).map_err(io_err(&p))?.len();
        }
        Ok(total)
    }

    /// The highest flushed segment id, 0 when nothing was ever flushed.
    pub fn checkpoint(&self) -> Result<u64> {
        let p = self.dir.join("checkpoint");
        match fs::read(&p) {
            Ok(bytes) => Ok(bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Records atomically that segments up to `id` are flushed.
    ///
    /// [`Error::CheckpointUnsynced`] when the new checkpoint is in place
    /// but may not survive a crash: the caller must then keep what either
    /// checkpoint needs (the flush's files and the segments up to `id`).
    pub fn write_checkpoint(&self, id: u64) -> Result<()> {
        let final_path = self.dir.join("checkpoint");
        replace_synced(&final_path, &id.to_le_bytes()).map_err(io_err(&final_path))?;
        self.sync_checkpoint_dir()
            .map_err(|source| Error::CheckpointUnsynced {
                path: final_path,
                source,
            })
    }

    fn sync_checkpoint_dir(&self) -> io::Result<()> {
        #[cfg(test)]
        if self
            .fail_checkpoint_dir_sync
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(io::Error::other("injected directory sync failure"));
        }
        sync_dir(&self.dir)
    }

    /// Makes every later checkpoint's directory sync fail (or succeed again).
    #[cfg(test)]
    pub(crate) fn fail_checkpoint_dir_sync(&self, fail: bool) {
        self.fail_checkpoint_dir_sync
            .store(fail, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn remove_segment(&self, id: u64) -> Result<()> {
        let p = self.segment_path(id);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Copies a corrupt segment aside for inspection; the original stays
    /// until its recovered prefix is flushed.
    pub fn quarantine(&self, id: u64) -> Result<PathBuf> {
        let qdir = self.dir.join("quarantine");
        fs::create_dir_all(&qdir).map_err(io_err(&qdir))?;
        let src = self.segment_path(id);
        let dst = qdir.join(format!("{id:020}.wal"));
        fs::copy(&src, &dst).map_err(io_err(&dst))?;
        Ok(dst)
    }
}

/// Writes a file so that it appears whole or not at all: temp file, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_synced(path, bytes)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// [`write_atomic`] up to the directory's sync: temp file, fsync, rename.
fn replace_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
