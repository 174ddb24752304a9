//! Cost functions usable in any query, over the price catalog.
//!
//! | function | result |
//! |---|---|
//! | `lambda_cost(billed_ms, memory_mb, architecture, region [, ephemeral_storage_mb [, at]])` | one on-demand Lambda invocation |
//! | `lambda_cost_whatif(billed_ms, memory_mb, architecture, region, new_memory_mb, new_architecture)` | the same invocation at another memory size and/or architecture, same billed duration |
//! | `lambda_tiered_cost(gb_seconds, architecture, region [, at])` | duration cost of a month's GB-seconds through the volume tiers |
//! | `lambda_provisioned_cost(provisioned_gb_seconds, architecture, region [, used_gb_seconds])` | provisioned-concurrency charge for that much provisioned memory × time, plus the provisioned duration price of the GB-seconds the invocations used on it |
//! | `gcp_cost(duration_ms, memory_mb, region)` | one Cloud Run functions request |
//! | `azure_cost(duration_ms, memory_used_mb, region)` | one Azure Functions Consumption execution |
//! | `azure_flex_cost(duration_ms, instance_memory_mb, region)` | one Flex Consumption on-demand execution |
//! | `invocation_cost(provider, region, architecture, billed_ms, duration_ms, memory_mb, max_memory_used_mb, time)` | any provider's invocation (the `invocations.cost_usd` column) |
//! | `invocation_cost_estimated(provider, region, architecture, time)` | true when a default price had to stand in |
//!
//! Every function returns NULL when an input it needs is NULL; a region the
//! catalog does not know is priced at the provider's default region.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float64Array, Float64Builder, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::catalog::{Arch, PriceCatalog, Provider};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    LambdaCost,
    LambdaWhatIf,
    LambdaTiered,
    LambdaProvisioned,
    Gcp,
    Azure,
    AzureFlex,
    Invocation,
    InvocationEstimated,
}

/// What an argument is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Number,
    Text,
    Time,
}

use Param::{Number as N, Text as S, Time as T};

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::LambdaCost,
        Kind::LambdaWhatIf,
        Kind::LambdaTiered,
        Kind::LambdaProvisioned,
        Kind::Gcp,
        Kind::Azure,
        Kind::AzureFlex,
        Kind::Invocation,
        Kind::InvocationEstimated,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::LambdaCost => "lambda_cost",
            Kind::LambdaWhatIf => "lambda_cost_whatif",
            Kind::LambdaTiered => "lambda_tiered_cost",
            Kind::LambdaProvisioned => "lambda_provisioned_cost",
            Kind::Gcp => "gcp_cost",
            Kind::Azure => "azure_cost",
            Kind::AzureFlex => "azure_flex_cost",
            Kind::Invocation => "invocation_cost",
            Kind::InvocationEstimated => "invocation_cost_estimated",
        }
    }

    /// Parameters; the trailing ones past `required` are optional.
    fn params(self) -> (&'static [Param], usize) {
        match self {
            Kind::LambdaCost => (&[N, N, S, S, N, T], 4),
            Kind::LambdaWhatIf => (&[N, N, S, S, N, S], 6),
            Kind::LambdaTiered => (&[N, S, S, T], 3),
            Kind::LambdaProvisioned => (&[N, S, S, N], 3),
            Kind::Gcp | Kind::Azure | Kind::AzureFlex => (&[N, N, S], 3),
            Kind::Invocation => (&[S, S, S, N, N, N, N, T], 8),
            Kind::InvocationEstimated => (&[S, S, S, T], 4),
        }
    }

    fn returns(self) -> DataType {
        match self {
            Kind::InvocationEstimated => DataType::Boolean,
            _ => DataType::Float64,
        }
    }
}

/// One cost function bound to a catalog.
#[derive(Debug)]
struct CostUdf {
    kind: Kind,
    signature: Signature,
    catalog: Arc<PriceCatalog>,
}

impl PartialEq for CostUdf {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}

impl Eq for CostUdf {}

impl Hash for CostUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

