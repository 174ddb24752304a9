//! Query results as JSON (array of row objects), NDJSON, CSV, Arrow IPC or a
//! text table.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Output formats of query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Ndjson,
    Csv,
    Arrow,
    Table,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Table => "text/plain",
        }
    }
}

/// Renders nested columns (maps, lists, structs) as text so that CSV can
/// hold them.
fn flatten_nested(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let nested = |dt: &DataType| dt.is_nested();
    if !schema.fields().iter().any(|f| nested(f.data_type())) {
        return Ok((Arc::clone(schema), batches.to_vec()));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if nested(f.data_type()) {
                Field::new(f.name(), DataType::Utf8, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let new_schema = Arc::new(Schema::new(fields));
    let opts = FormatOptions::default();
    let out = batches
        .iter()
        .map(|b| {
            let cols = b
                .columns()
                .iter()
                .map(|c| {
                    if !nested(c.data_type()) {
                        return Ok(Arc::clone(c));
                    }
                    let fmt = ArrayFormatter::try_new(c.as_ref(), &opts)?;
                    let strings: StringArray = (0..c.len())
                        .map(|i| (!c.is_null(i)).then(|| fmt.value(i).to_string()))
                        .collect();
                    Ok(Arc::new(strings) as ArrayRef)
                })
                .collect::<Result<Vec<_>, ArrowError>>()?;
            RecordBatch::try_new(Arc::clone(&new_schema), cols)
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    Ok((new_schema, out))
}

use arrow::array::Array;

/// Encodes a result in `format`.
pub fn encode(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    match format {
        Format::Json => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut buf);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
        }
        Format::Ndjson => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Csv => {
            let (_, flat) = flatten_nested(schema, batches)?;
            if flat.is_empty() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                buf.extend_from_slice(names.join(",").as_bytes());
                buf.push(b'\n');
            } else {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in &flat {
                    w.write(b)?;
                }
            }
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Table => {
            let table = arrow::util::pretty::pretty_format_batches(batches)?;
            buf.extend_from_slice(table.to_string().as_bytes());
            buf.push(b'\n');
        }
    }
    Ok(buf)
}
