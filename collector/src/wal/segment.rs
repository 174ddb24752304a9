//! Appending to one segment file.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::{
    Error, MAX_RECORD_LEN, RECORD_HEADER_LEN, Result, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, io_err,
    sync_dir,
};

/// A record framed by the request that makes it (off the writer thread,
/// where the payload's checksum is computed), waiting for the segment id the
/// writer gives it ([`SegmentWriter::write`]).
#[derive(Debug, Clone)]
pub struct Framed {
    bytes: Vec<u8>,
    payload_crc: u32,
}

impl Framed {
    /// The record's bytes as they go to disk once stamped.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes `segment` into the header and the checksum over it and the
    /// payload, from the payload's own checksum (no second pass over the
    /// payload). Stamping again for another segment is allowed.
    pub fn stamp(&mut self, segment: u64) {
        let id = segment.to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&id);
        let payload_len = (self.bytes.len() - RECORD_HEADER_LEN) as u64;
        crc.combine(&crc32fast::Hasher::new_with_initial_len(
            self.payload_crc,
            payload_len,
        ));
        self.bytes[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        self.bytes[8..16].copy_from_slice(&id);
    }
}

/// Frames one record: header (length, checksum, segment id once stamped)
/// and payload.
pub fn encode_record(kind: u8, received_at_micros: i64, body: &[u8]) -> Result<Framed> {
    let payload_len = 1 + 8 + body.len();
    if payload_len > MAX_RECORD_LEN {
        return Err(Error::RecordTooLarge(payload_len));
    }
    let mut bytes = Vec::with_capacity(RECORD_HEADER_LEN + payload_len);
    bytes.extend_from_slice(&(payload_len as u32).to_le_bytes());
    bytes.extend_from_slice(&[0; 12]);
    bytes.push(kind);
    bytes.extend_from_slice(&received_at_micros.to_le_bytes());
    bytes.extend_from_slice(body);
    let payload_crc = crc32fast::hash(&bytes[RECORD_HEADER_LEN..]);
    Ok(Framed { bytes, payload_crc })
}

/// The open segment new records go to.
///
/// A write that fails is cut back: the file is truncated to the records
/// before it, so no part of a record ever sits before later ones (replay
/// would take those for corruption and quarantine them). A segment that
/// could not be cut back, or whose sync failed, is *poisoned*: it takes no
/// more records, and the caller opens the next one.
#[derive(Debug)]
pub struct SegmentWriter {
    id: u64,
    path: PathBuf,
    file: File,
    len: u64,
    poisoned: bool,
}

impl SegmentWriter {
    /// Creates segment `id` with its header, durable before returning: from
    /// a spare when `spare` is given and reusing it works (see
    /// [`Self::reuse`]), as a new file otherwise.
    pub fn create_or_reuse(path: PathBuf, id: u64, spare: Option<PathBuf>) -> Result<Self> {
        if let Some(spare) = spare {
            match Self::reuse(&spare, path.clone(), id) {
                Ok(w) => return Ok(w),
                Err(e) => {
                    tracing::warn!(spare = %spare.display(), error = %e, "could not reuse a spare wal segment; deleting it and creating a new one");
                    let _ = std::fs::remove_file(&spare);
                }
            }
        }
        Self::create(path, id)
    }

