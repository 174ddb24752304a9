//! Partial aggregates whose groups are found by runs of equal keys.
//!
//! The per-function questions (`GROUP BY function_name`, or by function
//! and hour) group millions of rows into a few dozen or a few thousand
//! groups, and the coalesced invocation files are sorted by function, then
//! time: a scan hands over batches in which the same keys repeat for
//! thousands of rows. DataFusion's partial aggregate hashes every row's
//! keys and compares it with the group it lands in
//! (`GroupValuesBytes::intern` and its `memcmp`, about a third of the CPU of
//! "top 10 functions by cost"; benches/query-report.md).
//!
//! [`RunGroupedAggregates`] runs after DataFusion's own rules and replaces a
//! partial [`AggregateExec`] with one set of grouping expressions (of any
//! types, no grouping sets) by a [`RunGroupedAggregateExec`]: each batch's
//! rows are split into runs of equal keys (arrow's `partition` kernel, which
//! compares each row with the one before), and only the first row of each
//! run is looked up in DataFusion's own group store for those key types
//! ([`GroupValues`]); the run's other rows take its group. Where runs are
//! shorter than two rows on average the batch is looked up row by row, as
//! DataFusion does. The accumulators are the aggregate's own
//! ([`GroupsAccumulator`]s, fed the same arguments and filters), so the
//! output — one row per group, the group's keys and each accumulator's
//! state — is what the partial aggregate would emit and the final
//! aggregate above merges it unchanged.
//!
//! Where the scan hands over a key column as dictionaries
//! ([`crate::dictionary`]), the rule also takes it undecoded when the
//! aggregate only groups by it: runs are then found by comparing dictionary
//! keys (integers) and only the rows looked up are decoded to text, so the
//! groups and the output are text as before.
//!
//! What DataFusion's operator does on the way is kept: when the memory pool
//! refuses more, the groups so far are emitted and counting starts afresh
//! (a partial aggregate may emit a group more than once); when grouping
//! does not reduce the rows (DataFusion's
//! `skip_partial_aggregation_probe_*` settings: by default 80 % as many
//! groups as rows after 100,000 rows), the rest passes through as one state
//! row per input row.
//!
//! An exact percentile ([`ExactPercentile`]) keeps every value, so its
//! partial state is every value again, which the repartition between the
//! phases copies and concatenates once more. Where a final aggregate
//! merges such states from a partial aggregate replaced here, the rule
//! plans the two as one: a [`RunGroupedAggregateExec`] in single mode over
//! all partitions of the input ([`CoalescePartitionsExec`]: the scans,
//! filters and decoding below still run in parallel), emitting each
//! group's results; if the final aggregate's output was split by its keys,
//! it is split the same way again (a few rows). The accumulator then holds
//! runs of the scan's arrays and copies each value once. Such an aggregate
//! cannot emit early or spill, so when the memory pool refuses more it
//! drops what it holds and runs the two phases it replaced instead, afresh
//! over the same input: DataFusion's final aggregate spills to disk where
//! it has to. Nothing has been emitted by then, so no group is emitted
//! twice; the metric `two_phase_restarts` counts these.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, partition, take};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{
    AggregateExec, AggregateMode, aggregate_expressions, evaluate_many,
};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, InputOrderMode,
    Partitioning, PlanProperties, replace_children_if_necessary,
};
use futures::{StreamExt, TryStreamExt};

use crate::coop::{YieldAboveMultipliers, only_child};
use crate::dictionary::{DecodeExec, dictionary_of};
use crate::percentile::ExactPercentile;

/// Replaces partial grouped aggregates (see the module doc).
#[derive(Debug, Default)]
pub struct RunGroupedAggregates;

