//! Functions held to the query's memory limit: what their arguments ask
//! them to build is checked before they build it, and what they built
//! after.
//!
//! DataFusion's memory pool counts what operators hold (aggregation,
//! sorting, joins), not what a scalar function returns. `range(1, 3e9)`,
//! `repeat('x', 3e9)` or `generate_series(a, b, interval '1 microsecond')`
//! therefore allocate whatever they are asked for, and functions that
//! multiply their input do so again at every level of nesting:
//! `replace(replace(repeat('x', 1e6), 'x', repeat('y', 1000)), 'y', …)`
//! asked for a terabyte from one line of SQL and had the kernel kill the
//! whole server, ingest included.
//!
//! Every call in a plan is wrapped in [`Bounded`] by
//! [`crate::bounded_plan`], which rewrites plans:
//! - a call on constants alone (computed while the query is planned) may
//!   build at most [`CONSTANT_LIMIT`] (16 MiB), whatever the query's limit;
//! - **before the call**, the functions whose result size is set by their
//!   arguments (see [`Kind`]) work it out, summed over the batch, and a
//!   call over `--query-max-memory` is refused with `ResourcesExhausted`;
//! - **after the call**, any result over that limit is dropped and the
//!   call refused, so growth by a bounded factor (`encode(…, 'hex')`,
//!   `upper`, `translate`) stops at its first step past the limit;
//! - a result of 16 KiB or more is also refused where building it would
//!   leave less than a tenth of the machine's memory (or its cgroup's)
//!   available: many calls, each within the limit, in one query
//!   (`repeat('x', 1e9)` thirty times over) add up where no one call can
//!   see them, and this keeps the kernel from killing the server for them;
//! - `levenshtein` compares every character of one string with every one
//!   of the other in one uninterruptible call; one call may compare at
//!   most [`MAX_LEVENSHTEIN_CELLS`] pairs.
//!
//! The `||` operator is held to the same limits there.
//!
//! Calls within the limits go to DataFusion's function unchanged. The
//! few functions that DataFusion's own optimizations recognise by type
//! ([`UNWRAPPED`]) are left as they are: none of them builds more than its
//! arguments hold.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::compute::kernels::length::length;
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, ExprSchema, Result, ScalarValue};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};

use crate::memory::human_bytes;

/// Functions left unwrapped: DataFusion's optimizations and its Parquet
/// reader find them (or their arguments) by type, and none builds more
/// than its arguments hold.
const UNWRAPPED: [&str; 7] = [
    "get_field",
    "named_struct",
    "struct",
    "log",
    "power",
    "input_file_name",
    "file_row_index",
];

/// The functions whose result size their arguments set, by the name
/// DataFusion registers.
const SIZED: [(&str, Kind); 21] = [
    ("repeat", Kind::Repeat),
    ("lpad", Kind::Pad),
    ("rpad", Kind::Pad),
    ("range", Kind::Range),
    ("generate_series", Kind::Range),
    ("array_repeat", Kind::ArrayRepeat),
    ("array_resize", Kind::ArrayResize),
    ("replace", Kind::Replace),
    ("regexp_replace", Kind::RegexpReplace),
    ("concat", Kind::Sum),
    ("concat_ws", Kind::ConcatWs),
    ("make_array", Kind::Sum),
    ("array_concat", Kind::Sum),
    ("array_append", Kind::Sum),
    ("array_prepend", Kind::Sum),
    ("overlay", Kind::Sum),
    ("array_to_string", Kind::ArrayToString),
    ("array_replace", Kind::ArrayReplace),
    ("array_replace_n", Kind::ArrayReplace),
    ("array_replace_all", Kind::ArrayReplace),
    ("levenshtein", Kind::Levenshtein),
];

/// Character pairs one `levenshtein` call may compare: about a second of
/// one core, during which the query cannot be stopped.
pub const MAX_LEVENSHTEIN_CELLS: u128 = 1 << 30;

/// Bytes a call on constants alone may build. Its value is built while
/// the query is planned and kept in the plan, and DataFusion writes it
/// into the names of the expressions around it: one value of 953 MB took
/// 50 s and 6 GB to plan, and planning cannot be interrupted.
pub const CONSTANT_LIMIT: usize = 16 << 20;

/// Results smaller than this are not checked against the server's memory.
const SMALL_RESULT: usize = 16 << 10;

/// The limits a session's functions are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Bytes one call may build (`--query-max-memory`).
    pub query: usize,
}

/// The `||` operator as a function held to `limits` (see
/// [`crate::bounded_plan`]).
pub fn concat_operator(limits: Limits) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(Bounded {
        inner: Arc::new(ScalarUDF::new_from_impl(
            crate::bounded_plan::ConcatOperator::new(),
        )),
        kind: Kind::Sum,
        limits,
    }))
}

/// Whether `func` is neither held to limits already nor one of
/// [`UNWRAPPED`].
pub fn is_unbound(func: &ScalarUDF) -> bool {
    !(UNWRAPPED.contains(&func.name()) || func.inner().is::<Bounded>())
}

