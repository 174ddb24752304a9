//! File pruning by time: the bounds that a query's filters put on `time`,
//! compared with each file's hour partition.

use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use faasight_collector::model::schema::TIME;
use faasight_collector::storage::layout::MICROS_PER_HOUR;

/// Inclusive bounds on `time` in µs; `None` = unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

fn timestamp_micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(ms), _) => ms.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(*us),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns.div_euclid(1_000)),
        _ => None,
    }
}

fn literal_micros(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => timestamp_micros(v),
        Expr::Cast(c) => literal_micros(&c.expr),
        Expr::TryCast(c) => literal_micros(&c.expr),
        _ => None,
    }
}

fn is_time(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => c.name == TIME,
        Expr::Cast(c) => is_time(&c.expr),
        _ => false,
    }
}

impl TimeRange {
    fn lower(&mut self, v: i64) {
        self.min = Some(self.min.map_or(v, |m| m.max(v)));
    }

    fn upper(&mut self, v: i64) {
        self.max = Some(self.max.map_or(v, |m| m.min(v)));
    }

    /// Narrows the range with every conjunct it understands; anything else
    /// leaves it as is (pruning stays conservative).
    pub fn from_filters(filters: &[Expr]) -> Self {
        let mut r = TimeRange::default();
        for f in filters {
            r.apply(f);
        }
        r
    }

    fn apply(&mut self, e: &Expr) {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    self.apply(left);
                    self.apply(right);
                    return;
                }
                let (op, v) = if is_time(left) {
                    match literal_micros(right) {
                        Some(v) => (*op, v),
                        None => return,
                    }
                } else if is_time(right) {
                    match (literal_micros(left), op.swap()) {
                        (Some(v), Some(op)) => (op, v),
                        _ => return,
                    }
                } else {
                    return;
                };
                match op {
                    Operator::Gt | Operator::GtEq => self.lower(v),
                    Operator::Lt | Operator::LtEq => self.upper(v),
                    Operator::Eq => {
                        self.lower(v);
                        self.upper(v);
                    }
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_time(expr) => {
                if let Some(v) = literal_micros(low) {
                    self.lower(v);
                }
                if let Some(v) = literal_micros(high) {
                    self.upper(v);
                }
            }
            _ => {}
        }
    }

    /// Whether rows of the hour starting at `hour_start` can match.
    pub fn overlaps_hour(&self, hour_start: i64) -> bool {
        let hour_end = hour_start + MICROS_PER_HOUR; // exclusive
        self.min.is_none_or(|min| hour_end > min) && self.max.is_none_or(|max| hour_start <= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(us: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(us),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn bounds_from_comparisons_and_between() {
        let h = MICROS_PER_HOUR;
        let r =
            TimeRange::from_filters(&[col("time").gt_eq(ts(10 * h)), ts(12 * h).gt(col("time"))]);
        assert_eq!(
            r,
            TimeRange {
                min: Some(10 * h),
                max: Some(12 * h)
            }
        );
        assert!(!r.overlaps_hour(9 * h));
        assert!(r.overlaps_hour(10 * h));
        assert!(r.overlaps_hour(12 * h));
        assert!(!r.overlaps_hour(13 * h));
        let r = TimeRange::from_filters(&[col("time").between(ts(h), ts(2 * h))]);
        assert_eq!(
            r,
            TimeRange {
                min: Some(h),
                max: Some(2 * h)
            }
        );
    }

    #[test]
    fn unknown_filters_do_not_prune() {
        let r = TimeRange::from_filters(&[col("name").eq(lit("x")), col("time").not_eq(ts(5))]);
        assert_eq!(r, TimeRange::default());
        assert!(r.overlaps_hour(0));
    }
}
