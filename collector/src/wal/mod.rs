//! Write-ahead log: where every acknowledged request lives until its rows are
//! in Parquet.
//!
//! # On-disk format
//! `DATA_DIR/wal/` holds segment files `<id>.wal` (`id` a zero-padded u64,
//! increasing), at most [`MAX_SPARES`] spare files `<id>.spare` (retired
//! segments kept for reuse) and a `checkpoint` file.
//!
//! A segment starts with an 16-byte header: the magic `FSWAL002` and the
//! segment id (u64 LE), which must match the file's name. Records follow
//! back to back:
//!
//! ```text
//! [len: u32 LE][crc32: u32 LE][segment: u64 LE][payload: len bytes]
//! payload = [kind: u8][received_at: i64 LE, µs since epoch][body]
//! ```
//!
//! `crc32` (IEEE) covers `segment` and the payload. `kind` says how to
//! decode `body` (OTLP protobuf or JSON per signal, or invocation records,
//! see [`RecordKind`]); the body is the request as it arrived, after
//! decompression, so writing it costs no re-encoding and replay runs the
//! same deterministic normalization as the live path (the stored
//! `received_at` stands in for "now").
//!
//! Segments written before the segment id was in each record start with
//! `FSWAL001` and have 8-byte record headers (`[len][crc32]`, the checksum
//! over the payload alone); replay still reads them.
//!
//! # Reused segments
//! A flush does not delete the segments it retires: up to [`MAX_SPARES`]
//! of them (each at most [`MAX_SPARE_BYTES`]) become spares, and the next
//! segment is made from one: its header is rewritten, and records are
//! written over the old ones from the start. Overwriting blocks the file
//! already has lets `fdatasync` write the data alone, where appending to a
//! new file also writes the file's size and block maps each time (on ext4
//! without a journal, a synchronous write per metadata block), and no
//! blocks are freed (and discarded) per flush. A reused segment therefore
//! holds, after its last record, bytes of an earlier use: those records
//! carry an older segment id, so they never replay as this segment's.
//!
//! Reading a segment stops at the first record that is short, fails its
//! checksum, or carries another segment's id. What follows decides what
//! that was: a valid record of this segment further on means the segment
//! is corrupt; otherwise a record header naming this segment (or bytes too
//! few for a header, or only zeros) is a torn tail, and anything else is
//! what an earlier use left: the segment ended cleanly.
//!
//! # Invariants
//! 1. A request is acknowledged only after its record is written and the
//!    segment `fdatasync`ed. Concurrent requests share one write and one
//!    sync (group commit).
//! 2. A flush seals the current segment (id `S`), opens `S + 1`, writes its
//!    Parquet files named `<S>-…parquet` (write, fsync, rename, fsync dir),
//!    then writes `checkpoint = S` atomically, and only then retires segments
//!    `<= S` (deletes them, or keeps them as spares). When the checkpoint is renamed into place but its directory
//!    cannot be synced, a crash may find it or the one before: the flush
//!    then keeps its files and the segments `<= S` (invariant 3 reads every
//!    row once from either), publishes the files, and leaves the segments
//!    to the next flush.
//! 3. At start: Parquet files whose flush id is above the checkpoint belong to
//!    a flush that did not commit and are deleted (their rows are still in the
//!    WAL); segments above the checkpoint are replayed; segments at or below
//!    it are retired. The first new segment's id is above every id in the
//!    WAL, spares included. So a row is never both replayed and already in Parquet.
//! 4. Replay of a segment stops at the first record that is short, fails
//!    its checksum or names another segment (see above). A torn tail (a
//!    crash mid-write, never acknowledged) is dropped; bytes of an earlier
//!    use end the segment cleanly. When a valid record of the segment
//!    follows the bad one, the segment is corrupt: the valid prefix is
//!    recovered, a copy of the segment goes to `wal/quarantine/`, and
//!    start-up goes on. A segment whose header names another id is corrupt
//!    and gives no records.
//! 5. So a record written in part never sits before records acknowledged
//!    later: a write that fails (a full disk) is cut back out of the segment
//!    (truncated to the records before it) and its group refused; a segment
//!    that cannot be cut back, or whose sync failed, takes no more records,
//!    and the writer moves on to the next segment. A new segment whose
//!    header cannot be written is removed again, and so is a spare renamed
//!    to a segment's name that could not be put in place (its directory
//!    sync failed), so that the id is free when the next attempt (the next
//!    group, or the next flush's rotation) comes.
//! 6. A spare becomes segment `id` only with its header rewritten and
//!    synced *before* it is renamed `<id>.wal` (and the directory synced),
//!    so a file named `<id>.wal` never carries an earlier id in its header.