/// `func` held to `limits`; `None` when it is already, or is one of
/// [`UNWRAPPED`].
pub fn bounded(func: &Arc<ScalarUDF>, limits: Limits) -> Option<Arc<ScalarUDF>> {
    if !is_unbound(func) {
        return None;
    }
    let kind = SIZED
        .iter()
        .find(|(name, _)| *name == func.name())
        .map_or(Kind::Result, |(_, kind)| *kind);
    Some(Arc::new(ScalarUDF::new_from_impl(Bounded {
        inner: Arc::clone(func),
        kind,
        limits,
    })))
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
    /// `replace(text, from, to)`: `to` once for each `from` found.
    Replace,
    /// `regexp_replace(text, pattern, replacement [, flags])`: the
    /// replacement, its groups expanded, once for each match.
    RegexpReplace,
    /// `concat`, `make_array`, `array_concat`, …: their arguments together.
    Sum,
    /// `concat_ws(separator, …)`: the arguments and a separator between each.
    ConcatWs,
    /// `array_to_string(list, separator [, null])`: each element as text,
    /// and a separator after each.
    ArrayToString,
    /// `array_replace[_n|_all](list, from, to …)`: `to` for each element.
    ArrayReplace,
    /// `levenshtein(a, b)`: a time, not a size (see the module doc).
    Levenshtein,
    /// Every other function: only its result is checked.
    Result,
}

/// A DataFusion function held to a session's [`Limits`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Bounded {
    inner: Arc<ScalarUDF>,
    kind: Kind,
    limits: Limits,
}

/// One argument of a call: a value for every row, or one for all of them
/// (a scalar, kept as one row and never expanded).
struct Arg {
    values: ArrayRef,
    scalar: bool,
}

impl Arg {
    fn of(value: &ColumnarValue) -> Result<Self> {
        Ok(match value {
            ColumnarValue::Array(values) => Arg {
                values: Arc::clone(values),
                scalar: false,
            },
            ColumnarValue::Scalar(value) => Arg {
                values: value.to_array()?,
                scalar: true,
            },
        })
    }

    /// The index of `row`'s value.
    fn index(&self, row: usize) -> usize {
        if self.scalar { 0 } else { row }
    }

    /// The bytes of the argument over `rows` rows (a scalar once per row).
    fn bytes(&self, rows: usize) -> u128 {
        let one = slice_bytes(&self.values) as u128;
        if self.scalar {
            one.saturating_mul(rows as u128)
        } else {
            one
        }
    }
}

/// Per-row values of an argument.
struct PerRow<T> {
    values: Vec<Option<T>>,
    scalar: bool,
}

impl<T: Copy> PerRow<T> {
    fn get(&self, row: usize) -> Option<T> {
        let index = if self.scalar { 0 } else { row };
        self.values.get(index).copied().flatten()
    }

    /// The largest value over the rows (`None` when all are null).
    fn max(&self) -> Option<T>
    where
        T: Ord,
    {
        self.values.iter().flatten().copied().max()
    }
}

/// The bytes an array's own rows take (not the whole of buffers it may
/// share with a larger array it was sliced from).
fn slice_bytes(array: &ArrayRef) -> usize {
    array
        .to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| array.get_array_memory_size())
}

/// The bytes a function's result takes: its buffers whole, at most the
/// memory it holds (cheap: no allocation), and only its own rows when
/// that is over `limit`, as a result sliced from a larger array would be.
fn result_bytes(value: &ColumnarValue, limit: usize) -> usize {
    match value {
        ColumnarValue::Array(array) => match array.get_array_memory_size() {
            whole if whole > limit => slice_bytes(array),
            whole => whole,
        },
        ColumnarValue::Scalar(value) => value.size(),
    }
}

impl Bounded {
    /// Refuses the call when its arguments ask for more than the limits.
    fn check(&self, args: &ScalarFunctionArgs, constant: bool) -> Result<()> {
        // A null argument makes a null result, but for the functions that
        // join their arguments (a null one adds nothing).
        let joins = matches!(self.kind, Kind::Sum | Kind::ConcatWs);
        if self.kind == Kind::Result
            || (!joins && args.args.iter().any(|a| a.data_type().is_null()))
        {
            return Ok(());
        }
        let arrays = args.args.iter().map(Arg::of).collect::<Result<Vec<_>>>()?;
        // A call on scalars alone answers one value.
        let rows = if arrays.iter().all(|a| a.scalar) {
            1
        } else {
            args.number_rows
        };
        let limit = self.limit(constant) as u128;
        let bytes = match self.kind {
            Kind::Repeat => repeat_bytes(&arrays, rows)?,
            Kind::Pad => pad_bytes(&arrays, rows)?,
            Kind::Range => range_elements(&arrays, rows)?.saturating_mul(8),
            Kind::ArrayRepeat => array_repeat_bytes(&arrays, rows)?,
            Kind::ArrayResize => array_resize_bytes(&arrays, rows)?,
            Kind::Replace => replace_bytes(&arrays, rows, limit)?,
            Kind::RegexpReplace => regexp_replace_bytes(&arrays, rows, limit)?,
            Kind::Sum | Kind::ConcatWs => {
                let sizes: Vec<u128> = arrays.iter().map(|a| a.bytes(rows)).collect();
                joined_bytes(self.kind, &sizes)
            }
            Kind::ArrayToString => array_to_string_bytes(&arrays, rows)?,
            Kind::ArrayReplace => array_replace_bytes(&arrays, rows),
            Kind::Levenshtein => {
                let cells = levenshtein_cells(&arrays, rows)?;
                if cells > MAX_LEVENSHTEIN_CELLS {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "levenshtein() was asked to compare {cells} pairs of characters in one call, more than {MAX_LEVENSHTEIN_CELLS}: a call that cannot be stopped once it runs"
                    )));
                }
                0
            }
            Kind::Result => 0,
        };
        if bytes > limit {
            // The matches are counted only until the total is over.
            let (what, shown) = if matches!(self.kind, Kind::Replace | Kind::RegexpReplace) {
                ("was asked to build over", limit)
            } else {
                ("was asked to build", bytes)
            };
            return Err(self.over_limit(what, shown, constant));
        }
        self.check_machine(usize::try_from(bytes).unwrap_or(usize::MAX))
    }

    /// What one call may build: the query's limit, and at most
    /// [`CONSTANT_LIMIT`] for a call on constants alone.
    fn limit(&self, constant: bool) -> usize {
        if constant {
            self.limits.query.min(CONSTANT_LIMIT)
        } else {
            self.limits.query
        }
    }

    /// Refuses a result over the limits, once it is built.
    fn check_result(&self, result: &ColumnarValue, constant: bool) -> Result<()> {
        let limit = self.limit(constant);
        let bytes = result_bytes(result, limit);
        if bytes > limit {
            return Err(self.over_limit("built", bytes as u128, constant));
        }
        self.check_machine(bytes)
    }

    /// Refuses `bytes` (when not small) where building them would leave
    /// less than a tenth of the machine's memory available.
    fn check_machine(&self, bytes: usize) -> Result<()> {
        if bytes < SMALL_RESULT {
            return Ok(());
        }
        match memory_before(bytes) {
            Some(memory) if memory.too_low_for(bytes) => {
                Err(DataFusionError::ResourcesExhausted(format!(
                    "{} was refused {}: {} of the machine's {} is available, and a tenth is kept",
                    self.subject(),
                    human_bytes(bytes),
                    human_bytes(memory.available),
                    human_bytes(memory.total),
                )))
            }
            _ => Ok(()),
        }
    }

    /// The function as errors name it: `repeat()`, or `the || operator`.
    fn subject(&self) -> String {
        let name = self.inner.name();
        if name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            format!("{name}()")
        } else {
            format!("the {name} operator")
        }
    }

    fn over_limit(&self, what: &str, bytes: u128, constant: bool) -> DataFusionError {
        let bytes = human_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
        if self.limit(constant) < self.limits.query {
            DataFusionError::ResourcesExhausted(format!(
                "{} {what} {bytes} from constants, more than the {} a value computed while the query is planned may take",
                self.subject(),
                human_bytes(CONSTANT_LIMIT),
            ))
        } else {
            over_query_limit(
                format!("{} {what} {bytes} in one call", self.subject()),
                self.limits.query,
            )
        }
    }
}

