//! Lookups by id without opening every file: the Parquet bloom filters of
//! the id columns (`trace_id`, `request_id`), read once per file and kept in
//! memory, decide which files a predicate `id = '…'` or `id IN (…)` can
//! match before DataFusion opens any of them, and which row groups of the
//! others the scan reads (a `ParquetAccessPlan`, so the row-group filters
//! are not read again per query). Files are immutable once
//! committed, so a file's filters never go stale; a file that cannot be
//! read is kept (the scan then decides).
//!
//! Memory: one split-block bloom filter per row group and id column
//! (~1.8 bytes per distinct id at the writer's 0.1% false-positive rate).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use parking_lot::RwLock;
use parquet::bloom_filter::Sbbf;
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::serialized_reader::ReadOptionsBuilder;

/// Row-group bloom filters of one file's id column; `None` = unknown (keep).
type FileFilters = Option<Vec<Sbbf>>;

/// Cache of id-column bloom filters per (file, column).
#[derive(Debug, Default)]
pub struct IdFilters {
    files: RwLock<HashMap<(PathBuf, String), Arc<FileFilters>>>,
}

/// The literal ids a filter list pins a column to (`col = 'a'`,
/// `col IN ('a', 'b')`, or an OR of those); `None` when unconstrained.
pub fn pinned_ids(filters: &[Expr], column: &str) -> Option<Vec<String>> {
    filters.iter().find_map(|f| ids_of(f, column))
}

fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        Expr::Cast(c) => literal_text(&c.expr),
        _ => None,
    }
}

fn is_column(e: &Expr, column: &str) -> bool {
    match e {
        Expr::Column(c) => c.name == column,
        Expr::Cast(c) => is_column(&c.expr, column),
        _ => false,
    }
}

fn ids_of(e: &Expr, column: &str) -> Option<Vec<String>> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            if is_column(left, column) {
                literal_text(right).map(|v| vec![v])
            } else if is_column(right, column) {
                literal_text(left).map(|v| vec![v])
            } else {
                None
            }
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut a = ids_of(left, column)?;
            a.extend(ids_of(right, column)?);
            Some(a)
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => ids_of(left, column).or_else(|| ids_of(right, column)),
        Expr::InList(list) if !list.negated && is_column(&list.expr, column) => {
            list.list.iter().map(literal_text).collect()
        }
        _ => None,
    }
}

fn read_filters(path: &Path, column: &str) -> FileFilters {
    let file = File::open(path).ok()?;
    let options = ReadOptionsBuilder::new()
        .with_reader_properties(
            ReaderProperties::builder()
                .set_read_bloom_filter(true)
                .build(),
        )
        .build();
    let reader = SerializedFileReader::new_with_options(file, options).ok()?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let idx = (0..schema.num_columns()).find(|&i| schema.column(i).name() == column)?;
    let mut out = Vec::with_capacity(meta.num_row_groups());
    for rg in 0..meta.num_row_groups() {
        let row_group = reader.get_row_group(rg).ok()?;
        out.push(row_group.get_column_bloom_filter(idx)?.clone());
    }
    Some(out)
}

impl IdFilters {
    fn filters(&self, path: &Path, column: &str) -> Arc<FileFilters> {
        let key = (path.to_path_buf(), column.to_string());
        if let Some(f) = self.files.read().get(&key) {
            return Arc::clone(f);
        }
        let loaded = Arc::new(read_filters(path, column));
        self.files.write().insert(key, Arc::clone(&loaded));
        loaded
    }

    /// Which row groups of the file may hold a row whose `column` is one of
    /// `ids`; `None` when the file's filters are unknown (scan it all).
    pub fn row_groups(&self, path: &Path, column: &str, ids: &[String]) -> Option<Vec<bool>> {
        self.filters(path, column).as_ref().as_ref().map(|groups| {
            groups
                .iter()
                .map(|bf| ids.iter().any(|id| bf.check(id.as_str())))
                .collect()
        })
    }

    /// Drops the filters of `paths` (files that were deleted).
    pub fn forget(&self, paths: &[PathBuf]) {
        if paths.is_empty() {
            return;
        }
        self.files
            .write()
            .retain(|(path, _), _| !paths.contains(path));
    }

    /// Files cached (for tests and metrics).
    pub fn len(&self) -> usize {
        self.files.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::pinned_ids;

    #[test]
    fn id_predicates_are_recognised() {
        let ids = |e| pinned_ids(&[e], "trace_id");
        assert_eq!(
            ids(col("trace_id").eq(lit("a"))),
            Some(vec!["a".to_string()])
        );
        assert_eq!(
            ids(lit("a").eq(col("trace_id"))),
            Some(vec!["a".to_string()])
        );
        assert_eq!(
            ids(col("trace_id").in_list(vec![lit("a"), lit("b")], false)),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            ids(col("trace_id")
                .eq(lit("a"))
                .or(col("trace_id").eq(lit("b")))),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            ids(col("trace_id").eq(lit("a")).and(col("name").eq(lit("x")))),
            Some(vec!["a".to_string()])
        );
        // Anything that could match other ids is not pinned.
        assert_eq!(ids(col("trace_id").in_list(vec![lit("a")], true)), None);
        assert_eq!(
            ids(col("trace_id").eq(lit("a")).or(col("name").eq(lit("x")))),
            None
        );
        assert_eq!(ids(col("trace_id").not_eq(lit("a"))), None);
        assert_eq!(ids(col("span_id").eq(lit("a"))), None);
        assert_eq!(ids(col("trace_id").like(lit("a%"))), None);
    }

    #[test]
    fn filters_are_read_once_and_forgotten_with_their_file() {
        use std::sync::Arc;

        use arrow::array::StringArray;
        use arrow::datatypes::{DataType, Field, Schema};
        use arrow::record_batch::RecordBatch;
        use parquet::arrow::ArrowWriter;

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "trace_id",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(vec!["a", "b"]))],
        )
        .expect("batch");
        let props =
            faasight_collector::storage::parquet::file_properties(1024, &["trace_id"]).build();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).expect("create"),
            schema,
            Some(props),
        )
        .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");

        let filters = super::IdFilters::default();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            filters.row_groups(&path, "trace_id", &ids(&["a"])),
            Some(vec![true])
        );
        assert_eq!(
            filters.row_groups(&path, "trace_id", &ids(&["zz"])),
            Some(vec![false])
        );
        assert_eq!(filters.len(), 1);
        filters.forget(&[dir.path().join("other.parquet")]);
        assert_eq!(filters.len(), 1);
        filters.forget(&[path]);
        assert!(filters.is_empty());
    }
}
