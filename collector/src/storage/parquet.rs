//! Writing rows as Parquet: one file per table and hour partition per flush,
//! sorted by the table's sort columns (then time) so that predicates prune
//! row groups and pages; zstd; page statistics; bloom filters on ids.
//!
//! A file appears atomically: written to `.<name>.tmp`, fsynced, renamed,
//! and the directory fsynced.

use std::cmp::Ordering;
use std::fs;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use arrow::array::{
    Array, AsArray, DynComparator, StringArray, StringViewArray, TimestampMicrosecondArray,
    UInt32Array, make_comparator,
};
use arrow::compute::{SortOptions, concat_batches};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use super::each_on_its_thread;
use super::layout::{self, MICROS_PER_HOUR};
use super::take::take_rows;
use crate::buffer::FileMeta;
use crate::model::Table;
use crate::model::schema::{
    ATTRIBUTES, DURATION_MS, END_TIME, OBSERVED_TIME, PARENT_SPAN_ID, REQUEST_ID,
    RESOURCE_ATTRIBUTES, SCHEMA_VERSION, SPAN_ID, TIME, TRACE_ID,
};

/// Errors of the storage stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parquet io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet error: {}", parquet_detail(.0))]
    Parquet(#[from] ParquetError),
}

impl Error {
    /// A failed write of the Parquet writer's output (a full disk, most
    /// likely) as the I/O error on `path` that it is.
    fn on_path(self, path: &Path) -> Self {
        match self {
            Error::Parquet(ParquetError::External(e)) => match e.downcast::<io::Error>() {
                Ok(source) => Error::Io {
                    path: path.to_path_buf(),
                    source: *source,
                },
                Err(e) => Error::Parquet(ParquetError::External(e)),
            },
            other => other,
        }
    }
}

/// What a Parquet error says, without the crate's own "Parquet error: "
/// before a general message (the variant already says it is one).
fn parquet_detail(e: &ParquetError) -> String {
    match e {
        ParquetError::General(message) => message.clone(),
        ParquetError::External(source) => source.to_string(),
        other => other.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Rows per row group of tables looked up by id: each row group has its own
/// bloom filters, so a lookup decodes the id column of only the few row
/// groups whose filters match (a 16k-row group decodes in a few ms).
const ID_TABLE_ROW_GROUP: usize = 16 * 1024;

/// Row-group bloom filters' false-positive rate: with hundreds of row groups
/// a week, 1% would send every lookup to several wrong row groups.
const ID_BLOOM_FPP: f64 = 0.001;

pub fn writer_properties(table: Table) -> WriterProperties {
    let row_group = if table.bloom_columns().is_empty() {
        256 * 1024
    } else {
        ID_TABLE_ROW_GROUP
    };
    let mut props = file_properties(row_group, table.bloom_columns());
    if let Some(rows) = table.page_rows() {
        props = props.set_data_page_row_count_limit(rows);
    }
    if table == Table::Spans {
        // Span attribute values mix a few repeated texts with one unique id
        // per invocation (`faas.invocation_id`); without a dictionary zstd
        // packs them smaller (measured on Lambda-like spans: 41.0 → 40.4
        // bytes per span) and no dictionary has to be looked up per value.
        props = props.set_column_dictionary_enabled(map_leaf(ATTRIBUTES, "values"), false);
    }
    props
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "faasight.schema_version".to_string(),
            SCHEMA_VERSION.to_string(),
        )]))
        .build()
}

/// zstd's fastest level. On Lambda-like spans it packs no worse than level 3
/// (40.1 against 40.4 bytes per span: the ids, times and durations are
/// already delta-encoded, so what is left is near its entropy either way)
/// and the server spent 3–6 % less CPU per 512-span request at 4 HTTP
/// senders (seven interleaved pairs, benches/ingest-report.md).
const ZSTD_LEVEL: i32 = 1;

/// Columns whose values are (nearly) unique per row. A dictionary of them
/// only grows until it spills to plain pages; without one, the lengths are
/// delta-encoded (all equal) and zstd packs the hex digits to about half.
const UNIQUE_TEXT_COLUMNS: [&str; 4] = [TRACE_ID, SPAN_ID, PARENT_SPAN_ID, REQUEST_ID];

/// Timestamps: delta-encoded (neighbouring rows are close in time).
const TIME_COLUMNS: [&str; 3] = [TIME, END_TIME, OBSERVED_TIME];

/// Durations (whole microseconds, but nearly unique per row): a dictionary
/// never pays off (measured: 4.9 bytes per span with one, 3.7 without).
const MEASURE_COLUMNS: [&str; 1] = [DURATION_MS];