/// `what`, refused for being over the query's limit of `limit` bytes.
pub(crate) fn over_query_limit(what: String, limit: usize) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{what}, more than the query's memory limit of {} (--query-max-memory)",
        human_bytes(limit),
    ))
}

/// How long a reading of the machine's memory stands for (a reading
/// takes about 7 µs; what is built meanwhile is counted on top).
const MEMORY_READING: Duration = Duration::from_millis(10);

/// The last reading of the machine's memory and what functions have
/// built since, shared by all sessions.
static MACHINE: Machine = Machine {
    read_at_nanos: AtomicU64::new(0),
    available: AtomicUsize::new(0),
    total: AtomicUsize::new(0),
    built_since: AtomicUsize::new(0),
};

struct Machine {
    /// When the reading was taken, in nanoseconds after [`epoch`] (0:
    /// never).
    read_at_nanos: AtomicU64,
    available: AtomicUsize,
    total: AtomicUsize,
    built_since: AtomicUsize,
}

/// Memory of the machine, or of the cgroup the server runs in where that
/// has a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Memory {
    available: usize,
    total: usize,
}

impl Memory {
    /// Whether building `bytes` more would leave less than a tenth of the
    /// memory available.
    fn too_low_for(self, bytes: usize) -> bool {
        self.available.saturating_sub(bytes) < self.total / RESERVED_PART
    }
}

/// The part of the machine's memory functions leave available: 1/10.
const RESERVED_PART: usize = 10;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The machine's memory as it was last read (at most [`MEMORY_READING`]
/// ago), less all that functions built since, frees not counted; then
/// counts `bytes` as built. `None` where `/proc` does not tell it.
fn memory_before(bytes: usize) -> Option<Memory> {
    let now = u64::try_from(epoch().elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let read_at = MACHINE.read_at_nanos.load(Ordering::Relaxed);
    if read_at == 0 || now.saturating_sub(read_at) > MEMORY_READING.as_nanos() as u64 {
        let memory = read_memory()?;
        MACHINE.available.store(memory.available, Ordering::Relaxed);
        MACHINE.total.store(memory.total, Ordering::Relaxed);
        MACHINE.built_since.store(0, Ordering::Relaxed);
        MACHINE.read_at_nanos.store(now, Ordering::Relaxed);
    }
    let built = MACHINE.built_since.fetch_add(bytes, Ordering::Relaxed);
    Some(Memory {
        available: MACHINE
            .available
            .load(Ordering::Relaxed)
            .saturating_sub(built),
        total: MACHINE.total.load(Ordering::Relaxed),
    })
}

/// `MemAvailable` and `MemTotal` of `/proc/meminfo`, or the cgroup's
/// (v2) limit and use when it has a lower limit.
fn read_memory() -> Option<Memory> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<usize> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    };
    let machine = Memory {
        available: field("MemAvailable:")?,
        total: field("MemTotal:")?,
    };
    let cgroup = |file: &str| -> Option<usize> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{file}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(match (cgroup("memory.max"), cgroup("memory.current")) {
        (Some(max), Some(current)) if max < machine.total => Memory {
            available: max.saturating_sub(current).min(machine.available),
            total: max,
        },
        _ => machine,
    })
}