/// Every cost function, for registration in a session.
pub fn cost_udfs(catalog: &Arc<PriceCatalog>) -> Vec<ScalarUDF> {
    Kind::ALL
        .into_iter()
        .map(|kind| {
            let (params, required) = kind.params();
            let arities = (required..=params.len()).map(TypeSignature::Any).collect();
            ScalarUDF::new_from_impl(CostUdf {
                kind,
                signature: Signature::one_of(arities, Volatility::Immutable),
                catalog: Arc::clone(catalog),
            })
        })
        .collect()
}

/// An argument column read as its parameter kind.
enum Col {
    Number(Float64Array),
    Text(StringArray),
    Time(TimestampMicrosecondArray),
}

impl Col {
    fn number(&self, i: usize) -> Option<f64> {
        match self {
            Col::Number(a) if a.is_valid(i) => Some(a.value(i)).filter(|v| v.is_finite()),
            _ => None,
        }
    }

    fn text(&self, i: usize) -> Option<&str> {
        match self {
            Col::Text(a) if a.is_valid(i) => Some(a.value(i)),
            _ => None,
        }
    }

    fn time(&self, i: usize) -> Option<i64> {
        match self {
            Col::Time(a) if a.is_valid(i) => Some(a.value(i)),
            _ => None,
        }
    }
}

fn read_col(array: &ArrayRef, param: Param, function: &str) -> Result<Col> {
    let plan_err = |e: arrow::error::ArrowError| {
        DataFusionError::Plan(format!(
            "{function}: cannot read {} as {param:?}: {e}",
            array.data_type()
        ))
    };
    Ok(match param {
        Param::Number => {
            let a = cast(array, &DataType::Float64).map_err(plan_err)?;
            Col::Number(downcast::<Float64Array>(&a, function)?.clone())
        }
        Param::Text => {
            let a = cast(array, &DataType::Utf8).map_err(plan_err)?;
            Col::Text(downcast::<StringArray>(&a, function)?.clone())
        }
        Param::Time => {
            let a =
                cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(plan_err)?;
            Col::Time(downcast::<TimestampMicrosecondArray>(&a, function)?.clone())
        }
    })
}

fn downcast<'a, A: 'static>(a: &'a ArrayRef, function: &str) -> Result<&'a A> {
    a.as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| DataFusionError::Internal(format!("{function}: unexpected array type")))
}

/// Missing architecture means x86_64 (Lambda's default); an unknown one too,
/// but then the price is an estimate.
fn arch_of(value: Option<&str>) -> (Arch, bool) {
    match value {
        None => (Arch::X86_64, false),
        Some(s) => Arch::parse(s).map_or((Arch::X86_64, true), |a| (a, false)),
    }
}

impl ScalarUDFImpl for CostUdf {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.kind.returns())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let (params, _) = self.kind.params();
        let cols = args
            .args
            .iter()
            .zip(params)
            .map(|(value, &param)| read_col(&value.to_array(rows)?, param, self.name()))
            .collect::<Result<Vec<_>>>()?;
        let out: ArrayRef = if self.kind == Kind::InvocationEstimated {
            let mut b = BooleanBuilder::with_capacity(rows);
            for i in 0..rows {
                b.append_option(self.estimated_row(&cols, i));
            }
            Arc::new(b.finish())
        } else {
            let mut b = Float64Builder::with_capacity(rows);
            for i in 0..rows {
                b.append_option(self.cost_row(&cols, i));
            }
            Arc::new(b.finish())
        };
        if all_scalar {
            return Ok(ColumnarValue::Scalar(
                datafusion::scalar::ScalarValue::try_from_array(&out, 0)?,
            ));
        }
        Ok(ColumnarValue::Array(out))
    }
}

