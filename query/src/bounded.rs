//! Functions that build as much as their arguments ask for, held to the
//! query's memory limit before they build it.
//!
//! DataFusion's memory pool counts what operators hold (aggregation,
//! sorting, joins), not what a scalar function returns. `range(1, 3e9)`,
//! `repeat('x', 3e9)` or `generate_series(a, b, interval '1 microsecond')`
//! therefore allocate whatever they are asked for: gigabytes from one
//! line of SQL, past `--query-max-memory`, until the kernel kills the
//! whole server. [`Bounded`] wraps each function whose result size is
//! set by a count in its arguments, works out from the arguments how
//! large the result of this batch will be, and refuses the call with
//! `ResourcesExhausted` when that is more than the query may hold. Calls
//! within the limit go to DataFusion's function unchanged.
//!
//! What this does not bound: results that grow by combining values, each
//! of them within the limit (`s || s || s`, `concat` of many columns,
//! `replace` with a long replacement, common table expressions that
//! double a value). Their growth is set by the query's text rather than
//! by one number, and is not checked.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::compute::kernels::length::length;
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, ExprSchema, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};
use datafusion::prelude::SessionContext;

use crate::memory::human_bytes;

/// The functions held to the limit, by the name DataFusion registers.
const BOUNDED: [(&str, Kind); 7] = [
    ("repeat", Kind::Repeat),
    ("lpad", Kind::Pad),
    ("rpad", Kind::Pad),
    ("range", Kind::Range),
    ("generate_series", Kind::Range),
    ("array_repeat", Kind::ArrayRepeat),
    ("array_resize", Kind::ArrayResize),
];

/// Replaces the session's functions of [`BOUNDED`] (and their aliases) by
/// ones that refuse to build more than `limit` bytes in one call.
pub fn register(ctx: &SessionContext, limit: usize) -> Result<()> {
    for (name, kind) in BOUNDED {
        let inner = ctx.udf(name)?;
        ctx.register_udf(ScalarUDF::new_from_impl(Bounded { inner, kind, limit }));
    }
    Ok(())
}