/// The values of an integer argument, as i64 (null where null).
fn counts(arg: &Arg) -> Result<PerRow<i64>> {
    let ints = cast(&arg.values, &DataType::Int64)?;
    Ok(PerRow {
        values: ints.as_primitive::<Int64Type>().iter().collect(),
        scalar: arg.scalar,
    })
}

/// The byte length of each value of a text or binary argument.
fn byte_lengths(arg: &Arg) -> Result<PerRow<i64>> {
    counts(&Arg {
        values: length(arg.values.as_ref())?,
        scalar: arg.scalar,
    })
}

/// The byte length of `row`'s value, 0 when null.
fn len_at(lengths: &PerRow<i64>, row: usize) -> u128 {
    lengths.get(row).unwrap_or(0).max(0) as u128
}

/// Sum over rows of `count × size`, with negative and null counts as 0.
fn sum_products(rows: usize, counts: &PerRow<i64>, size: impl Fn(usize) -> u128) -> u128 {
    (0..rows).fold(0u128, |total, row| {
        let n = counts.get(row).unwrap_or(0).max(0) as u128;
        total.saturating_add(n.saturating_mul(size(row)))
    })
}

fn repeat_bytes(arrays: &[Arg], rows: usize) -> Result<u128> {
    let (Some(text), Some(n)) = (arrays.first(), arrays.get(1)) else {
        return Ok(0);
    };
    let lengths = byte_lengths(text)?;
    Ok(sum_products(rows, &counts(n)?, |row| len_at(&lengths, row)))
}

fn pad_bytes(arrays: &[Arg], rows: usize) -> Result<u128> {
    let Some(n) = arrays.get(1) else {
        return Ok(0);
    };
    Ok(sum_products(rows, &counts(n)?, |_| 4))
}

/// The bytes one element of `array` takes on average (at least 1).
fn average_element(array: &ArrayRef) -> u128 {
    let rows = array.len().max(1) as u128;
    (slice_bytes(array) as u128 / rows).max(1)
}

fn array_repeat_bytes(arrays: &[Arg], rows: usize) -> Result<u128> {
    let (Some(element), Some(n)) = (arrays.first(), arrays.get(1)) else {
        return Ok(0);
    };
    let each = average_element(&element.values);
    Ok(sum_products(rows, &counts(n)?, |_| each))
}

/// The values under a list, one level down.
fn list_values(list: &ArrayRef) -> Option<ArrayRef> {
    match list.data_type() {
        DataType::List(_) => Some(Arc::clone(list.as_list::<i32>().values())),
        DataType::LargeList(_) => Some(Arc::clone(list.as_list::<i64>().values())),
        DataType::FixedSizeList(..) => Some(Arc::clone(list.as_fixed_size_list().values())),
        _ => None,
    }
}

fn array_resize_bytes(arrays: &[Arg], rows: usize) -> Result<u128> {
    let (Some(list), Some(n)) = (arrays.first(), arrays.get(1)) else {
        return Ok(0);
    };
    let values = list_values(&list.values);
    let mut each = values.as_ref().map_or(8, average_element).max(8);
    if let Some(fill) = arrays.get(2) {
        each = each.max(average_element(&fill.values));
    }
    Ok(sum_products(rows, &counts(n)?, |_| each))
}

/// `row`'s value of a text argument.
fn text_at(arg: &Arg, row: usize) -> Option<&str> {
    let values = &arg.values;
    let index = arg.index(row);
    if values.is_null(index) {
        return None;
    }
    match values.data_type() {
        DataType::Utf8 => Some(values.as_string::<i32>().value(index)),
        DataType::LargeUtf8 => Some(values.as_string::<i64>().value(index)),
        DataType::Utf8View => Some(values.as_string_view().value(index)),
        _ => None,
    }
}

/// `replace(text, from, to)`. First a bound from the lengths alone (every
/// possible match replaced); only when that is over `limit` are the
/// matches counted.
fn replace_bytes(arrays: &[Arg], rows: usize, limit: u128) -> Result<u128> {
    let [text, from, to] = arrays else {
        return Ok(0);
    };
    let (text_len, from_len, to_len) =
        (byte_lengths(text)?, byte_lengths(from)?, byte_lengths(to)?);
    let bound = |row: usize, matches: u128| {
        len_at(&text_len, row).saturating_add(matches.saturating_mul(len_at(&to_len, row)))
    };
    // An empty `from` matches before every character and at the end.
    let most_matches = |row: usize| len_at(&text_len, row) / len_at(&from_len, row).max(1) + 1;
    let rough = (0..rows).fold(0u128, |t, row| {
        t.saturating_add(bound(row, most_matches(row)))
    });
    if rough <= limit {
        return Ok(rough);
    }
    // Counted until the total is over the limit, which is as good an
    // answer as the whole count.
    let mut total = 0u128;
    for row in 0..rows {
        total = total.saturating_add(len_at(&text_len, row));
        let each = len_at(&to_len, row).max(1);
        let room = limit.saturating_sub(total) / each + 1;
        let matches = match (text_at(text, row), text_at(from, row)) {
            (Some(t), Some("")) => t.chars().take(room as usize).count() as u128 + 1,
            (Some(t), Some(f)) => t.matches(f).take(room as usize).count() as u128,
            _ => 0,
        };
        total = total.saturating_add(matches.saturating_mul(len_at(&to_len, row)));
        if total > limit {
            break;
        }
    }
    Ok(total)
}

