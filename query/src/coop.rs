//! Making every query yield to tokio, so a timeout or a dropped client can
//! stop it, and so that a heavy query cannot hold the runtime that ingest
//! shares.
//!
//! DataFusion stops a query by dropping its streams; the tasks it spawned
//! (one per partition below an exchange) end at their next `Pending`. An
//! operator that loops over its input until it has output — a nested-loop
//! join whose filter rejects every row, an aggregate, a filter — only
//! returns `Pending` when its input does. DataFusion's `EnsureCooperative`
//! makes the leaves spend tokio's task budget (one unit per batch, a yield
//! every 128) for that reason. That bounds the work between yields only
//! while every batch comes from a leaf. Two kinds of operator make batches
//! without reading one: joins (a cross join emits one batch per left row
//! for each right batch it reads) and `RepartitionExec`, whose distributor
//! channels, unlike the tokio channels of the other exchanges, spend no
//! budget. Above them such a loop may never yield: the runaway cross join
//! of the HTTP timeout test still kept a core busy and its memory held
//! 30 s after its `408`, and once, in CI, with both partitions stuck on the
//! two-core runtime, the server did not even send the `408`. Spending
//! budget per batch is not enough either: a batch from a join can stand for
//! a great deal of work (with a `CooperativeExec` above every join and
//! repartition that query still ran on after its `408`).
//!
//! [`YieldAboveMultipliers`] runs after DataFusion's own rules and puts a
//! [`YieldExec`] above each join, unnest and repartition: once its consumer
//! has worked [`TIME_SLICE`] since the task last yielded there, the next
//! poll returns `Pending`, so the task yields and a cancelled query ends
//! there. The yield goes through `tokio::task::yield_now`, which wakes the
//! task only after the runtime has polled its I/O driver; a plain self-wake
//! requeues it at once, and with every worker busy the driver (and so every
//! new request) waited up to 61 task polls, about a second.
//!
//! A nested-loop join needs more: for each probe (right) batch it passes
//! over every left row before polling again, so one poll is left rows ×
//! probe rows of filter evaluation (`generate_series(1, 1000000)` joined to
//! itself on `a + b < 0` held the runtime, ingest included, for 18 s). The
//! rule also puts a `YieldExec` under both of its inputs: the left one
//! counts the rows the join buffers, the right one cuts probe batches to
//! [`NLJ_PAIRS_PER_POLL`] ÷ that count rows (zero-copy slices), so one poll
//! stays near tens of milliseconds. The price is the join's own speed once
//! its left side passes 2,048 rows (smaller probe batches amortize less).
//! The query bench measures both sides: ingest latency beside two runaway
//! joins, and a legitimate 20,000 × 20,000 join (benches/query-report.md,
//! "Runaway isolation").

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, replace_children_if_necessary,
};
use futures::Stream;

/// The longest a consumer works above a [`YieldExec`] before it yields.
const TIME_SLICE: Duration = Duration::from_millis(10);

/// Left rows × probe rows a nested-loop join evaluates between two polls of
/// its probe side, at most (short of one probe row against a left side
/// larger than this).
const NLJ_PAIRS_PER_POLL: usize = 16 << 20;

/// The largest probe batch a nested-loop join gets (DataFusion's batch size).
const NLJ_MAX_PROBE_ROWS: usize = 8192;

/// Puts a [`YieldExec`] above every join, unnest and repartition, and under
/// both inputs of a nested-loop join (see the module doc).
#[derive(Debug, Default)]
pub struct YieldAboveMultipliers;

/// Operators that emit batches without reading one each.
fn multiplies_batches(node: &dyn ExecutionPlan) -> bool {
    node.is::<RepartitionExec>()
        || node.is::<UnnestExec>()
        || node.is::<CrossJoinExec>()
        || node.is::<NestedLoopJoinExec>()
        || node.is::<HashJoinExec>()
        || node.is::<SortMergeJoinExec>()
        || node.is::<SymmetricHashJoinExec>()
        || node.is::<PiecewiseMergeJoinExec>()
}

