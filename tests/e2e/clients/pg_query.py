"""Runs queries over faasight's Postgres wire with psycopg 3 and prints the
results as JSON, one line.

usage: pg_query.py HOST:PORT [--password P] [--binary] < queries.json
queries.json: [{"sql": "...", "params": [...]}]; params are bound with
psycopg's extended protocol (server-side parameters, not string pasting).
Each result is {"columns", "types", "rows"} or {"error", "sqlstate"}.
Timestamps print as RFC 3339 UTC with a Z, like faasight's JSON.
"""
import argparse
import datetime
import decimal
import json
import sys

import psycopg


def plain(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        text = v.isoformat()
        return text + "Z"
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--password")
    ap.add_argument("--binary", action="store_true")
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    queries = json.load(sys.stdin)
    out = []
    with psycopg.connect(host=host, port=int(port), user="postgres", dbname="faasight",
                         password=args.password, autocommit=True, connect_timeout=10) as conn:
        for q in queries:
            try:
                cur = conn.cursor(binary=args.binary)
                cur.execute(q["sql"], q.get("params") or None)
                cols = [d.name for d in cur.description] if cur.description else []
                types = [d.type_code for d in cur.description] if cur.description else []
                rows = [[plain(v) for v in r] for r in cur.fetchall()] if cur.description else []
                out.append({"columns": cols, "types": types, "rows": rows})
            except psycopg.Error as e:
                out.append({"error": str(e).strip(), "sqlstate": e.sqlstate})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