mod replay;
mod segment;

pub use replay::{ReplayOutcome, SegmentReplay, read_segment};
pub use segment::{Framed, SegmentWriter, encode_record};

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

pub const SEGMENT_MAGIC: &[u8; 8] = b"FSWAL002";
/// The magic of segments written before records carried their segment id.
pub const SEGMENT_MAGIC_V1: &[u8; 8] = b"FSWAL001";
pub const SEGMENT_HEADER_LEN: usize = 16;
pub const RECORD_HEADER_LEN: usize = 16;
/// A record header of an `FSWAL001` segment: `[len][crc32]`.
pub const RECORD_HEADER_LEN_V1: usize = 8;
/// Retired segments kept for reuse at most.
pub const MAX_SPARES: usize = 2;
/// Larger retired segments are deleted, not kept: a burst does not keep
/// its disk space for good.
pub const MAX_SPARE_BYTES: u64 = 256 << 20;
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

    fn spare_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.spare"))
    }

    /// The spares: `(id, bytes)`, largest first.
    pub fn spares(&self) -> Result<Vec<(u64, u64)>> {
        let mut spares = Vec::new();
        for (id, path) in self.files_named("spare")? {
            spares.push((id, fs::metadata(&path).map_err(io_err(&path))?.len()));
        }
        spares.sort_unstable_by_key(|&(id, len)| std::cmp::Reverse((len, id)));
        Ok(spares)
    }

    /// The files `<id>.<extension>` of the directory, with their ids.
    fn files_named(&self, extension: &str) -> Result<Vec<(u64, PathBuf)>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != extension) {
                continue;
            }
            let id = path
                .file_stem()
                .and_then(|s| s.to_str()?.parse::<u64>().ok());
            if let Some(id) = id {
                files.push((id, path));
            }
        }
        Ok(files)
    }

    /// The largest spare, to become the next segment.
    pub fn take_spare(&self) -> Option<PathBuf> {
        match self.spares() {
            Ok(spares) => spares.first().map(|&(id, _)| self.spare_path(id)),
            Err(e) => {
                tracing::warn!(error = %e, "could not list the spare wal segments");
                None
            }
        }
    }

    /// The highest id any file of the WAL carries: segments, the checkpoint,
    /// and spares (whose old records carry at most the spare's id). A new
    /// segment takes a higher one, so that no record an earlier use left in
    /// a spare can carry the id of the segment it becomes.
    pub fn last_id(&self) -> Result<u64> {
        let segments = self.segments()?.last().copied().unwrap_or(0);
        let spares = self.spares()?.iter().map(|&(id, _)| id).max().unwrap_or(0);
        Ok(segments.max(spares).max(self.checkpoint()?))
    }

    /// Ids of the segments on disk, ascending.
    pub fn segments(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = self
            .files_named("wal")?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
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

    /// Retires a flushed segment: kept as a spare while there are fewer
    /// than [`MAX_SPARES`] and it is at most [`MAX_SPARE_BYTES`], deleted
    /// otherwise. No sync: a rename lost in a crash leaves a segment at or
    /// below the checkpoint, which the next start retires again.
    pub fn retire_segment(&self, id: u64) -> Result<()> {
        let path = self.segment_path(id);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        if len <= MAX_SPARE_BYTES && self.spares()?.len() < MAX_SPARES {
            let spare = self.spare_path(id);
            return fs::rename(&path, &spare).map_err(io_err(&spare));
        }
        remove_if_there(&path)
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

fn remove_if_there(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
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