/// What every Parquet file faasight writes shares: zstd level 1, page
/// statistics, `row_group` rows per row group, bloom filters on
/// `bloom_columns`, and per-column encodings chosen for what the columns
/// hold (ids, timestamps and durations without dictionaries; measured on
/// Lambda-like spans: 52 → 40 bytes per span). The encodings are standard
/// Parquet ones that DuckDB, pyarrow, Spark and Athena read.
pub fn file_properties(row_group: usize, bloom_columns: &[&str]) -> WriterPropertiesBuilder {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default(),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group));
    for (columns, encoding) in [
        (
            &UNIQUE_TEXT_COLUMNS[..],
            Some(Encoding::DELTA_LENGTH_BYTE_ARRAY),
        ),
        (&TIME_COLUMNS[..], Some(Encoding::DELTA_BINARY_PACKED)),
        (&MEASURE_COLUMNS[..], None),
    ] {
        for col in columns {
            props = props.set_column_dictionary_enabled((*col).into(), false);
            if let Some(encoding) = encoding {
                props = props.set_column_encoding((*col).into(), encoding);
            }
        }
    }
    // Min/max of a map's keys or values (all keys of all rows in one range)
    // prune nothing, and computing them per value was 13–19 % of encoding
    // a spans file.
    for map in [ATTRIBUTES, RESOURCE_ATTRIBUTES] {
        for leaf in ["keys", "values"] {
            props =
                props.set_column_statistics_enabled(map_leaf(map, leaf), EnabledStatistics::None);
        }
    }
    for col in bloom_columns {
        props = props
            .set_column_bloom_filter_enabled((*col).into(), true)
            .set_column_bloom_filter_fpp((*col).into(), ID_BLOOM_FPP);
    }
    props
}

/// The Parquet path of a leaf of an attribute map column (`keys` or
/// `values`, the names the decoders give the map's fields).
fn map_leaf(map: &str, leaf: &str) -> ColumnPath {
    ColumnPath::new(vec![map.into(), "entries".into(), leaf.into()])
}

/// Sorts `batch` by hour, then the table's sort columns (nulls first; rows
/// that tie on every key keep their order), and returns one slice per hour
/// partition.
pub fn partition_by_hour(table: Table, batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
    sort_by_hour(table, batch)?
        .into_iter()
        .map(|(hour, rows)| Ok((hour, take_rows(batch, &rows)?)))
        .collect()
}

/// The order of [`partition_by_hour`] without moving any row: per hour
/// partition (its start, µs), the indices of its rows in `batch`, in order.
/// The flush takes each row group's rows from these as it encodes it.
pub fn sort_by_hour(table: Table, batch: &RecordBatch) -> Result<Vec<(i64, UInt32Array)>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    if u32::try_from(batch.num_rows()).is_err() {
        return Err(schema_err("more than u32::MAX rows in one batch").into());
    }
    let order = sort_order(&BatchKeys::new(table, batch)?);
    let mut parts = Vec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        if i == order.len() || order[i].hour != order[start].hour {
            parts.push((
                order[start].hour * MICROS_PER_HOUR,
                UInt32Array::from_iter_values(order[start..i].iter().map(|r| r.row)),
            ));
            start = i;
        }
    }
    Ok(parts)
}

fn schema_err(what: &str) -> arrow::error::ArrowError {
    arrow::error::ArrowError::SchemaError(what.to_string())
}

/// The columns one batch is sorted by.
struct BatchKeys<'a> {
    times: &'a TimestampMicrosecondArray,
    keys: Vec<SortKey<'a>>,
}

impl<'a> BatchKeys<'a> {
    fn new(table: Table, batch: &'a RecordBatch) -> Result<Self> {
        let times = batch
            .column(batch.schema().index_of(TIME)?)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| schema_err("time is not a µs timestamp"))?;
        let mut keys = Vec::new();
        for col in table.sort_columns() {
            let array = batch.column(batch.schema().index_of(col)?);
            keys.push(match array.data_type() {
                DataType::Utf8 => SortKey::Text(array.as_string::<i32>()),
                DataType::Utf8View => SortKey::View(array.as_string_view()),
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    SortKey::Micros(array.as_primitive::<TimestampMicrosecondType>())
                }
                // Any other type (the coalesced invocations come out of a
                // query plan): arrow's own comparator.
                _ => SortKey::Other(make_comparator(array, array, NULLS_FIRST)?),
            });
        }
        Ok(BatchKeys { times, keys })
    }

    fn hour(&self, row: usize) -> i64 {
        // A null time is not written by any decoder; it would sort first.
        if self.times.is_valid(row) {
            self.times.value(row).div_euclid(MICROS_PER_HOUR)
        } else {
            i64::MIN
        }
    }
}

const NULLS_FIRST: SortOptions = SortOptions {
    descending: false,
    nulls_first: true,
};

