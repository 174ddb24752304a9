//! Writing rows as Parquet: one file per table and hour partition per flush,
//! sorted by the table's sort columns (then time) so that predicates prune
//! row groups and pages; zstd; page statistics; bloom filters on ids.
//!
//! A file appears atomically: written to `.<name>.tmp`, fsynced, renamed,
//! and the directory fsynced.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, TimestampMicrosecondArray};
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};

use super::layout::{self, MICROS_PER_HOUR};
use crate::buffer::FileMeta;
use crate::model::Table;
use crate::model::schema::{
    DURATION_MS, END_TIME, OBSERVED_TIME, PARENT_SPAN_ID, REQUEST_ID, SCHEMA_VERSION, SPAN_ID,
    TIME, TRACE_ID,
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
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
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
    props
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "faasight.schema_version".to_string(),
            SCHEMA_VERSION.to_string(),
        )]))
        .build()
}

/// Columns whose values are (nearly) unique per row. A dictionary of them
/// only grows until it spills to plain pages; without one, the lengths are
/// delta-encoded (all equal) and zstd packs the hex digits to about half.
const UNIQUE_TEXT_COLUMNS: [&str; 4] = [TRACE_ID, SPAN_ID, PARENT_SPAN_ID, REQUEST_ID];

/// Timestamps: delta-encoded (neighbouring rows are close in time).
const TIME_COLUMNS: [&str; 3] = [TIME, END_TIME, OBSERVED_TIME];

/// Durations (whole microseconds, but nearly unique per row): a dictionary
/// never pays off (measured: 4.9 bytes per span with one, 3.7 without).
const MEASURE_COLUMNS: [&str; 1] = [DURATION_MS];

/// What every Parquet file faasight writes shares: zstd level 3, page
/// statistics, `row_group` rows per row group, bloom filters on
/// `bloom_columns`, and per-column encodings chosen for what the columns
/// hold (ids, timestamps and durations without dictionaries; measured on
/// Lambda-like spans: 52 → 40 bytes per span). The encodings are standard
/// Parquet ones that DuckDB, pyarrow, Spark and Athena read.
pub fn file_properties(row_group: usize, bloom_columns: &[&str]) -> WriterPropertiesBuilder {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
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
    for col in bloom_columns {
        props = props
            .set_column_bloom_filter_enabled((*col).into(), true)
            .set_column_bloom_filter_fpp((*col).into(), ID_BLOOM_FPP);
    }
    props
}

/// Sorts `batch` by hour, then the table's sort columns, and returns one
/// slice per hour partition.
pub fn partition_by_hour(table: Table, batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let time_idx = batch.schema().index_of(TIME)?;
    let times = batch
        .column(time_idx)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| {
            arrow::error::ArrowError::SchemaError("time is not a µs timestamp".into())
        })?;
    let hours: Int64Array = times
        .iter()
        .map(|t| t.map(|t| t.div_euclid(MICROS_PER_HOUR)))
        .collect();
    let hours: ArrayRef = Arc::new(hours);
    let mut sort = vec![SortColumn {
        values: Arc::clone(&hours),
        options: None,
    }];
    for col in table.sort_columns() {
        let idx = batch.schema().index_of(col)?;
        sort.push(SortColumn {
            values: Arc::clone(batch.column(idx)),
            options: Some(SortOptions {
                descending: false,
                nulls_first: true,
            }),
        });
    }
    let indices = lexsort_to_indices(&sort, None)?;
    let sorted = take_record_batch(batch, &indices)?;
    let sorted_hours = arrow::compute::take(&hours, &indices, None)?;
    let sorted_hours = sorted_hours
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("hours".into()))?;
    let mut parts = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.num_rows() {
        if i == sorted.num_rows() || sorted_hours.value(i) != sorted_hours.value(start) {
            parts.push((
                sorted_hours.value(start) * MICROS_PER_HOUR,
                sorted.slice(start, i - start),
            ));
            start = i;
        }
    }
    Ok(parts)
}

/// Writes one file atomically and returns its metadata.
pub fn write_file(
    data_dir: &Path,
    table: Table,
    flush_id: u64,
    hour_start_micros: i64,
    batch: &RecordBatch,
) -> Result<FileMeta> {
    let dir =
        layout::table_dir(data_dir, table.name()).join(layout::partition_dir(hour_start_micros));
    let name = layout::file_name(flush_id);
    let (path, size) = write_atomically(&dir, &name, batch, writer_properties(table))?;
    Ok(FileMeta {
        path,
        size,
        hour_start_micros,
    })
}

/// Writes `batch` as `dir/name` so that the file appears whole or not at
/// all, and durably: `.<name>.tmp` is written and fsynced, renamed, and the
/// directory fsynced. Creates `dir`. Returns the path and size.
pub fn write_atomically(
    dir: &Path,
    name: &str,
    batch: &RecordBatch,
    props: WriterProperties,
) -> Result<(PathBuf, u64)> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(io_err(&tmp))?;
    let size = file.metadata().map_err(io_err(&tmp))?.len();
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    crate::wal::sync_dir(dir).map_err(io_err(dir))?;
    Ok((path, size))
}

/// Concatenates, partitions and writes the rows of one table.
pub fn write_table(
    data_dir: &Path,
    table: Table,
    flush_id: u64,
    batches: &[RecordBatch],
) -> Result<Vec<FileMeta>> {
    let all = concat_batches(&table.schema(), batches)?;
    let mut files = Vec::new();
    for (hour, part) in partition_by_hour(table, &all)? {
        match write_file(data_dir, table, flush_id, hour, &part) {
            Ok(meta) => files.push(meta),
            Err(e) => {
                remove_files(&files);
                return Err(e);
            }
        }
    }
    Ok(files)
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