impl PhysicalOptimizerRule for YieldAboveMultipliers {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let node = if node.is::<NestedLoopJoinExec>() {
                pace_nested_loop_join(node)?
            } else {
                node
            };
            if multiplies_batches(node.as_ref()) {
                Ok(Transformed::yes(
                    Arc::new(YieldExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "YieldAboveMultipliers"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Puts a counting [`YieldExec`] under a nested-loop join's left input and
/// a slicing one, sharing the count, under its right input.
fn pace_nested_loop_join(join: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let children: Vec<Arc<dyn ExecutionPlan>> = join
        .children()
        .into_iter()
        .map(|c| match c.downcast_ref::<YieldExec>() {
            Some(y) => Arc::clone(&y.input),
            None => Arc::clone(c),
        })
        .collect();
    let [left, right] = <[_; 2]>::try_from(children).map_err(|c| {
        datafusion::common::internal_datafusion_err!("a nested-loop join with {} inputs", c.len())
    })?;
    let left_rows = Arc::new(AtomicUsize::new(0));
    replace_children_if_necessary(
        join,
        vec![
            Arc::new(YieldExec {
                input: left,
                role: Role::CountBuild(Arc::clone(&left_rows)),
            }),
            Arc::new(YieldExec {
                input: right,
                role: Role::SliceProbe(left_rows),
            }),
        ],
    )
}

/// What a [`YieldExec`] does besides yielding.
#[derive(Debug, Clone)]
enum Role {
    /// Nothing.
    Yield,
    /// Counts the rows passing (a nested-loop join's left input).
    CountBuild(Arc<AtomicUsize>),
    /// Cuts batches to [`NLJ_PAIRS_PER_POLL`] ÷ the count (its right input).
    SliceProbe(Arc<AtomicUsize>),
}

/// Passes its input through, returning `Pending` once per [`TIME_SLICE`]
/// of its consumer's work (and, under a nested-loop join, counting or
/// slicing its batches).
#[derive(Debug, Clone)]
pub struct YieldExec {
    input: Arc<dyn ExecutionPlan>,
    role: Role,
}

impl YieldExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        YieldExec {
            input,
            role: Role::Yield,
        }
    }
}

impl DisplayAs for YieldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "YieldExec: slice={TIME_SLICE:?}")?;
        match self.role {
            Role::Yield => Ok(()),
            Role::CountBuild(_) => write!(f, ", counts the join's left rows"),
            Role::SliceProbe(_) => write!(f, ", slices probe batches"),
        }
    }
}

