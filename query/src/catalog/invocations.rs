//! The `invocations` view and its coalesced layout.
//!
//! The view is one row per invocation, merged from every record of it in
//! `invocation_records` (the SQL in [`super::views::INVOCATIONS_SQL`]).
//! Regrouping all history on every query is what made aggregates slow, so
//! settled hours are merged once and kept as Parquet:
//! `DATA_DIR/invocations/date=…/hour=…/coalesced-<fingerprint>.parquet`
//! holds the invocations that *began* in that hour, with `cost_usd`; its
//! low-cardinality text columns are declared dictionaries
//! ([`DICTIONARY_COLUMNS`], see [`crate::dictionary`]).
//!
//! The records of one invocation lie within an hour of each other (Lambda
//! runs 15 minutes at most), so the invocations beginning in hour `h` depend
//! only on the raw files of hours `h-1`, `h` and `h+1` (a record in `h-1`
//! would make the invocation begin there instead). The fingerprint hashes
//! those files' names and sizes with the price catalog and the merge SQL: a
//! coalesced file is used only while its fingerprint matches, so a late
//! record, a CloudWatch backfill or a corrected price catalog makes the hour
//! stale and the query merges it from the raw records again — the view's
//! answer never depends on whether an hour was coalesced.
//!
//! A query reads the fresh coalesced files of the hours it asks for, and
//! merges the raw records of the other hours (with their neighbours, and the
//! rows still in the buffer), keeping only the invocations that began in an
//! hour that is not fresh. The server coalesces an hour once the hour after
//! it has ended ([`SETTLE`]); `faasight generate` coalesces what it wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, col, lit,
};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, collect};
use faasight_collector::buffer::{Buffer, FileMeta, Snapshot};
use faasight_collector::model::Table;
use faasight_collector::model::schema::TIME;
use faasight_collector::storage::layout::{self, MICROS_PER_HOUR};
use faasight_collector::storage::parquet::{
    Rows, file_properties, partition_by_hour, write_atomically,
};
use parking_lot::{Mutex, RwLock};
use parquet::basic::Compression;

use super::id_filter::IdFilters;
use super::prune::TimeRange;
use super::tables::{FaasightTable, ScanOptions, files_for_ids, parquet_scan};
use crate::dictionary;

/// Where the coalesced files live under the data directory.
pub const DIR: &str = "invocations";

/// An hour is coalesced once this long has passed since it began: the next
/// hour (which may still add records to it) has ended ten minutes ago.
pub const SETTLE: Duration = Duration::from_secs(2 * 3600 + 600);

/// Coalesced files replaced by newer ones are deleted this long after, so
/// that queries planned before still find them.
const RETIRE_AFTER: Duration = Duration::from_secs(600);

/// Hours merged by one query of the coalescer.
const HOURS_PER_RUN: usize = 6;

/// Changes whenever the coalesced files' content would (layout, writer).
/// 2: the [`DICTIONARY_COLUMNS`] are declared dictionaries; 3: the
/// [`COLUMN_COMPRESSION`].
const FORMAT_VERSION: u32 = 3;

/// Columns the per-function questions read, compressed for reading speed
/// rather than with the zstd of the other columns: `time` (delta-encoded)
/// and `cost_usd` (dictionary-encoded) gain about 1 % and 2 % from zstd and
/// are stored plain; `duration_ms` with LZ4, which decompresses several
/// times faster (47 MB for 10M invocations instead of zstd's 33 MB and
/// 80 MB plain; "p99 duration per function" hot, median of 9, three
/// rounds: 243 / 262 / 226 ms with zstd, 214 / 204 / 193 with LZ4;
/// benches/query-report.md).
const COLUMN_COMPRESSION: &[(&str, Compression)] = &[
    ("time", Compression::UNCOMPRESSED),
    ("cost_usd", Compression::UNCOMPRESSED),
    ("duration_ms", Compression::LZ4_RAW),
];