impl PhysicalOptimizerRule for RunGroupedAggregates {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if let Some(exec) = RunGroupedAggregateExec::try_from_aggregate(agg)? {
                let exec: Arc<dyn ExecutionPlan> = Arc::new(exec.taking_dictionaries()?);
                return Ok(Transformed::yes(exec));
            }
            match RunGroupedAggregateExec::try_whole(&node)? {
                Some(plan) => Ok(Transformed::yes(plan)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "RunGroupedAggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What a [`RunGroupedAggregateExec`] emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// State rows per input partition, merged by a final aggregate above.
    Partial,
    /// Each group's results, over all its input in one partition.
    Single,
}

/// An aggregate whose groups are found by runs (see the module doc).
#[derive(Debug, Clone)]
pub struct RunGroupedAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    mode: Mode,
    /// The grouping expressions and their output names.
    group_by: Vec<(Arc<dyn PhysicalExpr>, String)>,
    /// The grouping columns' fields, as DataFusion's operator derives them.
    group_schema: SchemaRef,
    aggr: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// In single mode, the partial and final aggregates this one stands in
    /// for, run instead when the memory pool refuses more.
    two_phases: Option<Arc<dyn ExecutionPlan>>,
    /// The replaced aggregate's schema and properties: the output is the same.
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// Shown by `EXPLAIN ANALYZE`: output rows, bytes and batches, compute time,
    /// and `group_lookups`, the rows looked up in the group store.
    metrics: ExecutionPlanMetricsSet,
}

impl RunGroupedAggregateExec {
    /// The replacement for `agg`, when it is a partial aggregate this
    /// operator can stand in for.
    pub fn try_from_aggregate(agg: &AggregateExec) -> Result<Option<Self>> {
        let group_by = agg.group_expr();
        let suitable = matches!(agg.mode(), AggregateMode::Partial)
            && group_by.is_single()
            && !group_by.has_grouping_set()
            && !group_by.expr().is_empty()
            && agg.limit_options().is_none()
            && agg.dynamic_expressions_produced().is_empty()
            && matches!(agg.input_order_mode(), InputOrderMode::Linear)
            && agg
                .aggr_expr()
                .iter()
                .all(|a| a.groups_accumulator_supported());
        if !suitable {
            return Ok(None);
        }
        let schema = agg.schema();
        let group_schema = group_by.group_schema(&agg.input().schema())?;
        let same_columns = group_schema
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(g, o)| g.data_type() == o.data_type());
        if !same_columns {
            return Ok(None);
        }
        Ok(Some(RunGroupedAggregateExec {
            input: Arc::clone(agg.input()),
            mode: Mode::Partial,
            group_by: group_by.expr().to_vec(),
            group_schema,
            aggr: agg.aggr_expr().to_vec(),
            filters: agg.filter_expr().to_vec(),
            two_phases: None,
            schema,
            properties: Arc::clone(agg.properties()),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

impl RunGroupedAggregateExec {
    /// The replacement for `node`, when it is a final aggregate of an exact
    /// percentile over a partial aggregate replaced by this operator: the
    /// two in one, over all the partitions of the partial one's input, split
    /// again as `node`'s output was (see the module doc).
    pub fn try_whole(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(agg) = node.downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        let suitable = matches!(
            agg.mode(),
            AggregateMode::Final | AggregateMode::FinalPartitioned
        ) && agg.limit_options().is_none()
            && agg.dynamic_expressions_produced().is_empty()
            && agg
                .aggr_expr()
                .iter()
                .any(|a| a.fun().inner().downcast_ref::<ExactPercentile>().is_some());
        if !suitable {
            return Ok(None);
        }
        let Some(partial) = partial_below(agg.input()) else {
            return Ok(None);
        };
        if partial.aggr.len() != agg.aggr_expr().len() {
            return Ok(None);
        }
        let input = in_one_partition(Arc::clone(&partial.input));
        let properties = agg
            .properties()
            .as_ref()
            .clone()
            .with_partitioning(Partitioning::UnknownPartitioning(1));
        let single: Arc<dyn ExecutionPlan> = Arc::new(RunGroupedAggregateExec {
            input,
            mode: Mode::Single,
            two_phases: Some(Arc::clone(node)),
            schema: agg.schema(),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
            ..partial.clone()
        });
        let split = agg.properties().partitioning.clone();
        if split.partition_count() > 1 {
            return Ok(Some(Arc::new(RepartitionExec::try_new(single, split)?)));
        }
        Ok(Some(single))
    }

    /// With a [`DecodeExec`] below (directly, under filters, or in some of
    /// the inputs of a union), the columns this aggregate only groups by (a
    /// key that is the bare column, read by no argument, aggregate filter or
    /// filter on the way) are no longer decoded: runs are found on their
    /// dictionary keys and only each run's first row is decoded
    /// ([`group_ids`]).
    fn taking_dictionaries(mut self) -> Result<Self> {
        let mut read: HashSet<usize> = HashSet::new();
        for (e, _) in &self.group_by {
            if e.downcast_ref::<Column>().is_none() {
                read.extend(column_indices(e));
            }
        }
        for e in aggregate_expressions(&self.aggr, &AggregateMode::Partial, 0)?
            .iter()
            .flatten()
        {
            read.extend(column_indices(e));
        }
        for e in self.filters.iter().flatten() {
            read.extend(column_indices(e));
        }
        if let Some((input, _)) = undecoded(&self.input, &read)? {
            self.input = input;
        }
        Ok(self)
    }
}

/// The partial [`RunGroupedAggregateExec`] whose states `plan` hands on
/// (through repartitions and coalescing), if it is one.
fn partial_below(plan: &Arc<dyn ExecutionPlan>) -> Option<&RunGroupedAggregateExec> {
    if let Some(exec) = plan.downcast_ref::<RunGroupedAggregateExec>() {
        return (exec.mode == Mode::Partial).then_some(exec);
    }
    let passes_on = plan.is::<RepartitionExec>() || plan.is::<CoalescePartitionsExec>();
    match plan.children()[..] {
        [child] if passes_on => partial_below(child),
        _ => None,
    }
}

/// The indices of the columns `e` reads.
fn column_indices(e: &Arc<dyn PhysicalExpr>) -> Vec<usize> {
    collect_columns(e).iter().map(Column::index).collect()
}

/// A plan and the columns it now hands over as dictionaries.
type Undecoded = (Arc<dyn ExecutionPlan>, Vec<usize>);

/// `plan` with the [`DecodeExec`]s below it no longer decoding the columns
/// that nothing on the way reads (`read`, and what filters read), and the
/// columns that come out as dictionaries instead; `None` if none do.
/// Unions keep their columns' positions; a filter's projection is mapped
/// through. Inputs of a union without such a scan (the merge
/// of the hours not coalesced yet) encode those columns in turn, so that
/// every input has the same types.
fn undecoded(plan: &Arc<dyn ExecutionPlan>, read: &HashSet<usize>) -> Result<Option<Undecoded>> {
    if let Some(decode) = plan.downcast_ref::<DecodeExec>() {
        let (still, taken): (Vec<usize>, Vec<usize>) =
            decode.columns().iter().partition(|c| read.contains(c));
        if taken.is_empty() {
            return Ok(None);
        }
        let input = if still.is_empty() {
            Arc::clone(decode.input())
        } else {
            Arc::new(DecodeExec::try_new(Arc::clone(decode.input()), still)?)
        };
        return Ok(Some((input, taken)));
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        // A filter may also project: output column `j` is input column
        // `projection[j]`.
        let projection: Vec<usize> = match filter.projection() {
            Some(p) => p.iter().copied().collect(),
            None => (0..filter.input().schema().fields().len()).collect(),
        };
        let mut below: HashSet<usize> = read
            .iter()
            .filter_map(|&j| projection.get(j).copied())
            .collect();
        below.extend(column_indices(filter.predicate()));
        return match undecoded(filter.input(), &below)? {
            Some((input, taken)) => {
                let taken: Vec<usize> = (0..projection.len())
                    .filter(|&j| taken.contains(&projection[j]))
                    .collect();
                let plan = replace_children_if_necessary(Arc::clone(plan), vec![input])?;
                Ok(Some((plan, taken)))
            }
            None => Ok(None),
        };
    }
    if plan.is::<UnionExec>() {
        let inputs: Vec<_> = plan
            .children()
            .into_iter()
            .map(|c| Ok((c, undecoded(c, read)?)))
            .collect::<Result<_>>()?;
        let mut taken: Vec<usize> = inputs
            .iter()
            .flat_map(|(_, u)| u.iter().flat_map(|(_, t)| t.iter().copied()))
            .collect();
        taken.sort_unstable();
        taken.dedup();
        if taken.is_empty() {
            return Ok(None);
        }
        let mut children = Vec::with_capacity(inputs.len());
        for (child, u) in inputs {
            let (child, own) = u.unwrap_or_else(|| (Arc::clone(child), Vec::new()));
            let missing: Vec<usize> = taken.iter().copied().filter(|c| !own.contains(c)).collect();
            children.push(if missing.is_empty() {
                child
            } else {
                encoded(child, &missing)?
            });
        }
        return Ok(Some((
            replace_children_if_necessary(Arc::clone(plan), children)?,
            taken,
        )));
    }
    Ok(None)
}

/// `plan` with its text columns `columns` cast to dictionaries.
fn encoded(plan: Arc<dyn ExecutionPlan>, columns: &[usize]) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let exprs = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(f.name(), i));
            let expr = if columns.contains(&i) {
                Arc::new(CastExpr::new(column, dictionary_of(f.data_type()), None))
            } else {
                column
            };
            (expr, f.name().clone())
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

impl DisplayAs for RunGroupedAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gby: Vec<String> = self
            .group_by
            .iter()
            .map(|(e, name)| format!("{e} as {name}"))
            .collect();
        let aggr: Vec<&str> = self.aggr.iter().map(|a| a.name()).collect();
        write!(
            f,
            "RunGroupedAggregateExec: mode={:?}, gby=[{}], aggr=[{}]",
            self.mode,
            gby.join(", "),
            aggr.join(", ")
        )
    }
}

impl ExecutionPlan for RunGroupedAggregateExec {
    fn name(&self) -> &str {
        "RunGroupedAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let mut exprs: Vec<_> = self.group_by.iter().map(|(e, _)| Arc::clone(e)).collect();
        for a in &self.aggr {
            exprs.extend(a.expressions());
        }
        exprs.extend(self.filters.iter().flatten().cloned());
        for e in &exprs {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut exec = (*self).clone();
        exec.input = only_child("RunGroupedAggregateExec", children)?;
        exec.metrics = ExecutionPlanMetricsSet::new();
        Ok(Arc::new(exec))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("RunGroupedAggregateExec[{partition}]"))
            .register(context.memory_pool());
        let options = &context.session_config().options().execution;
        let grouper = Grouper {
            mode: self.mode,
            group_by: self.group_by.iter().map(|(e, _)| Arc::clone(e)).collect(),
            arguments: aggregate_expressions(&self.aggr, &AggregateMode::Partial, 0)?,
            filters: self.filters.clone(),
            accumulators: self
                .aggr
                .iter()
                .map(|a| a.create_groups_accumulator())
                .collect::<Result<_>>()?,
            schema: Arc::clone(&self.schema),
            key_types: self
                .group_schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
            groups: new_group_values(Arc::clone(&self.group_schema), &GroupOrdering::None)?,
            ids: Vec::new(),
            run_ids: Vec::new(),
            rows_in: 0,
            passing_through: false,
            skip_check: (self.mode == Mode::Partial
                && options.skip_partial_aggregation_probe_ratio_threshold < 1.0)
                .then_some((
                    options.skip_partial_aggregation_probe_rows_threshold,
                    options.skip_partial_aggregation_probe_ratio_threshold,
                )),
            reservation,
            batch_size: context.session_config().batch_size(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            lookups: MetricBuilder::new(&self.metrics).counter("group_lookups", partition),
        };
        let restart = self.two_phases.as_ref().map(|plan| Restart {
            plan: Arc::clone(plan),
            context: Arc::clone(&context),
            count: MetricBuilder::new(&self.metrics).counter("two_phase_restarts", partition),
        });
        // Input batches are grouped as they come; the groups are emitted
        // when the input ends (and earlier, see `Grouper::take`).
        let start = Step::Grouping(input, Box::new(grouper), restart);
        let output = futures::stream::unfold(Some(start), |step| async move {
            match step? {
                Step::Grouping(mut input, mut grouper, restart) => match input.next().await {
                    Some(Ok(batch)) => match (grouper.measured(|g| g.take(batch)), restart) {
                        // Single mode has emitted nothing yet: start over.
                        (Err(DataFusionError::ResourcesExhausted(why)), Some(restart)) => {
                            grouper.baseline.done();
                            drop((input, grouper));
                            match restart.run(&why) {
                                Ok(stream) => Some((Ok(Vec::new()), Some(Step::Restarted(stream)))),
                                Err(e) => Some((Err(e), None)),
                            }
                        }
                        (out, restart) => {
                            Some((out, Some(Step::Grouping(input, grouper, restart))))
                        }
                    },
                    Some(Err(e)) => Some((Err(e), None)),
                    None => {
                        let out = grouper.measured(Grouper::emit);
                        grouper.baseline.done();
                        Some((out, None))
                    }
                },
                Step::Restarted(mut stream) => {
                    let next = stream.next().await?;
                    Some((next.map(|b| vec![b]), Some(Step::Restarted(stream))))
                }
            }
        })
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            output,
        )))
    }
}

