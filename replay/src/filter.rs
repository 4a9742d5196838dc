//! `--where`: a DataFusion SQL predicate over the columns `ts` (timestamp ms), `metric`
//! (utf8), `labels` (map of utf8 to utf8) and `value` (float64), e.g.
//! `labels['node'] = 'n07' AND value > 0`. It is planned once and evaluated on every
//! chunk as an Arrow batch.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, MapBuilder, RecordBatch, StringBuilder, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use vigil_engine::labels::METRIC_NAME;

use crate::source::Chunk;

/// A compiled `--where` predicate.
#[derive(Debug)]
pub struct Filter {
    expr: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
    sql: String,
}

fn schema() -> SchemaRef {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("metric", DataType::Utf8, false),
        Field::new("labels", DataType::Map(Arc::new(entries), false), false),
        Field::new("value", DataType::Float64, true),
    ]))
}

impl Filter {
    /// Plans `sql`; errors say what DataFusion could not understand.
    pub fn new(sql: &str) -> Result<Self, String> {
        let schema = schema();
        let df_schema = DFSchema::try_from(Arc::clone(&schema)).map_err(|e| e.to_string())?;
        let ctx = SessionContext::new();
        let expr = ctx
            .parse_sql_expr(sql, &df_schema)
            .map_err(|e| format!("{sql:?}: {e} (columns: ts, metric, labels['name'], value)"))?;
        let expr = ctx
            .create_physical_expr(expr, &df_schema)
            .map_err(|e| format!("{sql:?}: {e}"))?;
        Ok(Filter {
            expr,
            schema,
            sql: sql.to_string(),
        })
    }

    /// The predicate as given.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Which rows of `chunk` pass (NULL counts as false).
    pub fn evaluate(&self, chunk: &Chunk) -> Result<Vec<bool>, String> {
        let n = chunk.rows.len();
        let ts = TimestampMillisecondArray::from_iter_values(chunk.rows.iter().map(|r| r.1));
        let value = Float64Array::from_iter_values(chunk.rows.iter().map(|r| r.2));
        let mut metric = StringBuilder::with_capacity(n, n * 16);
        let mut labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for &(s, _, _) in &chunk.rows {
            let l = &chunk.series[s as usize];
            metric.append_value(l.get(METRIC_NAME).map_or("", String::as_str));
            for (k, v) in l.iter().filter(|(k, _)| *k != METRIC_NAME) {
                labels.keys().append_value(k);
                labels.values().append_value(v);
            }
            labels.append(true).map_err(|e| e.to_string())?;
        }
        let labels = labels.finish();
        let labels = datafusion::arrow::compute::cast(&labels, self.schema.field(2).data_type())
            .map_err(|e| e.to_string())?;
        let batch = RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![
                Arc::new(ts),
                Arc::new(metric.finish()),
                labels,
                Arc::new(value),
            ],
        )
        .map_err(|e| e.to_string())?;
        let out = self
            .expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(n))
            .map_err(|e| e.to_string())?;
        if out.data_type() != &DataType::Boolean {
            return Err(format!(
                "{:?} is not a predicate (it gives {})",
                self.sql,
                out.data_type()
            ));
        }
        let b = out.as_boolean();
        Ok((0..n).map(|i| b.is_valid(i) && b.value(i)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_engine::Labels;

    fn chunk() -> Chunk {
        let mk = |node: &str| -> Labels {
            [("__name__", "cpu"), ("node", node)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Chunk {
            series: vec![mk("n07").into(), mk("n08").into()],
            rows: vec![(0, 1000, 1.0), (1, 1000, 2.0), (0, 2000, 3.0)],
        }
    }

    #[test]
    fn label_value_and_time_predicates() {
        let f = Filter::new("labels['node'] = 'n07'").unwrap();
        assert_eq!(f.evaluate(&chunk()).unwrap(), [true, false, true]);
        let f = Filter::new("value > 1.5 AND metric = 'cpu'").unwrap();
        assert_eq!(f.evaluate(&chunk()).unwrap(), [false, true, true]);
        let f = Filter::new("ts >= to_timestamp_millis(2000)").unwrap();
        assert_eq!(f.evaluate(&chunk()).unwrap(), [false, false, true]);
        let f = Filter::new("labels['missing'] = 'x'").unwrap();
        assert_eq!(
            f.evaluate(&chunk()).unwrap(),
            [false, false, false],
            "NULL is false"
        );
    }

    #[test]
    fn bad_sql_is_a_clear_error() {
        let e = Filter::new("labels[ = 1").unwrap_err();
        assert!(e.contains("columns: ts, metric"), "{e}");
        assert!(Filter::new("nosuchcolumn = 1").is_err());
        let f = Filter::new("value + 1").unwrap();
        assert!(f
            .evaluate(&chunk())
            .unwrap_err()
            .contains("not a predicate"));
    }
}
