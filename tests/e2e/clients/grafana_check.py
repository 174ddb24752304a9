"""Checks faasight's Grafana dashboards and provisioning and runs every
panel query on a running faasight the way Grafana would send it.

usage: grafana_check.py --pg HOST:PORT --api http://HOST:PORT --from RFC3339 --to RFC3339
       [--dashboards DIR]

For every dashboard: the required fields (uid, title, time range, the
function/region/architecture variables with "All", units, datasource
references to the provisioned uids). Then the variables' queries run (their
values feed the panels), and each SQL target is expanded like Grafana:
the frontend replaces the template variables (PostgreSQL datasource rules:
multi-value and "All" variables become quoted, comma-separated literals) and
`$__interval`; the backend replaces `$__interval`, `$__interval_ms`,
`$__unixEpochFrom()`/`To()` and the PostgreSQL macros (`$__timeFilter`,
`$__timeGroup`, `$__timeGroupAlias`, `$__timeFrom`, ... as in Grafana's
pkg/tsdb/grafana-postgresql-datasource/macros.go). Each expansion runs over
the Postgres wire with psycopg, once with every variable at "All" and once
with one value each, at two intervals. Tempo targets run through faasight's
/api/search.

Prints one JSON object: counts, the failures and the panels that came back
empty although they should have rows.
"""
import argparse
import datetime
import json
import pathlib
import re
import sys
import urllib.parse
import urllib.request

import psycopg
import yaml

PG_UID = "faasight-pg"
TEMPO_UID = "faasight-tempo"
VARIABLES = ["function", "region", "architecture"]
UNIT_PANELS = {"timeseries", "stat", "barchart"}


def rfc3339nano(t):
    """Go's time.RFC3339Nano of a UTC time: no trailing zeros, Z."""
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += ("." + f"{t.microsecond:06d}").rstrip("0")
    return text + "Z"


def parse_interval(text):
    """gtime.ParseInterval for the forms dashboards use (ms, s, m, h, d, w)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text.strip().strip("'"))
    if not m:
        raise ValueError(f"error parsing interval {text}")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


def go_float(seconds):
    """fmt's %v of a float64 number of seconds."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(seconds)


def quote_literal(value):
    return "'" + str(value).replace("'", "''") + "'"


def interpolate_variables(sql, variables, interval):
    """Grafana's frontend: template variables and $__interval."""
    def value(name):
        if name == "__interval":
            return interval
        if name == "__interval_ms":
            return str(int(parse_interval(interval) * 1000))
        if name not in variables:
            return None
        var, selected = variables[name]
        if isinstance(selected, list):
            return ",".join(quote_literal(v) for v in selected)
        if var.get("multi") or var.get("includeAll"):
            return quote_literal(selected)
        return str(selected).replace("'", "''")

    def sub(m):
        name = m.group(1) or m.group(2) or m.group(4)
        v = value(name)
        return m.group(0) if v is None else v

    return re.sub(r"\$(\w+)|\$\{(\w+)(:(\w+))?\}|\[\[(\w+)\]\]", sub, sql)


def interpolate_macros(sql, start, end, interval):
    """Grafana's backend (sqleng + the PostgreSQL macro engine)."""
    sql = sql.replace("$__interval_ms", str(int(parse_interval(interval) * 1000)))
    sql = sql.replace("$__interval", interval)
    sql = sql.replace("$__unixEpochFrom()", str(int(start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(end.timestamp())))
    original = sql

    def macro(name, args):
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339nano(start)}' AND '{rfc3339nano(end)}'"
        if name == "__timeFrom":
            return f"'{rfc3339nano(start)}'"
        if name == "__timeTo":
            return f"'{rfc3339nano(end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            if len(args) < 2:
                raise ValueError(f"macro {name} needs time column and interval")
            s = go_float(parse_interval(args[1]))
            group = f"floor(extract(epoch from {args[0]})/{s})*{s}"
            return group + ' AS "time"' if name == "__timeGroupAlias" else group
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
        raise ValueError(f"unknown macro {name!r}")

    def sub(m):
        name = m.group(1)
        if name == "__timeGroup":
            i = original.find(m.group(0))
            if i >= 0 and original[i + len(m.group(0)):i + len(m.group(0)) + 1] == ",":
                name = "__timeGroupAlias"
        args = [a.strip() for a in m.group(2).split(",")]
        return macro(name, args)

    return re.sub(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)", sub, sql)


def check_structure(path, dash, problems):
    where = path.name
    for key in ("uid", "title", "panels", "templating", "time", "schemaVersion"):
        if key not in dash:
            problems.append(f"{where}: no {key}")
    if dash.get("time", {}).get("from") != "now-24h":
        problems.append(f"{where}: default time range is not the last 24h")
    names = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    for name in VARIABLES:
        var = names.get(name)
        if var is None:
            problems.append(f"{where}: no variable {name}")
            continue
        if not var.get("includeAll"):
            problems.append(f"{where}: variable {name} has no All")
        if var.get("datasource", {}).get("uid") != PG_UID:
            problems.append(f"{where}: variable {name} not on {PG_UID}")
    ids = set()
    for p in dash.get("panels", []):
        title = f"{where} / {p.get('title')}"
        if p.get("id") in ids:
            problems.append(f"{title}: duplicate panel id")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            problems.append(f"{title}: no gridPos")
        ds = p.get("datasource", {}).get("uid")
        if ds not in (PG_UID, TEMPO_UID):
            problems.append(f"{title}: datasource {ds!r} is not a provisioned uid")
        if not p.get("targets"):
            problems.append(f"{title}: no targets")
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != ds:
                problems.append(f"{title}: target datasource differs from the panel's")
            if ds == PG_UID and not t.get("rawSql"):
                problems.append(f"{title}: SQL target without rawSql")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if p.get("type") in UNIT_PANELS and not unit:
            problems.append(f"{title}: no unit")
        if ds == PG_UID:
            sql = " ".join(t.get("rawSql", "") for t in p.get("targets", []))
            if "$__timeFilter" not in sql and "$__timeTo" not in sql:
                problems.append(f"{title}: no time filter macro")


