//! The `alerts` table: the rules engine's active alerts (pending and
//! firing) as SQL rows, so that dashboards and psql see what
//! `GET /api/v1/alerts` shows. The rules engine publishes its alerts to the
//! board whenever its state changes; a scan reads one snapshot, so queries
//! that do not read `alerts` cost nothing.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::RwLock;

use crate::rules::state::{Alert, AlertState};

/// The latest alerts of the rules engine (empty when no rules run).
#[derive(Debug, Default)]
pub struct AlertBoard {
    alerts: RwLock<Vec<Alert>>,
}

fn utc_micros(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

/// The columns of `alerts`.
pub fn alerts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rule", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("summary", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("savings_usd_month", DataType::Float64, true),
        utc_micros("since", false),
        utc_micros("firing_since", true),
        utc_micros("last_notified", true),
    ]))
}

impl AlertBoard {
    /// Replaces the alerts with the engine's current ones.
    pub fn publish(&self, alerts: Vec<Alert>) {
        *self.alerts.write() = alerts;
    }

    pub fn snapshot(&self) -> Vec<Alert> {
        self.alerts.read().clone()
    }

    /// The alerts as a table, one row per alert subject.
    fn table(&self) -> Result<MemTable> {
        let alerts = self.snapshot();
        let schema = alerts_schema();
        let text = |f: &dyn Fn(&Alert) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(alerts.iter().map(f)))
        };
        let float = |f: &dyn Fn(&Alert) -> Option<f64>| -> ArrayRef {
            Arc::new(alerts.iter().map(f).collect::<Float64Array>())
        };
        let time = |f: &dyn Fn(&Alert) -> Option<i64>| -> ArrayRef {
            Arc::new(
                alerts
                    .iter()
                    .map(f)
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            )
        };
        let columns: Vec<ArrayRef> = vec![
            text(&|a| a.rule.clone()),
            text(&|a| a.severity.as_str().to_string()),
            text(&|a| {
                match a.state {
                    AlertState::Pending => "pending",
                    AlertState::Firing => "firing",
                }
                .to_string()
            }),
            text(&|a| {
                a.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            text(&|a| a.message.clone()),
            text(&|a| a.description.clone()),
            float(&|a| a.value),
            float(&|a| a.savings_usd_month),
            time(&|a| Some(a.since_us)),
            time(&|a| a.firing_since_us),
            time(&|a| a.last_notified_us),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        MemTable::try_new(schema, vec![vec![batch]])
    }
}

#[async_trait]
impl TableProvider for AlertBoard {
    fn schema(&self) -> SchemaRef {
        alerts_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.table()?.scan(state, projection, filters, limit).await
    }
}
