//! Making every query yield to tokio, so a timeout or a dropped client can
//! stop it.
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
//! two-core runtime, the server did not even send the `408`.
//!
//! Spending budget per batch is not enough either: a batch from a join can
//! stand for a great deal of work. With a `CooperativeExec` above every
//! join and repartition that query still ran on after its `408`: each
//! batch reaching the nested-loop join is joined with every left row, and
//! 128 of them are many seconds of CPU.
//!
//! [`YieldAboveMultipliers`] runs after DataFusion's own rules and puts a
//! [`YieldExec`] above each join, unnest and repartition: once its consumer
//! has worked [`TIME_SLICE`] since the task last yielded there, the next
//! poll returns `Pending` (after waking itself), so the task yields and a
//! cancelled query ends there. What stays out of reach is work inside one
//! call of an operator: a nested-loop join joins one right batch with its
//! whole left side before it polls again.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
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
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::Stream;

/// The longest a consumer works above a [`YieldExec`] before it yields.
pub const TIME_SLICE: Duration = Duration::from_millis(10);

/// Puts a [`YieldExec`] above every join, unnest and repartition (see the
/// module doc).
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

/// Passes its input through, returning `Pending` once per [`TIME_SLICE`]
/// of its consumer's work.
#[derive(Debug, Clone)]
pub struct YieldExec {
    input: Arc<dyn ExecutionPlan>,
}

impl YieldExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        YieldExec { input }
    }
}

impl DisplayAs for YieldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "YieldExec: slice={TIME_SLICE:?}")
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
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return datafusion::common::internal_err!(
                "YieldExec has one input, not {}",
                children.len()
            );
        }
        Ok(Arc::new(YieldExec::new(children.swap_remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(YieldStream::new(
            self.input.execute(partition, context)?,
        )))
    }
}

/// The stream of a [`YieldExec`].
pub struct YieldStream {
    inner: SendableRecordBatchStream,
    /// When the task last yielded here (or first polled).
    since: Option<Instant>,
}

impl YieldStream {
    pub fn new(inner: SendableRecordBatchStream) -> Self {
        YieldStream { inner, since: None }
    }
}

impl fmt::Debug for YieldStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YieldStream")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl Stream for YieldStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let now = Instant::now();
        match self.since {
            Some(since) if now.duration_since(since) >= TIME_SLICE => {
                self.since = Some(now);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            None => self.since = Some(now),
            Some(_) => {}
        }
        let polled = self.inner.as_mut().poll_next(cx);
        if polled.is_pending() {
            self.since = Some(Instant::now());
        }
        polled
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
        let mut stream = YieldStream::new(always_ready(3));
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

    #[tokio::test]
    async fn multipliers_are_wrapped_and_answers_stay_the_same() {
        let ctx = SessionContext::new();
        let sql = "SELECT count(*) AS n FROM (VALUES (1), (2), (3)) a(x) \
                   JOIN (VALUES (1), (2), (2)) b(y) ON a.x = b.y \
                   CROSS JOIN unnest([1, 2, 3, 4]) AS u(z)";
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
        wrapped
            .apply(|node| {
                if multiplies_batches(node.as_ref()) {
                    multipliers += 1;
                }
                for child in node.children() {
                    if multiplies_batches(child.as_ref()) {
                        assert!(node.is::<YieldExec>(), "{} above a multiplier", node.name());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .expect("walk");
        assert!(multipliers >= 3, "a join, a cross join and an unnest");
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
        assert_eq!(n(&before), 12);
        assert_eq!(n(&after), 12);
    }
}