/// Where a [`RunGroupedAggregateExec`]'s output stream is.
enum Step {
    /// Grouping its input; in single mode, with the two phases to run
    /// instead should the memory pool refuse more.
    Grouping(SendableRecordBatchStream, Box<Grouper>, Option<Restart>),
    /// Handing on the output of the two phases.
    Restarted(SendableRecordBatchStream),
}

/// The two phases a single-mode aggregate stands in for (see the module
/// doc).
struct Restart {
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    count: Count,
}

impl Restart {
    /// Runs the two phases afresh, their partitions merged into one stream.
    fn run(self, why: &str) -> Result<SendableRecordBatchStream> {
        self.count.add(1);
        tracing::info!(
            reason = why,
            "exact percentile over more values than the memory limit holds: starting over in two phases, which can spill"
        );
        let plan = two_phase_plan(self.plan, self.context.session_config().options())?;
        plan.execute(0, self.context)
    }
}

/// The two phases `plan` a single-mode aggregate stands in for, ready to
/// run again in one partition. The rules that run after
/// [`RunGroupedAggregates`] never saw it (the plan is not a child), so the
/// engine's [`YieldAboveMultipliers`] is applied here: a join or
/// repartition in it yields as it would have in the first plan.
fn two_phase_plan(
    plan: Arc<dyn ExecutionPlan>,
    options: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = YieldAboveMultipliers.optimize(reset_plan_states(plan)?, options)?;
    Ok(in_one_partition(plan))
}

/// `plan`, its partitions merged into one where it has several.
fn in_one_partition(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(plan))
    } else {
        plan
    }
}

/// The state of one partition's aggregation.
struct Grouper {
    mode: Mode,
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    schema: SchemaRef,
    /// The keys' types in the groups (a key may come as a dictionary of
    /// them, see [`group_ids`]).
    key_types: Vec<DataType>,
    /// The groups seen so far (DataFusion's own store for these key types).
    groups: Box<dyn GroupValues>,
    /// The group of each row of the batch at hand, and of each run.
    ids: Vec<usize>,
    run_ids: Vec<usize>,
    rows_in: usize,
    passing_through: bool,
    /// Rows after which, and groups per row above which, the rest passes
    /// through (DataFusion's `skip_partial_aggregation_probe_*` settings);
    /// `None` once decided.
    skip_check: Option<(usize, f64)>,
    reservation: MemoryReservation,
    batch_size: usize,
    baseline: BaselineMetrics,
    lookups: Count,
}

