//! Taking rows of a batch in a new order (the flush's sorted row groups),
//! with a faster path for attribute maps.
//!
//! arrow's `take` copies a map row by row through `MutableArrayData`: one
//! dynamically dispatched extend per row and child, offsets shifted one by
//! one, and value buffers that grow as they go. An attribute map
//! (`Map<Utf8, Utf8>`) is taken here instead in two passes per text column:
//! the sizes first, then the keys (or values) copied into exact-size
//! buffers, one slice per run of rows that also follow each other in the
//! source (the flush's rows mostly arrive in file order: a trace's spans
//! come in one request). Every other column goes through arrow's `take`.
//! Measured on 204,800 Lambda-like spans, one thread: 36–42 ms against
//! 53–63 ms for arrow's `take_record_batch` (benches/ingest-report.md).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, MapArray, StringArray, StructArray, UInt32Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::take;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

/// The rows of `batch` at `indices`, in that order: what arrow's
/// `take_record_batch` returns.
pub fn take_rows(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| take_column(column, indices))
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
    RecordBatch::try_new_with_options(batch.schema(), columns, &options)
}

fn take_column(column: &ArrayRef, indices: &UInt32Array) -> Result<ArrayRef, ArrowError> {
    if indices.null_count() == 0
        && let Some(map) = column.as_map_opt()
        && let Some(taken) = take_text_map(map, indices.values())?
    {
        return Ok(Arc::new(taken));
    }
    take(column, indices, None)
}

/// A `Map<Utf8, Utf8>` taken at `indices`; `None` for maps of other types.
fn take_text_map(map: &MapArray, indices: &[u32]) -> Result<Option<MapArray>, ArrowError> {
    let entries = map.entries();
    let (Some(keys), Some(values)) = (
        entries.column(0).as_string_opt::<i32>(),
        entries.column(1).as_string_opt::<i32>(),
    ) else {
        return Ok(None);
    };
    let DataType::Map(field, ordered) = map.data_type() else {
        return Ok(None);
    };
    let rows = map.value_offsets();
    let ranges: Vec<(usize, usize)> = indices
        .iter()
        .map(|&i| {
            let i = i as usize;
            match (rows.get(i), rows.get(i + 1)) {
                // A null map's entries (if any) are not taken, as in arrow.
                (Some(&start), Some(_)) if map.is_null(i) => Ok((start as usize, start as usize)),
                (Some(&start), Some(&end)) => Ok((start as usize, end as usize)),
                _ => Err(ArrowError::InvalidArgumentError(format!(
                    "take index {i} out of bounds for {} rows",
                    map.len()
                ))),
            }
        })
        .collect::<Result<_, _>>()?;
    let mut offsets = Vec::with_capacity(ranges.len() + 1);
    offsets.push(0i32);
    let mut len = 0usize;
    for (start, end) in &ranges {
        len += end - start;
        offsets.push(offset(len)?);
    }
    // Rows that follow each other in `map` too (the flush's rows mostly
    // arrive in file order) are copied as one run.
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for &(start, end) in &ranges {
        match runs.last_mut() {
            Some(run) if run.1 == start => run.1 = end,
            _ if start == end => {}
            _ => runs.push((start, end)),
        }
    }
    let entries = StructArray::try_new(
        entries.fields().clone(),
        vec![
            Arc::new(take_text_ranges(keys, &runs, len)?),
            Arc::new(take_text_ranges(values, &runs, len)?),
        ],
        None,
    )?;
    let nulls = map
        .nulls()
        .map(|nulls| NullBuffer::from_iter(indices.iter().map(|&i| nulls.is_valid(i as usize))));
    MapArray::try_new(
        Arc::clone(field),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        entries,
        nulls,
        *ordered,
    )
    .map(Some)
}