impl ExecutionPlan for YieldExec {
    fn name(&self) -> &str {
        "YieldExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
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
        Ok(Arc::new(YieldExec {
            input: only_child("YieldExec", children)?,
            role: self.role.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if let Role::CountBuild(rows) = &self.role
            && partition == 0
        {
            // The join buffers its left input once per execution, from its
            // first partition on.
            rows.store(0, Ordering::Relaxed);
        }
        Ok(Box::pin(YieldStream::new(
            self.input.execute(partition, context)?,
            self.role.clone(),
        )))
    }
}

/// The one input of an operator that has one, from `with_new_children`.
pub(crate) fn only_child(
    operator: &str,
    mut children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if children.len() != 1 {
        return datafusion::common::internal_err!(
            "{operator} has one input, not {}",
            children.len()
        );
    }
    Ok(children.swap_remove(0))
}

/// The stream of a [`YieldExec`].
pub struct YieldStream {
    inner: SendableRecordBatchStream,
    role: Role,
    /// When the task last yielded here (or first polled).
    since: Option<Instant>,
    /// The yield in progress.
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The rest of a batch being cut into slices.
    rest: Option<RecordBatch>,
}

impl YieldStream {
    fn new(inner: SendableRecordBatchStream, role: Role) -> Self {
        YieldStream {
            inner,
            role,
            since: None,
            yielding: None,
            rest: None,
        }
    }

    /// Counts `batch`, or cuts it, keeping the rest for the next poll.
    fn pass(&mut self, batch: RecordBatch) -> RecordBatch {
        match &self.role {
            Role::Yield => batch,
            Role::CountBuild(rows) => {
                rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
                batch
            }
            Role::SliceProbe(left_rows) => {
                let left = left_rows.load(Ordering::Relaxed).max(1);
                let max = (NLJ_PAIRS_PER_POLL / left).clamp(1, NLJ_MAX_PROBE_ROWS);
                if batch.num_rows() > max {
                    self.rest = Some(batch.slice(max, batch.num_rows() - max));
                    batch.slice(0, max)
                } else {
                    batch
                }
            }
        }
    }
}

impl fmt::Debug for YieldStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YieldStream")
            .field("role", &self.role)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl Stream for YieldStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(yielding) = self.yielding.as_mut() {
            std::task::ready!(yielding.as_mut().poll(cx));
            // A new slice starts with this poll.
            self.yielding = None;
            self.since = None;
        }
        let now = Instant::now();
        match self.since {
            Some(since) if now.duration_since(since) >= TIME_SLICE => {
                // `yield_now` defers the wake-up until the runtime has polled
                // its I/O driver (see the module doc).
                let mut yielding: Pin<Box<dyn Future<Output = ()> + Send>> =
                    Box::pin(tokio::task::yield_now());
                if yielding.as_mut().poll(cx).is_pending() {
                    self.yielding = Some(yielding);
                    return Poll::Pending;
                }
                self.since = Some(now);
            }
            None => self.since = Some(now),
            Some(_) => {}
        }
        if let Some(rest) = self.rest.take() {
            let slice = self.pass(rest);
            return Poll::Ready(Some(Ok(slice)));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                let batch = self.pass(batch);
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Pending => {
                self.since = Some(Instant::now());
                Poll::Pending
            }
            other => other,
        }
    }
}

impl RecordBatchStream for YieldStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::prelude::SessionContext;

