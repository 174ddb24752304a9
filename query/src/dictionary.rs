//! Text columns that files store, and scans hand over, as dictionaries.
//!
//! The coalesced invocation files hold a few dozen functions, regions and
//! architectures in millions of rows. Their text columns are
//! dictionary-encoded in Parquet anyway; the files also say so in their
//! Arrow schema ([`encode`]), so the Parquet reader hands such a column over
//! as keys into the page's dictionary instead of copying each row's text
//! (decoding `function_name` into strings, and comparing those strings,
//! were about a third of the CPU of "top 10 functions by cost";
//! benches/query-report.md).
//!
//! The tables still declare plain text. A [`DecodeExec`] above the scan
//! turns the dictionaries into text for whatever reads those columns, and
//! [`crate::grouping::RunGroupedAggregates`] removes it where a column is
//! only a grouping key: the aggregate finds runs by comparing dictionary
//! keys and decodes only each run's first row.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Statistics, internal_err};
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, FilterDescription, FilterPushdownPhase,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
};
use futures::StreamExt;

use crate::coop::only_child;

/// The type a text column of type `text` is stored and scanned as.
pub fn dictionary_of(text: &DataType) -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(text.clone()))
}

/// `schema` with the text columns named in `columns` as dictionaries
/// (other columns, and named columns that are not text, unchanged).
pub fn with_dictionaries(schema: &Schema, columns: &[&str]) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let text = matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            if text && columns.contains(&f.name().as_str()) {
                f.as_ref()
                    .clone()
                    .with_data_type(dictionary_of(f.data_type()))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// `batch` with the text columns named in `columns` dictionary-encoded, as
/// they are written to files that declare them so.
pub fn encode(batch: &RecordBatch, columns: &[&str]) -> Result<RecordBatch> {
    retyped(batch, Arc::new(with_dictionaries(&batch.schema(), columns)))
}

/// `batch` with its columns cast to the types of `schema` (which has as
/// many columns; arrow's `cast` hands a column of the same type back as is).
fn retyped(batch: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch> {
    let arrays = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(a, f)| Ok(cast(a, f.data_type())?))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// Turns the dictionary columns `columns` of its input into their values'
/// type; the other columns pass unchanged (see the module doc).
#[derive(Debug, Clone)]
pub struct DecodeExec {
    input: Arc<dyn ExecutionPlan>,
    /// Indices of the input's dictionary columns that are decoded.
    columns: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DecodeExec {
    /// Decodes `columns` of `input`, each of which must be a dictionary.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, columns: Vec<usize>) -> Result<Self> {
        let input_schema = input.schema();
        let mut fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for &i in &columns {
            let Some(field) = fields.get_mut(i) else {
                return internal_err!("DecodeExec: no column {i} in its input");
            };
            let DataType::Dictionary(_, values) = field.data_type() else {
                return internal_err!("DecodeExec: column {} is not a dictionary", field.name());
            };
            let values = values.as_ref().clone();
            field.set_data_type(values);
        }
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            input_schema.metadata().clone(),
        ));
        let from = input.properties();
        // A dictionary sorts as its values do: the input's orders hold.
        let orderings = from.equivalence_properties().oeq_class().iter().cloned();
        let properties = PlanProperties::new(
            EquivalenceProperties::new_with_orderings(Arc::clone(&schema), orderings),
            from.output_partitioning().clone(),
            from.emission_type,
            from.boundedness,
        );
        Ok(DecodeExec {
            input,
            columns,
            schema,
            properties: Arc::new(properties),
        })
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The decoded columns (the same index in input and output).
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }
}

impl DisplayAs for DecodeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|&i| self.schema.field(i).name().as_str())
            .collect();
        write!(f, "DecodeExec: columns=[{}]", names.join(", "))
    }
}

