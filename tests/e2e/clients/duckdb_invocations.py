"""An independent oracle: reads faasight's invocation_records Parquet files
with DuckDB, merges the records of each invocation itself and prices them
with AWS's published arithmetic, and prints per-function figures as JSON.

usage: duckdb_invocations.py DATA_DIR
"""
import json
import sys

import duckdb

# AWS Lambda list prices (requests per invocation, GB-second by architecture).
PRICES = """
SELECT * FROM (VALUES
  ('us-east-1', 0.0000002, 0.0000166667, 0.0000133334),
  ('eu-west-1', 0.0000002, 0.0000166667, 0.0000133334),
  ('eu-central-1', 0.0000002, 0.0000166667, 0.0000133334),
  ('eu-south-1', 0.00000023, 0.0000195172, 0.0000156138)
) AS p(region, request, x86, arm)
"""


def main():
    data_dir = sys.argv[1]
    pattern = f"{data_dir}/invocation_records/*/*/*.parquet"
    con = duckdb.connect()
    rows = con.execute(f"""
        WITH inv AS (
          SELECT function_name, request_id,
                 coalesce(bool_or(cold_start), false) AS cold,
                 max(billed_duration_ms) AS billed,
                 max(CASE WHEN source <> 'span' THEN duration_ms END) AS duration,
                 max(memory_size_mb) AS memory,
                 max(architecture) AS arch,
                 max(region) AS region
          FROM read_parquet('{pattern}', hive_partitioning = false)
          GROUP BY function_name, request_id
        )
        SELECT inv.function_name,
               count(*) AS invocations,
               sum(billed) AS billed_ms,
               avg(CASE WHEN cold THEN 1.0 ELSE 0.0 END) AS cold_start_rate,
               sum(p.request + billed / 1000.0 * memory / 1024.0
                   * CASE WHEN arch = 'arm64' THEN p.arm ELSE p.x86 END) AS cost_usd,
               quantile_cont(duration, 0.5) AS p50_duration_ms,
               quantile_cont(duration, 0.99) AS p99_duration_ms
        FROM inv JOIN ({PRICES}) p ON p.region = inv.region
        GROUP BY inv.function_name ORDER BY inv.function_name
    """).fetchall()
    cols = ["function_name", "invocations", "billed_ms", "cold_start_rate", "cost_usd",
            "p50_duration_ms", "p99_duration_ms"]
    print(json.dumps([dict(zip(cols, [float(v) if not isinstance(v, str) else v for v in r]))
                      for r in rows]))


if __name__ == "__main__":
    main()