    /// Makes a spare segment `id`: its header is rewritten and synced while
    /// it still has its spare name, then it is renamed `path` and the
    /// directory synced. Records then overwrite the earlier use's from the
    /// start; those carry an older id and never replay as this segment's.
    fn reuse(spare: &std::path::Path, path: PathBuf, id: u64) -> Result<Self> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(spare)
            .map_err(io_err(spare))?;
        file.write_all(&header(id)).map_err(io_err(spare))?;
        file.sync_data().map_err(io_err(spare))?;
        std::fs::rename(spare, &path).map_err(io_err(&path))?;
        // Renamed, the file holds the name of segment `id` (and only an
        // earlier use's records): free it again if the segment fails.
        Self::in_place(file, path.clone(), id).inspect_err(|_| remove_unfinished(&path))
    }

    /// Creates segment `id` with its header, durable before returning.
    ///
    /// When the header cannot be written (a full disk), the file is removed
    /// again (see [`remove_unfinished`]).
    pub fn create(path: PathBuf, id: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Self::start(file, path.clone(), id).inspect_err(|_| remove_unfinished(&path))
    }

    fn start(mut file: File, path: PathBuf, id: u64) -> Result<Self> {
        file.write_all(&header(id)).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        Self::in_place(file, path, id)
    }

    /// The segment at `path`, its header synced: syncs the directory that
    /// names it, and records follow the header.
    fn in_place(file: File, path: PathBuf, id: u64) -> Result<Self> {
        if let Some(dir) = path.parent() {
            #[cfg(test)]
            if FAIL_DIR_SYNC.get() {
                return Err(io_err(dir)(io::Error::other(
                    "injected directory sync failure",
                )));
            }
            sync_dir(dir).map_err(io_err(dir))?;
        }
        Ok(SegmentWriter {
            id,
            path,
            file,
            len: SEGMENT_HEADER_LEN as u64,
            poisoned: false,
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

    /// True once a failed write could not be cut back or a sync failed:
    /// nothing more may be written to this segment.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Stamps framed records with this segment's id and appends them (not
    /// yet durable), in as few system calls as it takes, and returns their
    /// bytes. On failure none of them is in the segment, or the segment is
    /// poisoned.
    pub fn write(&mut self, records: &mut [Framed]) -> Result<u64> {
        if self.poisoned {
            return Err(self.poisoned_err());
        }
        for r in records.iter_mut() {
            r.stamp(self.id);
        }
        let records: Vec<&[u8]> = records.iter().map(Framed::bytes).collect();
        if let Err(e) = write_all_vectored(&mut self.file, &records) {
            if let Err(cut) = self.cut_back() {
                tracing::error!(path = %self.path.display(), error = %cut,
                    "could not cut a failed write back out of a wal segment; closing it");
                self.poisoned = true;
            }
            return Err(io_err(&self.path)(e));
        }
        let bytes = records.iter().map(|r| r.len() as u64).sum();
        self.len += bytes;
        Ok(bytes)
    }

    /// Truncates the file to the records written before a failed write
    /// and puts the position back at its end.
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.seek(SeekFrom::Start(self.len))?;
        Ok(())
    }

    fn poisoned_err(&self) -> Error {
        io_err(&self.path)(io::Error::other(
            "segment closed after an earlier write or sync failure",
        ))
    }

    /// Makes everything written so far durable.
    ///
    /// A failed sync poisons the segment: the kernel may have dropped the
    /// unsynced pages, leaving a hole that later records must not follow.
    pub fn sync(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(self.poisoned_err());
        }
        let synced = self.file.sync_data().map_err(io_err(&self.path));
        if synced.is_err() {
            self.poisoned = true;
        }
        synced
    }
}

/// Removes a segment that could not be made whole. Left behind, it would
/// make every later attempt to create segment `id` fail (the name is
/// taken), and with it every rotation after the disk has room again.
fn remove_unfinished(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::error!(path = %path.display(), error = %e, "could not remove a wal segment that could not be made whole");
    }
}

#[cfg(test)]
thread_local! {
    /// Makes the directory sync that puts a segment in place fail, on the
    /// thread that sets it, as a failing disk would.
    pub(crate) static FAIL_DIR_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A segment's header: magic and id.
fn header(id: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0; SEGMENT_HEADER_LEN];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..].copy_from_slice(&id.to_le_bytes());
    header
}