/// The texts of `ranges` (runs of consecutive entries) of `texts`, one
/// after the other: `entries` texts in all.
fn take_text_ranges(
    texts: &StringArray,
    ranges: &[(usize, usize)],
    entries: usize,
) -> Result<StringArray, ArrowError> {
    let from = texts.value_offsets();
    let data = texts.value_data();
    let bytes: usize = ranges
        .iter()
        .map(|&(start, end)| (from[end] - from[start]) as usize)
        .sum();
    // Every offset below is at most `bytes`.
    offset(bytes)?;
    let mut offsets = Vec::with_capacity(entries + 1);
    offsets.push(0i32);
    let mut values = Vec::with_capacity(bytes);
    let mut nulls = texts
        .nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| (n, BooleanBufferBuilder::new(entries)));
    for &(start, end) in ranges {
        let shift = offset(values.len())? - from[start];
        values.extend_from_slice(&data[from[start] as usize..from[end] as usize]);
        offsets.extend(from[start + 1..=end].iter().map(|o| o + shift));
        if let Some((have, taken)) = &mut nulls {
            taken.append_buffer(&have.inner().slice(start, end - start));
        }
    }
    StringArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        values.into(),
        nulls.map(|(_, mut taken)| NullBuffer::new(taken.finish())),
    )
}

fn offset(n: usize) -> Result<i32, ArrowError> {
    i32::try_from(n).map_err(|_| ArrowError::OffsetOverflowError(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{MapBuilder, StringBuilder};
    use arrow::compute::take_record_batch;
    use arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    use crate::model::schema::attribute_map_type;

    /// A map per row: whether it is valid, and its entries (a `None` value
    /// is a null value). A null map may have entries, as arrow allows.
    type Rows = Vec<(bool, Vec<(String, Option<String>)>)>;

    fn map_array(rows: &Rows) -> ArrayRef {
        let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for (_, entries) in rows {
            for (k, v) in entries {
                b.keys().append_value(k);
                b.values().append_option(v.as_deref());
            }
            b.append(true).expect("map");
        }
        let (field, offsets, entries, _, ordered) = b.finish().into_parts();
        let nulls = NullBuffer::from_iter(rows.iter().map(|(valid, _)| *valid));
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        Arc::new(MapArray::try_new(field, offsets, entries, nulls, ordered).expect("map"))
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-zé.]{1,12}", "\\PC{0,40}"]
    }

    fn rows() -> impl Strategy<Value = Rows> {
        proptest::collection::vec(
            (
                proptest::bool::weighted(0.9),
                proptest::collection::vec((text(), proptest::option::weighted(0.8, text())), 0..6),
            ),
            1..60,
        )
    }

    proptest! {
        /// The same batch as arrow's `take_record_batch`: maps with null
        /// maps, null values, empty maps and non-ASCII texts, from a batch
        /// that is itself a slice, at any indices (repeats included), next
        /// to a column that arrow takes.
        #[test]
        fn maps_come_out_as_arrows_take_makes_them(
            rows in rows(),
            skip in 0usize..5,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..80),
        ) {
            let n = rows.len();
            let ids: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..n as u32));
            let map = map_array(&rows);
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::UInt32, false),
                Field::new("attributes", map.data_type().clone(), true),
            ]));
            let whole = RecordBatch::try_new(schema, vec![ids, map]).expect("batch");
            let skip = skip.min(n - 1);
            let batch = whole.slice(skip, n - skip);
            let indices = UInt32Array::from_iter_values(
                picks.iter().map(|p| p.index(batch.num_rows()) as u32),
            );
            let ours = take_rows(&batch, &indices).expect("ours");
            let arrows = take_record_batch(&batch, &indices).expect("arrow's");
            // Entries of null maps are left out, as arrow leaves them.
            prop_assert_eq!(
                ours.column(1).as_map().entries().len(),
                arrows.column(1).as_map().entries().len()
            );
            prop_assert_eq!(ours, arrows);
        }
    }

    /// The maps faasight writes (`attribute_map_type`) take the fast path;
    /// an index past the end is an error, as in arrow's take.
    #[test]
    fn attribute_maps_take_the_fast_path_and_bad_indices_are_errors() {
        let map = map_array(&vec![
            (true, vec![("k".into(), Some("v".into()))]),
            (true, vec![]),
        ]);
        assert_eq!(map.data_type(), &attribute_map_type());
        let taken = take_text_map(map.as_map(), &[1, 0, 0]).expect("takes");
        let taken = taken.expect("a text map");
        assert_eq!(taken.value_offsets(), &[0, 0, 1, 2]);
        assert!(take_text_map(map.as_map(), &[2]).is_err());
        assert!(
            take_rows(
                &RecordBatch::try_from_iter([("m", map)]).expect("batch"),
                &UInt32Array::from(vec![5])
            )
            .is_err()
        );
    }
}