impl ExecutionPlan for DecodeExec {
    fn name(&self) -> &str {
        "DecodeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DecodeExec::try_new(
            only_child("DecodeExec", children)?,
            self.columns.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = Arc::clone(&self.schema);
        let decoded = input.map(move |batch| retyped(&batch?, Arc::clone(&schema)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            decoded,
        )))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let Some(input) = input_stats.first() else {
            return Ok(Arc::new(Statistics::new_unknown(&self.schema)));
        };
        // Row counts hold; the decoded columns' bounds were the dictionaries'.
        let mut stats = input.as_ref().clone();
        for &i in &self.columns {
            if let Some(c) = stats.column_statistics.get_mut(i) {
                *c = ColumnStatistics {
                    null_count: c.null_count,
                    ..ColumnStatistics::new_unknown()
                };
            }
        }
        if stats.total_byte_size != Precision::Absent {
            stats.total_byte_size = stats.total_byte_size.to_inexact();
        }
        Ok(Arc::new(stats))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        // Filters on the other columns mean the same below; those on a
        // decoded column would compare text with a dictionary there.
        let allowed: HashSet<usize> = (0..self.schema.fields().len())
            .filter(|i| !self.columns.contains(i))
            .collect();
        Ok(FilterDescription::new().with_child(
            ChildFilterDescription::from_child_with_allowed_indices(
                &parent_filters,
                allowed,
                &self.input,
            )?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, Int64Array};
    use arrow::datatypes::Int32Type;
    use datafusion::common::ScalarValue;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use datafusion::physical_plan::StatisticsContext;
    use datafusion::physical_plan::filter_pushdown::PushedDown;

    use super::*;

    fn scan() -> Arc<dyn ExecutionPlan> {
        let names: DictionaryArray<Int32Type> = vec![Some("b"), Some("b"), None, Some("a")]
            .into_iter()
            .collect();
        let batch = RecordBatch::try_from_iter(vec![
            ("g", Arc::new(names) as ArrayRef),
            (
                "n",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef,
            ),
        ])
        .unwrap();
        let schema = batch.schema();
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap()
    }

    #[tokio::test]
    async fn decodes_its_columns_and_keeps_rows_and_the_others() {
        let exec = Arc::new(DecodeExec::try_new(scan(), vec![0]).unwrap());
        assert_eq!(exec.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(exec.schema().field(1).data_type(), &DataType::Int64);
        let out =
            datafusion::physical_plan::collect(exec.clone(), Arc::new(TaskContext::default()))
                .await
                .unwrap();
        let texts: Vec<Option<&str>> = out[0].column(0).as_string::<i32>().iter().collect();
        assert_eq!(texts, vec![Some("b"), Some("b"), None, Some("a")]);
        assert_eq!(out[0].column(1).len(), 4);
        // Row counts hold (a count(*) may be answered from them); the
        // decoded column's bounds are not claimed.
        let stats = StatisticsContext::new()
            .compute(exec.as_ref(), &StatisticsArgs::new())
            .unwrap();

        assert_eq!(stats.num_rows, Precision::Exact(4));
        assert_eq!(stats.column_statistics[0].min_value, Precision::Absent);
        // Not a dictionary: refused.
        assert!(DecodeExec::try_new(scan(), vec![1]).is_err());
        assert!(DecodeExec::try_new(scan(), vec![2]).is_err());
    }

    #[test]
    fn filters_on_other_columns_pass_below_it() {
        let exec = DecodeExec::try_new(scan(), vec![0]).unwrap();
        let on = |column: &str, index: usize, value: ScalarValue| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(
                Arc::new(Column::new(column, index)),
                Operator::Eq,
                Arc::new(Literal::new(value)),
            ))
        };
        let filters = vec![
            on("n", 1, ScalarValue::Int64(Some(2))),
            on("g", 0, ScalarValue::Utf8(Some("b".into()))),
        ];
        let description = exec
            .gather_filters_for_pushdown(
                FilterPushdownPhase::Post,
                filters,
                &ConfigOptions::default(),
            )
            .unwrap();
        let below: Vec<bool> = description.parent_filters()[0]
            .iter()
            .map(|f| matches!(f.discriminant, PushedDown::Yes))
            .collect();
        assert_eq!(below, vec![true, false]);
    }
}
