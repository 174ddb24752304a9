//! The `||` operator held to the query's memory limit, as functions are
//! (see [`crate::bounded`]).
//!
//! `||` is an operator, not a function, so wrapping functions does not
//! reach it, and `s || s || s …` over long values built what it was asked
//! for (`LargeUtf8` has no 2 GiB cap, and a chain is evaluated as one
//! expression). [`BoundConcatOperator`] runs after DataFusion's own
//! optimizer rules and rewrites each `a || b` left in the plan into a call
//! of [`ConcatOperator`] wrapped in [`Bounded`](crate::bounded::Bounded):
//! the call is refused when its arguments together are over the limit,
//! before it builds. The call evaluates DataFusion's own `||` on its
//! arguments, so answers, types and nulls are DataFusion's; its name in a
//! schema is the operator's (`a || b`), so column names do not change.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{self, Column, Literal};

/// `a || b` as a function: DataFusion's operator on two arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConcatOperator {
    signature: Signature,
}

impl ConcatOperator {
    /// The name the call has in plans and errors.
    pub const NAME: &'static str = "||";

    pub fn new() -> Self {
        ConcatOperator {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl Default for ConcatOperator {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ConcatOperator {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [a, b] => Ok(format!("{a} || {b}")),
            _ => internal_err!("|| takes two arguments"),
        }
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [a, b] => Ok(format!("{} || {}", a.schema_name(), b.schema_name())),
            _ => internal_err!("|| takes two arguments"),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [a, b] => BinaryTypeCoercer::new(a, &Operator::StringConcat, b).get_result_type(),
            _ => internal_err!("|| takes two arguments"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else {
            return internal_err!("|| takes two arguments");
        };
        // The arguments as a batch (arrays) and literals (scalars), for
        // DataFusion's own physical `||`.
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        let mut side = |value: &ColumnarValue| -> Arc<dyn PhysicalExpr> {
            match value {
                ColumnarValue::Scalar(scalar) => Arc::new(Literal::new(scalar.clone())),
                ColumnarValue::Array(array) => {
                    let name = format!("arg{}", columns.len());
                    let column = Arc::new(Column::new(&name, columns.len()));
                    fields.push(Field::new(name, array.data_type().clone(), true));
                    columns.push(Arc::clone(array));
                    column
                }
            }
        };
        let left = side(a);
        let right = side(b);
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(args.number_rows)),
        )?;
        expressions::BinaryExpr::new(left, Operator::StringConcat, right).evaluate(&batch)
    }
}

/// Rewrites each `a || b` of a plan into a call of the bounded
/// [`ConcatOperator`] (see the module doc).
#[derive(Debug)]
pub struct BoundConcatOperator {
    udf: Arc<ScalarUDF>,
}

impl BoundConcatOperator {
    /// `udf`: the session's bounded [`ConcatOperator`].
    pub fn new(udf: Arc<ScalarUDF>) -> Self {
        BoundConcatOperator { udf }
    }
}

impl OptimizerRule for BoundConcatOperator {
    fn name(&self) -> &str {
        "bound_concat_operator"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // A scan's filters decide which files and row groups are read;
        // they are evaluated again above it, where they are rewritten.
        if matches!(plan, LogicalPlan::TableScan(_)) {
            return Ok(Transformed::no(plan));
        }
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|expr| match expr {
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::StringConcat,
                    right,
                }) => Ok(Transformed::yes(Expr::ScalarFunction(
                    ScalarFunction::new_udf(Arc::clone(&self.udf), vec![*left, *right]),
                ))),
                other => Ok(Transformed::no(other)),
            })?;
            Ok(rewritten.update_data(|expr| name.restore(expr)))
        })
    }
}
