//! Exact `percentile_cont` that moves each value as few times as it can.
//!
//! An exact percentile keeps every value of a group until the end. With two
//! partitions DataFusion aggregates in two phases: each partition collects
//! its values per group, hands them on as a list per group, a hash
//! repartition splits the lists (and its coalescer concatenates them), and
//! the final phase gathers them again. DataFusion's own groups accumulator
//! pushes values one at a time, copies every list it is handed into a
//! growing vector, and sums all groups for its size after every batch.
//! [`ExactPercentile`] is that function with another groups accumulator,
//! [`PercentileGroups`], and nothing else changed (name, alias
//! `quantile_cont`, `WITHIN GROUP` syntax, types, state layout,
//! interpolation):
//!
//! - rows arrive in runs of one group (files are sorted by function): a
//!   long run is held as a slice of the arriving array, a short one is
//!   appended with one `extend_from_slice`;
//! - lists handed over by a partial phase are held the same way;
//! - what is held is copied once, when the group is evaluated (or its
//!   state emitted);
//! - its size is kept as a running count, not recomputed per batch;
//! - between two ranks, the upper value is the least of those above the
//!   lower one, found in one pass rather than by a second selection.
//!
//! Grouped by runs in one phase ([`crate::grouping`] plans it so), each
//! value is copied once in all: from the scan's arrays into the vector the
//! selection runs on.
//!
//! It serves `Float64` and `Float32` input; `Float16` goes to DataFusion's
//! accumulator unchanged. DataFusion's also panics when a partial phase
//! with many groups passes rows straight on as state (`convert_to_state`
//! expects one argument and is handed three); this one does not.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, ListArray, PrimitiveArray,
    RecordBatch,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Float32Type, Float64Type, Schema};
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_aggregate::percentile_cont::percentile_cont_udaf;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Documentation, EmitTo,
    GroupsAccumulator, Signature,
};
use datafusion::scalar::ScalarValue;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::accumulate::accumulate;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::nulls::filtered_null_mask;

/// DataFusion's `percentile_cont` with [`PercentileGroups`] as its groups
/// accumulator.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ExactPercentile {
    inner: Arc<AggregateUDF>,
}

impl ExactPercentile {
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(ExactPercentile {
            inner: percentile_cont_udaf(),
        })
    }
}

impl AggregateUDFImpl for ExactPercentile {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.accumulator(args)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        // DataFusion's accumulator validates the arguments (a literal
        // between 0 and 1) and serves the types this one does not.
        let theirs = self.inner.create_groups_accumulator(args.clone())?;
        Ok(match args.expr_fields[0].data_type() {
            DataType::Float64 => Box::new(PercentileGroups::<Float64Type>::new(percentile(&args)?)),
            DataType::Float32 => Box::new(PercentileGroups::<Float32Type>::new(percentile(&args)?)),
            _ => theirs,
        })
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.create_sliding_accumulator(args)
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.inner.simplify()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.supports_null_handling_clause()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.supports_within_group_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// The percentile argument (already validated by DataFusion), turned
/// around for `ORDER BY … DESC` as DataFusion does.
fn percentile(args: &AccumulatorArgs) -> Result<f64> {
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    let value = match args.exprs[1].evaluate(&empty)? {
        ColumnarValue::Scalar(ScalarValue::Float64(Some(p))) => p,
        ColumnarValue::Scalar(ScalarValue::Float32(Some(p))) => f64::from(p),
        other => {
            return Err(DataFusionError::Plan(format!(
                "percentile_cont: the percentile must be a literal, got {other:?}"
            )));
        }
    };
    let descending = args
        .order_bys
        .first()
        .is_some_and(|sort| sort.options.descending);
    Ok(if descending { 1.0 - value } else { value })
}

/// The float types served, with DataFusion's order and conversions.
pub trait Float: ArrowPrimitiveType + Send {
    fn total_cmp(a: &Self::Native, b: &Self::Native) -> Ordering;
    fn to_f64(value: Self::Native) -> f64;
    fn from_f64(value: f64) -> Self::Native;
}

impl Float for Float64Type {
    fn total_cmp(a: &f64, b: &f64) -> Ordering {
        a.total_cmp(b)
    }
    fn to_f64(value: f64) -> f64 {
        value
    }
    fn from_f64(value: f64) -> f64 {
        value
    }
}

impl Float for Float32Type {
    fn total_cmp(a: &f32, b: &f32) -> Ordering {
        a.total_cmp(b)
    }
    fn to_f64(value: f32) -> f64 {
        f64::from(value)
    }
    fn from_f64(value: f64) -> f32 {
        value as f32
    }
}

/// The values of one group: those copied here, and long runs of input rows
/// and lists handed over by a partial aggregate, held as slices of the
/// arrays they came in.
#[derive(Debug)]
struct Group<T: Float> {
    owned: Vec<T::Native>,
    held: Vec<PrimitiveArray<T>>,
}

impl<T: Float> Default for Group<T> {
    fn default() -> Self {
        Group {
            owned: Vec::new(),
            held: Vec::new(),
        }
    }
}

impl<T: Float> Group<T> {
    fn len(&self) -> usize {
        self.owned.len() + self.held.iter().map(Array::len).sum::<usize>()
    }