/// A column rows are sorted by, nulls first.
enum SortKey<'a> {
    Text(&'a StringArray),
    View(&'a StringViewArray),
    Micros(&'a TimestampMicrosecondArray),
    Other(DynComparator),
}

impl SortKey<'_> {
    fn text(&self, row: usize) -> Option<&[u8]> {
        match self {
            SortKey::Text(t) => t.is_valid(row).then(|| t.value(row).as_bytes()),
            SortKey::View(t) => t.is_valid(row).then(|| t.value(row).as_bytes()),
            SortKey::Micros(_) | SortKey::Other(_) => None,
        }
    }

    fn micros(&self, row: usize) -> Option<i64> {
        match self {
            SortKey::Micros(t) => t.is_valid(row).then(|| t.value(row)),
            _ => None,
        }
    }

    /// Nulls first, text by its bytes.
    fn compare(&self, a: usize, b: usize) -> Ordering {
        match self {
            SortKey::Other(compare) => compare(a, b),
            // None < Some
            SortKey::Micros(_) => self.micros(a).cmp(&self.micros(b)),
            SortKey::Text(_) | SortKey::View(_) => self.text(a).cmp(&self.text(b)),
        }
    }

    /// A number that orders rows as [`Self::compare`] does, or ties them:
    /// null before non-null, then for text the first 8 bytes big-endian
    /// (zero-padded: a proper prefix never sorts after what it prefixes).
    fn prefix(&self, row: usize) -> (bool, u64) {
        match self {
            SortKey::Text(_) | SortKey::View(_) => self.text(row).map_or((false, 0), |bytes| {
                let mut head = [0u8; 8];
                let n = bytes.len().min(8);
                head[..n].copy_from_slice(&bytes[..n]);
                (true, u64::from_be_bytes(head))
            }),
            SortKey::Micros(_) => self
                .micros(row)
                .map_or((false, 0), |t| (true, (t as u64) ^ (1 << 63))),
            // Ties every row: the comparator decides.
            SortKey::Other(_) => (true, 0),
        }
    }
}

/// One row's place in the sort: its hour, the leading key's prefix, its
/// index.
struct Ranked {
    hour: i64,
    lead: (bool, u64),
    row: u32,
}

/// The rows in (hour, keys…) order; rows equal on all of them keep their
/// arrival order. Sorting compact entries by the hour and an 8-byte prefix
/// of the leading key decides nearly every comparison (trace ids are
/// random) without touching the strings; ties compare the keys in full.
/// The sort is stable, and finds and merges runs already in order: the
/// decoders append each request's spans in this order (see
/// `decode::otlp::spans`), so a flush's rows are a few hundred sorted runs
/// (measured on 204,800 spans: 12.7 ms against 24.2 for the unstable sort).
/// The caller has checked that the rows fit in u32.
///
/// A flush's rows are sorted in shares on every core, each share at least
/// [`PARALLEL_SORT_ROWS`] rows.
fn sort_order(batch: &BatchKeys<'_>) -> Vec<Ranked> {
    let shares = encode_threads().min(batch.times.len() / PARALLEL_SORT_ROWS);
    sort_order_in(batch, shares)
}

/// Rows per share below which [`sort_order`] does not sort in parallel:
/// a thread costs more than sorting a few thousand entries.
const PARALLEL_SORT_ROWS: usize = 32 * 1024;

/// [`sort_order`] in `shares` consecutive shares of the rows, each sorted
/// on its own thread, then merged two at a time with the earlier share
/// first on ties: the same stable order as one sort. While a flush sorts,
/// ingest may be waiting for it (a full buffer), so one thread would leave
/// the other cores idle.
fn sort_order_in(batch: &BatchKeys<'_>, shares: usize) -> Vec<Ranked> {
    let rows = batch.times.len();
    let compare = |a: &Ranked, b: &Ranked| {
        (a.hour, a.lead).cmp(&(b.hour, b.lead)).then_with(|| {
            batch
                .keys
                .iter()
                .map(|k| k.compare(a.row as usize, b.row as usize))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
    };
    let sorted = |range: Range<usize>| {
        let mut share: Vec<Ranked> = range
            .map(|row| Ranked {
                hour: batch.hour(row),
                lead: batch.keys.first().map_or((false, 0), |k| k.prefix(row)),
                row: row as u32,
            })
            .collect();
        share.sort_by(compare);
        share
    };
    let shares = shares.min(rows);
    if shares <= 1 {
        return sorted(0..rows);
    }
    let share = rows.div_ceil(shares);
    let sorted = &sorted;
    let mut shares = each_on_its_thread((0..rows).step_by(share).map(|start| {
        let range = start..rows.min(start + share);
        move || sorted(range)
    }));
    while shares.len() > 1 {
        let mut merged = Vec::with_capacity(shares.len().div_ceil(2));
        let mut pairs = shares.into_iter();
        while let Some(first) = pairs.next() {
            merged.push(match pairs.next() {
                Some(second) => merge_sorted(first, second, compare),
                None => first,
            });
        }
        shares = merged;
    }
    shares.pop().unwrap_or_default()
}

/// Merges two sorted runs; on ties `first`'s entries come first.
fn merge_sorted(
    first: Vec<Ranked>,
    second: Vec<Ranked>,
    compare: impl Fn(&Ranked, &Ranked) -> Ordering,
) -> Vec<Ranked> {
    let mut out = Vec::with_capacity(first.len() + second.len());
    let mut first = first.into_iter().peekable();
    let mut second = second.into_iter().peekable();
    while let (Some(a), Some(b)) = (first.peek(), second.peek()) {
        let next = if compare(b, a) == Ordering::Less {
            second.next()
        } else {
            first.next()
        };
        out.extend(next);
    }
    out.extend(first);
    out.extend(second);
    out
}

/// Writes one file atomically and returns its metadata.
pub fn write_file(
    data_dir: &Path,
    table: Table,
    flush_id: u64,
    hour_start_micros: i64,
    rows: Rows<'_>,
) -> Result<FileMeta> {
    let dir =
        layout::table_dir(data_dir, table.name()).join(layout::partition_dir(hour_start_micros));
    let name = layout::file_name(flush_id);
    let (path, size) = write_atomically(&dir, &name, rows, writer_properties(table))?;
    Ok(FileMeta {
        path,
        size,
        hour_start_micros,
    })
}

/// The rows of one file, in the order they are written.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// A batch already in order.
    Sorted(&'a RecordBatch),
    /// The rows of `source` at `order`, in that order: taken a row group at
    /// a time as each is encoded, so no sorted copy of the whole file is
    /// made.
    Taken {
        source: &'a RecordBatch,
        order: &'a UInt32Array,
    },
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::Sorted(batch) => batch.num_rows(),
            Rows::Taken { order, .. } => order.len(),
        }
    }

    fn schema(&self) -> SchemaRef {
        match self {
            Rows::Sorted(batch) | Rows::Taken { source: batch, .. } => batch.schema(),
        }
    }

    fn range(&self, rows: &Range<usize>) -> Result<RecordBatch> {
        Ok(match self {
            Rows::Sorted(batch) => batch.slice(rows.start, rows.len()),
            Rows::Taken { source, order } => {
                take_rows(source, &UInt32Array::slice(order, rows.start, rows.len()))?
            }
        })
    }
}

/// Writes `rows` as `dir/name` so that the file appears whole or not at
/// all, and durably: `.<name>.tmp` is written and fsynced, renamed, and the
/// directory fsynced. Creates `dir`. Returns the path and size.
pub fn write_atomically(
    dir: &Path,
    name: &str,
    rows: Rows<'_>,
    props: WriterProperties,
) -> Result<(PathBuf, u64)> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let written = write_parquet(&file, rows, props)
        .map_err(|e| e.on_path(&tmp))
        .and_then(|_| {
            file.sync_all().map_err(io_err(&tmp))?;
            Ok(file.metadata().map_err(io_err(&tmp))?.len())
        });
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            // A flush that failed (a full disk, most likely) must not leave
            // its partial file behind: the retry writes a new one, and the
            // space would only come back at the next start.
            if let Err(rm) = fs::remove_file(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %rm, "could not remove the partial file of a failed write");
            }
            return Err(e);
        }
    };
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    crate::wal::sync_dir(dir).map_err(io_err(dir))?;
    Ok((path, size))
}

