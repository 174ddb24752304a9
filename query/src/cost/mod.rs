//! Cost: the price catalog and the SQL functions that apply it.

pub mod catalog;
pub mod udf;

pub use catalog::{CatalogError, PriceCatalog};
pub use udf::cost_udfs;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;

/// The `prices` table: every price of the catalog with its source and the
/// date it applies from.
pub fn prices_table(catalog: &PriceCatalog) -> datafusion::error::Result<MemTable> {
    let rows = catalog.rows();
    let schema = Arc::new(Schema::new(vec![
        Field::new("provider", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new(
            "effective_from",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("item", DataType::Utf8, false),
        Field::new("unit", DataType::Utf8, false),
        Field::new("price_usd", DataType::Float64, false),
        Field::new("source", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.provider),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.region.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.effective_micros))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.item.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.unit))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.price))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.source.as_str()),
        )),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    MemTable::try_new(schema, vec![vec![batch]])
}
