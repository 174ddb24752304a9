//! `date_trunc` at integer speed on UTC timestamps.
//!
//! Every faasight timestamp is `Timestamp(µs, "UTC")`. DataFusion truncates
//! timestamps that carry a time zone value by value through the zone's
//! calendar (~150 ns a row), and only naive timestamps by arithmetic, so
//! `date_trunc('hour', time)` over 10M invocations took over a second.
//! UTC has no offsets, so truncating the same values as naive timestamps
//! gives the same instants: [`UtcDateTrunc`] drops the zone, lets
//! DataFusion's own `date_trunc` do the work, and puts the zone back
//! (both steps only relabel the array). Other zones, times and scalars go
//! to DataFusion's function unchanged.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, make_array};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::error::Result;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// DataFusion's `date_trunc` (and its alias `datetrunc`), with the UTC
/// shortcut.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl UtcDateTrunc {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(UtcDateTrunc {
            inner: datafusion::functions::datetime::date_trunc(),
        })
    }
}

fn is_utc(tz: &str) -> bool {
    matches!(
        tz.to_ascii_uppercase().as_str(),
        "UTC" | "Z" | "+00:00" | "+0000" | "ETC/UTC" | "GMT" | "ETC/GMT"
    )
}

/// The same buffers under another timestamp type.
fn relabel(array: &ArrayRef, data_type: DataType) -> Result<ArrayRef> {
    let data = array
        .to_data()
        .into_builder()
        .data_type(data_type)
        .build()?;
    Ok(make_array(data))
}

impl ScalarUDFImpl for UtcDateTrunc {
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

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let utc = match args.args.get(1) {
            Some(ColumnarValue::Array(array)) => match array.data_type() {
                DataType::Timestamp(unit, Some(tz)) if is_utc(tz) => {
                    Some((*unit, Arc::clone(tz), Arc::clone(array)))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((unit, tz, array)) = utc else {
            return self.inner.invoke_with_args(args);
        };
        let naive = DataType::Timestamp(unit, None);
        args.args[1] = ColumnarValue::Array(relabel(&array, naive.clone())?);
        if let Some(field) = args.arg_fields.get_mut(1) {
            *field = Arc::new(field.as_ref().clone().with_data_type(naive.clone()));
        }
        if matches!(args.return_field.data_type(), DataType::Timestamp(..)) {
            args.return_field = Arc::new(args.return_field.as_ref().clone().with_data_type(naive));
        }
        match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(out) => {
                let labelled = DataType::Timestamp(unit, Some(tz));
                Ok(ColumnarValue::Array(relabel(&out, labelled)?))
            }
            scalar => Ok(scalar),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampMicrosecondArray;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// `sql` prints the same on DataFusion's own `date_trunc` and ours.
    async fn assert_same(plain: &SessionContext, ours: &SessionContext, sql: &str) {
        let mut printed = Vec::new();
        for ctx in [plain, ours] {
            let batches = ctx
                .sql(sql)
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run");
            let text = arrow::util::pretty::pretty_format_batches(&batches).expect("fmt");
            printed.push(text.to_string());
        }
        assert_eq!(printed[1], printed[0], "{sql}");
    }

    /// The shortcut answers exactly what DataFusion's own function does, for
    /// every granularity, on UTC instants around the turn of a year, a
    /// quarter, a leap day and before 1970.
    #[tokio::test]
    async fn same_answers_as_datafusion_for_every_granularity() {
        let values = [
            "1969-12-31T23:59:59.999999Z",
            "2024-02-29T23:30:15.250001Z",
            "2025-12-31T23:59:59Z",
            "2026-01-01T00:00:00Z",
            "2026-11-29T07:45:01.5Z",
        ];
        let micros: Vec<Option<i64>> = values
            .iter()
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .ok()
                    .map(|d| d.timestamp_micros())
            })
            .chain([None])
            .collect();
        let array = TimestampMicrosecondArray::from(micros).with_timezone("UTC");
        let batch =
            arrow::record_batch::RecordBatch::try_from_iter([("t", Arc::new(array) as ArrayRef)])
                .expect("batch");
        let plain = SessionContext::new();
        let ours = SessionContext::new();
        ours.register_udf(UtcDateTrunc::udf());
        for ctx in [&plain, &ours] {
            ctx.register_batch("ts", batch.clone()).expect("register");
        }
        for g in [
            "microsecond",
            "millisecond",
            "second",
            "minute",
            "hour",
            "day",
            "week",
            "month",
            "quarter",
            "year",
        ] {
            let sql = format!(
                "SELECT date_trunc('{g}', t) AS a, datetrunc('{g}', t) AS b, arrow_typeof(date_trunc('{g}', t)) AS ty FROM ts"
            );
            assert_same(&plain, &ours, &sql).await;
        }
        // Other zones keep DataFusion's calendar path.
        let sql = "SELECT date_trunc('day', arrow_cast(t, 'Timestamp(Microsecond, Some(\"Europe/Berlin\"))')) AS d FROM ts";
        assert_same(&plain, &ours, sql).await;
    }
}