/// Writes `rows` as one Parquet file into `out` and returns it.
///
/// The file is what [`ArrowWriter`] writes for the same rows and
/// properties (row groups of `max_row_group_row_count` rows, the same
/// pages, statistics, bloom filters and metadata), but its row groups are
/// encoded (and, for [`Rows::Taken`], taken) on up to [`encode_threads`]
/// threads and appended in order by the calling thread as they come (see
/// [`encode_in_order`]): a flush of half a million spans is 31 row groups
/// of the spans table, and taking and encoding them is most of a flush's
/// work.
pub fn write_parquet<W: Write + Send>(
    out: W,
    rows: Rows<'_>,
    props: WriterProperties,
) -> Result<W> {
    write_parquet_on(out, rows, props, encode_threads())
}

/// [`write_parquet`] on at most `threads` threads.
fn write_parquet_on<W: Write + Send>(
    mut out: W,
    rows: Rows<'_>,
    props: WriterProperties,
    threads: usize,
) -> Result<W> {
    let group_rows = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
    // The writer writes through `&mut out` and `finish` flushes it, so a
    // failed write comes back as the I/O error it is (`into_inner` would
    // turn it into text).
    let (mut writer, factory) =
        ArrowWriter::try_new(&mut out, rows.schema(), Some(props))?.into_serialized_writer()?;
    let groups: Vec<Range<usize>> = (0..rows.len())
        .step_by(group_rows)
        .map(|start| start..rows.len().min(start.saturating_add(group_rows)))
        .collect();
    let encode = |i: usize| {
        rows.range(&groups[i])
            .and_then(|b| encode_row_group(&factory, i, &b))
    };
    let mut append = |chunks: Vec<ArrowColumnChunk>| -> Result<()> {
        let mut group = writer.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        Ok(())
    };
    let threads = threads.min(groups.len());
    if threads <= 1 {
        for i in 0..groups.len() {
            append(encode(i)?)?;
        }
    } else {
        encode_in_order(groups.len(), threads, encode, append)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Row groups encoded ahead of the one being appended, per encoding
/// thread: enough that a thread rarely waits for a slower one, few enough
/// that the encoded pages held stay a small part of a flush.
const ROW_GROUPS_PER_THREAD: usize = 4;

/// Threads that encode one file's row groups: one per core.
fn encode_threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Encodes row groups `0..count` on `threads` threads, each taking the
/// next row group not yet taken, while the calling thread hands them to
/// `append` in order as they come. No thread runs more than
/// `threads * ROW_GROUPS_PER_THREAD` row groups ahead of the one appended
/// next. The first error (in row-group order) stops the work and is
/// returned; a panic in an encoding thread stops the others and is
/// raised again here.
fn encode_in_order<T: Send>(
    count: usize,
    threads: usize,
    encode: impl Fn(usize) -> Result<T> + Sync,
    mut append: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    use std::collections::BTreeMap;
    use std::sync::{Condvar, Mutex, mpsc};

    /// How far the appending has come, and whether to stop.
    struct Gate {
        appended: usize,
        stop: bool,
    }
    /// Stops every thread when an encoding thread unwinds, so that none
    /// waits for a row group that will never come.
    struct StopOnPanic<'a>(&'a (Mutex<Gate>, Condvar));
    impl Drop for StopOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let (gate, moved) = self.0;
                gate.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
                moved.notify_all();
            }
        }
    }

    let window = threads.saturating_mul(ROW_GROUPS_PER_THREAD);
    let next = AtomicUsize::new(0);
    let gate = (
        Mutex::new(Gate {
            appended: 0,
            stop: false,
        }),
        Condvar::new(),
    );
    let stop = |gate: &(Mutex<Gate>, Condvar)| {
        gate.0.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        gate.1.notify_all();
    };
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<T>)>();
        for _ in 0..threads {
            let (tx, next, gate, encode) = (tx.clone(), &next, &gate, &encode);
            scope.spawn(move || {
                let _stop = StopOnPanic(gate);
                loop {
                    let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                    if i >= count {
                        return;
                    }
                    {
                        let (lock, moved) = gate;
                        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
                        while !g.stop && i >= g.appended.saturating_add(window) {
                            g = moved.wait(g).unwrap_or_else(|p| p.into_inner());
                        }
                        if g.stop {
                            return;
                        }
                    }
                    let encoded = encode(i);
                    let failed = encoded.is_err();
                    if tx.send((i, encoded)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut appended = 0;
        let mut outcome = Ok(());
        for (i, encoded) in rx {
            if outcome.is_err() {
                continue;
            }
            waiting.insert(i, encoded);
            while let Some(encoded) = waiting.remove(&appended) {
                if let Err(e) = encoded.and_then(&mut append) {
                    outcome = Err(e);
                    stop(&gate);
                    break;
                }
                appended += 1;
                gate.0.lock().unwrap_or_else(|p| p.into_inner()).appended = appended;
                gate.1.notify_all();
            }
        }
        if outcome.is_ok() && appended < count {
            // An encoding thread panicked; the scope raises it on return.
            stop(&gate);
        }
        outcome
    })
}

/// Encodes one row group's columns.
fn encode_row_group(
    factory: &ArrowRowGroupWriterFactory,
    index: usize,
    batch: &RecordBatch,
) -> Result<Vec<ArrowColumnChunk>> {
    let mut writers = factory.create_column_writers(index)?;
    let mut leaves_of = writers.iter_mut();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        for leaf in compute_leaves(field, column)? {
            leaves_of
                .next()
                .ok_or_else(|| schema_err("more leaf columns than the file's schema has"))?
                .write(&leaf)?;
        }
    }
    Ok(writers
        .into_iter()
        .map(ArrowColumnWriter::close)
        .collect::<Result<_, _>>()?)
}

/// Concatenates, sorts and writes the rows of one table.
pub fn write_table(
    data_dir: &Path,
    table: Table,
    flush_id: u64,
    batches: &[RecordBatch],
) -> Result<Vec<FileMeta>> {
    // Rows are taken from one concatenated batch, not interleaved from the
    // buffered batches: the bench measured interleave slower than
    // concatenate + take for the attribute maps.
    let all = concat_columns(&table.schema(), batches)?;
    let mut files = Vec::new();
    for (hour, order) in sort_by_hour(table, &all)? {
        let rows = Rows::Taken {
            source: &all,
            order: &order,
        };
        match write_file(data_dir, table, flush_id, hour, rows) {
            Ok(meta) => files.push(meta),
            Err(e) => {
                remove_files(&files);
                return Err(e);
            }
        }
    }
    Ok(files)
}

/// [`concat_batches`] with each column concatenated on the next free
/// thread of one per core, the largest columns first. A flush copies every
/// buffered byte here; on one thread the other cores would sit idle while
/// ingest waits for the flush (seen at saturation: ~8 % of the machine
/// idle, mostly between a flush's files).
pub fn concat_columns(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    concat_columns_on(schema, batches, encode_threads())
}

/// [`concat_columns`] on at most `threads` threads.
fn concat_columns_on(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    threads: usize,
) -> Result<RecordBatch> {
    let threads = threads.min(schema.fields().len());
    if threads <= 1 || batches.len() <= 1 {
        return Ok(concat_batches(schema, batches)?);
    }
    let column = |i: usize| -> Result<arrow::array::ArrayRef> {
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        Ok(arrow::compute::concat(&arrays)?)
    };
    let mut by_size: Vec<(usize, usize)> = (0..schema.fields().len())
        .map(|i| {
            let bytes = batches
                .iter()
                .map(|b| b.column(i).get_array_memory_size())
                .sum();
            (i, bytes)
        })
        .collect();
    by_size.sort_unstable_by_key(|&(_, bytes)| std::cmp::Reverse(bytes));
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, AtomicOrdering::Relaxed);
            let Some(&(i, _)) = by_size.get(k) else {
                return done;
            };
            done.push((i, column(i)));
        }
    };
    // Every column is taken by one worker: sorted by index, they are the
    // batch's columns.
    let mut done: Vec<_> = each_on_its_thread((0..threads).map(|_| worker))
        .into_iter()
        .flatten()
        .collect();
    done.sort_unstable_by_key(|(i, _)| *i);
    let columns = done
        .into_iter()
        .map(|(_, array)| array)
        .collect::<Result<Vec<_>>>()?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