/// The coalesced files' text columns with few distinct values: stored, and
/// scanned, as dictionaries (see [`crate::dictionary`]).
const DICTIONARY_COLUMNS: &[&str] = &[
    "function_name",
    "function_version",
    "provider",
    "region",
    "account_id",
    "trigger",
    "architecture",
    "runtime",
    "status",
];

/// The coalesced files known to this process.
#[derive(Debug)]
pub struct CoalescedStore {
    /// `DATA_DIR/invocations`; `None` without a data directory.
    dir: Option<PathBuf>,
    /// Hash of the price catalog and the merge SQL.
    salt: u64,
    files: RwLock<BTreeMap<i64, Vec<(u64, FileMeta)>>>,
    retired: Mutex<Vec<(Instant, PathBuf)>>,
}

fn file_name(fingerprint: u64) -> String {
    format!("coalesced-{fingerprint:016x}.parquet")
}

fn fingerprint_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let hex = name.strip_prefix("coalesced-")?.strip_suffix(".parquet")?;
    u64::from_str_radix(hex, 16).ok()
}

impl CoalescedStore {
    /// Lists the coalesced files under `data_dir` (none without one).
    /// `salt_source` is everything besides the raw files that the merged
    /// rows depend on (the price catalog, the SQL).
    pub fn open(data_dir: Option<&Path>, salt_source: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        FORMAT_VERSION.hash(&mut hasher);
        salt_source.hash(&mut hasher);
        // Absolute, as the scans address files from the filesystem root.
        let dir = data_dir.map(|d| {
            fs::canonicalize(d)
                .or_else(|_| std::path::absolute(d))
                .unwrap_or_else(|_| d.to_path_buf())
                .join(DIR)
        });
        let mut files: BTreeMap<i64, Vec<(u64, FileMeta)>> = BTreeMap::new();
        if let Some(root) = &dir {
            for (hour, path) in list_partition_files(root) {
                let (Some(fp), Ok(meta)) = (fingerprint_of(&path), fs::metadata(&path)) else {
                    continue;
                };
                files.entry(hour).or_default().push((
                    fp,
                    FileMeta {
                        path,
                        size: meta.len(),
                        hour_start_micros: hour,
                    },
                ));
            }
        }
        CoalescedStore {
            dir,
            salt: hasher.finish(),
            files: RwLock::new(files),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The coalesced file of `hour` made from exactly the raw files the
    /// fingerprint hashes.
    fn fresh(&self, hour: i64, fingerprint: u64) -> Option<FileMeta> {
        self.files
            .read()
            .get(&hour)?
            .iter()
            .find(|(fp, _)| *fp == fingerprint)
            .map(|(_, f)| f.clone())
    }

    /// Makes `file` the coalesced file of its hour; the ones it replaces
    /// are deleted later.
    fn install(&self, fingerprint: u64, file: FileMeta) {
        let hour = file.hour_start_micros;
        let mut files = self.files.write();
        let entry = files.entry(hour).or_default();
        let mut retired = self.retired.lock();
        for (_, old) in entry.drain(..) {
            if old.path != file.path {
                retired.push((Instant::now(), old.path));
            }
        }
        entry.push((fingerprint, file));
    }

    /// Retires the files of `hour` other than the one with `fingerprint`
    /// (left by an earlier process that replaced a file and stopped before
    /// deleting the old one).
    fn keep_only(&self, hour: i64, fingerprint: u64) {
        let mut files = self.files.write();
        let Some(entry) = files.get_mut(&hour) else {
            return;
        };
        if entry.len() < 2 {
            return;
        }
        let mut retired = self.retired.lock();
        entry.retain(|(fp, f)| {
            if *fp == fingerprint {
                return true;
            }
            retired.push((Instant::now(), f.path.clone()));
            false
        });
    }

    /// Deletes replaced files retired at least `grace` ago; returns them.
    pub fn purge_retired(&self, grace: Duration) -> Vec<PathBuf> {
        let mut retired = self.retired.lock();
        let mut purged = Vec::new();
        retired.retain(|(at, path)| {
            if at.elapsed() < grace {
                return true;
            }
            if let Err(e) = fs::remove_file(path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a replaced coalesced file");
            }
            purged.push(path.clone());
            false
        });
        purged
    }

    /// Hours with a coalesced file (fresh or not), for `/metrics`.
    pub fn hours(&self) -> usize {
        self.files.read().len()
    }
}

/// `(hour, path)` of every `*.parquet` under `root/date=…/hour=…/`.
fn list_partition_files(root: &Path) -> Vec<(i64, PathBuf)> {
    layout::partition_entries(root)
        .into_iter()
        .map(|(start, entry)| (start, entry.path()))
        .filter(|(_, path)| path.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

/// The raw records of one snapshot, by hour.
struct RawLayout {
    snapshot: Snapshot,
    /// Hour → indexes into `snapshot.files`, in name order.
    hours: BTreeMap<i64, Vec<usize>>,
    /// Hour ranges (inclusive) the buffered rows fall in.
    buffered: Vec<(i64, i64)>,
}

impl RawLayout {
    fn of(snapshot: Snapshot) -> RawLayout {
        let mut hours: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, f) in snapshot.files.iter().enumerate() {
            hours.entry(f.hour_start_micros).or_default().push(i);
        }
        for list in hours.values_mut() {
            list.sort_by(|a, b| snapshot.files[*a].path.cmp(&snapshot.files[*b].path));
        }
        let buffered = snapshot
            .batches
            .iter()
            .filter_map(|b| {
                let times = b
                    .column_by_name(TIME)?
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()?;
                let lo = arrow::compute::min(times)?;
                let hi = arrow::compute::max(times)?;
                Some((layout::hour_start(lo), layout::hour_start(hi)))
            })
            .collect();
        RawLayout {
            snapshot,
            hours,
            buffered,
        }
    }

    fn is_buffered(&self, hour: i64) -> bool {
        self.buffered
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&hour))
    }

    /// The hours whose raw files decide the invocations beginning in `hour`.
    fn inputs(hour: i64) -> [i64; 3] {
        [hour - MICROS_PER_HOUR, hour, hour + MICROS_PER_HOUR]
    }

    /// Hash of the raw files the invocations beginning in `hour` are merged
    /// from; `None` while rows for those hours are still in the buffer.
    fn fingerprint(&self, salt: u64, hour: i64) -> Option<u64> {
        let inputs = Self::inputs(hour);
        if inputs.iter().any(|h| self.is_buffered(*h)) {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        salt.hash(&mut hasher);
        for h in inputs {
            h.hash(&mut hasher);
            for i in self.hours.get(&h).into_iter().flatten() {
                let f = &self.snapshot.files[*i];
                f.path.file_name().hash(&mut hasher);
                f.size.hash(&mut hasher);
            }
        }
        Some(hasher.finish())
    }

    /// The raw files of `hours` and their neighbours, with the buffered rows
    /// when `with_buffer`.
    fn subset(&self, hours: &BTreeSet<i64>, with_buffer: bool) -> Snapshot {
        let wanted: BTreeSet<i64> = hours.iter().flat_map(|h| Self::inputs(*h)).collect();
        let files = wanted
            .iter()
            .flat_map(|h| self.hours.get(h).into_iter().flatten())
            .map(|i| self.snapshot.files[*i].clone())
            .collect();
        Snapshot {
            files,
            batches: if with_buffer {
                self.snapshot.batches.clone()
            } else {
                Vec::new()
            },
        }
    }
}

/// The `invocations` view: coalesced files where fresh, merged raw
/// records elsewhere.
#[derive(Debug)]
pub struct InvocationsView {
    /// The merge over `invocation_records` (the view's SQL).
    plan: LogicalPlan,
    schema: SchemaRef,
    store: Arc<CoalescedStore>,
    buffer: Buffer,
    ids: Arc<IdFilters>,
}

/// Which hours a query reads coalesced and which it merges.
struct Split {
    /// The fresh coalesced files in the range.
    fresh: Vec<FileMeta>,
    /// Every fresh hour looked at (some just outside the range).
    fresh_hours: BTreeSet<i64>,
    stale: BTreeSet<i64>,
}

fn hour_literal(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some(Arc::from("UTC")),
    ))
}

