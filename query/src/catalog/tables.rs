//! A DataFusion table over one faasight table: the Parquet files committed
//! so far plus the rows still in the buffer, read from one snapshot so a row
//! is seen exactly once.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::datasource::TableProvider;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetAccessPlan,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use faasight_collector::buffer::{Buffer, FileMeta, Snapshot};
use faasight_collector::model::Table;

use super::id_filter::{IdFilters, pinned_ids};
use super::prune::TimeRange;
use crate::dictionary::{DecodeExec, with_dictionaries};

/// One faasight table as DataFusion sees it.
#[derive(Debug)]
pub struct FaasightTable {
    table: Table,
    rows: Rows,
    ids: Arc<IdFilters>,
}

/// Where a table's rows come from.
#[derive(Debug)]
enum Rows {
    /// The buffer's state when a query scans.
    Live(Buffer),
    /// One snapshot taken before (the coalesced `invocations` layout reads
    /// the same snapshot it judged fresh or stale).
    Fixed(Snapshot),
}

impl FaasightTable {
    pub fn new(table: Table, buffer: Buffer, ids: Arc<IdFilters>) -> Self {
        FaasightTable {
            table,
            rows: Rows::Live(buffer),
            ids,
        }
    }

    /// The table as `snapshot` holds it.
    pub fn fixed(table: Table, snapshot: Snapshot, ids: Arc<IdFilters>) -> Self {
        FaasightTable {
            table,
            rows: Rows::Fixed(snapshot),
            ids,
        }
    }
}

/// A file to scan, with the row groups to read when not all.
pub(crate) type ScanFile<'a> = (&'a FileMeta, Option<ParquetAccessPlan>);

/// Id predicates (`trace_id = …`, `request_id IN (…)`) on `bloom_columns`
/// skip the files whose bloom filters rule the ids out, before any file is
/// opened, and name the row groups to read of the others. The flag says an
/// id was pinned (the scan then pushes its filters into the decoder).
pub(crate) fn files_for_ids<'a>(
    ids: &IdFilters,
    files: impl Iterator<Item = &'a FileMeta>,
    bloom_columns: &[&str],
    filters: &[Expr],
) -> (Vec<ScanFile<'a>>, bool) {
    let pinned: Vec<(&str, Vec<String>)> = bloom_columns
        .iter()
        .filter_map(|c| pinned_ids(filters, c).map(|ids| (*c, ids)))
        .collect();
    let files = files
        .filter_map(|f| {
            // The row groups every pinned column's filters allow (the lists
            // of one file have one entry per row group each).
            let mut keep: Option<Vec<bool>> = None;
            for (col, wanted) in &pinned {
                if let Some(groups) = ids.row_groups(&f.path, col, wanted) {
                    keep = Some(match keep {
                        Some(k) => k.iter().zip(&groups).map(|(a, b)| *a && *b).collect(),
                        None => groups,
                    });
                }
            }
            match keep {
                None => Some((f, None)),
                Some(k) if !k.contains(&true) => None,
                Some(k) if !k.contains(&false) => Some((f, None)),
                Some(k) => {
                    let mut plan = ParquetAccessPlan::new_all(k.len());
                    for (i, _) in k.iter().enumerate().filter(|(_, scan)| !**scan) {
                        plan.skip(i);
                    }
                    Some((f, Some(plan)))
                }
            }
        })
        .collect();
    (files, !pinned.is_empty())
}

/// Splits files into `n` groups of similar total size so that scans run in
/// parallel.
fn file_groups(files: Vec<ScanFile<'_>>, n: usize) -> Vec<FileGroup> {
    let n = n.max(1).min(files.len().max(1));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    let mut sorted = files;
    sorted.sort_by_key(|f| std::cmp::Reverse(f.0.size));
    for (f, plan) in sorted {
        let Some(smallest) = groups.iter_mut().min_by_key(|g| g.0) else {
            break;
        };
        smallest.0 += f.size;
        let location = f.path.to_string_lossy().trim_start_matches('/').to_string();
        let mut file = PartitionedFile::new(location, f.size);
        if let Some(plan) = plan {
            file = file.with_extension(plan);
        }
        smallest.1.push(file);
    }
    groups
        .into_iter()
        .filter(|g| !g.1.is_empty())
        .map(|g| FileGroup::new(g.1))
        .collect()
}