pub fn remove_files(files: &[FileMeta]) {
    for f in files {
        if let Err(e) = fs::remove_file(&f.path) {
            tracing::warn!(path = %f.path.display(), error = %e, "could not remove parquet file of a failed flush");
        }
    }
}

/// What [`scan_table`] does with files that are not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Start-up of the server: delete them.
    Recover,
    /// A reader beside a running server (`faasight query`): skip them.
    ReadOnly,
}

/// Lists the committed files of a table. Leftovers of flushes that did not
/// commit (flush id above `checkpoint`) and temp files are deleted or
/// skipped according to `mode`.
pub fn scan_table(
    data_dir: &Path,
    table: Table,
    checkpoint: u64,
    mode: ScanMode,
) -> Result<Vec<FileMeta>> {
    let root = layout::table_dir(data_dir, table.name());
    let mut files = Vec::new();
    for (hour_start, entry) in layout::partition_entries(&root) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let flush_id = layout::flush_id_of(&path);
        let uncommitted = name.ends_with(".tmp") || flush_id.is_some_and(|id| id > checkpoint);
        if uncommitted {
            if mode == ScanMode::Recover {
                tracing::info!(path = %path.display(), "removing parquet file of an uncommitted flush");
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
            continue;
        }
        if flush_id.is_none() {
            continue;
        }
        let size = entry.metadata().map_err(io_err(&path))?.len();
        files.push(FileMeta {
            path,
            size,
            hour_start_micros: hour_start,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray, UInt64Array};
    use arrow::compute::cast;
    use arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    use super::*;
    use crate::model::schema::{FUNCTION_NAME, SERVICE_NAME};

    /// Texts that share long prefixes, are prefixes of each other, are
    /// empty or null, hold NUL bytes (the sort's 8-byte prefix pads with
    /// zeros), or are around 8 and 32 bytes long (a trace id's length):
    /// where a prefix cannot decide alone.
    fn text() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            1 => Just(None),
            1 => Just(Some(String::new())),
            8 => "(abcdefgh|abcdefgi|ab|a|0123456789abcdef0123456789abcde|0123456789abcdef0123456789abcdef)?[a-c\u{e9}\u{0}]{0,3}".prop_map(Some),
        ]
    }

    /// A spans batch decoded from OTLP: `n` spans of a few hundred traces,
    /// with attributes, resource attributes and events.
    fn spans(n: usize) -> RecordBatch {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};
        use prost::Message;

        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let kv = |k: &str, v: String| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v)),
            }),
            ..Default::default()
        };
        // Half past an hour: the spans fall into two hour partitions.
        let start = 1_764_333_000_000_000_000_u64;
        let spans = (0..n)
            .map(|i| {
                let trace = next() % 300;
                let t = start + next() % 3_600_000_000_000;
                Span {
                    trace_id: [trace.to_be_bytes(), [7; 8]].concat(),
                    span_id: next().to_be_bytes().to_vec(),
                    name: format!("op-{}", i % 7),
                    start_time_unix_nano: t,
                    end_time_unix_nano: t + next() % 1_000_000_000,
                    attributes: vec![
                        kv("faas.invocation_id", format!("{:x}", next())),
                        kv("http.route", format!("/r/{}", i % 5)),
                    ],
                    events: if i % 10 == 0 {
                        vec![Event {
                            name: "retry".into(),
                            ..Default::default()
                        }]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                }
            })
            .collect();
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "orders".into()),
                        kv("cloud.region", "eu-west-1".into()),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let decoded = crate::decode::otlp::decode(
            crate::decode::otlp::Signal::Traces,
            crate::decode::otlp::Encoding::Protobuf,
            &body,
            0,
        )
        .expect("decodes");
        let spans: Vec<_> = decoded
            .batches
            .into_iter()
            .filter(|b| b.table == Table::Spans)
            .map(|b| b.batch)
            .collect();
        concat_batches(&Table::Spans.schema(), &spans).expect("concat")
    }

    /// `ArrowWriter`'s file for `sorted`.
    fn arrow_writes(sorted: &RecordBatch, props: WriterProperties) -> Vec<u8> {
        let mut writer =
            ArrowWriter::try_new(Vec::new(), sorted.schema(), Some(props)).expect("writer");
        writer.write(sorted).expect("write");
        writer.into_inner().expect("close")
    }

    /// Row groups encoded on several threads and appended in order make the
    /// same file, byte for byte, as arrow's `ArrowWriter` writing the sorted
    /// rows: the same row groups, pages, statistics, bloom filters, page
    /// indexes and metadata. 80,000 spans over two hours are three 16k-row
    /// groups (the last one short) in each hour's file; with 1,000-row
    /// groups, about 40 per file, more than the threads may encode ahead of
    /// the one appended.
    #[test]
    fn row_groups_encoded_in_parallel_make_the_file_arrow_writes() {
        let all = spans(80_000);
        let parts = sort_by_hour(Table::Spans, &all).expect("sorts");
        assert_eq!(parts.len(), 2);
        let small_groups = || {
            file_properties(1_000, Table::Spans.bloom_columns())
                .set_data_page_row_count_limit(256)
                .build()
        };
        for (_, order) in &parts {
            assert!(order.len() > 2 * ID_TABLE_ROW_GROUP, "{} rows", order.len());
            let sorted = arrow::compute::take_record_batch(&all, order).expect("take");
            for (props, groups) in [
                (writer_properties(Table::Spans), 3),
                (small_groups(), order.len().div_ceil(1_000)),
            ] {
                let expected = arrow_writes(&sorted, props.clone());
                let same = |what: &str, ours: Vec<u8>| {
                    assert!(
                        ours == expected,
                        "{groups} row groups, {what}: {} bytes against {}",
                        ours.len(),
                        expected.len()
                    );
                };
                for threads in [1, 2, 3, 8] {
                    let rows = Rows::Taken {
                        source: &all,
                        order,
                    };
                    let ours = write_parquet_on(Vec::new(), rows, props.clone(), threads);
                    same(&format!("{threads} threads"), ours.expect("write"));
                }
                let ours = write_parquet(Vec::new(), Rows::Sorted(&sorted), props.clone());
                same("sorted rows", ours.expect("write"));

                let file =
                    parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(expected))
                        .expect("reads");
                let meta = parquet::file::reader::FileReader::metadata(&file);
                assert_eq!(meta.num_row_groups(), groups);
                for rg in meta.row_groups() {
                    let trace = rg
                        .columns()
                        .iter()
                        .find(|c| c.column_path().string() == TRACE_ID)
                        .expect("trace_id");
                    assert!(
                        trace.bloom_filter_offset().is_some(),
                        "a bloom filter per row group"
                    );
                }
            }
        }
    }

    /// Spans in batches of uneven sizes concatenate on any number of
    /// threads into the batch arrow's `concat_batches` makes: the same
    /// columns, attribute maps included, and the same row count.
    #[test]
    fn columns_concatenated_on_threads_make_arrow_s_batch() {
        let all = spans(5_000);
        let schema = all.schema();
        let mut batches = Vec::new();
        let mut start = 0;
        for len in [1, 700, 0, 2_048, 1_000, 1_251] {
            batches.push(all.slice(start, len));
            start += len;
        }
        assert_eq!(start, all.num_rows());
        let expected = concat_batches(&schema, &batches).expect("arrow");
        for threads in [1, 2, 3, 64] {
            let ours = concat_columns_on(&schema, &batches, threads).expect("concat");
            assert!(ours == expected, "{threads} threads");
        }
        let none = concat_columns_on(&schema, &[], 2).expect("no batches");
        assert_eq!(none.num_rows(), 0);
        assert_eq!(none.schema(), schema);
        let one = concat_columns_on(&schema, &batches[1..2], 2).expect("one batch");
        assert!(one == batches[1]);
    }

    /// Row groups are appended in order however the threads finish, and
    /// no thread encodes more than the window ahead of the one appended.
    /// The first failure in row-group order is returned, whether it is an
    /// encoding's or an append's, and nothing after it is appended. A
    /// panic in an encoding thread is raised in the caller; the other
    /// threads do not wait for the row group it never finishes.
    #[test]
    fn row_groups_encoded_ahead_are_appended_in_order_and_stop_at_the_first_failure() {
        use std::sync::atomic::AtomicUsize;
        let run = |threads: usize, fail_encode: Option<usize>, fail_append: Option<usize>| {
            let appended = AtomicUsize::new(0);
            let mut got = Vec::new();
            let outcome = encode_in_order(
                40,
                threads,
                |i| {
                    let window = threads * ROW_GROUPS_PER_THREAD;
                    let done = appended.load(AtomicOrdering::SeqCst);
                    assert!(
                        i < done + window,
                        "row group {i} encoded with {done} appended"
                    );
                    // Uneven work, so the threads finish out of order.
                    std::thread::sleep(std::time::Duration::from_micros((i as u64 * 7919) % 300));
                    if Some(i) == fail_encode {
                        return Err(schema_err(&format!("encoding {i} failed")).into());
                    }
                    Ok(i)
                },
                |i| {
                    if Some(i) == fail_append {
                        return Err(schema_err(&format!("appending {i} failed")).into());
                    }
                    // Slower than encoding: the threads would run ahead.
                    std::thread::sleep(std::time::Duration::from_micros(400));
                    got.push(i);
                    appended.fetch_add(1, AtomicOrdering::SeqCst);
                    Ok(())
                },
            );
            (outcome.map_err(|e| e.to_string()), got)
        };
        for threads in [1, 2, 3, 8] {
            let (outcome, got) = run(threads, None, None);
            assert_eq!(outcome, Ok(()));
            assert_eq!(got, (0..40).collect::<Vec<_>>(), "{threads} threads");

            // The first failure in row-group order, and the row groups
            // appended before it.
            for (fail_encode, fail_append, error, appended) in [
                (Some(17), None, "encoding 17 failed", 17),
                (Some(30), Some(9), "appending 9 failed", 9),
            ] {
                let (outcome, got) = run(threads, fail_encode, fail_append);
                assert!(
                    outcome.as_ref().is_err_and(|e| e.contains(error)),
                    "{outcome:?}"
                );
                assert_eq!(got, (0..appended).collect::<Vec<_>>(), "{threads} threads");
            }
        }

        // A panic, watched from another thread so that a hang fails the
        // test instead of stalling it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let caught = std::panic::catch_unwind(|| {
                encode_in_order(
                    40,
                    2,
                    |i| {
                        assert!(i != 5, "row group 5 panics");
                        Ok(i)
                    },
                    |_| Ok(()),
                )
            });
            let _ = tx.send(caught.is_err());
        });
        let panicked = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a panic in an encoding thread left the others waiting");
        assert!(panicked, "the panic is raised in the caller");
    }

    /// A write that fails after its `.tmp` file was created removes it: a
    /// flush retried on a full disk would otherwise leave one partial file
    /// per attempt, holding the space it is waiting for. (Parquet cannot
    /// write a struct without fields; the writer refuses it after the file
    /// exists.)
    #[test]
    fn a_write_that_fails_leaves_no_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = arrow::array::StructArray::new_empty_fields(3, None);
        let schema = Schema::new(vec![Field::new("s", empty.data_type().clone(), false)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(empty) as ArrayRef])
            .expect("batch");
        let err = write_atomically(
            dir.path(),
            "1-x.parquet",
            Rows::Sorted(&batch),
            WriterProperties::builder().build(),
        )
        .expect_err("not writable");
        assert!(err.to_string().contains("empty struct"), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// A Parquet error is said once ("parquet error: …", not "parquet
    /// error: Parquet error: …"), and a failed write of the file is the
    /// I/O error on its path.
    #[test]
    fn parquet_errors_read_once_and_failed_writes_name_the_file() {
        let general = Error::from(ParquetError::General("bad page".into()));
        assert_eq!(general.to_string(), "parquet error: bad page");
        let full = || io::Error::from_raw_os_error(28);
        let write = Error::from(ParquetError::from(full())).on_path(Path::new("/d/.f.tmp"));
        assert_eq!(
            write.to_string(),
            format!("parquet io error on /d/.f.tmp: {}", full())
        );
        let other = Error::from(ParquetError::External("not io".into())).on_path(Path::new("/d"));
        assert_eq!(other.to_string(), "parquet error: not io");
    }

    proptest! {
        /// The rows come out as a plain sort of (hour, keys…, time,
        /// arrival) tuples orders them, one slice per hour; rows that tie
        /// on every key keep their order (the `arrival` column).
        #[test]
        fn rows_sort_by_hour_then_keys_nulls_first_then_arrival(
            rows in proptest::collection::vec(
                (-3i64..3, prop_oneof![0i64..3, 0i64..MICROS_PER_HOUR], text(), text()), 0..200),
            // How the texts arrive: Utf8 (the decoders), Utf8View (query
            // plans), LargeUtf8 (anything else: arrow's comparator).
            text_type in prop_oneof![Just(DataType::Utf8), Just(DataType::Utf8View), Just(DataType::LargeUtf8)],
            // Logs sort by service, function, time; invocation records by
            // function, time.
            table in prop_oneof![Just(Table::Logs), Just(Table::InvocationRecords)],
        ) {
            // Few distinct times, so rows often tie on every key.
            let time: Vec<i64> = rows.iter().map(|(h, m, _, _)| h * MICROS_PER_HOUR + m).collect();
            let service: Vec<Option<&str>> = rows.iter().map(|r| r.2.as_deref()).collect();
            let function: Vec<Option<&str>> = rows.iter().map(|r| r.3.as_deref()).collect();
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new(TIME, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
                    Field::new(SERVICE_NAME, text_type.clone(), true),
                    Field::new(FUNCTION_NAME, text_type.clone(), true),
                    Field::new("arrival", DataType::UInt64, false),
                ])),
                vec![
                    Arc::new(TimestampMicrosecondArray::from(time.clone()).with_timezone("UTC")) as ArrayRef,
                    cast(&StringArray::from(service.clone()), &text_type).expect("cast"),
                    cast(&StringArray::from(function.clone()), &text_type).expect("cast"),
                    Arc::new(UInt64Array::from_iter_values(0..rows.len() as u64)),
                ],
            ).expect("batch");

            let parts = partition_by_hour(table, &batch).expect("sorts");
            // Sorted in shares on threads and merged: the same order.
            let keys = BatchKeys::new(table, &batch).expect("keys");
            let whole: Vec<u32> = sort_order_in(&keys, 1).iter().map(|r| r.row).collect();
            for shares in [2, 3, 7] {
                let merged: Vec<u32> = sort_order_in(&keys, shares).iter().map(|r| r.row).collect();
                prop_assert_eq!(&merged, &whole, "{} shares", shares);
            }

            let mut expected: Vec<usize> = (0..rows.len()).collect();
            expected.sort_by_key(|&i| (
                time[i].div_euclid(MICROS_PER_HOUR),
                service[i].filter(|_| table == Table::Logs).map(str::as_bytes),
                function[i].map(str::as_bytes),
                time[i],
                i,
            ));
            let mut got = Vec::new();
            for (hour_start, part) in &parts {
                let t = part.column(0).as_primitive::<TimestampMicrosecondType>();
                let s = cast(part.column(1), &DataType::Utf8).expect("cast");
                let f = cast(part.column(2), &DataType::Utf8).expect("cast");
                let (s, f) = (s.as_string::<i32>(), f.as_string::<i32>());
                let arrival = part.column(3).as_primitive::<arrow::datatypes::UInt64Type>();
                for r in 0..part.num_rows() {
                    prop_assert_eq!(t.value(r).div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR, *hour_start);
                    let text = |a: &StringArray| a.is_valid(r).then(|| a.value(r).to_string());
                    got.push((t.value(r), text(s), text(f), arrival.value(r) as usize));
                }
            }
            let owned = |v: Option<&str>| v.map(str::to_string);
            let want: Vec<_> = expected.iter().map(|&i| (time[i], owned(service[i]), owned(function[i]), i)).collect();
            prop_assert_eq!(got, want);
            let hours: std::collections::BTreeSet<i64> = time.iter().map(|t| t.div_euclid(MICROS_PER_HOUR)).collect();
            prop_assert_eq!(parts.len(), hours.len());
        }
    }
}