/// DataFusion's reading of `\1` (Postgres) as `${1}` (the regex crate).
fn rust_replacement(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len());
    let mut rest = replacement;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let slashes = if after.starts_with("\\\\") { 2 } else { 1 };
        let digits: String = after[slashes..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if digits.is_empty() {
            out.push('\\');
            rest = &after[1..];
        } else {
            out.push_str(&format!("${{{digits}}}"));
            rest = &after[slashes + digits.len()..];
        }
    }
    out.push_str(rest);
    out
}

/// `regexp_replace(text, pattern, replacement [, flags])`. First a bound
/// from the lengths alone (a match at every position, each group the
/// whole text); only when that is over `limit` are the matches found and
/// their replacements measured, as DataFusion builds them.
fn regexp_replace_bytes(arrays: &[Arg], rows: usize, limit: u128) -> Result<u128> {
    let (Some(text), Some(pattern), Some(replacement)) =
        (arrays.first(), arrays.get(1), arrays.get(2))
    else {
        return Ok(0);
    };
    let flags = arrays.get(3);
    let text_len = byte_lengths(text)?;
    let rough = (0..rows).fold(0u128, |total, row| {
        let len = len_at(&text_len, row);
        let Some(r) = text_at(replacement, row) else {
            return total.saturating_add(len);
        };
        let groups = r.matches(['$', '\\']).count() as u128;
        let each = (r.len() as u128).saturating_add(groups.saturating_mul(len));
        total.saturating_add(len.saturating_add((len + 1).saturating_mul(each)))
    });
    if rough <= limit {
        return Ok(rough);
    }
    let mut compiled: Option<((String, String), regex::Regex)> = None;
    let mut expanded = String::new();
    let mut total = 0u128;
    for row in 0..rows {
        let (Some(t), Some(p), Some(r)) = (
            text_at(text, row),
            text_at(pattern, row),
            text_at(replacement, row),
        ) else {
            continue;
        };
        let f = flags.and_then(|f| text_at(f, row)).unwrap_or("");
        let key = (p.to_string(), f.to_string());
        if compiled.as_ref().is_none_or(|(k, _)| *k != key) {
            let rest = f.replace('g', "");
            let source = if rest.is_empty() {
                p.to_string()
            } else {
                format!("(?{rest}){p}")
            };
            // A pattern DataFusion cannot compile is its own error.
            let Ok(re) = regex::Regex::new(&source) else {
                return Ok(0);
            };
            compiled = Some((key, re));
        }
        let Some((_, re)) = compiled.as_ref() else {
            continue;
        };
        let replacement = rust_replacement(r);
        let limit_matches = if f.contains('g') { usize::MAX } else { 1 };
        total = total.saturating_add(t.len() as u128);
        for captures in re.captures_iter(t).take(limit_matches) {
            expanded.clear();
            captures.expand(&replacement, &mut expanded);
            total = total.saturating_add(expanded.len() as u128);
            if total > limit {
                return Ok(total);
            }
        }
    }
    Ok(total)
}

/// What `concat`-like functions build from arguments of `sizes`: all of
/// them, and for `concat_ws` its separator (the first) between each two
/// of the others.
fn joined_bytes(kind: Kind, sizes: &[u128]) -> u128 {
    let all = sizes.iter().fold(0u128, |t, s| t.saturating_add(*s));
    match (kind, sizes.first()) {
        (Kind::ConcatWs, Some(separator)) => {
            let separators = sizes.len().saturating_sub(2) as u128;
            all.saturating_add(separator.saturating_mul(separators))
        }
        _ => all,
    }
}

/// The elements under a list, down to the last level of nesting.
fn leaf_elements(array: &ArrayRef) -> u128 {
    match list_values(array) {
        Some(values) => leaf_elements(&values),
        None => array.len() as u128,
    }
}

/// The bytes of the elements one row of a list argument holds, scalars
/// counted once per row.
fn elements(arg: &Arg, rows: usize) -> u128 {
    let once = leaf_elements(&arg.values);
    if arg.scalar {
        once.saturating_mul(rows as u128)
    } else {
        once
    }
}

/// Text an element of a list renders to at most, past its own bytes: a
/// number, a date or a timestamp.
const RENDERED_ELEMENT: u128 = 40;

fn array_to_string_bytes(arrays: &[Arg], rows: usize) -> Result<u128> {
    let Some(list) = arrays.first() else {
        return Ok(0);
    };
    let longest = |arg: Option<&Arg>| -> Result<u128> {
        Ok(match arg {
            Some(arg) => byte_lengths(arg)?.max().unwrap_or(0).max(0) as u128,
            None => 0,
        })
    };
    let each = longest(arrays.get(1))?
        .saturating_add(longest(arrays.get(2))?)
        .saturating_add(RENDERED_ELEMENT);
    Ok(list
        .bytes(rows)
        .saturating_add(elements(list, rows).saturating_mul(each)))
}

fn array_replace_bytes(arrays: &[Arg], rows: usize) -> u128 {
    let (Some(list), Some(to)) = (arrays.first(), arrays.get(2)) else {
        return 0;
    };
    list.bytes(rows)
        .saturating_add(elements(list, rows).saturating_mul(average_element(&to.values)))
}