    /// Bytes this group accounts for: its vector's capacity, and for each
    /// array it holds a slice of, the values of the slice and the handle
    /// (the slice keeps the whole buffer alive; its other values are
    /// other runs, held by other groups, or short runs copied).
    fn bytes(&self) -> usize {
        self.owned.capacity() * size_of::<T::Native>()
            + self
                .held
                .iter()
                .map(|array| held_bytes::<T>(array.len()))
                .sum::<usize>()
    }

    /// Adds `len` values of `values` from `start`: held as a slice when the
    /// run is long and has no nulls, else copied without its nulls. Returns
    /// the bytes this adds to [`Group::bytes`].
    fn add(&mut self, values: &PrimitiveArray<T>, start: usize, len: usize) -> usize {
        if len >= HOLD_MIN && values.null_count() == 0 {
            self.held.push(values.slice(start, len));
            return held_bytes::<T>(len);
        }
        let before = self.owned.capacity();
        if values.null_count() == 0 {
            self.owned
                .extend_from_slice(&values.values()[start..start + len]);
        } else {
            self.owned.extend(values.slice(start, len).iter().flatten());
        }
        (self.owned.capacity() - before) * size_of::<T::Native>()
    }

    /// Every value in one vector (the held slices copied once).
    fn into_values(self) -> Vec<T::Native> {
        if self.held.is_empty() {
            return self.owned;
        }
        let mut values = self.owned;
        values.reserve_exact(self.held.iter().map(Array::len).sum());
        for array in &self.held {
            values.extend_from_slice(array.values());
        }
        values
    }
}

/// Runs and handed lists shorter than this are copied rather than held.
const HOLD_MIN: usize = 1024;

/// What holding `len` values of an array accounts for.
fn held_bytes<T: Float>(len: usize) -> usize {
    len * size_of::<T::Native>() + size_of::<PrimitiveArray<T>>()
}

/// Exact percentile per group over float values (see the module doc).
#[derive(Debug)]
pub struct PercentileGroups<T: Float> {
    percentile: f64,
    groups: Vec<Group<T>>,
    /// Sum of [`Group::bytes`] over `groups`.
    bytes: usize,
}

impl<T: Float> PercentileGroups<T> {
    pub fn new(percentile: f64) -> Self {
        PercentileGroups {
            percentile,
            groups: Vec::new(),
            bytes: 0,
        }
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Group<T>> {
        let taken = emit_to.take_needed(&mut self.groups);
        self.bytes -= taken.iter().map(Group::bytes).sum::<usize>();
        taken
    }
}

impl<T: Float> GroupsAccumulator for PercentileGroups<T> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let values = values[0].as_primitive::<T>();
        self.groups.resize_with(total_num_groups, Group::default);
        let groups = &mut self.groups;
        let mut grown = 0;
        if values.null_count() == 0 && opt_filter.is_none() {
            let mut start = 0;
            while start < group_indices.len() {
                let group = group_indices[start];
                let len = group_indices[start..]
                    .iter()
                    .take_while(|&&g| g == group)
                    .count();
                self.bytes += groups[group].add(values, start, len);
                start += len;
            }
        } else {
            accumulate(group_indices, values, opt_filter, |group, value| {
                let owned = &mut groups[group].owned;
                let before = owned.capacity();
                owned.push(value);
                grown += owned.capacity() - before;
            });
        }
        self.bytes += grown * size_of::<T::Native>();
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let lists = values[0].as_list::<i32>();
        self.groups.resize_with(total_num_groups, Group::default);
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            let list = lists.value(row);
            let list = list.as_primitive::<T>();
            // Short lists (one per row when the partial phase passed rows
            // on) cost less copied than held.
            self.bytes += self.groups[group].add(list, 0, list.len());
        }
        Ok(())
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.take(emit_to);
        let total = groups.iter().map(Group::len).sum();
        let mut offsets = Vec::with_capacity(groups.len() + 1);
        let mut flat = Vec::with_capacity(total);
        offsets.push(0i32);
        for group in &groups {
            flat.extend_from_slice(&group.owned);
            for array in &group.held {
                flat.extend_from_slice(array.values());
            }
            let end = i32::try_from(flat.len()).map_err(|_| {
                DataFusionError::Execution(
                    "percentile_cont: more than 2^31 values in one partial state".into(),
                )
            })?;
            offsets.push(end);
        }
        let list = ListArray::new(
            Arc::new(Field::new_list_field(T::DATA_TYPE, true)),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(PrimitiveArray::<T>::from_iter_values(flat)),
            None,
        );
        Ok(vec![Arc::new(list)])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let percentile = self.percentile;
        let results: PrimitiveArray<T> = self
            .take(emit_to)
            .into_iter()
            .map(|group| percentile_of::<T>(&mut group.into_values(), percentile))
            .collect();
        Ok(Arc::new(results))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Every row its own group: a one-value list, or null where the
        // value is null or filtered out.
        let values = values[0].as_primitive::<T>();
        let len = i32::try_from(values.len()).map_err(|_| {
            DataFusionError::Execution("percentile_cont: batch over 2^31 rows".into())
        })?;
        let keep = filtered_null_mask(opt_filter, values);
        let list = ListArray::new(
            Arc::new(Field::new_list_field(T::DATA_TYPE, true)),
            OffsetBuffer::new(ScalarBuffer::from((0..=len).collect::<Vec<i32>>())),
            Arc::new(PrimitiveArray::<T>::new(values.values().clone(), None)),
            keep,
        );
        Ok(vec![Arc::new(list)])
    }

    fn size(&self) -> usize {
        self.bytes + self.groups.capacity() * size_of::<Group<T>>()
    }
}