def check_provisioning(root, problems):
    ds_file = root / "provisioning" / "datasources" / "faasight.yaml"
    doc = yaml.safe_load(ds_file.read_text())
    by_uid = {d.get("uid"): d for d in doc.get("datasources", [])}
    pg, tempo = by_uid.get(PG_UID), by_uid.get(TEMPO_UID)
    if not pg or pg.get("type") != "grafana-postgresql-datasource":
        problems.append(f"provisioning: no grafana-postgresql-datasource with uid {PG_UID}")
    if not tempo or tempo.get("type") != "tempo":
        problems.append(f"provisioning: no tempo datasource with uid {TEMPO_UID}")
    if pg:
        links = [c for c in pg.get("correlations", []) if c.get("targetUID") == TEMPO_UID]
        if not links or links[0].get("config", {}).get("field") != "trace_id":
            problems.append("provisioning: trace_id of the SQL datasource is not linked to Tempo")
    prov = yaml.safe_load((root / "provisioning" / "dashboards" / "faasight.yaml").read_text())
    if not prov.get("providers"):
        problems.append("provisioning: no dashboards provider")


def run_sql(conn, sql):
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchall() if cur.description else []


def tempo_search(api, query, limit, start, end):
    params = urllib.parse.urlencode({"q": query, "limit": limit, "start": int(start.timestamp()),
                                     "end": int(end.timestamp())})
    with urllib.request.urlopen(f"{api}/api/search?{params}", timeout=60) as r:
        return json.load(r).get("traces", [])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", required=True)
    ap.add_argument("--api", required=True)
    ap.add_argument("--from", dest="start", required=True)
    ap.add_argument("--to", dest="end", required=True)
    ap.add_argument("--dashboards", default="dashboards")
    args = ap.parse_args()
    start = datetime.datetime.fromisoformat(args.start.replace("Z", "+00:00")).astimezone(datetime.timezone.utc)
    end = datetime.datetime.fromisoformat(args.end.replace("Z", "+00:00")).astimezone(datetime.timezone.utc)
    root = pathlib.Path(args.dashboards)
    problems, empty, ran = [], [], []
    check_provisioning(root, problems)
    host, port = args.pg.rsplit(":", 1)
    files = sorted(root.glob("*.json"))
    panels = 0
    with psycopg.connect(host=host, port=int(port), user="grafana", dbname="faasight",
                         autocommit=True, connect_timeout=10) as conn:
        for path in files:
            dash = json.loads(path.read_text())
            check_structure(path, dash, problems)
            variables, values = {}, {}
            for var in dash.get("templating", {}).get("list", []):
                sql = interpolate_macros(interpolate_variables(var["query"], {}, "1m"), start, end, "1m")
                try:
                    rows = run_sql(conn, sql)
                except psycopg.Error as e:
                    problems.append(f"{path.name} / variable {var['name']}: {e}".strip())
                    continue
                ran.append(sql)
                values[var["name"]] = [r[0] for r in rows]
                if not rows:
                    empty.append(f"{path.name} / variable {var['name']}")
            selections = [
                {n: (v, values.get(n, [])) for n, v in ((v["name"], v) for v in dash["templating"]["list"])},
                {n: (v, values.get(n, [])[:1] or [""]) for n, v in ((v["name"], v) for v in dash["templating"]["list"])},
            ]
            for p in dash.get("panels", []):
                panels += 1
                expect = p.get("faasight", {}).get("expectRows", True)
                title = f"{path.name} / {p['title']}"
                for t in p.get("targets", []):
                    if p["datasource"]["uid"] == TEMPO_UID:
                        try:
                            found = tempo_search(args.api, t["query"], t.get("limit", 20), start, end)
                        except Exception as e:  # noqa: BLE001 - reported, not raised
                            problems.append(f"{title}: Tempo search failed: {e}")
                            continue
                        ran.append(t["query"])
                        if expect and not found:
                            empty.append(title)
                        continue
                    for i, selected in enumerate(selections):
                        for interval in ("1m", "1h"):
                            sql = interpolate_macros(
                                interpolate_variables(t["rawSql"], selected, interval), start, end, interval)
                            try:
                                rows = run_sql(conn, sql)
                            except psycopg.Error as e:
                                problems.append(f"{title}: {str(e).strip()}\n  SQL: {sql}")
                                continue
                            ran.append(sql)
                            if expect and i == 0 and not rows:
                                empty.append(title)
    print(json.dumps({
        "dashboards": [f.name for f in files],
        "panels": panels,
        "queries": len(ran),
        "problems": problems,
        "empty": sorted(set(empty)),
        "sample": ran[:3],
    }))


if __name__ == "__main__":
    sys.exit(main())