/// How a function's arguments set the size of its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `repeat(text, n)`: n copies of the text.
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`: n characters, up to 4 bytes each.
    Pad,
    /// `range`/`generate_series([start,] stop [, step])`: a list of
    /// integers, dates or timestamps.
    Range,
    /// `array_repeat(element, n)`: a list of n copies.
    ArrayRepeat,
    /// `array_resize(list, n [, value])`: a list of n elements.
    ArrayResize,
}

/// A DataFusion function that first checks the size its arguments ask for.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Bounded {
    inner: Arc<ScalarUDF>,
    kind: Kind,
    limit: usize,
}

impl Bounded {
    /// Refuses the call when the result would be over the limit.
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        if args.args.iter().any(|a| a.data_type().is_null()) {
            return Ok(());
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let bytes = match self.kind {
            Kind::Repeat => repeat_bytes(&arrays)?,
            Kind::Pad => pad_bytes(&arrays)?,
            Kind::Range => range_elements(&arrays)?.saturating_mul(8),
            Kind::ArrayRepeat => array_repeat_bytes(&arrays)?,
            Kind::ArrayResize => array_resize_bytes(&arrays)?,
        };
        if bytes > self.limit as u128 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() was asked to build {} in one call, more than the query's memory limit of {} (--query-max-memory)",
                self.inner.name(),
                human_bytes(usize::try_from(bytes).unwrap_or(usize::MAX)),
                human_bytes(self.limit),
            )));
        }
        Ok(())
    }
}

/// The values of an integer argument, as i64 (null where null).
fn counts(array: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let ints = cast(array, &DataType::Int64)?;
    Ok(ints.as_primitive::<Int64Type>().iter().collect())
}

/// The byte length of each value of a text or binary argument.
fn byte_lengths(array: &ArrayRef) -> Result<Vec<Option<i64>>> {
    counts(&length(array.as_ref())?)
}

/// Sum over rows of `count × size`, with negative and null counts as 0.
fn sum_products(counts: &[Option<i64>], size: impl Fn(usize) -> u128) -> u128 {
    counts.iter().enumerate().fold(0u128, |total, (row, n)| {
        let n = n.unwrap_or(0).max(0) as u128;
        total.saturating_add(n.saturating_mul(size(row)))
    })
}

fn repeat_bytes(arrays: &[ArrayRef]) -> Result<u128> {
    let (Some(text), Some(n)) = (arrays.first(), arrays.get(1)) else {
        return Ok(0);
    };
    let lengths = byte_lengths(text)?;
    Ok(sum_products(&counts(n)?, |row| {
        lengths[row].unwrap_or(0).max(0) as u128
    }))
}

fn pad_bytes(arrays: &[ArrayRef]) -> Result<u128> {
    let Some(n) = arrays.get(1) else {
        return Ok(0);
    };
    Ok(sum_products(&counts(n)?, |_| 4))
}

/// The bytes one element of `array` takes on average (at least 1).
fn average_element(array: &ArrayRef) -> u128 {
    let rows = array.len().max(1) as u128;
    (array.get_array_memory_size() as u128 / rows).max(1)
}

fn array_repeat_bytes(arrays: &[ArrayRef]) -> Result<u128> {
    let (Some(element), Some(n)) = (arrays.first(), arrays.get(1)) else {
        return Ok(0);
    };
    let each = average_element(element);
    Ok(sum_products(&counts(n)?, |_| each))
}

fn array_resize_bytes(arrays: &[ArrayRef]) -> Result<u128> {
    let (Some(list), Some(n)) = (arrays.first(), arrays.get(1)) else {
        return Ok(0);
    };
    let values = match list.data_type() {
        DataType::List(_) => Some(Arc::clone(list.as_list::<i32>().values())),
        DataType::LargeList(_) => Some(Arc::clone(list.as_list::<i64>().values())),
        DataType::FixedSizeList(..) => Some(Arc::clone(list.as_fixed_size_list().values())),
        _ => None,
    };
    let mut each = values.as_ref().map_or(8, average_element).max(8);
    if let Some(fill) = arrays.get(2) {
        each = each.max(average_element(fill));
    }
    Ok(sum_products(&counts(n)?, |_| each))
}

const NANOS_PER_HOUR: i128 = 3_600_000_000_000;

/// The fewest nanoseconds an interval step can move a date or timestamp,
/// negative for a step back: a day at least 23 hours (a daylight-saving
/// change), a month at least 28 days of those. A step whose parts point
/// different ways can move almost nothing either way, and is 0.
fn least_step_nanos(months: i32, days: i32, nanos: i64) -> i128 {
    let parts = [
        i128::from(months) * 28 * 23 * NANOS_PER_HOUR,
        i128::from(days) * 23 * NANOS_PER_HOUR,
        i128::from(nanos),
    ];
    if parts.iter().all(|p| *p >= 0) || parts.iter().all(|p| *p <= 0) {
        parts.iter().sum()
    } else {
        0
    }
}

/// An upper bound on the elements from `start` to `stop` by `step` (0: a
/// step of unknown direction, at least one unit): none when the step
/// points away from `stop`, as DataFusion answers.
fn elements(start: i128, stop: i128, step: i128) -> u128 {
    let span = stop - start;
    if step != 0 && span != 0 && span.signum() != step.signum() {
        return 0;
    }
    span.unsigned_abs() / step.unsigned_abs().max(1) + 1
}

/// Instants of a date or timestamp argument, in nanoseconds.
fn instants(array: &ArrayRef) -> Result<Vec<Option<i128>>> {
    const NANOS_PER_DAY: i128 = 24 * NANOS_PER_HOUR;
    match array.data_type() {
        DataType::Date32 | DataType::Date64 => {
            let days = cast(array, &DataType::Date32)?;
            Ok(days
                .as_primitive::<arrow::datatypes::Date32Type>()
                .iter()
                .map(|d| d.map(|d| i128::from(d) * NANOS_PER_DAY))
                .collect())
        }
        DataType::Timestamp(unit, _) => {
            let per = match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            let raw = cast(array, &DataType::Int64)?;
            Ok(raw
                .as_primitive::<Int64Type>()
                .iter()
                .map(|t| t.map(|t| i128::from(t) * per))
                .collect())
        }
        other => Err(DataFusionError::Plan(format!(
            "range bounds of type {other} cannot be sized"
        ))),
    }
}

/// An upper bound on the elements `range`/`generate_series` build in one
/// call, summed over the rows.
fn range_elements(arrays: &[ArrayRef]) -> Result<u128> {
    let Some(first) = arrays.first() else {
        return Ok(0);
    };
    let rows = first.len();
    // (start, stop, least step) per row, as i128 in one unit.
    let spans: Vec<Option<(i128, i128, i128)>> = match (first.data_type(), arrays.len()) {
        (DataType::Date32 | DataType::Date64 | DataType::Timestamp(..), 3) => {
            let start = instants(&arrays[0])?;
            let stop = instants(&arrays[1])?;
            let steps = arrays[2].as_primitive::<IntervalMonthDayNanoType>();
            (0..rows)
                .map(|row| {
                    let step = steps.is_valid(row).then(|| {
                        let (m, d, n) = IntervalMonthDayNanoType::to_parts(steps.value(row));
                        least_step_nanos(m, d, n)
                    });
                    Some((start[row]?, stop[row]?, step?))
                })
                .collect()
        }
        (_, 1) => counts(first)?
            .into_iter()
            .map(|stop| Some((0, i128::from(stop?), 1)))
            .collect(),
        (_, 2 | 3) => {
            let start = counts(&arrays[0])?;
            let stop = counts(&arrays[1])?;
            let step = match arrays.get(2) {
                Some(step) => counts(step)?,
                None => vec![Some(1); rows],
            };
            (0..rows)
                // A zero step is DataFusion's own error.
                .map(|row| {
                    let step = i128::from(step[row]?);
                    (step != 0).then_some(())?;
                    Some((i128::from(start[row]?), i128::from(stop[row]?), step))
                })
                .collect()
        }
        _ => return Ok(0),
    };
    Ok(spans
        .into_iter()
        .flatten()
        .fold(0u128, |total, (start, stop, step)| {
            total.saturating_add(elements(start, stop, step))
        }))
}

// Everything but `invoke_with_args` goes to DataFusion's function as is.
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.inner().display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
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

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let inner = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded {
            inner: Arc::new(inner),
            kind: self.kind,
            limit: self.limit,
        }))
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.inner().preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.inner().evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.inner().propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.inner().struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.inner().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.inner().placement(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn contexts() -> (SessionContext, SessionContext) {
        let plain = SessionContext::new();
        let ours = SessionContext::new();
        register(&ours, LIMIT).expect("register");
        (plain, ours)
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<String> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    /// Calls within the limit answer exactly what DataFusion's functions
    /// answer, for every bounded function and alias, on scalars, columns,
    /// nulls and negative counts.
    #[tokio::test]
    async fn calls_within_the_limit_answer_as_datafusion_does() {
        let (plain, ours) = contexts();
        for sql in [
            "SELECT repeat('ab', 3), repeat('x', -2), repeat(NULL, 4), repeat('y', NULL)",
            "SELECT repeat(s, n) FROM (VALUES ('a', 2), ('bc', 0), (NULL, 3), ('d', NULL)) t(s, n)",
            "SELECT lpad('7', 3, '0'), rpad('ab', 5), lpad('abcdef', 2), rpad('é', 4, 'ü')",
            "SELECT range(5), range(2, 9), range(10, 0, -3), range(1, 1), generate_series(1, 4)",
            "SELECT range(NULL, 5), generate_series(1, NULL), range(3, 1)",
            // Counts past the limit, in the direction the step does not go.
            "SELECT range(100000000, 0), range(-100000000), generate_series(0, 100000000, -1)",
            "SELECT generate_series(DATE '2100-01-01', DATE '2000-01-01', INTERVAL '1 day')",
            "SELECT cardinality(range(1, 100000)), cardinality(generate_series(-50000, 50000, 7))",
            "SELECT range(DATE '2024-02-27', DATE '2024-03-02', INTERVAL '1 day')",
            "SELECT cardinality(generate_series(DATE '2000-01-01', DATE '2100-01-01', INTERVAL '1 day'))",
            "SELECT generate_series(TIMESTAMP '2026-01-31 00:00:00', TIMESTAMP '2026-06-01 00:00:00', INTERVAL '1 month')",
            "SELECT cardinality(range(TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-02 00:00:00', INTERVAL '10 seconds'))",
            "SELECT array_repeat(1, 3), array_repeat('ab', 2), list_repeat(make_array(1, 2), 2), array_repeat(1, -1)",
            "SELECT array_resize(make_array(1, 2, 3), 5), array_resize(make_array(1, 2, 3), 2), list_resize(make_array('a'), 3, 'z')",
            "SELECT cardinality(array_repeat(n, n)) FROM (VALUES (1), (100), (1000)) t(n)",
        ] {
            let want = run(&plain, sql).await.expect(sql);
            let got = run(&ours, sql).await.expect(sql);
            assert_eq!(got, want, "{sql}");
        }
    }

    /// Calls whose arguments ask for more than the limit are refused with
    /// an error that names the function and the limit; DataFusion's own
    /// functions build each of them.
    #[tokio::test]
    async fn calls_over_the_limit_are_refused_before_they_build() {
        let (plain, ours) = contexts();
        for (sql, function) in [
            ("SELECT length(repeat('ab', 600000))", "repeat"),
            // Ten rows of 120 kB each: no one row is over, their batch is.
            (
                "SELECT length(repeat(s, 30000)) FROM (VALUES ('abcd'), ('abcd'), ('abcd'), ('abcd'), ('abcd'), ('abcd'), ('abcd'), ('abcd'), ('abcd'), ('abcd')) t(s)",
                "repeat",
            ),
            ("SELECT length(lpad('x', 300000))", "lpad"),
            ("SELECT length(rpad('x', 300000, 'yz'))", "rpad"),
            ("SELECT cardinality(range(200000))", "range"),
            ("SELECT cardinality(range(-100000, 100000, 1))", "range"),
            (
                "SELECT cardinality(generate_series(1, 200000))",
                "generate_series",
            ),
            (
                "SELECT cardinality(generate_series(TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-03 00:00:00', INTERVAL '1 second'))",
                "generate_series",
            ),
            (
                "SELECT cardinality(range(DATE '1000-01-01', DATE '9000-01-01', INTERVAL '1 day'))",
                "range",
            ),
            (
                "SELECT cardinality(array_repeat(1, 200000))",
                "array_repeat",
            ),
            (
                "SELECT cardinality(list_repeat('abcdefgh', 100000))",
                "array_repeat",
            ),
            (
                "SELECT cardinality(array_resize(make_array(1, 2), 200000))",
                "array_resize",
            ),
        ] {
            run(&plain, sql).await.expect(sql);
            let err = run(&ours, sql).await.expect_err(sql).to_string();
            assert!(
                err.contains(&format!("{function}() was asked to build"))
                    && err.contains("more than the query's memory limit of 1.0 MiB"),
                "{sql}: {err}"
            );
        }
    }

    /// Counts that would take the server's memory many times over are
    /// refused as quickly, without an overflow in the arithmetic.
    #[tokio::test]
    async fn absurd_counts_are_refused() {
        let (_, ours) = contexts();
        for sql in [
            "SELECT repeat('x', 9223372036854775807)",
            "SELECT cardinality(range(-9223372036854775808, 9223372036854775807))",
            "SELECT cardinality(generate_series(TIMESTAMP '1700-01-01 00:00:00', TIMESTAMP '2200-01-01 00:00:00', INTERVAL '1 nanosecond'))",
            "SELECT cardinality(range(DATE '2000-01-01', DATE '2001-01-01', INTERVAL '1 month -30 days'))",
            "SELECT array_repeat(repeat('x', 1000), 9223372036854775807)",
        ] {
            let err = run(&ours, sql).await.expect_err(sql).to_string();
            assert!(err.contains("was asked to build"), "{sql}: {err}");
        }
    }

    #[test]
    fn a_step_moves_at_least_its_shortest_reading() {
        let hour = NANOS_PER_HOUR;
        assert_eq!(least_step_nanos(0, 0, 5), 5);
        assert_eq!(least_step_nanos(0, 1, 0), 23 * hour);
        assert_eq!(least_step_nanos(1, 0, 0), 28 * 23 * hour);
        assert_eq!(least_step_nanos(0, -2, -10), -(46 * hour + 10));
        assert_eq!(least_step_nanos(1, -30, 0), 0);
        assert_eq!(least_step_nanos(0, 0, 0), 0);
    }

    #[test]
    fn a_range_counts_its_elements_in_the_step_direction_only() {
        assert_eq!(elements(0, 10, 1), 11);
        assert_eq!(elements(0, 10, 3), 4);
        assert_eq!(elements(10, 0, -3), 4);
        assert_eq!(elements(10, 0, 1), 0);
        assert_eq!(elements(0, 10, -1), 0);
        assert_eq!(elements(5, 5, 1), 1);
        // A step of unknown direction counts both ways.
        assert_eq!(elements(10, 0, 0), 11);
        assert_eq!(elements(0, 10, 0), 11);
    }
}