    use super::*;

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn always_ready(n: i64) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batches: Vec<Result<RecordBatch>> = (0..n)
            .map(|i| {
                Ok(RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from(vec![i]))],
                )?)
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        ))
    }

    #[test]
    fn a_slow_consumer_is_made_to_yield_and_loses_nothing() {
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut stream = YieldStream::new(always_ready(3), Role::Yield);
        let mut seen = Vec::new();
        let mut pendings = 0;
        loop {
            match Pin::new(&mut stream).poll_next(&mut cx) {
                Poll::Ready(Some(batch)) => {
                    let batch = batch.expect("batch");
                    let v = batch.column(0).as_any().downcast_ref::<Int64Array>();
                    seen.push(v.expect("int64").value(0));
                    // The consumer's work on this batch takes a whole slice.
                    std::thread::sleep(TIME_SLICE);
                }
                Poll::Ready(None) => break,
                Poll::Pending => pendings += 1,
            }
        }
        assert_eq!(seen, vec![0, 1, 2]);
        // After each of the three batches the next poll yielded, and woke
        // the task so it is polled again.
        assert_eq!(pendings, 3);
        assert_eq!(counter.0.load(Ordering::SeqCst), 3);
    }

    fn one_batch(rows: i64) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        );
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(vec![batch.map_err(Into::into)]),
        ))
    }

    fn drain(mut stream: YieldStream) -> Vec<RecordBatch> {
        let waker = Waker::from(Arc::new(CountingWaker::default()));
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        loop {
            match Pin::new(&mut stream).poll_next(&mut cx) {
                Poll::Ready(Some(b)) => out.push(b.expect("batch")),
                Poll::Ready(None) => return out,
                Poll::Pending => {}
            }
        }
    }

    #[test]
    fn probe_batches_are_cut_by_the_left_rows_counted() {
        let left_rows = Arc::new(AtomicUsize::new(0));
        let build = YieldStream::new(one_batch(300), Role::CountBuild(Arc::clone(&left_rows)));
        assert_eq!(drain(build)[0].num_rows(), 300);
        assert_eq!(left_rows.load(Ordering::Relaxed), 300);

        // A small left side: probe batches pass whole.
        let probe = YieldStream::new(one_batch(5000), Role::SliceProbe(Arc::clone(&left_rows)));
        let sizes: Vec<usize> = drain(probe).iter().map(|b| b.num_rows()).collect();
        assert_eq!(sizes, vec![5000]);

        // A left side a hundredth of the budget: slices of 100 rows, in order.
        left_rows.store(NLJ_PAIRS_PER_POLL / 100, Ordering::Relaxed);
        let probe = YieldStream::new(one_batch(250), Role::SliceProbe(Arc::clone(&left_rows)));
        let slices = drain(probe);
        let sizes: Vec<usize> = slices.iter().map(|b| b.num_rows()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let values: Vec<i64> = slices
            .iter()
            .flat_map(|b| {
                let v = b.column(0).as_any().downcast_ref::<Int64Array>();
                v.expect("int64").values().to_vec()
            })
            .collect();
        assert_eq!(values, (0..250).collect::<Vec<_>>());

        // A left side past the budget: one probe row at a time.
        left_rows.store(NLJ_PAIRS_PER_POLL * 4, Ordering::Relaxed);
        let probe = YieldStream::new(one_batch(3), Role::SliceProbe(left_rows));
        assert_eq!(drain(probe).len(), 3);
    }

    #[tokio::test]
    async fn multipliers_are_wrapped_and_answers_stay_the_same() {
        let ctx = SessionContext::new();
        let sql = "SELECT count(*) AS n FROM (VALUES (1), (2), (3)) a(x) \
                   JOIN (VALUES (1), (2), (2)) b(y) ON a.x = b.y \
                   CROSS JOIN unnest([1, 2, 3, 4]) AS u(z) \
                   JOIN (VALUES (1), (2), (3)) c(w) ON u.z > c.w";
        let plan = ctx
            .sql(sql)
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical plan");
        let wrapped = YieldAboveMultipliers
            .optimize(Arc::clone(&plan), &ConfigOptions::default())
            .expect("rule");
        let mut multipliers = 0;
        let mut nested_loops = 0;
        wrapped
            .apply(|node| {
                if multiplies_batches(node.as_ref()) {
                    multipliers += 1;
                }
                if node.is::<NestedLoopJoinExec>() {
                    nested_loops += 1;
                    let roles: Vec<&str> = node
                        .children()
                        .iter()
                        .map(|c| match c.downcast_ref::<YieldExec>().map(|y| &y.role) {
                            Some(Role::CountBuild(_)) => "count",
                            Some(Role::SliceProbe(_)) => "slice",
                            _ => "other",
                        })
                        .collect();
                    assert_eq!(roles, ["count", "slice"]);
                }
                for child in node.children() {
                    if multiplies_batches(child.as_ref()) {
                        assert!(node.is::<YieldExec>(), "{} above a multiplier", node.name());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .expect("walk");
        assert!(multipliers >= 4, "two joins, a cross join and an unnest");
        assert_eq!(nested_loops, 1);
        let task = ctx.task_ctx();
        let before = datafusion::physical_plan::collect(plan, Arc::clone(&task))
            .await
            .expect("run");
        let after = datafusion::physical_plan::collect(wrapped, task)
            .await
            .expect("run wrapped");
        let n = |b: &[RecordBatch]| {
            b[0].column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .expect("count")
                .value(0)
        };
        assert_eq!(n(&before), 18);
        assert_eq!(n(&after), 18);
    }
}