impl CostUdf {
    fn cost_row(&self, c: &[Col], i: usize) -> Option<f64> {
        let catalog = &self.catalog;
        let opt = |k: usize| c.get(k);
        match self.kind {
            Kind::LambdaCost => {
                let (arch, _) = arch_of(c[2].text(i));
                let at = opt(5).and_then(|col| col.time(i));
                let p = catalog.aws.find(c[3].text(i), at)?.prices;
                let ephemeral = opt(4).and_then(|col| col.number(i));
                Some(p.invocation(arch, c[0].number(i)?, c[1].number(i)?, ephemeral))
            }
            Kind::LambdaWhatIf => {
                let p = catalog.aws.find(c[3].text(i), None)?.prices;
                let billed = c[0].number(i)?;
                let memory = c[4].number(i).or_else(|| c[1].number(i))?;
                let (arch, _) = arch_of(c[5].text(i).or_else(|| c[2].text(i)));
                Some(p.invocation(arch, billed, memory, None))
            }
            Kind::LambdaTiered => {
                let (arch, _) = arch_of(c[1].text(i));
                let at = opt(3).and_then(|col| col.time(i));
                let p = catalog.aws.find(c[2].text(i), at)?.prices;
                Some(p.tiered_duration(arch, c[0].number(i)?))
            }
            Kind::LambdaProvisioned => {
                let (arch, _) = arch_of(c[1].text(i));
                let p = catalog.aws.find(c[2].text(i), None)?.prices;
                let provisioned = c[0].number(i)? * p.provisioned_concurrency_gb_second?.get(arch);
                let used = match opt(3) {
                    Some(col) => col.number(i)? * p.provisioned_duration_gb_second?.get(arch),
                    None => 0.0,
                };
                Some(provisioned + used)
            }
            Kind::Gcp => {
                let p = catalog.gcp.find(c[2].text(i), None)?.prices;
                Some(p.invocation(c[0].number(i)?, c[1].number(i)?))
            }
            Kind::Azure => {
                let p = catalog.azure.find(c[2].text(i), None)?.prices;
                Some(p.consumption(c[0].number(i)?, c[1].number(i)?))
            }
            Kind::AzureFlex => {
                let p = catalog.azure.find(c[2].text(i), None)?.prices;
                p.flex(c[0].number(i)?, c[1].number(i)?)
            }
            Kind::Invocation => self.invocation_row(c, i),
            Kind::InvocationEstimated => None,
        }
    }

    /// `invocation_cost(provider, region, architecture, billed_ms,
    /// duration_ms, memory_mb, max_memory_used_mb, time)`.
    fn invocation_row(&self, c: &[Col], i: usize) -> Option<f64> {
        let provider = match c[0].text(i) {
            None => Provider::Aws,
            Some(p) => Provider::parse(p)?,
        };
        let region = c[1].text(i);
        let at = c[7].time(i);
        let billed = c[3].number(i);
        let duration = c[4].number(i);
        let memory = c[5].number(i);
        match provider {
            Provider::Aws => {
                let (arch, _) = arch_of(c[2].text(i));
                let p = self.catalog.aws.find(region, at)?.prices;
                Some(p.invocation(arch, billed?, memory?, None))
            }
            Provider::Gcp => {
                let p = self.catalog.gcp.find(region, at)?.prices;
                Some(p.invocation(duration.or(billed)?, memory?))
            }
            Provider::Azure => {
                let p = self.catalog.azure.find(region, at)?.prices;
                Some(p.consumption(duration.or(billed)?, c[6].number(i).or(memory)?))
            }
        }
    }

    /// `invocation_cost_estimated(provider, region, architecture, time)`.
    fn estimated_row(&self, c: &[Col], i: usize) -> Option<bool> {
        let (provider, unknown_provider) = match c[0].text(i) {
            None => (Provider::Aws, true),
            Some(p) => match Provider::parse(p) {
                Some(p) => (p, false),
                None => return Some(true),
            },
        };
        let region = c[1].text(i);
        let at = c[3].time(i);
        let (_, unknown_arch) = arch_of(c[2].text(i));
        let region_estimated = match provider {
            Provider::Aws => self
                .catalog
                .aws
                .find(region, at)
                .is_none_or(|f| f.estimated),
            Provider::Gcp => self
                .catalog
                .gcp
                .find(region, at)
                .is_none_or(|f| f.estimated),
            Provider::Azure => self
                .catalog
                .azure
                .find(region, at)
                .is_none_or(|f| f.estimated),
        };
        Some(unknown_provider || unknown_arch || region_estimated)
    }
}