fn levenshtein_cells(arrays: &[Arg], rows: usize) -> Result<u128> {
    let (Some(a), Some(b)) = (arrays.first(), arrays.get(1)) else {
        return Ok(0);
    };
    let (a, b) = (byte_lengths(a)?, byte_lengths(b)?);
    Ok((0..rows).fold(0u128, |total, row| {
        total.saturating_add(len_at(&a, row).saturating_mul(len_at(&b, row)))
    }))
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
fn elements_between(start: i128, stop: i128, step: i128) -> u128 {
    let span = stop - start;
    if step != 0 && span != 0 && span.signum() != step.signum() {
        return 0;
    }
    span.unsigned_abs() / step.unsigned_abs().max(1) + 1
}

/// Instants of a date or timestamp argument, in nanoseconds.
fn instants(arg: &Arg) -> Result<PerRow<i128>> {
    const NANOS_PER_DAY: i128 = 24 * NANOS_PER_HOUR;
    let values = match arg.values.data_type() {
        DataType::Date32 | DataType::Date64 => {
            let days = cast(&arg.values, &DataType::Date32)?;
            days.as_primitive::<arrow::datatypes::Date32Type>()
                .iter()
                .map(|d| d.map(|d| i128::from(d) * NANOS_PER_DAY))
                .collect()
        }
        DataType::Timestamp(unit, _) => {
            let per = match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            let raw = cast(&arg.values, &DataType::Int64)?;
            raw.as_primitive::<Int64Type>()
                .iter()
                .map(|t| t.map(|t| i128::from(t) * per))
                .collect()
        }
        other => {
            return Err(DataFusionError::Plan(format!(
                "range bounds of type {other} cannot be sized"
            )));
        }
    };
    Ok(PerRow {
        values,
        scalar: arg.scalar,
    })
}

/// An upper bound on the elements `range`/`generate_series` build in one
/// call, summed over the rows.
fn range_elements(arrays: &[Arg], rows: usize) -> Result<u128> {
    let Some(first) = arrays.first() else {
        return Ok(0);
    };
    // (start, stop, least step) per row, as i128 in one unit.
    let spans: Vec<Option<(i128, i128, i128)>> = match (first.values.data_type(), arrays.len()) {
        (DataType::Date32 | DataType::Date64 | DataType::Timestamp(..), 3) => {
            let start = instants(&arrays[0])?;
            let stop = instants(&arrays[1])?;
            let step_arg = &arrays[2];
            let steps = step_arg.values.as_primitive::<IntervalMonthDayNanoType>();
            (0..rows)
                .map(|row| {
                    let at = step_arg.index(row);
                    let step = steps.is_valid(at).then(|| {
                        let (m, d, n) = IntervalMonthDayNanoType::to_parts(steps.value(at));
                        least_step_nanos(m, d, n)
                    });
                    Some((start.get(row)?, stop.get(row)?, step?))
                })
                .collect()
        }
        (_, 1) => {
            let stop = counts(first)?;
            (0..rows)
                .map(|row| Some((0, i128::from(stop.get(row)?), 1)))
                .collect()
        }
        (_, 2 | 3) => {
            let start = counts(&arrays[0])?;
            let stop = counts(&arrays[1])?;
            let step = match arrays.get(2) {
                Some(step) => counts(step)?,
                None => PerRow {
                    values: vec![Some(1)],
                    scalar: true,
                },
            };
            (0..rows)
                // A zero step is DataFusion's own error.
                .map(|row| {
                    let step = i128::from(step.get(row)?);
                    (step != 0).then_some(())?;
                    Some((
                        i128::from(start.get(row)?),
                        i128::from(stop.get(row)?),
                        step,
                    ))
                })
                .collect()
        }
        _ => return Ok(0),
    };
    Ok(spans
        .into_iter()
        .flatten()
        .fold(0u128, |total, (start, stop, step)| {
            total.saturating_add(elements_between(start, stop, step))
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
        let constant = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        self.check(&args, constant)?;
        let result = self.inner.invoke_with_args(args)?;
        self.check_result(&result, constant)?;
        Ok(result)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let inner = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded {
            inner: Arc::new(inner),
            kind: self.kind,
            limits: self.limits,
        }))
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // `concat` and `concat_ws` join their literal arguments here, at
        // planning, not in a call.
        if matches!(self.kind, Kind::Sum | Kind::ConcatWs) {
            let sizes: Vec<u128> = args
                .iter()
                .map(|arg| match arg {
                    Expr::Literal(value, _) => value.size() as u128,
                    _ => 0,
                })
                .collect();
            let literals = joined_bytes(self.kind, &sizes);
            if literals > self.limit(true) as u128 {
                return Err(self.over_limit("was asked to build", literals, true));
            }
        }
        // A simplification may call DataFusion's own functions.
        Ok(match self.inner.inner().simplify(args, info)? {
            ExprSimplifyResult::Simplified(expr) => ExprSimplifyResult::Simplified(
                crate::bounded_plan::bound_expr(expr, self.limits)?.data,
            ),
            original => original,
        })
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
    use datafusion::prelude::SessionContext;

    const LIMIT: usize = 1 << 20;

    fn with_limits(limits: Limits) -> SessionContext {
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .with_analyzer_rule(Arc::new(crate::bounded_plan::BoundFunctions::new(limits)))
            .with_optimizer_rule(Arc::new(crate::bounded_plan::BoundFunctions::new(limits)))
            .build();
        SessionContext::new_with_state(state)
    }

    /// DataFusion's own session, and one held to [`LIMIT`].
    fn contexts() -> (SessionContext, SessionContext) {
        let ours = with_limits(Limits { query: LIMIT });
        (SessionContext::new(), ours)
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<String> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    /// DataFusion's own session answers `sql`; ours refuses it, naming
    /// `needle` and the limit.
    async fn assert_refused(
        plain: &SessionContext,
        ours: &SessionContext,
        sql: &str,
        needle: &str,
    ) {
        run(plain, sql).await.expect(sql);
        let err = run(ours, sql).await.expect_err(sql).to_string();
        assert!(
            err.contains(needle) && err.contains("more than the query's memory limit of 1.0 MiB"),
            "{sql}: {err}"
        );
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
            "SELECT replace('abcabc', 'b', 'XYZ'), replace('abc', '', '-'), replace(NULL, 'a', 'b'), replace('aaa', 'a', NULL)",
            "SELECT replace(s, f, t) FROM (VALUES ('aXa', 'X', 'yy'), ('é', '', '.'), (NULL, 'a', 'b')) v(s, f, t)",
            // Over the limit by the lengths alone; the matches are few.
            "SELECT length(replace(repeat('ab', 100000), 'zz', repeat('y', 100)))",
            "SELECT regexp_replace('foobar', 'o+', 'X'), regexp_replace('a1b22', '[0-9]', '#', 'g'), regexp_replace('Abc', 'a', '\\0\\0', 'gi')",
            "SELECT regexp_replace('hello world', '(\\w+) (\\w+)', '\\2 \\1'), regexp_replace('x', 'x', '$1y')",
            // Groups in the replacement make the bound from lengths alone
            // quadratic; the matches are counted.
            "SELECT length(regexp_replace(repeat('ab', 100000), '(b)', '<\\1\\1>', 'g'))",
            "SELECT length(regexp_replace(repeat('ab', 100000), '(z)', '\\1\\1\\1'))",
            "SELECT concat('a', NULL, 'b', 1), concat_ws('-', 'a', NULL, 'b'), make_array(1, 2), array_concat(make_array(1), make_array(2, 3))",
            "SELECT array_append(make_array(1), 2), array_prepend(0, make_array(1)), overlay('Txxxxas' placing 'hom' from 2 for 4)",
            "SELECT array_to_string(make_array(1, NULL, 3), ', ', '?'), array_to_string(make_array(make_array('a', 'b'), make_array('c')), '|')",
            "SELECT array_replace(make_array(1, 2, 2), 2, 9), array_replace_n(make_array('a', 'a'), 'a', 'bb', 1), array_replace_all(make_array(1, 1), 1, 0)",
            "SELECT levenshtein('kitten', 'sitting'), levenshtein(NULL, 'a'), encode('ab', 'hex'), upper('straße'), translate('abc', 'a', 'é')",
            // The operator: nulls, other types, column names.
            "SELECT 'a' || 'b', 'a' || NULL, NULL || 'b', 'n=' || 1, 'x' || 'y' || 'z'",
            "SELECT a || b AS ab, a || '-' || b, upper(a || b) FROM (VALUES ('x', 'y'), (NULL, 'z'), ('w', NULL)) t(a, b)",
            "SELECT a || b FROM (VALUES ('x', 'y')) t(a, b) WHERE a || b = 'xy' GROUP BY a || b ORDER BY a || b",
            "SELECT arrow_typeof(arrow_cast('a', 'LargeUtf8') || 'b'), arrow_cast('a', 'Utf8View') || arrow_cast('b', 'Utf8View')",
            "SELECT (SELECT max(a || 'q') FROM (VALUES ('p')) u(a)) AS sub",
            "SELECT make_array(1) || make_array(2), make_array(1) || 3",
            // Large constants repeated for a few rows.
            "SELECT length(x), x = x, cardinality(r) FROM (SELECT repeat('a', 20000) AS x, range(1, 3000) AS r FROM (VALUES (1), (2)) t(v)) WHERE x <> ''",
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
            // Each level within the limit, the next over it.
            (
                "SELECT length(replace(replace(repeat('x', 2000), 'x', repeat('y', 30)), 'y', repeat('z', 30)))",
                "replace",
            ),
            (
                "SELECT length(replace('ab', '', repeat('-', 400000)))",
                "replace",
            ),
            (
                "SELECT length(regexp_replace(repeat('x', 2000), '', repeat('y', 1000), 'g'))",
                "regexp_replace",
            ),
            (
                "SELECT length(regexp_replace(repeat('ab', 100000), '(b)', '\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1\\1', 'g'))",
                "regexp_replace",
            ),
            (
                "SELECT length(concat(repeat('x', 400000), repeat('y', 400000), repeat('z', 400000)))",
                "concat",
            ),
            (
                "SELECT length(concat_ws(repeat('-', 300000), 'a', 'b', 'c', 'd', 'e'))",
                "concat_ws",
            ),
            // `concat` simplifies itself into a call of DataFusion's own
            // `concat`, without the null.
            (
                "SELECT length(concat(s, NULL, s, s)) FROM (SELECT repeat('x', 400000 + v - v) AS s FROM (VALUES (1)) t(v))",
                "concat",
            ),
            // The SQL planner's own `make_array` and `array_concat`.
            (
                "SELECT cardinality([s, s, s]) FROM (SELECT repeat('x', 400000 + v - v) AS s FROM (VALUES (1)) t(v))",
                "make_array",
            ),
            (
                "SELECT cardinality(a || a || a) FROM (SELECT make_array(repeat('x', 400000 + v - v)) AS a FROM (VALUES (1)) t(v))",
                "array_concat",
            ),
            (
                "SELECT cardinality(make_array(repeat('x', 400000), repeat('x', 400000), repeat('x', 400000)))",
                "make_array",
            ),
            (
                "SELECT length(array_to_string(range(100000), repeat('-', 20)))",
                "array_to_string",
            ),
            (
                "SELECT cardinality(array_replace_all(array_repeat('a', 1000), 'a', repeat('b', 2000)))",
                "array_replace_all",
            ),
        ] {
            let needle = format!("{function}() was asked to build");
            assert_refused(&plain, &ours, sql, &needle).await;
        }
    }

    /// Functions whose result outgrows their arguments by a bounded factor
    /// are refused once a result is over the limit, at the first level of
    /// nesting past it; DataFusion builds every level.
    #[tokio::test]
    async fn results_over_the_limit_are_refused() {
        let (plain, ours) = contexts();
        for (sql, error) in [
            (
                "SELECT length(encode(encode(encode(encode(repeat('x', 100000), 'hex'), 'hex'), 'hex'), 'hex'))",
                "encode() built",
            ),
            (
                "SELECT length(upper(translate(repeat('a', 600000), 'a', 'é')))",
                "built",
            ),
            (
                "SELECT length(s || s || s) FROM (SELECT arrow_cast(repeat('x', 400000), 'LargeUtf8') AS s)",
                "the || operator was asked to build",
            ),
            (
                "SELECT length(a || b) FROM (SELECT repeat('x', 600000) AS a, repeat('y', 600000) AS b)",
                "the || operator was asked to build",
            ),
        ] {
            assert_refused(&plain, &ours, sql, error).await;
        }
    }

    /// A constant is repeated for every row wherever DataFusion needs it
    /// as a column; what that takes is checked against the limit.
    #[tokio::test]
    async fn constants_repeated_for_every_row_are_held_to_the_limit() {
        let (plain, ours) = contexts();
        let rows = (1..=20)
            .map(|i| format!("({i})"))
            .collect::<Vec<_>>()
            .join(", ");
        for (sql, rows_named) in [
            (
                format!(
                    "SELECT sum(cardinality(r)) FROM (SELECT range(1, 100000) AS r, v FROM (VALUES {rows}) t(v))"
                ),
                "repeated for each of 20 rows",
            ),
            (
                format!(
                    "SELECT count(*) FROM (VALUES {rows}) t(v) WHERE repeat('x', 100000) <> CAST(v AS VARCHAR)"
                ),
                "repeated for each of 20 rows",
            ),
        ] {
            run(&plain, &sql).await.expect(&sql);
            let err = run(&ours, &sql).await.expect_err(&sql).to_string();
            assert!(
                err.contains("a constant of")
                    && err.contains(rows_named)
                    && err.contains("more than the query's memory limit of 1.0 MiB"),
                "{sql}: {err}"
            );
        }
    }

    /// A value computed from constants is held to 16 MiB under a larger
    /// query limit; the same function on a column is held to the query's.
    #[tokio::test]
    async fn values_from_constants_are_held_to_16_mib() {
        let ours = with_limits(Limits { query: 64 << 20 });
        let sql = "SELECT length(repeat('x', 20000000))";
        let err = run(&ours, sql).await.expect_err(sql).to_string();
        assert!(
            err.contains("repeat() was asked to build 19.1 MiB from constants, more than the 16.0 MiB a value computed while the query is planned may take"),
            "{err}"
        );
        let sql = "SELECT length(repeat(s, 20000000 + v - v)) AS n FROM (VALUES ('x', 0)) t(s, v)";
        assert!(run(&ours, sql).await.expect(sql).contains("20000000"));
        let sql = "SELECT length(repeat('x', 16000000)) AS n";
        assert!(run(&ours, sql).await.expect(sql).contains("16000000"));
    }

    /// `levenshtein` is held to a number of comparisons, not a size.
    #[tokio::test]
    async fn levenshtein_compares_a_bounded_number_of_pairs() {
        let (_, ours) = contexts();
        let sql = "SELECT levenshtein(repeat('x', 40000), repeat('y', 40000))";
        let err = run(&ours, sql).await.expect_err(sql).to_string();
        assert!(
            err.contains("levenshtein() was asked to compare 1600000000 pairs"),
            "{err}"
        );
        let within = "SELECT levenshtein(repeat('x', 1000), repeat('xy', 500))";
        assert!(run(&ours, within).await.expect(within).contains("500"));
    }

    /// Building is refused where it would leave less than a tenth of the
    /// memory available.
    #[test]
    fn a_tenth_of_the_memory_is_kept() {
        let gib = 1usize << 30;
        let memory = Memory {
            available: 4 * gib,
            total: 20 * gib,
        };
        assert!(!memory.too_low_for(2 * gib));
        assert!(memory.too_low_for(2 * gib + 1));
        assert!(memory.too_low_for(usize::MAX));
        let exhausted = Memory {
            available: gib,
            total: 20 * gib,
        };
        assert!(exhausted.too_low_for(0));
    }

    #[test]
    fn replacements_read_groups_as_datafusion_does() {
        assert_eq!(rust_replacement("a\\1b"), "a${1}b");
        assert_eq!(rust_replacement("\\12x\\\\3"), "${12}x${3}");
        assert_eq!(rust_replacement("no groups $1"), "no groups $1");
        assert_eq!(rust_replacement("trailing \\"), "trailing \\");
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
        assert_eq!(elements_between(0, 10, 1), 11);
        assert_eq!(elements_between(0, 10, 3), 4);
        assert_eq!(elements_between(10, 0, -3), 4);
        assert_eq!(elements_between(10, 0, 1), 0);
        assert_eq!(elements_between(0, 10, -1), 0);
        assert_eq!(elements_between(5, 5, 1), 1);
        // A step of unknown direction counts both ways.
        assert_eq!(elements_between(10, 0, 0), 11);
        assert_eq!(elements_between(0, 10, 0), 11);
    }
}
