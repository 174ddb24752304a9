"""Reads faasight's Parquet files with DuckDB and pyarrow (hive
partitioning), independently of faasight, and prints what they hold.

usage: duckdb_count.py DATA_DIR TABLE
"""
import json
import sys

import duckdb
import pyarrow.dataset as ds


def main():
    data_dir, table = sys.argv[1], sys.argv[2]
    pattern = f"{data_dir}/{table}/*/*/*.parquet"
    con = duckdb.connect()
    rows, distinct_ids = con.execute(
        f"SELECT count(*), count(DISTINCT span_id) FROM read_parquet('{pattern}', hive_partitioning = true)"
    ).fetchone()
    hours = con.execute(
        f"SELECT count(*) FROM read_parquet('{pattern}', hive_partitioning = true) "
        "WHERE strftime(time AT TIME ZONE 'UTC', '%Y-%m-%d') = date AND CAST(hour AS INTEGER) = hour(time AT TIME ZONE 'UTC')"
    ).fetchone()[0]
    dataset = ds.dataset(f"{data_dir}/{table}", format="parquet", partitioning="hive")
    print(json.dumps({
        "duckdb_rows": rows,
        "duckdb_distinct_span_ids": distinct_ids,
        "duckdb_rows_in_right_partition": hours,
        "pyarrow_rows": dataset.count_rows(),
        "span_ids": sorted(r[0] for r in con.execute(f"SELECT span_id FROM read_parquet('{pattern}')").fetchall()),
    }))


if __name__ == "__main__":
    main()
