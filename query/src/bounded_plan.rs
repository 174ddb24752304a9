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
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::bounded::{Limits, bounded, concat_operator, is_unbound, over_query_limit};
use crate::memory::human_bytes;
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
            // Where a constant is repeated for every row of a batch.
            let literals = matches!(node, LogicalPlan::Projection(_) | LogicalPlan::Filter(_));
            // Names are kept only where something changes: working them
            // out renders every expression.
            let mut unbound = false;
            node.apply_expressions(|expr| {
                unbound = unbound || has_unbound(expr, literals);
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
                let mut rewritten = bound_expr(expr, self.limits)?;
                if literals {
                    rewritten = rewritten
                        .transform_data(|expr| check_large_constants(expr, self.limits))?;
                }
                Ok(rewritten.update_data(|expr| name.restore(expr)))
            })
        })
    }
}

/// Constants of this size or more are checked for what they take once
/// repeated for every row of a batch.
const LARGE_CONSTANT: usize = 16 << 10;

fn is_large_constant(expr: &Expr) -> bool {
    matches!(expr, Expr::Literal(value, _) if !value.is_null() && value.size() >= LARGE_CONSTANT)
}

fn is_checked_constant(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(call) if call.func.inner().is::<RepeatedConstant>())
}

/// `expr` with each large constant held to `limits` once repeated for
/// every row (see [`RepeatedConstant`]).
fn check_large_constants(expr: Expr, limits: Limits) -> Result<Transformed<Expr>> {
    expr.transform_down(|expr| {
        if is_checked_constant(&expr) {
            Ok(Transformed::new(expr, false, TreeNodeRecursion::Jump))
        } else if is_large_constant(&expr) {
            let func = Arc::new(ScalarUDF::new_from_impl(RepeatedConstant::new(limits)));
            Ok(Transformed::new(
                Expr::ScalarFunction(ScalarFunction::new_udf(func, vec![expr])),
                true,
                TreeNodeRecursion::Jump,
            ))
        } else {
            Ok(Transformed::no(expr))
        }
    })
}

/// A large constant of a projection or a filter, checked before it is
/// used: DataFusion repeats a constant for every row of the batch wherever
/// it needs it as a column (`SELECT range(1, 1000000) FROM spans` asked for
/// 8 MB × 8,192 rows, 64 GB, per batch). Volatile, so that it is not
/// folded back into the constant.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RepeatedConstant {
    signature: Signature,
    limits: Limits,
}

impl RepeatedConstant {
    pub fn new(limits: Limits) -> Self {
        RepeatedConstant {
            signature: Signature::any(1, Volatility::Volatile),
            limits,
        }
    }
}

impl ScalarUDFImpl for RepeatedConstant {
    fn name(&self) -> &str {
        "constant"
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [value] => Ok(value.to_string()),
            _ => internal_err!("constant takes one argument"),
        }
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [value] => Ok(value.schema_name().to_string()),
            _ => internal_err!("constant takes one argument"),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [value] => Ok(value.clone()),
            _ => internal_err!("constant takes one argument"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return internal_err!("constant takes one argument");
        };
        if let ColumnarValue::Scalar(scalar) = value {
            let repeated = (scalar.size() as u128).saturating_mul(args.number_rows as u128);
            if repeated > self.limits.query as u128 {
                return Err(over_query_limit(
                    format!(
                        "a constant of {} repeated for each of {} rows would take {}",
                        human_bytes(scalar.size()),
                        args.number_rows,
                        human_bytes(usize::try_from(repeated).unwrap_or(usize::MAX)),
                    ),
                    self.limits.query,
                ));
            }
        }
        Ok(value.clone())
    }
}

/// Whether `expr` has a `||`, a call not yet held to a limit or (with
/// `literals`) a large constant not yet checked.
fn has_unbound(expr: &Expr, literals: bool) -> bool {
    let mut found = false;
    let visited = expr.apply(|e| {
        if literals && is_checked_constant(e) {
            return Ok(TreeNodeRecursion::Jump);
        }
        found = match e {
            Expr::BinaryExpr(BinaryExpr {
                op: Operator::StringConcat,
                ..
            }) => true,
            Expr::ScalarFunction(call) => is_unbound(&call.func),
            _ => literals && is_large_constant(e),
        };
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found || visited.is_err()
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