impl Grouper {
    /// `step`, timed as compute, its output counted.
    fn measured(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<Vec<RecordBatch>>,
    ) -> Result<Vec<RecordBatch>> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let timer = elapsed.timer();
        let out = step(self);
        timer.done();
        for batch in out.iter().flatten() {
            batch.record_output(&self.baseline);
        }
        out
    }

    /// Groups one input batch, returning what has to be emitted already
    /// (all groups when the memory pool refuses more, or the batch's state
    /// rows once grouping has been found not to reduce the input).
    fn take(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        let keys = self
            .group_by
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let arguments = evaluate_many(&self.arguments, &batch)?;
        let filters = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| f.evaluate(&batch)?.into_array(rows))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        if self.passing_through {
            return Ok(vec![self.pass_through(keys, &arguments, &filters)?]);
        }
        let lookups = group_ids(
            &keys,
            &self.key_types,
            self.groups.as_mut(),
            &mut self.ids,
            &mut self.run_ids,
        )?;
        self.lookups.add(lookups);
        let total = self.groups.len();
        for ((acc, values), filter) in self.accumulators.iter_mut().zip(&arguments).zip(&filters) {
            let filter: Option<&BooleanArray> = filter.as_ref().map(|f| f.as_boolean());
            acc.update_batch(values, &self.ids, filter, total)?;
        }
        self.rows_in += rows;
        let mut out = Vec::new();
        if let Err(e) = self.reserve() {
            if self.mode == Mode::Single || !matches!(e, DataFusionError::ResourcesExhausted(_)) {
                return Err(e);
            }
            // A partial aggregate may emit early; the final one merges.
            out.extend(self.emit()?);
            self.reserve()?;
        }
        if let Some((rows, ratio)) = self.skip_check
            && self.rows_in >= rows
        {
            self.skip_check = None;
            if self.groups.len() as f64 / self.rows_in as f64 >= ratio {
                out.extend(self.emit()?);
                self.passing_through = true;
                self.reserve()?;
            }
        }
        Ok(out)
    }

    /// One state row per input row, for input that grouping does not reduce.
    fn pass_through(
        &mut self,
        keys: Vec<ArrayRef>,
        arguments: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
    ) -> Result<RecordBatch> {
        let mut columns = decoded(&keys, &self.key_types)?;
        for ((acc, values), filter) in self.accumulators.iter().zip(arguments).zip(filters) {
            let filter: Option<&BooleanArray> = filter.as_ref().map(|f| f.as_boolean());
            columns.extend(acc.convert_to_state(values, filter)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Every group so far as state rows (partial) or results (single);
    /// counting starts afresh.
    fn emit(&mut self) -> Result<Vec<RecordBatch>> {
        if self.groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns = self.groups.emit(EmitTo::All)?;
        for acc in &mut self.accumulators {
            match self.mode {
                Mode::Partial => columns.extend(acc.state(EmitTo::All)?),
                Mode::Single => columns.push(acc.evaluate(EmitTo::All)?),
            }
        }
        // `state` and `evaluate` with `EmitTo::All` have emptied the
        // accumulators too (as DataFusion's own early emit relies on).
        self.groups.clear_shrink(self.batch_size);
        let all = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let size = self.batch_size.max(1);
        Ok((0..all.num_rows())
            .step_by(size)
            .map(|start| all.slice(start, size.min(all.num_rows() - start)))
            .collect())
    }

    fn reserve(&mut self) -> Result<()> {
        let size = self.groups.size() + self.accumulators.iter().map(|a| a.size()).sum::<usize>();
        self.reservation.try_resize(size)
    }
}

/// The group of each row of `keys` into `ids`: the rows are split into
/// runs of equal keys and only each run's first row is looked up, unless
/// runs are so short that looking up every row costs less than gathering
/// the first ones. Returns the number of rows looked up.
///
/// A key may come as a dictionary of its group type (`types`): runs are
/// then found on the dictionary keys (within a batch the same key is the
/// same text; should the dictionary repeat a text, a run is only cut in
/// two) and only the rows looked up are decoded.
fn group_ids(
    keys: &[ArrayRef],
    types: &[DataType],
    groups: &mut dyn GroupValues,
    ids: &mut Vec<usize>,
    run_ids: &mut Vec<usize>,
) -> Result<usize> {
    ids.clear();
    let rows = keys.first().map_or(0, |k| k.len());
    let compared: Vec<ArrayRef> = keys
        .iter()
        .map(|k| match k.as_any_dictionary_opt() {
            Some(dictionary) => dictionary.keys().slice(0, k.len()),
            None => Arc::clone(k),
        })
        .collect();
    let runs = partition(&compared)?.ranges();
    if runs.len() * 2 > rows {
        groups.intern(&decoded(keys, types)?, ids)?;
        return Ok(rows);
    }
    let firsts = UInt32Array::from_iter_values(runs.iter().map(|run| run.start as u32));
    let firsts = keys
        .iter()
        .map(|k| Ok(take(k.as_ref(), &firsts, None)?))
        .collect::<Result<Vec<_>>>()?;
    let firsts = decoded(&firsts, types)?;
    run_ids.clear();
    groups.intern(&firsts, run_ids)?;
    ids.reserve(rows);
    for (run, &id) in runs.iter().zip(run_ids.iter()) {
        ids.extend(std::iter::repeat_n(id, run.len()));
    }
    Ok(runs.len())
}

/// `keys` as the group types `types`.
fn decoded(keys: &[ArrayRef], types: &[DataType]) -> Result<Vec<ArrayRef>> {
    keys.iter()
        .zip(types)
        .map(|(k, t)| Ok(cast(k, t)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        DictionaryArray, Float64Array, Int64Array, LargeStringArray, StringArray, StringViewArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
    use arrow::util::display::array_value_to_string;
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::common::HashMap;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// Five partitions of two batches: runs of one text (like files sorted
    /// by function), interleaved texts, nulls among them, a run that goes
    /// on across the batch boundary, texts that are prefixes of each other
    /// and longer than a string view's 12 inline bytes, and one partition
    /// where nearly every row is its own group. Beside the text `g`: `h`, a
    /// number in runs shorter than g's (like the hour within a function),
    /// `ts`, a time rising through each partition, and `d`, g as a
    /// dictionary.
    fn table(text_type: &DataType) -> MemTable {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", text_type.clone(), true),
            Field::new("v", DataType::Float64, true),
            Field::new("i", DataType::Int64, false),
            Field::new("h", DataType::Int64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("d", dictionary, true),
        ]));
        let names = ["api", "api-orders", "api-orders-eu-west-1", "", "ä-ünïcode"];
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        let partitions = (0..5)
            .map(|partition| {
                (0..2)
                    .map(|batch| {
                        let n = 1_500;
                        let mut g: Vec<Option<String>> = Vec::with_capacity(n);
                        let mut v = Vec::with_capacity(n);
                        let mut i = Vec::with_capacity(n);
                        let mut h = Vec::with_capacity(n);
                        let mut ts = Vec::with_capacity(n);
                        for k in 0..n {
                            let r = next();
                            let text = match partition {
                                0 => Some(names[(batch * n + k) / 700 % names.len()].to_string()),
                                1 => Some(names[(r % 5) as usize].to_string()),
                                2 if r.is_multiple_of(4) => None,
                                2 => Some(names[k / 200 % names.len()].to_string()),
                                3 => (k % 300 != 0).then(|| names[k / 500].to_string()),
                                _ => Some(format!("request-{:08}", r % 2_800)),
                            };
                            g.push(text);
                            v.push((!r.is_multiple_of(13)).then(|| (r >> 20) as f64 / 1_000.0));
                            i.push((r % 1_000) as i64);
                            h.push((k % 450 != 7).then_some((k / 130) as i64));
                            ts.push(
                                ((batch * n + k) as i64) * 1_700_000_000 + 1_764_000_000_000_000,
                            );
                        }
                        let d: DictionaryArray<Int32Type> =
                            g.iter().map(|t| t.as_deref()).collect();
                        let g: ArrayRef = match text_type {
                            DataType::Utf8 => Arc::new(StringArray::from(g)),
                            DataType::LargeUtf8 => Arc::new(LargeStringArray::from(g)),
                            DataType::Utf8View => Arc::new(StringViewArray::from(g)),
                            // Its own dictionary per batch, in another order
                            // than the texts first appear.
                            _ => {
                                let mut texts: Vec<&str> =
                                    g.iter().flatten().map(String::as_str).collect();
                                texts.sort_unstable_by(|a, b| b.cmp(a));
                                texts.dedup();
                                let values = StringArray::from(texts.clone());
                                let keys: arrow::array::Int32Array = g
                                    .iter()
                                    .map(|t| {
                                        t.as_deref().and_then(|t| {
                                            texts.iter().position(|x| *x == t).map(|p| p as i32)
                                        })
                                    })
                                    .collect();
                                Arc::new(
                                    DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))
                                        .unwrap(),
                                )
                            }
                        };
                        RecordBatch::try_new(
                            Arc::clone(&schema),
                            vec![
                                g,
                                Arc::new(Float64Array::from(v)),
                                Arc::new(Int64Array::from(i)),
                                Arc::new(Int64Array::from(h)),
                                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
                                Arc::new(d),
                            ],
                        )
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        MemTable::try_new(schema, partitions).unwrap()
    }

    fn context(text_type: &DataType, with_rule: bool, config: SessionConfig) -> SessionContext {
        let mut state = SessionStateBuilder::new()
            .with_config(config.with_target_partitions(3))
            .with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(RunGroupedAggregates));
        }
        let ctx = SessionContext::new_with_state(state.build());
        // As the engine does (DataFusion's own cannot merge state rows).
        ctx.register_udaf(crate::percentile::ExactPercentile::udaf());
        let table = table(text_type);
        if matches!(text_type, DataType::Dictionary(..)) {
            ctx.register_table("t", Arc::new(Decoded(table))).unwrap();
        } else {
            ctx.register_table("t", Arc::new(table)).unwrap();
        }
        ctx
    }

    /// A table whose scan hands over `g` as dictionaries and declares it
    /// text, as the coalesced invocation files' scan does: a [`DecodeExec`]
    /// above the scan (`d` stays a dictionary column).
    #[derive(Debug)]
    struct Decoded(MemTable);

    #[async_trait::async_trait]
    impl datafusion::catalog::TableProvider for Decoded {
        fn schema(&self) -> SchemaRef {
            let schema = self.0.schema();
            let mut fields: Vec<Field> =
                schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields[0].set_data_type(DataType::Utf8);
            Arc::new(Schema::new(fields))
        }

        fn table_type(&self) -> datafusion::datasource::TableType {
            datafusion::datasource::TableType::Base
        }

        async fn scan(
            &self,
            state: &dyn datafusion::catalog::Session,
            projection: Option<&Vec<usize>>,
            filters: &[datafusion::logical_expr::Expr],
            limit: Option<usize>,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            let scan = self.0.scan(state, projection, filters, limit).await?;
            let g = match projection {
                Some(p) => p.iter().position(|&c| c == 0),
                None => Some(0),
            };
            match g {
                Some(g) => Ok(Arc::new(DecodeExec::try_new(scan, vec![g])?)),
                None => Ok(scan),
            }
        }
    }

    fn dictionary() -> DataType {
        crate::dictionary::dictionary_of(&DataType::Utf8)
    }

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let plan = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let batches = df.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), plan)
    }

    const QUERIES: [&str; 11] = [
        "SELECT g, count(*), count(v), sum(v), avg(v), min(v), max(i), min(g) \
         FROM t GROUP BY g ORDER BY g NULLS FIRST",
        "SELECT g, sum(i) FILTER (WHERE v > 100.0), count(*) FILTER (WHERE i % 2 = 0) \
         FROM t GROUP BY g ORDER BY g NULLS FIRST",
        "SELECT upper(g) AS u, sum(i) FROM t WHERE i > 10 GROUP BY upper(g) ORDER BY u NULLS FIRST",
        "SELECT g, percentile_cont(0.9) WITHIN GROUP (ORDER BY v) AS p FROM t \
         GROUP BY g ORDER BY g NULLS FIRST",
        "SELECT g, sum(v) AS s FROM t GROUP BY g ORDER BY s DESC NULLS LAST, g LIMIT 4",
        // Several keys: runs of both, and a key without runs.
        "SELECT g, h, count(*), sum(v), max(g) FROM t GROUP BY g, h \
         ORDER BY g NULLS FIRST, h NULLS FIRST",
        "SELECT g, date_trunc('hour', ts) AS hour, avg(CASE WHEN i > 500 THEN 1.0 ELSE 0.0 END) \
         FROM t GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2",
        "SELECT g, i % 7 AS m, sum(v), count(*) FROM t GROUP BY g, i % 7 \
         ORDER BY g NULLS FIRST, m",
        // Keys that are not text.
        "SELECT h, count(*), sum(i) FROM t GROUP BY h ORDER BY h NULLS FIRST",
        "SELECT date_trunc('day', ts) AS day, min(v), percentile_cont(0.5) WITHIN GROUP (ORDER BY i) \
         FROM t GROUP BY 1 ORDER BY 1",
        "SELECT d, count(*), sum(v) FROM t GROUP BY d ORDER BY d NULLS FIRST",
    ];

    async fn same_answers(config: impl Fn() -> SessionConfig) {
        let text_types = [
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            dictionary(),
        ];
        for text_type in text_types {
            let ours = context(&text_type, true, config());
            let theirs = context(&text_type, false, config());
            for sql in QUERIES {
                let (answer, plan) = run(&ours, sql).await;
                let (expected, their_plan) = run(&theirs, sql).await;
                assert_eq!(answer, expected, "{text_type}: {sql}");
                let has =
                    |plan: &str, node: &str| plan.lines().any(|l| l.trim_start().starts_with(node));
                // An exact percentile in one phase, the rest in two.
                let ours = if sql.contains("percentile_cont") {
                    "RunGroupedAggregateExec: mode=Single"
                } else {
                    "RunGroupedAggregateExec: mode=Partial"
                };
                assert!(
                    has(&plan, ours) && !has(&plan, "AggregateExec: mode=Partial"),
                    "{text_type}: {sql}: {plan}"
                );
                assert!(
                    has(&their_plan, "AggregateExec: mode=Partial"),
                    "{their_plan}"
                );
            }
        }
    }

    #[tokio::test]
    async fn answers_are_datafusions_for_every_text_type() {
        same_answers(SessionConfig::new).await;
    }

    #[tokio::test]
    async fn input_that_grouping_does_not_reduce_passes_through_as_state() {
        // Probe after 1,000 rows with a low ratio: the runs partitions are
        // grouped, the rest (and the partition of 2,800 texts) passes on.
        same_answers(|| {
            let mut config = SessionConfig::new();
            let exec = &mut config.options_mut().execution;
            exec.skip_partial_aggregation_probe_rows_threshold = 1_000;
            exec.skip_partial_aggregation_probe_ratio_threshold = 0.002;
            config
        })
        .await;
    }

    #[tokio::test]
    async fn answers_are_datafusions_when_the_scan_hands_over_dictionaries() {
        let ours = context(&dictionary(), true, SessionConfig::new());
        let theirs = context(&dictionary(), false, SessionConfig::new());
        let decodes = |plan: &str| plan.contains("DecodeExec");
        // Grouped by g only as a key (through a filter on another column
        // too): the aggregate takes the dictionaries.
        for sql in [
            "SELECT g, count(*), sum(v) FROM t GROUP BY g ORDER BY g NULLS FIRST",
            "SELECT g, sum(i) FROM t WHERE i > 10 GROUP BY g ORDER BY g NULLS FIRST",
            "SELECT g, h, count(*), sum(v) FROM t GROUP BY g, h ORDER BY g NULLS FIRST, h NULLS FIRST",
            "SELECT g, date_trunc('hour', ts) AS hour, avg(v) FROM t \
             WHERE ts >= TIMESTAMP '2025-11-24T16:00:00Z' GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2",
            "SELECT g, percentile_cont(0.9) WITHIN GROUP (ORDER BY v) AS p FROM t \
             GROUP BY g ORDER BY g NULLS FIRST",
        ] {
            let (answer, plan) = run(&ours, sql).await;
            let (expected, their_plan) = run(&theirs, sql).await;
            assert_eq!(answer, expected, "{sql}");
            assert!(!decodes(&plan), "{sql}: {plan}");
            assert!(decodes(&their_plan), "{sql}: {their_plan}");
        }
        // g read by an aggregate, an expression key or a filter: decoded.
        for sql in [
            "SELECT g, count(*), max(g) FROM t GROUP BY g ORDER BY g NULLS FIRST",
            "SELECT upper(g) AS u, sum(i) FROM t GROUP BY upper(g) ORDER BY u NULLS FIRST",
            "SELECT g, sum(i) FROM t WHERE g <> 'api' GROUP BY g ORDER BY g NULLS FIRST",
            "SELECT g, count(*) FILTER (WHERE g LIKE 'api%') FROM t GROUP BY g ORDER BY g NULLS FIRST",
        ] {
            let (answer, plan) = run(&ours, sql).await;
            let (expected, _) = run(&theirs, sql).await;
            assert_eq!(answer, expected, "{sql}");
            assert!(plan.contains("RunGroupedAggregateExec"), "{sql}: {plan}");
            assert!(decodes(&plan), "{sql}: {plan}");
        }
        // A union with an input of text (as the hours not coalesced yet
        // are): that input is encoded, the scan's dictionaries are taken.
        for ctx in [&ours, &theirs] {
            ctx.register_table("p", Arc::new(table(&DataType::Utf8)))
                .unwrap();
        }
        for sql in [
            "SELECT g, count(*), sum(v) FROM (SELECT * FROM t UNION ALL SELECT * FROM p) \
             GROUP BY g ORDER BY g NULLS FIRST",
            "SELECT g, h, sum(i) FROM (SELECT * FROM t WHERE i > 10 UNION ALL SELECT * FROM p) \
             WHERE v > 5.0 GROUP BY g, h ORDER BY g NULLS FIRST, h NULLS FIRST",
        ] {
            let (answer, plan) = run(&ours, sql).await;
            let (expected, _) = run(&theirs, sql).await;
            assert_eq!(answer, expected, "{sql}");
            assert!(
                plan.contains("UnionExec")
                    && !decodes(&plan)
                    && plan.contains("CAST(g@0 AS Dictionary"),
                "{sql}: {plan}"
            );
        }
        let sql = "SELECT g, max(g) FROM (SELECT * FROM t UNION ALL SELECT * FROM p) \
                   GROUP BY g ORDER BY g NULLS FIRST";
        let (answer, plan) = run(&ours, sql).await;
        assert_eq!(answer, run(&theirs, sql).await.0, "{sql}");
        assert!(
            decodes(&plan) && !plan.contains("CAST(g@0"),
            "{sql}: {plan}"
        );

        // And the same answers as the table of plain text.
        let text = context(&DataType::Utf8, true, SessionConfig::new());
        for sql in QUERIES {
            let (answer, _) = run(&ours, sql).await;
            let (expected, _) = run(&text, sql).await;
            assert_eq!(answer, expected, "{sql}");
        }
    }

    #[tokio::test]
    async fn other_aggregates_are_left_to_datafusion() {
        let ctx = context(&DataType::Utf8, true, SessionConfig::new());
        for sql in [
            "SELECT count(*) FROM t",
            "SELECT g, h, count(*) FROM t GROUP BY ROLLUP (g, h)",
            "SELECT g, array_agg(v ORDER BY i) FROM t GROUP BY g",
        ] {
            let (_, plan) = run(&ctx, sql).await;
            assert!(!plan.contains("RunGroupedAggregateExec"), "{sql}: {plan}");
        }
    }

    #[tokio::test]
    async fn a_full_memory_pool_makes_it_emit_early_and_nothing_is_lost() {
        let sql = "SELECT g, sum(i) AS s FROM t GROUP BY g";
        let ours = context(&DataType::Utf8, true, SessionConfig::new());
        let exec = run_grouped(&ours, sql).await;
        // 64 KiB: the partition of 2,800 texts outgrows it many times over.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(64 * 1024)))
            .build_arc()
            .unwrap();
        let task = Arc::new(TaskContext::default().with_runtime(runtime));
        let state = datafusion::physical_plan::collect(exec, task)
            .await
            .unwrap();
        let state_rows = text_sum_rows(&state);
        let mut sums: HashMap<Option<String>, i64> = HashMap::new();
        for (key, sum) in &state_rows {
            *sums.entry(key.clone()).or_default() += sum;
        }
        let state_rows = state_rows.len();
        let theirs = context(&DataType::Utf8, false, SessionConfig::new());
        let expected = theirs.sql(sql).await.unwrap().collect().await.unwrap();
        let mut groups = 0;
        for (key, sum) in text_sum_rows(&expected) {
            assert_eq!(sums.get(&key), Some(&sum), "{key:?}");
            groups += 1;
        }
        assert_eq!(sums.len(), groups);
        // Without early emits there would be at most one state row per
        // group and partition: the groups and the ≤ 6 texts of each of the
        // four other partitions.
        assert!(
            state_rows > groups + 100,
            "{state_rows} state rows, {groups} groups"
        );
    }

    /// An exact percentile is aggregated in one phase over all partitions,
    /// also where a join above relies on the aggregate's output being split
    /// by its key (the results are split again), with DataFusion's answers.
    #[tokio::test]
    async fn a_percentile_is_aggregated_in_one_phase_over_all_partitions() {
        let config = || {
            let mut config = SessionConfig::new();
            let join = &mut config.options_mut().optimizer;
            join.hash_join_single_partition_threshold = 0;
            join.hash_join_single_partition_threshold_rows = 0;
            config
        };
        let ours = context(&DataType::Utf8, true, config());
        let theirs = context(&DataType::Utf8, false, config());
        let sql = "SELECT a.g, a.p, b.n FROM \
             (SELECT g, percentile_cont(0.99) WITHIN GROUP (ORDER BY v) AS p FROM t GROUP BY g) a \
             JOIN (SELECT g, count(*) AS n FROM t GROUP BY g) b ON a.g = b.g ORDER BY a.g";
        let (answer, plan) = run(&ours, sql).await;
        assert_eq!(answer, run(&theirs, sql).await.0, "{plan}");
        assert!(answer.lines().count() > 8, "{answer}");
        let lines: Vec<&str> = plan.lines().map(str::trim_start).collect();
        let single = lines
            .iter()
            .position(|l| l.starts_with("RunGroupedAggregateExec: mode=Single"))
            .expect(&plan);
        assert!(lines[single - 1].starts_with("RepartitionExec: partitioning=Hash([g@0], 3)"));
        assert!(
            lines[single + 1].starts_with("CoalescePartitionsExec"),
            "{plan}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("HashJoinExec: mode=Partitioned")),
            "{plan}"
        );
        // The count's aggregate keeps its two phases.
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("RunGroupedAggregateExec: mode=Partial")),
            "{plan}"
        );
    }

    /// The two phases a restart runs are the replaced ones, with the yields
    /// the engine's later rule puts above joins and repartitions.
    #[tokio::test]
    async fn the_restarted_two_phases_yield_above_joins_and_repartitions() {
        let ctx = context(&DataType::Utf8, true, SessionConfig::new());
        let sql = "SELECT g, k, percentile_cont(0.5) WITHIN GROUP (ORDER BY v + k) AS p \
                   FROM t CROSS JOIN (SELECT value AS k FROM generate_series(1, 3)) GROUP BY g, k";
        let exec = run_grouped(&ctx, sql).await;
        let single = exec.downcast_ref::<RunGroupedAggregateExec>().unwrap();
        assert_eq!(single.mode, Mode::Single);
        let replaced = Arc::clone(single.two_phases.as_ref().unwrap());
        let plan = two_phase_plan(replaced, ctx.state().config_options()).unwrap();
        let text = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
        assert!(lines[0].starts_with("CoalescePartitionsExec"), "{text}");
        let at = |prefix: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        };
        // final, yield, repartition by the keys, partial, ..., yield, cross join.
        let partial = at("RunGroupedAggregateExec: mode=Partial");
        let repartition = at("RepartitionExec: partitioning=Hash");
        assert!(
            at("AggregateExec: mode=FinalPartitioned") < repartition,
            "{text}"
        );
        assert!(lines[repartition - 1].starts_with("YieldExec"), "{text}");
        assert!(repartition < partial, "{text}");
        let join = at("CrossJoinExec");
        assert!(
            partial < join && lines[join - 1].starts_with("YieldExec"),
            "{text}"
        );
        // It runs: one row per group and k.
        let rows: usize = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        let groups = ctx
            .sql("SELECT count(DISTINCT g) + 1 AS n FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let groups = groups[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(rows as i64, groups * 3);
    }

    /// Past the memory limit an exact percentile in one phase starts over in
    /// the two phases it replaced (the partial aggregates emit early, the
    /// final ones spill), with DataFusion's answers and the restart counted;
    /// a pool too small for those too fails with the pool's error.
    #[tokio::test]
    async fn a_percentile_past_the_memory_limit_starts_over_in_two_phases() {
        let ctx = context(&DataType::Utf8, true, SessionConfig::new());
        let sql = "SELECT g, percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS p FROM t GROUP BY g";
        let pool = |bytes| {
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(GreedyMemoryPool::new(bytes)))
                .build_arc()
                .unwrap();
            Arc::new(TaskContext::default().with_runtime(runtime))
        };
        // Each group and its percentile, in the order of the groups.
        let lines = |batches: &[RecordBatch]| {
            let mut lines = Vec::new();
            for batch in batches {
                for row in 0..batch.num_rows() {
                    let cells: Vec<String> = batch
                        .columns()
                        .iter()
                        .map(|c| array_value_to_string(c, row).unwrap())
                        .collect();
                    lines.push(cells.join(" | "));
                }
            }
            lines.sort_unstable();
            lines
        };
        let theirs = context(&DataType::Utf8, false, SessionConfig::new());
        let expected = lines(&theirs.sql(sql).await.unwrap().collect().await.unwrap());
        assert!(expected.len() > 1_000, "{} rows", expected.len());
        // 16 MiB holds the one phase; 256 KiB holds the two phases but not
        // the one (which needs over 256 KiB for the 15,000 values and the
        // batches they are held in); 64 KiB not even the two phases.
        for (bytes, restarts) in [(16 << 20, 0), (256 * 1024, 1)] {
            let exec = run_grouped(&ctx, sql).await;
            let results = datafusion::physical_plan::collect(Arc::clone(&exec), pool(bytes))
                .await
                .unwrap();
            assert_eq!(lines(&results), expected, "{bytes} bytes");
            let counted = exec
                .metrics()
                .unwrap()
                .sum_by_name("two_phase_restarts")
                .map(|m| m.as_usize());
            assert_eq!(counted, Some(restarts), "{bytes} bytes");
        }
        let exec = run_grouped(&ctx, sql).await;
        let err = datafusion::physical_plan::collect(exec, pool(64 * 1024))
            .await
            .unwrap_err();
        assert!(
            matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{err}"
        );
    }

    /// `sql` planned in `ctx`, and the node that replaced its partial aggregate.
    async fn run_grouped(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut exec = None;
        plan.apply(|node| {
            if node.is::<RunGroupedAggregateExec>() {
                exec = Some(Arc::clone(node));
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        exec.expect("the partial aggregate is replaced")
    }

    #[tokio::test]
    async fn explain_analyze_shows_its_rows_time_and_lookups() {
        let ctx = context(&DataType::Utf8, true, SessionConfig::new());
        let sql = "SELECT g, h, count(*) FROM t GROUP BY g, h";
        let exec = run_grouped(&ctx, sql).await;
        let state = datafusion::physical_plan::collect(Arc::clone(&exec), ctx.task_ctx())
            .await
            .unwrap();
        let metrics = exec.metrics().unwrap().aggregate_by_name();
        let state_rows: usize = state.iter().map(|b| b.num_rows()).sum();
        assert_eq!(metrics.output_rows(), Some(state_rows));
        assert!(metrics.elapsed_compute().unwrap() > 0);
        // Counted here by walking each input batch's rows: a batch with
        // runs of two rows or more on average has one lookup per run.
        let mut expected = 0;
        for partition in table(&DataType::Utf8).batches {
            for batch in partition.read().await.iter() {
                let g = batch.column(0).as_string::<i32>();
                let h = batch
                    .column(3)
                    .as_primitive::<arrow::datatypes::Int64Type>();
                let key = |row: usize| {
                    (
                        g.is_valid(row).then(|| g.value(row)),
                        h.is_valid(row).then(|| h.value(row)),
                    )
                };
                let runs = (0..batch.num_rows())
                    .filter(|&row| row == 0 || key(row) != key(row - 1))
                    .count();
                expected += if runs * 2 > batch.num_rows() {
                    batch.num_rows()
                } else {
                    runs
                };
            }
        }
        let lookups = metrics.sum_by_name("group_lookups").unwrap().as_usize();
        assert_eq!(lookups, expected);
        assert!(lookups < 15_000, "{lookups} lookups for 15,000 rows");
        let explained = ctx
            .sql(&format!("EXPLAIN ANALYZE {sql}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let explained = pretty_format_batches(&explained).unwrap().to_string();
        let line = explained
            .lines()
            .find(|l| l.contains("RunGroupedAggregateExec"))
            .unwrap();
        for metric in [
            "output_rows=",
            "output_bytes=",
            "elapsed_compute=",
            "group_lookups=",
        ] {
            assert!(line.contains(metric), "{metric} in {line}");
        }
        assert!(!line.contains("output_bytes=0.0 B"), "{line}");
    }

    /// The (text, sum) rows of batches of a text and an Int64 column.
    fn text_sum_rows(batches: &[RecordBatch]) -> Vec<(Option<String>, i64)> {
        let mut rows = Vec::new();
        for batch in batches {
            let g = batch.column(0).as_string::<i32>();
            let s = batch
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>();
            for row in 0..batch.num_rows() {
                rows.push((
                    g.is_valid(row).then(|| g.value(row).to_string()),
                    s.value(row),
                ));
            }
        }
        rows
    }

    #[test]
    fn dictionary_keys_find_runs_and_only_looked_up_rows_are_decoded() {
        let schema = Arc::new(Schema::new(vec![Field::new("g", DataType::Utf8, true)]));
        let mut groups = new_group_values(schema, &GroupOrdering::None).unwrap();
        let (mut ids, mut run_ids) = (Vec::new(), Vec::new());
        let types = [DataType::Utf8];
        // "a" twice in the dictionary: keys 0 and 1 are the same group, the
        // run is only cut in two.
        let keys: Vec<ArrayRef> = vec![Arc::new(
            DictionaryArray::<Int32Type>::try_new(
                arrow::array::Int32Array::from(vec![
                    Some(0),
                    Some(0),
                    Some(1),
                    Some(1),
                    Some(2),
                    Some(2),
                    None,
                    None,
                ]),
                Arc::new(StringArray::from(vec!["a", "a", "b"])),
            )
            .unwrap(),
        )];
        group_ids(&keys, &types, groups.as_mut(), &mut ids, &mut run_ids).unwrap();
        assert_eq!(ids, vec![0, 0, 0, 0, 1, 1, 2, 2]);
        assert_eq!(run_ids, vec![0, 0, 1, 2], "one lookup per run of keys");
        // Another batch, another dictionary: key 0 is now "b".
        let keys: Vec<ArrayRef> = vec![Arc::new(
            DictionaryArray::<Int32Type>::try_new(
                arrow::array::Int32Array::from(vec![0, 0, 1, 1]),
                Arc::new(StringArray::from(vec!["b", "c"])),
            )
            .unwrap(),
        )];
        group_ids(&keys, &types, groups.as_mut(), &mut ids, &mut run_ids).unwrap();
        assert_eq!(ids, vec![1, 1, 3, 3]);
        let emitted = groups.emit(EmitTo::All).unwrap();
        assert_eq!(emitted[0].data_type(), &DataType::Utf8);
        let texts: Vec<Option<&str>> = emitted[0].as_string::<i32>().iter().collect();
        assert_eq!(texts, vec![Some("a"), Some("b"), None, Some("c")]);
    }

    #[test]
    fn runs_are_looked_up_once_and_every_row_gets_its_group() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, true),
            Field::new("h", DataType::Int64, true),
        ]));
        let mut groups = new_group_values(schema, &GroupOrdering::None).unwrap();
        let (mut ids, mut run_ids) = (Vec::new(), Vec::new());
        // Runs: (b,1)×3, (None,1)×3, (None,None), (a,1), (b,1)×4, (b,2)×2.
        let keys: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![
                Some("b"),
                Some("b"),
                Some("b"),
                None,
                None,
                None,
                None,
                Some("a"),
                Some("b"),
                Some("b"),
                Some("b"),
                Some("b"),
                Some("b"),
                Some("b"),
            ])),
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                None,
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(2),
                Some(2),
            ])),
        ];
        let types = [DataType::Utf8, DataType::Int64];
        group_ids(&keys, &types, groups.as_mut(), &mut ids, &mut run_ids).unwrap();
        assert_eq!(ids, vec![0, 0, 0, 1, 1, 1, 2, 3, 0, 0, 0, 0, 4, 4]);
        assert_eq!(run_ids, vec![0, 1, 2, 3, 0, 4], "one lookup per run");
        // Next batch: no runs at all, every row looked up; old groups kept.
        let keys: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("c"),
                None,
                Some("b"),
            ])),
            Arc::new(Int64Array::from(vec![Some(1), Some(1), None, Some(2)])),
        ];
        group_ids(&keys, &types, groups.as_mut(), &mut ids, &mut run_ids).unwrap();
        assert_eq!(ids, vec![3, 5, 2, 4]);
        let emitted = groups.emit(EmitTo::All).unwrap();
        let texts: Vec<Option<&str>> = emitted[0].as_string::<i32>().iter().collect();
        assert_eq!(
            texts,
            vec![Some("b"), None, None, Some("a"), Some("b"), Some("c")]
        );
    }
}