/// Slices one `writev` takes at most (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Writes every byte of `records` in order, as `Write::write_all_vectored`
/// (unstable) would.
fn write_all_vectored(out: &mut impl Write, records: &[&[u8]]) -> io::Result<()> {
    for chunk in records.chunks(MAX_IOVECS) {
        let mut slices: Vec<IoSlice<'_>> = chunk.iter().map(|r| IoSlice::new(r)).collect();
        let mut left = &mut slices[..];
        while !left.is_empty() {
            match out.write_vectored(left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut left, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{ReplayOutcome, read_segment};

    /// A sink that takes at most `per_call` bytes per write, like a socket
    /// or a file near a limit, and counts the calls.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            let n = buf.len().min(self.per_call);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            assert!(
                bufs.len() <= MAX_IOVECS,
                "{} slices in one call",
                bufs.len()
            );
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.per_call - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.per_call {
                    break;
                }
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn vectored_writes_keep_every_byte_in_order_across_short_writes() {
        let records: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| i.to_le_bytes().repeat(1 + (i % 5) as usize))
            .collect();
        let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let whole = records.concat();
        for per_call in [1, 7, 4096, usize::MAX] {
            let mut sink = Trickle {
                out: Vec::new(),
                per_call,
                calls: 0,
            };
            write_all_vectored(&mut sink, &slices).expect("write");
            assert!(sink.out == whole, "{per_call} bytes per call");
            if per_call == usize::MAX {
                // 3,000 records: three calls of at most 1,024 slices.
                assert_eq!(sink.calls, 3);
            }
        }
    }

    /// This process's limit on the size of a file it writes
    /// (`RLIMIT_FSIZE`), from `/proc/self/limits`; `None` when unlimited.
    fn file_size_limit() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max file size"))
            .expect("file size line");
        line.split_whitespace().nth(3)?.parse().ok()
    }

    /// Runs test `name` again in a child process whose files may not grow
    /// past `blocks` × 512 bytes (`ulimit -f`), with SIGXFSZ ignored so that
    /// a write past the limit fails with EFBIG instead of killing the
    /// process; the limit cannot be set in this process without hitting the
    /// other tests. True in the child, where the test goes on; in the parent,
    /// checks that the child passed and printed `marker`.
    fn in_child_under_file_size_limit(name: &str, blocks: u32, marker: &str) -> bool {
        if std::env::var("FAASIGHT_FILE_SIZE_CHILD").is_ok_and(|t| t == name) {
            return true;
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#"trap "" XFSZ; ulimit -f {blocks}; exec "$0" "$@""#
            ))
            .arg(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env("FAASIGHT_FILE_SIZE_CHILD", name)
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed") && stdout.contains(marker),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }

    const HEADER_FAILS_TEST: &str =
        "wal::segment::tests::a_segment_whose_header_fails_is_not_left_behind";

    /// A segment whose header cannot be written (a full disk; here a file
    /// size limit of 0) is not left behind: its name would be taken, and
    /// every later rotation to it would fail with "File exists", long after
    /// the disk has room again.
    #[test]
    fn a_segment_whose_header_fails_is_not_left_behind() {
        if !in_child_under_file_size_limit(HEADER_FAILS_TEST, 0, "not left behind") {
            return;
        }
        assert_eq!(file_size_limit(), Some(0));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000002.wal");
        let err = SegmentWriter::create(path.clone(), 2).expect_err("no room for the header");
        assert!(err.to_string().contains("File too large"), "{err}");
        assert!(!path.exists(), "the failed segment was left behind");
        println!("not left behind");
    }

    const CUT_SHORT_TEST: &str =
        "wal::segment::tests::a_write_cut_short_is_cut_back_and_later_records_replay";

    /// A write that the file system cuts short (here a file size limit;
    /// in life a full disk) leaves no part of its records in the segment,
    /// and a record written after it replays cleanly. Without the cut-back
    /// the partial bytes would sit before that record, and replay would
    /// quarantine it.
    ///
    /// Runs in a child process whose files may not grow past 64 KiB.
    #[test]
    fn a_write_cut_short_is_cut_back_and_later_records_replay() {
        if !in_child_under_file_size_limit(CUT_SHORT_TEST, 128, "cut back:") {
            return;
        }
        let limit = file_size_limit().expect("the child runs under a file size limit");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000001.wal");
        let mut w = SegmentWriter::create(path.clone(), 1).expect("create");
        let record = encode_record(1, 5, &[7; 992]).expect("encode");
        let mut group = [record.clone(), record.clone(), record.clone()];
        let mut written = 0;
        let err = loop {
            match w.write(&mut group) {
                Ok(_) => written += group.len(),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("File too large"), "{err}");
        assert!(!w.is_poisoned());
        let on_disk = std::fs::metadata(&path).expect("stat").len();
        assert_eq!(on_disk, w.len(), "the failed group's bytes are still there");
        // One record still fits below the limit, right after the others.
        assert!(w.len() + record.len() as u64 <= limit);
        w.write(&mut [record]).expect("a record that fits");
        w.sync().expect("sync");
        written += 1;
        let replay = read_segment(&path, 1).expect("read");
        assert_eq!(replay.records.len(), written);
        assert!(
            matches!(replay.outcome, ReplayOutcome::Clean),
            "{:?}",
            replay.outcome
        );
        println!("cut back: {written} records replayed");
    }

    #[test]
    fn a_sink_that_takes_nothing_is_an_error_not_a_loop() {
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: 0,
            calls: 0,
        };
        let err = write_all_vectored(&mut sink, &[b"abc"]).expect_err("write zero");
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
