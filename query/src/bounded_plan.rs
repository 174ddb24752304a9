//! The `||` operator held to the query's memory limit, as functions are
//! (see [`crate::bounded`]).
//!
//! Every function call of a plan, and the `||` operator, held to the
//! query's memory limit (see [`crate::bounded`]).
//!
//! Wrapping the session's functions does not reach calls that DataFusion
//! makes from its own function objects (its SQL planner turns `[a, b]`
//! into `make_array` and `l1 || l2` on lists into `array_concat`; `concat`
//! simplifies itself into a new `concat` call), nor `||` on text, which is
//! an operator: `s || s || s …` over long values built what it was asked
//! for (`LargeUtf8` has no 2 GiB cap, and a chain is one expression).
//! [`BoundFunctions`] rewrites the plan: each such call is wrapped, and
//! each `a || b` becomes a call of [`ConcatOperator`], wrapped as `concat`
//! is: refused when its arguments together are over the limit, before it
//! builds. The call evaluates DataFusion's own `||` on its arguments, so
//! answers, types and nulls are DataFusion's; its name in a schema is the
//! operator's (`a || b`), so column names do not change.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::bounded::{Limits, bounded, concat_operator, is_unbound};
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

/// Holds every function call of a plan to the session's limits: calls of
/// functions not yet wrapped (those DataFusion's SQL planner and its
/// simplifications make from its own function objects rather than the
/// session's, like `[a, b]` for `make_array` or `concat` joining its
/// literal arguments) are wrapped in [`Bounded`](crate::bounded::Bounded),
/// and each `a || b` becomes a bounded [`ConcatOperator`] call. Runs as
/// the last analyzer rule (after type coercion) and again as the last
/// optimizer rule.
#[derive(Debug)]
pub struct BoundFunctions {
    limits: Limits,
}

impl BoundFunctions {
    pub fn new(limits: Limits) -> Self {
        BoundFunctions { limits }
    }

    fn rewrite_plan(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up_with_subqueries(|node| {
            // Names are kept only where something changes: working them
            // out renders every expression.
            let mut unbound = false;
            node.apply_expressions(|expr| {
                unbound = unbound || has_unbound(expr);
                Ok(if unbound {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })?;
            if !unbound {
                return Ok(Transformed::no(node));
            }
            let names = NamePreserver::new(&node);
            node.map_expressions(|expr| {
                let name = names.save(&expr);
                let rewritten = bound_expr(expr, self.limits)?;
                Ok(rewritten.update_data(|expr| name.restore(expr)))
            })
        })
    }
}

/// Whether `expr` has a `||` or a call not yet held to a limit.
fn has_unbound(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(match e {
            Expr::BinaryExpr(BinaryExpr {
                op: Operator::StringConcat,
                ..
            }) => true,
            Expr::ScalarFunction(call) => is_unbound(&call.func),
            _ => false,
        })
    })
    .unwrap_or(true)
}

/// `expr` with every function call held to `limits` (see
/// [`BoundFunctions`]).
pub fn bound_expr(expr: Expr, limits: Limits) -> Result<Transformed<Expr>> {
    expr.transform_up(|expr| match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::StringConcat,
            right,
        }) => Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(concat_operator(limits), vec![*left, *right]),
        ))),
        Expr::ScalarFunction(call) => match bounded(&call.func, limits) {
            Some(func) => Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(func, call.args),
            ))),
            None => Ok(Transformed::no(Expr::ScalarFunction(call))),
        },
        other => Ok(Transformed::no(other)),
    })
}

impl AnalyzerRule for BoundFunctions {
    fn name(&self) -> &str {
        "bound_functions"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Ok(self.rewrite_plan(plan)?.data)
    }
}

impl OptimizerRule for BoundFunctions {
    fn name(&self) -> &str {
        "bound_functions"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        self.rewrite_plan(plan)
    }
}