/// `time` in `[start, end)`.
fn time_within(start: i64, end: i64) -> Expr {
    col(TIME)
        .gt_eq(hour_literal(start))
        .and(col(TIME).lt(hour_literal(end)))
}

/// The same expression with bare column names (filters pushed to the view
/// name it; the merge plan's columns are named by its subquery).
fn unqualified(expr: Expr) -> Result<Expr> {
    expr.transform(|e| {
        Ok(match e {
            Expr::Column(c) if c.relation.is_some() => {
                Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
            }
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
}

impl InvocationsView {
    pub fn new(
        plan: LogicalPlan,
        store: Arc<CoalescedStore>,
        buffer: Buffer,
        ids: Arc<IdFilters>,
    ) -> Self {
        // Declared nullable throughout: the merge knows some columns are
        // never null, a Parquet scan of the coalesced files does not, and a
        // plan may be less strict than its declared schema, never more.
        let fields: Vec<Field> = plan
            .schema()
            .as_arrow()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        InvocationsView {
            plan,
            schema,
            store,
            buffer,
            ids,
        }
    }

    /// Splits the hours `range` may need. Stale hours are taken with an
    /// hour of margin: an invocation that began just outside the range
    /// must be merged whole to be left out, not cut in two.
    fn split(&self, raw: &RawLayout, range: TimeRange) -> Split {
        let widened = TimeRange {
            min: range.min.map(|m| m.saturating_sub(MICROS_PER_HOUR)),
            max: range.max.map(|m| m.saturating_add(MICROS_PER_HOUR)),
        };
        let mut split = Split {
            fresh: Vec::new(),
            fresh_hours: BTreeSet::new(),
            stale: BTreeSet::new(),
        };
        for hour in raw
            .hours
            .keys()
            .copied()
            .filter(|h| widened.overlaps_hour(*h))
        {
            match raw
                .fingerprint(self.store.salt, hour)
                .and_then(|fp| self.store.fresh(hour, fp))
            {
                Some(file) => {
                    split.fresh_hours.insert(hour);
                    if range.overlaps_hour(hour) {
                        split.fresh.push(file);
                    }
                }
                None => {
                    split.stale.insert(hour);
                }
            }
        }
        split
    }

    /// The merge of the raw records in `input` (a query over it), keeping
    /// the invocations that began in none of the hours in `exclude` and
    /// satisfy `filters`.
    fn merge_plan(
        &self,
        input: Snapshot,
        exclude: &[i64],
        filters: &[Expr],
    ) -> Result<LogicalPlan> {
        let raw = provider_as_source(Arc::new(FaasightTable::fixed(
            Table::InvocationRecords,
            input,
            Arc::clone(&self.ids),
        )));
        let plan = self
            .plan
            .clone()
            .transform_up(|node| match node {
                LogicalPlan::TableScan(mut scan)
                    if scan.table_name.table() == Table::InvocationRecords.name() =>
                {
                    scan.source = Arc::clone(&raw);
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                other => Ok(Transformed::no(other)),
            })?
            .data;
        let mut keep: Vec<Expr> = exclude
            .iter()
            .map(|h| !time_within(*h, h + MICROS_PER_HOUR))
            .collect();
        for f in filters {
            keep.push(unqualified(f.clone())?);
        }
        let mut builder = LogicalPlanBuilder::from(plan);
        if let Some(predicate) = conjunction(keep) {
            builder = builder.filter(predicate)?;
        }
        builder.build()
    }

    /// Coalesces up to `max_hours` settled hours that have no fresh file
    /// (oldest first); returns how many were written.
    pub async fn coalesce(
        &self,
        state: &dyn Session,
        now_micros: i64,
        max_hours: usize,
    ) -> Result<usize> {
        let Some(dir) = self.store.dir.clone() else {
            return Ok(0);
        };
        let settle = i64::try_from(SETTLE.as_micros()).unwrap_or(i64::MAX);
        let raw = RawLayout::of(self.buffer.snapshot(Table::InvocationRecords));
        let todo: Vec<(i64, u64)> = raw
            .hours
            .keys()
            .copied()
            .filter(|h| h.saturating_add(settle) <= now_micros)
            .filter_map(|h| {
                let fp = raw.fingerprint(self.store.salt, h)?;
                if self.store.fresh(h, fp).is_some() {
                    self.store.keep_only(h, fp);
                    return None;
                }
                Some((h, fp))
            })
            .take(max_hours)
            .collect();
        let mut written = 0;
        // Runs of consecutive hours share one merge.
        let mut runs: Vec<Vec<(i64, u64)>> = Vec::new();
        for (h, fp) in todo {
            match runs.last_mut() {
                Some(run)
                    if run.len() < HOURS_PER_RUN
                        && run.last().is_some_and(|(p, _)| p + MICROS_PER_HOUR == h) =>
                {
                    run.push((h, fp));
                }
                _ => runs.push(vec![(h, fp)]),
            }
        }
        for run in runs {
            let (Some((first, _)), Some((last, _))) = (run.first(), run.last()) else {
                continue;
            };
            let hours: BTreeSet<i64> = run.iter().map(|(h, _)| *h).collect();
            let plan = self.merge_plan(raw.subset(&hours, false), &[], &[])?;
            let plan = LogicalPlanBuilder::from(plan)
                .filter(time_within(*first, last + MICROS_PER_HOUR))?
                .build()?;
            let physical = state.create_physical_plan(&plan).await?;
            let batches = collect(physical, state.task_ctx()).await?;
            let all = concat_batches(&self.schema, &batches)?;
            let parts: BTreeMap<i64, RecordBatch> =
                partition_by_hour(Table::InvocationRecords, &all)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
                    .into_iter()
                    .collect();
            for (hour, fp) in &run {
                let part = parts
                    .get(hour)
                    .cloned()
                    .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.schema)));
                let file = write_coalesced(&dir, *hour, *fp, &part)?;
                self.store.install(*fp, file);
                written += 1;
            }
        }
        // The id index holds the bloom filters of files it has seen; a
        // deleted file's are dropped with it.
        self.ids.forget(&self.store.purge_retired(RETIRE_AFTER));
        Ok(written)
    }
}

/// Coalesced files are read for aggregates over many rows: large row
/// groups, page statistics for time and function pruning, bloom filters for
/// id lookups, the [`DICTIONARY_COLUMNS`] declared dictionaries. Written
/// atomically.
fn write_coalesced(
    dir: &Path,
    hour: i64,
    fingerprint: u64,
    batch: &RecordBatch,
) -> Result<FileMeta> {
    let mut props = file_properties(128 * 1024, Table::InvocationRecords.bloom_columns());
    for (column, compression) in COLUMN_COMPRESSION {
        props = props.set_column_compression((*column).into(), *compression);
    }
    let props = props.build();
    let part = dir.join(layout::partition_dir(hour));
    let batch = dictionary::encode(batch, DICTIONARY_COLUMNS)?;
    let (path, size) =
        write_atomically(&part, &file_name(fingerprint), Rows::Sorted(&batch), props)
            .map_err(|e| DataFusionError::External(e.into()))?;
    Ok(FileMeta {
        path,
        size,
        hour_start_micros: hour,
    })
}

#[async_trait]
impl TableProvider for InvocationsView {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune coalesced files and are re-checked above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let raw = RawLayout::of(self.buffer.snapshot(Table::InvocationRecords));
        let range = TimeRange::from_filters(filters);
        let split = self.split(&raw, range);
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        // Coalesced files carry bloom filters on the same id columns as the
        // records: a lookup by request or trace id reads only their row
        // groups that can hold it.
        let (fresh, pinned) = files_for_ids(
            &self.ids,
            split.fresh.iter(),
            Table::InvocationRecords.bloom_columns(),
            filters,
        );
        let scan = ScanOptions {
            projection,
            filters,
            limit,
            pinned,
            dictionaries: DICTIONARY_COLUMNS,
        };
        if let Some(plan) = parquet_scan(state, &self.schema, fresh, &scan)? {
            plans.push(plan);
        }
        // Buffered rows belong to hours that are never fresh: they are merged
        // with the stale hours.
        if !split.stale.is_empty() || !raw.snapshot.batches.is_empty() {
            let fresh_hours = &split.fresh_hours;
            // Invocations that began in a fresh neighbour are in its file.
            let exclude: Vec<i64> = split
                .stale
                .iter()
                .flat_map(|h| [h - MICROS_PER_HOUR, h + MICROS_PER_HOUR])
                .filter(|h| fresh_hours.contains(h))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let plan = self.merge_plan(raw.subset(&split.stale, true), &exclude, filters)?;
            let mut builder = LogicalPlanBuilder::from(plan);
            if let Some(p) = projection {
                let columns: Vec<Expr> = p
                    .iter()
                    .map(|i| col(Column::new_unqualified(self.schema.field(*i).name())))
                    .collect();
                builder = builder.project(columns)?;
            }
            plans.push(state.create_physical_plan(&builder.build()?).await?);
        }
        match plans.len() {
            0 => {
                let projected = match projection {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => Arc::clone(&self.schema),
                };
                Ok(Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                    projected,
                )))
            }
            1 => Ok(plans.remove(0)),
            _ => UnionExec::try_new(plans),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = MICROS_PER_HOUR;

    fn file(hour: i64, name: &str, size: u64) -> FileMeta {
        FileMeta {
            path: PathBuf::from(format!("/d/invocation_records/{hour}/{name}")),
            size,
            hour_start_micros: hour * H,
        }
    }

    fn buffered_at(micros: &[i64]) -> RecordBatch {
        let times = TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("UTC");
        let schema = Arc::new(Schema::new(vec![Field::new(
            TIME,
            times.data_type().clone(),
            false,
        )]));
        RecordBatch::try_new(schema, vec![Arc::new(times)]).expect("batch")
    }

    fn layout(files: Vec<FileMeta>, batches: Vec<RecordBatch>) -> RawLayout {
        RawLayout::of(Snapshot { batches, files })
    }

    #[test]
    fn an_hour_depends_on_its_neighbours_files_only() {
        let base = vec![
            file(9, "a", 10),
            file(10, "b", 10),
            file(11, "c", 10),
            file(13, "e", 1),
        ];
        let fp = layout(base.clone(), vec![]).fingerprint(1, 10 * H);
        assert!(fp.is_some());
        // Same files in another order: same fingerprint.
        let mut shuffled = base.clone();
        shuffled.reverse();
        assert_eq!(layout(shuffled, vec![]).fingerprint(1, 10 * H), fp);
        // A late file in the hour before or after, or a file that grew: stale.
        for extra in [file(9, "late", 5), file(11, "late", 5), file(10, "late", 5)] {
            let mut files = base.clone();
            files.push(extra);
            assert_ne!(layout(files, vec![]).fingerprint(1, 10 * H), fp);
        }
        let mut grown = base.clone();
        grown[1].size = 11;
        assert_ne!(layout(grown, vec![]).fingerprint(1, 10 * H), fp);
        // Two hours away: no effect.
        let mut far = base.clone();
        far.push(file(12, "far", 5));
        far.push(file(8, "far", 5));
        assert_eq!(layout(far, vec![]).fingerprint(1, 10 * H), fp);
        // Another catalog (salt): stale.
        assert_ne!(layout(base, vec![]).fingerprint(2, 10 * H), fp);
    }

    #[test]
    fn buffered_rows_keep_their_hours_and_neighbours_unsettled() {
        let files = vec![
            file(8, "a", 1),
            file(10, "b", 1),
            file(12, "c", 1),
            file(14, "d", 1),
        ];
        let raw = layout(files, vec![buffered_at(&[11 * H + 5, 11 * H + 7])]);
        assert!(raw.fingerprint(0, 8 * H).is_some());
        assert!(raw.fingerprint(0, 10 * H).is_none());
        assert!(raw.fingerprint(0, 12 * H).is_none());
        assert!(raw.fingerprint(0, 14 * H).is_some());
        // The merge of hour 12 reads 11..13 and the buffer.
        let subset = raw.subset(&BTreeSet::from([12 * H]), true);
        let hours: Vec<i64> = subset
            .files
            .iter()
            .map(|f| f.hour_start_micros / H)
            .collect();
        assert_eq!(hours, vec![12]);
        assert_eq!(subset.batches.len(), 1);
        let subset = raw.subset(&BTreeSet::from([9 * H, 13 * H]), false);
        let hours: Vec<i64> = subset
            .files
            .iter()
            .map(|f| f.hour_start_micros / H)
            .collect();
        assert_eq!(hours, vec![8, 10, 12, 14]);
        assert!(subset.batches.is_empty());
    }

    #[test]
    fn installed_files_replace_older_ones_which_are_deleted_after_the_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CoalescedStore::open(Some(dir.path()), "prices");
        let hour = 5 * H;
        let batch = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new(
            "x",
            arrow::datatypes::DataType::Int64,
            true,
        )])));
        let root = dir.path().join(DIR);
        let first = write_coalesced(&root, hour, 0xabc, &batch).expect("write");
        assert_eq!(fingerprint_of(&first.path), Some(0xabc));
        store.install(0xabc, first.clone());
        assert!(store.fresh(hour, 0xabc).is_some());
        let second = write_coalesced(&root, hour, 0xdef, &batch).expect("write");
        store.install(0xdef, second);
        assert!(store.fresh(hour, 0xabc).is_none());
        assert!(store.fresh(hour, 0xdef).is_some());
        assert_eq!(store.purge_retired(Duration::from_secs(600)).len(), 0);
        assert!(first.path.exists(), "kept for running queries");
        assert_eq!(store.purge_retired(Duration::ZERO).len(), 1);
        assert!(!first.path.exists());
        // A new process finds the file on disk.
        let reopened = CoalescedStore::open(Some(dir.path()), "prices");
        assert!(reopened.fresh(hour, 0xdef).is_some());
        assert_eq!(reopened.hours(), 1);
        assert_ne!(
            reopened.salt,
            CoalescedStore::open(Some(dir.path()), "other prices").salt
        );
    }

    #[test]
    fn leftovers_of_an_earlier_process_are_retired_once_the_current_file_is_known() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join(DIR);
        let batch = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new(
            "x",
            arrow::datatypes::DataType::Int64,
            true,
        )])));
        let old = write_coalesced(&root, 7 * H, 1, &batch).expect("write");
        let current = write_coalesced(&root, 7 * H, 2, &batch).expect("write");
        let store = CoalescedStore::open(Some(dir.path()), "prices");
        store.keep_only(7 * H, 2);
        assert_eq!(store.purge_retired(Duration::ZERO).len(), 1);
        assert!(!old.path.exists());
        assert!(current.path.exists());
        assert!(store.fresh(7 * H, 2).is_some());
    }
}
