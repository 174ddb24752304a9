"""The DuckDB and Postgres-wire half of the query benchmark (benches/query.rs).

usage: query_duckdb.py DATA_DIR PG_ADDR RUNS < queries.json
queries.json: [{"name", "duckdb", "faasight"}]

DuckDB reads faasight's Parquet files directly and merges the records of an
invocation itself (the same work as faasight's `invocations` view), with
the same list prices. "cold" is the first run on a fresh DuckDB connection
(and the first over a fresh Postgres connection); "hot" is the median of
RUNS further runs. DuckDB also runs each query on faasight's coalesced
layout (DATA_DIR/invocations, one row per invocation) as a second
reference. Prints one JSON line: {name: {duckdb_cold_ms, duckdb_hot_ms,
coalesced_cold_ms, coalesced_hot_ms, pg_cold_ms, pg_hot_ms, duckdb_rows,
coalesced_rows, pg_rows}}.
"""
import json
import statistics
import sys
import time

import duckdb
import psycopg

PRICES = """
CREATE TEMP TABLE prices AS SELECT * FROM (VALUES
  ('us-east-1', 0.0000002, 0.0000166667, 0.0000133334),
  ('eu-west-1', 0.0000002, 0.0000166667, 0.0000133334),
  ('eu-central-1', 0.0000002, 0.0000166667, 0.0000133334),
  ('eu-south-1', 0.00000023, 0.0000195172, 0.0000156138)
) AS p(region, request, x86, arm)
"""


def invocations_view(data_dir):
    pattern = f"{data_dir}/invocation_records/*/*/*.parquet"
    return f"""
    CREATE TEMP VIEW invocations AS
    SELECT m.*, p.request + m.billed_duration_ms / 1000.0 * m.memory_size_mb / 1024.0
             * CASE WHEN m.architecture = 'arm64' THEN p.arm ELSE p.x86 END AS cost_usd
    FROM (
      SELECT min(time) AS time, function_name, request_id,
             max(region) AS region, max(architecture) AS architecture,
             coalesce(bool_or(cold_start), false) AS cold_start,
             max(CASE WHEN source <> 'span' THEN duration_ms END) AS duration_ms,
             max(billed_duration_ms) AS billed_duration_ms,
             max(memory_size_mb) AS memory_size_mb
      FROM read_parquet('{pattern}', hive_partitioning = false)
      GROUP BY function_name, request_id
    ) m LEFT JOIN prices p ON p.region = m.region
    """


def coalesced_view(data_dir):
    """faasight's coalesced layout read by DuckDB: one row per settled
    invocation, cost included (faasight writes it with the same prices)."""
    pattern = f"{data_dir}/invocations/*/*/*.parquet"
    return f"""
    CREATE TEMP VIEW invocations AS
    SELECT * FROM read_parquet('{pattern}', hive_partitioning = false)
    """


def timed(run):
    start = time.perf_counter()
    rows = run()
    return (time.perf_counter() - start) * 1000.0, rows


def main():
    data_dir, pg_addr, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    queries = json.load(sys.stdin)
    host, port = pg_addr.rsplit(":", 1)
    out = {}
    for q in queries:
        con = duckdb.connect()
        con.execute("SET threads = 2")
        con.execute(PRICES)
        con.execute(invocations_view(data_dir))
        cold, rows = timed(lambda: con.execute(q["duckdb"]).fetchall())
        hot = [timed(lambda: con.execute(q["duckdb"]).fetchall())[0] for _ in range(runs)]
        con.close()
        con = duckdb.connect()
        con.execute("SET threads = 2")
        con.execute(coalesced_view(data_dir))
        c_cold, c_rows = timed(lambda: con.execute(q["duckdb"]).fetchall())
        c_hot = [timed(lambda: con.execute(q["duckdb"]).fetchall())[0] for _ in range(runs)]
        con.close()
        with psycopg.connect(host=host, port=int(port), user="postgres", dbname="faasight",
                             autocommit=True) as pg:
            pg_cold, pg_rows = timed(lambda: pg.execute(q["faasight"]).fetchall())
            pg_hot = [timed(lambda: pg.execute(q["faasight"]).fetchall())[0] for _ in range(runs)]
        out[q["name"]] = {
            "duckdb_cold_ms": cold,
            "duckdb_hot_ms": statistics.median(hot),
            "duckdb_rows": len(rows),
            "coalesced_cold_ms": c_cold,
            "coalesced_hot_ms": statistics.median(c_hot),
            "coalesced_rows": len(c_rows),
            "pg_cold_ms": pg_cold,
            "pg_hot_ms": statistics.median(pg_hot),
            "pg_rows": len(pg_rows),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