/// Exactly DataFusion's `percentile_cont` arithmetic: the value at
/// `p × (n − 1)` in total order, interpolated with the next one with the
/// fraction quantized to 1e-6.
fn percentile_of<T: Float>(values: &mut [T::Native], percentile: f64) -> Option<T::Native> {
    const PRECISION: f64 = 1_000_000.0;
    let cmp = T::total_cmp;
    match values.len() {
        0 => None,
        1 => Some(values[0]),
        _ if percentile == 0.0 => values.iter().copied().min_by(cmp),
        _ if percentile == 1.0 => values.iter().copied().max_by(cmp),
        len => {
            let index = percentile * (len - 1) as f64;
            let lower_index = index.floor() as usize;
            let upper_index = index.ceil() as usize;
            let (_, lower, above) = values.select_nth_unstable_by(lower_index, cmp);
            let lower = *lower;
            if lower_index == upper_index {
                return Some(lower);
            }
            // The next value in order is the least of those above: one pass
            // instead of DataFusion's second selection over every value.
            let upper = T::to_f64(above.iter().copied().min_by(cmp)?);
            let lower = T::to_f64(lower);
            let weight = ((index - lower_index as f64) * PRECISION) as usize as f64 / PRECISION;
            Some(T::from_f64(lower + (upper - lower) * weight))
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float32Array, Float64Array, Int64Array, StringArray};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// Four partitions of 3 batches: in two the groups come in long runs
    /// (like files sorted by function), in two they are interleaved; every
    /// 7th value is null, group `g-empty` has only nulls, one value is NaN.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("v", DataType::Float64, true),
            Field::new("i", DataType::Int64, false),
            Field::new("f", DataType::Float32, false),
            Field::new("keep", DataType::Boolean, true),
        ]));
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut row = 0u64;
        let partitions = (0..4)
            .map(|partition| {
                (0..3)
                    .map(|_| {
                        let n = 2_000;
                        let mut g = Vec::with_capacity(n);
                        let mut v = Vec::with_capacity(n);
                        let mut i = Vec::with_capacity(n);
                        let mut f = Vec::with_capacity(n);
                        let mut keep = Vec::with_capacity(n);
                        for k in 0..n {
                            row += 1;
                            let r = next();
                            let group = if partition < 2 {
                                k / 300
                            } else {
                                (r % 7) as usize
                            };
                            g.push(format!("g-{group}"));
                            let value = (r >> 11) as f64 / (1u64 << 40) as f64 * 1_000.0;
                            v.push(match row {
                                _ if row.is_multiple_of(7) => None,
                                1_234 => Some(f64::NAN),
                                _ => Some(value),
                            });
                            i.push((r % 10_000) as i64 - 5_000);
                            f.push(value as f32);
                            keep.push(if row.is_multiple_of(11) {
                                None
                            } else {
                                Some(!r.is_multiple_of(3))
                            });
                        }
                        if partition == 3 {
                            g[0] = "g-empty".into();
                            v[0] = None;
                        }
                        RecordBatch::try_new(
                            Arc::clone(&schema),
                            vec![
                                Arc::new(StringArray::from(g)),
                                Arc::new(Float64Array::from(v)),
                                Arc::new(Int64Array::from(i)),
                                Arc::new(Float32Array::from(f)),
                                Arc::new(BooleanArray::from(keep)),
                            ],
                        )
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        MemTable::try_new(schema, partitions).unwrap()
    }

    /// A context over [`table`], with DataFusion's `percentile_cont` or ours;
    /// `skip_partial` makes the partial phase pass rows on as state after
    /// its first batch (as it does for many groups).
    fn context(ours: bool, skip_partial: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(4);
        if skip_partial {
            let options = &mut config.options_mut().execution;
            options.skip_partial_aggregation_probe_rows_threshold = 1;
            options.skip_partial_aggregation_probe_ratio_threshold = 0.0;
        }
        let ctx = SessionContext::new_with_config(config);
        if ours {
            ctx.register_udaf(ExactPercentile::udaf());
        }
        ctx.register_table("t", Arc::new(table())).unwrap();
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    const QUERIES: &[&str] = &[
        "SELECT g, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY v) AS p99, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY v DESC) AS p50_desc, \
           percentile_cont(0.0) WITHIN GROUP (ORDER BY v) AS p0, \
           percentile_cont(0.9999) WITHIN GROUP (ORDER BY v) AS p9999, \
           percentile_cont(0.37) WITHIN GROUP (ORDER BY i) AS p37_int, \
           percentile_cont(0.25) WITHIN GROUP (ORDER BY f) AS p25_f32, \
           percentile_cont(0.9) WITHIN GROUP (ORDER BY v) FILTER (WHERE keep) AS p90_kept, \
           quantile_cont(v, 0.75) AS q75, \
           count(v) AS n \
         FROM t GROUP BY g ORDER BY g",
        "SELECT i % 500 AS k, percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY v) FILTER (WHERE keep) AS p95 \
         FROM t GROUP BY k ORDER BY k",
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY v) AS p99 FROM t",
    ];

    /// The same answers as DataFusion's accumulator; also when the partial
    /// phase passes rows on as state, where DataFusion's own panics ("one
    /// argument to merge_batch": it is handed the percentile and the ORDER
    /// BY column too), so that mode is compared with DataFusion's answer
    /// without it.
    #[tokio::test]
    async fn same_answers_as_datafusion_in_every_aggregation_mode() {
        let theirs = context(false, false);
        for skip_partial in [false, true] {
            let ours = context(true, skip_partial);
            for sql in QUERIES {
                let expected = run(&theirs, sql).await;
                assert_eq!(
                    run(&ours, sql).await,
                    expected,
                    "{sql} (skip partial: {skip_partial})"
                );
                assert!(expected.lines().count() > 4, "{expected}");
            }
        }
        // The runs above really went through the cases they are for.
        let by_group = run(&context(true, false), QUERIES[0]).await;
        assert!(by_group.contains("NaN"), "{by_group}");
        let empty = by_group.lines().find(|l| l.contains("g-empty")).unwrap();
        let cells: Vec<&str> = empty.split('|').map(str::trim).collect();
        assert_eq!(cells[cells.len() - 2], "0", "{empty}");
        assert_eq!(cells[2], "", "no percentile without values: {empty}");
        let analyzed = run(
            &context(true, true),
            &format!("EXPLAIN ANALYZE {}", QUERIES[1]),
        )
        .await;
        let skipped = analyzed
            .split("skipped_aggregation_rows=")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .unwrap_or_default();
        assert!(skipped.parse::<u64>().is_ok_and(|n| n > 0), "{analyzed}");
    }

    /// Against the textbook form (sort, index, interpolate), over lengths
    /// 1 to 200 with duplicates, signed zeros, infinities and NaN.
    #[test]
    fn percentile_matches_a_full_sort() {
        let specials = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1.5,
            1.5,
        ];
        let mut state = 42u64;
        for len in 1..=200usize {
            let values: Vec<f64> = (0..len)
                .map(|k| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    if k % 5 == 0 {
                        specials[(state >> 33) as usize % specials.len()]
                    } else {
                        (state >> 40) as f64 / 1_000.0 - 5_000.0
                    }
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            for p in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let index = p * (len - 1) as f64;
                let (lo, hi) = (
                    sorted[index.floor() as usize],
                    sorted[index.ceil() as usize],
                );
                let weight = ((index - index.floor()) * 1e6) as usize as f64 / 1e6;
                let expected = if index.floor() == index.ceil() {
                    lo
                } else {
                    lo + (hi - lo) * weight
                };
                let got = percentile_of::<Float64Type>(&mut values.clone(), p).unwrap();
                assert!(
                    got.total_cmp(&expected).is_eq(),
                    "len {len} p {p}: {got} != {expected}"
                );
            }
        }
        assert_eq!(percentile_of::<Float64Type>(&mut [], 0.5), None);
    }

    #[test]
    fn long_runs_and_handed_lists_are_held_without_copying() {
        let mut partial = PercentileGroups::<Float64Type>::new(0.5);
        let values: ArrayRef = Arc::new(Float64Array::from_iter_values((0..10_000).map(f64::from)));
        // Runs of 6,000 (group 0), 10 and 3,990 (group 1).
        let groups: Vec<usize> = (0..10_000).map(|i| usize::from(i >= 6_000)).collect();
        partial
            .update_batch(&[Arc::clone(&values)], &groups[..6_010], None, 2)
            .unwrap();
        // The short run is copied, the long ones are slices of the input.
        let input = values.as_primitive::<Float64Type>().values().as_ptr();
        assert_eq!(partial.groups[0].owned.len(), 0);
        assert_eq!(partial.groups[0].held.len(), 1);
        assert_eq!(partial.groups[0].held[0].values().as_ptr(), input);
        assert_eq!(partial.groups[1].owned.len(), 10);
        partial
            .update_batch(&[values.slice(6_010, 3_990)], &groups[6_010..], None, 2)
            .unwrap();
        assert_eq!(partial.groups[1].held.len(), 1);
        assert_eq!(
            partial.groups[1].held[0].values().as_ptr(),
            input.wrapping_add(6_010)
        );
        let slots = partial.groups.capacity() * size_of::<Group<Float64Type>>();
        assert_eq!(
            partial.size(),
            held_bytes::<Float64Type>(6_000)
                + held_bytes::<Float64Type>(3_990)
                + partial.groups[1].owned.capacity() * 8
                + slots
        );
        let state = partial.state(EmitTo::All).unwrap();
        let list = state[0].as_list::<i32>();
        assert_eq!(list.value_offsets(), &[0, 6_000, 10_000]);
        let mut second: Vec<f64> = list
            .value(1)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        second.sort_by(f64::total_cmp);
        assert!(second.iter().copied().eq((6_000..10_000).map(f64::from)));
        assert_eq!(partial.size(), 0);

        let mut last = PercentileGroups::<Float64Type>::new(0.5);
        last.merge_batch(&state, &[1, 0], 2).unwrap();
        last.merge_batch(&state, &[1, 1], 2).unwrap();
        // Long held lists are slices of the state array, not copies.
        let flat = state[0]
            .as_list::<i32>()
            .values()
            .as_primitive::<Float64Type>()
            .values()
            .as_ptr();
        assert_eq!(last.groups[1].held.len(), 3);
        assert_eq!(last.groups[1].held[0].values().as_ptr(), flat);
        let held = 20_000 * 8 + 4 * size_of::<PrimitiveArray<Float64Type>>();
        let slots = last.groups.capacity() * size_of::<Group<Float64Type>>();
        assert_eq!(last.size(), held + slots);
        // Short ones are copied.
        let mut small = PercentileGroups::<Float64Type>::new(0.5);
        small
            .update_batch(&[values.slice(0, 10)], &[0; 10], None, 1)
            .unwrap();
        last.merge_batch(&small.state(EmitTo::All).unwrap(), &[0], 2)
            .unwrap();
        assert_eq!(
            (last.groups[0].held.len(), last.groups[0].owned.len()),
            (1, 10)
        );
        assert!(last.size() >= held + slots + 10 * 8);

        let result = last.evaluate(EmitTo::First(1)).unwrap();
        // 6,000..10,000 and 0..10: the 2,005th and 2,006th of 4,010.
        assert_eq!(result.as_primitive::<Float64Type>().value(0), 7_994.5);
        let result = last.evaluate(EmitTo::All).unwrap();
        assert_eq!(result.as_primitive::<Float64Type>().value(0), 3_999.5);
        assert_eq!(last.size(), 0);
    }
}