#[async_trait]
impl TableProvider for FaasightTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune files and row groups but are re-checked above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.table.schema();
        let snapshot = match &self.rows {
            Rows::Live(buffer) => buffer.snapshot(self.table),
            Rows::Fixed(snapshot) => snapshot.clone(),
        };
        let range = TimeRange::from_filters(filters);
        let in_range = snapshot
            .files
            .iter()
            .filter(|f| range.overlaps_hour(f.hour_start_micros));
        let (files, pinned) =
            files_for_ids(&self.ids, in_range, self.table.bloom_columns(), filters);
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let scan = ScanOptions {
            projection,
            filters,
            limit,
            pinned,
            dictionaries: &[],
        };
        if let Some(plan) = parquet_scan(state, &schema, files, &scan)? {
            plans.push(plan);
        }
        if !snapshot.batches.is_empty() {
            plans.push(MemorySourceConfig::try_new_exec(
                &[snapshot.batches],
                Arc::clone(&schema),
                projection.cloned(),
            )?);
        }
        if plans.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(plans)
    }
}

/// What a query asks of a Parquet scan.
pub(crate) struct ScanOptions<'a> {
    pub projection: Option<&'a Vec<usize>>,
    pub filters: &'a [Expr],
    pub limit: Option<usize>,
    /// An id predicate keeps a handful of rows: filters are then pushed into
    /// the decoder so the other columns are decoded only where the id matches.
    pub pinned: bool,
    /// Text columns the files store as dictionaries (and declare so in their
    /// Arrow schema): scanned as such and decoded above the scan
    /// ([`DecodeExec`]), unless a filter reads them.
    pub dictionaries: &'a [&'a str],
}

/// A Parquet scan of `files` with the query's projection, filters (row
/// group and page pruning) and limit; `None` without files.
pub(crate) fn parquet_scan(
    state: &dyn Session,
    schema: &SchemaRef,
    files: Vec<ScanFile<'_>>,
    scan: &ScanOptions<'_>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if files.is_empty() {
        return Ok(None);
    }
    // Footers and page indexes come from the runtime's metadata cache, so a
    // hot lookup does not re-read them from disk.
    let store = state
        .runtime_env()
        .object_store(ObjectStoreUrl::local_filesystem())?;
    let metadata_cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    // A filtered column stays text: the predicate is planned on the table's
    // types.
    let filtered: HashSet<&str> = scan
        .filters
        .iter()
        .flat_map(|f| f.column_refs())
        .map(|c| c.name.as_str())
        .collect();
    let dictionaries: Vec<&str> = scan
        .dictionaries
        .iter()
        .copied()
        .filter(|c| !filtered.contains(c))
        .collect();
    let read_schema = Arc::new(with_dictionaries(schema, &dictionaries));
    let mut source = ParquetSource::new(Arc::clone(&read_schema))
        .with_bloom_filter_on_read(true)
        .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
            store,
            metadata_cache,
        )));
    if scan.pinned {
        source = source
            .with_pushdown_filters(true)
            .with_reorder_filters(true);
    }
    if let Some(predicate) = conjunction(scan.filters.iter().cloned()) {
        let df_schema = DFSchema::try_from(Arc::clone(schema))?;
        let physical = state.create_physical_expr(predicate, &df_schema)?;
        source = source.with_predicate(physical);
    }
    let groups = file_groups(files, state.config().target_partitions());
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
        .with_file_groups(groups)
        .with_projection_indices(scan.projection.cloned())?
        .with_limit(scan.limit)
        .build();
    let plan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
    // The projected columns read as dictionaries are those whose type
    // differs from the table's.
    let columns: Vec<usize> = match scan.projection {
        Some(p) => p.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let decode: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| read_schema.field(**c).data_type() != schema.field(**c).data_type())
        .map(|(i, _)| i)
        .collect();
    if decode.is_empty() {
        return Ok(Some(plan));
    }
    Ok(Some(Arc::new(DecodeExec::try_new(plan, decode)?)))
}
