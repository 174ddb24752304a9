#!/usr/bin/env python3
"""Writes faasight's Grafana dashboards (dashboards/*.json) from the panel
definitions below, so that the five dashboards share one set of variables,
filters and units.

usage: scripts/dashboards.py          # (re)write dashboards/*.json
       scripts/dashboards.py --check  # exit 1 when a JSON file is stale

Every SQL panel uses Grafana's PostgreSQL macros and the `function`,
`region` and `architecture` variables; the dashboards test
(tests/e2e/dashboards.rs) expands them the way Grafana does and runs each
query on faasight over the Postgres wire.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "dashboards"

PG = {"type": "grafana-postgresql-datasource", "uid": "faasight-pg"}
TEMPO = {"type": "tempo", "uid": "faasight-tempo"}

# The variables every invocation query filters on. Region and architecture
# are null for providers without them (Cloud Run, Azure), which read 'n/a'.
FILTER = (
    "function_name IN ($function)"
    " AND coalesce(region, 'n/a') IN ($region)"
    " AND coalesce(architecture, 'n/a') IN ($architecture)"
)
INV = f"FROM invocations WHERE $__timeFilter(time) AND {FILTER}"
# Traces that touch the selected functions.
TRACES_OF_FUNCTIONS = (
    "trace_id IN (SELECT trace_id FROM invocations"
    f" WHERE $__timeFilter(time) AND trace_id IS NOT NULL AND {FILTER})"
)
# Per-group figures several panels show.
COLD_RATE = "avg(CASE WHEN cold_start THEN 1.0 ELSE 0.0 END) AS cold_start_rate"
FAILURE_RATE = "avg(CASE WHEN status = 'ok' THEN 0.0 ELSE 1.0 END) AS failure_rate"
P99 = "percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_duration_ms"
TODAY = "time >= date_trunc('day', CAST($__timeTo() AS TIMESTAMP)) AND time <= $__timeTo()"
MONTH = "time >= date_trunc('month', CAST($__timeTo() AS TIMESTAMP)) AND time <= $__timeTo()"

TRACE_LINK = {
    "title": "Open trace",
    "url": "",
    "internal": {
        "datasourceUid": TEMPO["uid"],
        "datasourceName": "faasight traces",
        "query": {"queryType": "traceql", "query": "${__value.raw}", "refId": "A"},
    },
}


def variables():
    def var(name, label, column):
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": PG,
            "query": (
                f"SELECT DISTINCT coalesce({column}, 'n/a') AS {name} FROM invocations "
                f"WHERE $__timeFilter(time) ORDER BY 1"
            ),
            "definition": f"distinct {column} of the time range",
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return {
        "list": [
            var("function", "Function", "function_name"),
            var("region", "Region", "region"),
            var("architecture", "Architecture", "architecture"),
        ]
    }


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self):
        self.x, self.y, self.row_h, self.next_id = 0, 0, 0, 1

    def place(self, panel, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel


def sql_target(sql, fmt):
    return {
        "refId": "A",
        "datasource": PG,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql,
    }


def panel(kind, title, sql, unit, fmt="table", description="", overrides=None, options=None,
          expect_rows=True):
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": PG,
        "targets": [sql_target(sql, fmt)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": overrides or []},
        "options": options or {},
        # Read by the dashboards test: a panel that should have rows on
        # `faasight generate` data.
        "faasight": {"expectRows": expect_rows},
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "fillOpacity": 10}
    return p


def stat(title, sql, unit, description=""):
    return panel("stat", title, sql, unit, description=description,
                 options={"reduceOptions": {"calcs": ["lastNotNull"]}, "graphMode": "none"})


def series(title, sql, unit, description="", stacked=False):
    p = panel("timeseries", title, sql, unit, fmt="time_series", description=description)
    if stacked:
        p["fieldConfig"]["defaults"]["custom"]["stacking"] = {"mode": "normal"}
    return p


def bars(title, sql, unit, description=""):
    return panel("barchart", title, sql, unit, description=description,
                 options={"orientation": "horizontal", "xTickLabelRotation": 0})


def column_units(units):
    return [
        {"matcher": {"id": "byName", "options": name},
         "properties": [{"id": "unit", "value": unit}]}
        for name, unit in units.items()
    ]


def table(title, sql, units, description="", trace_links=False, expect_rows=True):
    overrides = column_units(units)
    if trace_links:
        overrides.append({
            "matcher": {"id": "byName", "options": "trace_id"},
            "properties": [{"id": "links", "value": [TRACE_LINK]}],
        })
    return panel("table", title, sql, "none", description=description, overrides=overrides,
                 expect_rows=expect_rows)


def alerts_table(title, columns, where, order, description):
    """A table of the `alerts` SQL table (empty while no rule fires): the
    alerts that had begun by the end of the time range."""
    return table(title, f"SELECT {columns} FROM alerts WHERE since <= $__timeTo() AND {where} "
                        f"ORDER BY {order}",
                 {"savings_usd_month": "currencyUSD", "since": "dateTimeAsIso"}, description,
                 expect_rows=False)


def dashboard(uid, title, description, tags, rows):
    layout = Layout()
    panels = [layout.place(p, w, h) for (p, w, h) in rows]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["faasight"] + tags,
        "editable": True,
        "schemaVersion": 41,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "timezone": "utc",
        "refresh": "1m",
        "templating": variables(),
        "links": [{"type": "dashboards", "tags": ["faasight"], "asDropdown": True,
                   "title": "faasight", "includeVars": True, "keepTime": True}],
        "panels": panels,
    }


def overview():
    return dashboard(
        "faasight-overview", "faasight · Overview",
        "Invocations, failures, cold starts, latency and cost of the selected functions.",
        ["overview"],
        [
            (stat("Invocations", f"SELECT count(*) AS invocations {INV}", "short"), 4, 4),
            (stat("Errors", f"SELECT count(*) FILTER (WHERE status IN ('error', 'oom')) AS errors {INV}",
                  "short"), 4, 4),
            (stat("Timeouts", f"SELECT count(*) FILTER (WHERE status = 'timeout') AS timeouts {INV}",
                  "short"), 4, 4),
            (stat("Cold-start rate",
                  f"SELECT {COLD_RATE} {INV}",
                  "percentunit"), 4, 4),
            (stat("p99 duration",
                  f"SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 {INV}",
                  "ms"), 4, 4),
            (stat("Cost today",
                  f"SELECT coalesce(sum(cost_usd), 0) AS cost FROM invocations WHERE {TODAY} AND {FILTER}",
                  "currencyUSD", "Since midnight UTC of the end of the time range."), 2, 4),
            (stat("Cost month to date",
                  f"SELECT coalesce(sum(cost_usd), 0) AS cost FROM invocations WHERE {MONTH} AND {FILTER}",
                  "currencyUSD", "Since the first of the month (UTC) of the end of the time range."), 2, 4),
            (series("Invocations and failures",
                    "SELECT $__timeGroupAlias(time, $__interval), count(*) AS invocations, "
                    "count(*) FILTER (WHERE status <> 'ok') AS failures, "
                    "count(*) FILTER (WHERE cold_start) AS cold_starts "
                    f"{INV} GROUP BY 1 ORDER BY 1", "short"), 12, 8),
            (series("Cost by function",
                    "SELECT $__timeGroupAlias(time, $__interval), function_name AS metric, "
                    f"sum(cost_usd) AS cost {INV} GROUP BY 1, 2 ORDER BY 1", "currencyUSD",
                    stacked=True), 12, 8),
            (table("Top functions by cost",
                   "SELECT function_name, count(*) AS invocations, sum(cost_usd) AS cost_usd, "
                   "sum(cost_usd) / count(*) AS cost_per_invocation_usd, "
                   f"{COLD_RATE}, {FAILURE_RATE}, {P99} "
                   f"{INV} GROUP BY function_name ORDER BY cost_usd DESC LIMIT 20",
                   {"cost_usd": "currencyUSD", "cost_per_invocation_usd": "currencyUSD",
                    "cold_start_rate": "percentunit", "failure_rate": "percentunit",
                    "p99_duration_ms": "ms"}), 14, 10),
            (alerts_table("Active alerts",
                          "severity, rule, state, summary, value, savings_usd_month, since",
                          "state IN ('firing', 'pending')", "savings_usd_month DESC NULLS LAST, since",
                          "Alerts of the rules in rules/ (see /api/v1/alerts)."), 10, 10),
        ],
    )


def function_detail():
    return dashboard(
        "faasight-function", "faasight · Function detail",
        "One function (or several) in depth: latency, cold starts, memory, errors, cost, versions.",
        ["function"],
        [
            (series("Duration percentiles",
                    "SELECT $__timeGroupAlias(time, $__interval), "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, "
                    "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95, "
                    "percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 "
                    f"{INV} GROUP BY 1 ORDER BY 1", "ms"), 12, 8),
            (series("Cold starts and init duration",
                    "SELECT $__timeGroupAlias(time, $__interval), count(*) AS cold_starts, "
                    "avg(init_duration_ms) AS avg_init_ms "
                    f"{INV} AND cold_start GROUP BY 1 ORDER BY 1", "short"), 12, 8),
            (series("Memory used vs configured",
                    "SELECT $__timeGroupAlias(time, $__interval), function_name AS metric, "
                    "max(max_memory_used_mb) * 1048576 AS used, max(memory_size_mb) * 1048576 AS configured "
                    f"{INV} GROUP BY 1, 2 ORDER BY 1", "bytes"), 12, 8),
            (series("Errors by type",
                    "SELECT $__timeGroupAlias(time, $__interval), "
                    "coalesce(error_type, status) AS metric, count(*) AS errors "
                    f"{INV} AND status <> 'ok' GROUP BY 1, 2 ORDER BY 1", "short", stacked=True), 12, 8),
            (series("Cost per invocation",
                    "SELECT $__timeGroupAlias(time, $__interval), function_name AS metric, "
                    f"avg(cost_usd) AS cost_per_invocation {INV} GROUP BY 1, 2 ORDER BY 1",
                    "currencyUSD"), 12, 8),
            (series("Cost per day",
                    "SELECT $__timeGroupAlias(time, 1d), function_name AS metric, "
                    f"sum(cost_usd) AS cost {INV} GROUP BY 1, 2 ORDER BY 1", "currencyUSD",
                    stacked=True), 12, 8),
            (table("Versions compared",
                   "SELECT function_name, function_version, min(time) AS first_seen, count(*) AS invocations, "
                   "avg(billed_duration_ms) AS avg_billed_ms, "
                   f"{P99}, {FAILURE_RATE}, {COLD_RATE}, "
                   "sum(cost_usd) / count(*) AS cost_per_invocation_usd "
                   f"{INV} GROUP BY function_name, function_version ORDER BY function_name, first_seen",
                   {"first_seen": "dateTimeAsIso", "avg_billed_ms": "ms", "p99_duration_ms": "ms",
                    "failure_rate": "percentunit", "cold_start_rate": "percentunit",
                    "cost_per_invocation_usd": "currencyUSD"}), 24, 9),
        ],
    )


def cold_starts():
    rate = COLD_RATE
    price = (
        "(SELECT max(price_usd) FROM prices WHERE provider = 'aws' AND region = 'us-east-1' "
        "AND item = '{item}')"
    )
    pc = price.format(item="provisioned concurrency x86_64")
    on_demand = price.format(item="duration x86_64 up to 6e9 GB-s/month")
    pc_duration = price.format(item="provisioned duration x86_64")
    return dashboard(
        "faasight-cold-starts", "faasight · Cold starts",
        "Where cold starts happen, how long init takes, which traces they slow down, and when "
        "provisioned concurrency pays off.",
        ["cold-starts"],
        [
            (bars("Cold-start rate by function",
                  f"SELECT function_name, {rate} {INV} GROUP BY function_name ORDER BY cold_start_rate DESC",
                  "percentunit"), 8, 9),
            (bars("Cold-start rate by runtime",
                  f"SELECT coalesce(runtime, 'unknown') AS runtime, {rate} {INV} GROUP BY 1 ORDER BY 2 DESC",
                  "percentunit"), 8, 9),
            (bars("Cold-start rate by memory size",
                  f"SELECT CAST(memory_size_mb AS VARCHAR) || ' MB' AS memory, {rate} "
                  f"{INV} AND memory_size_mb IS NOT NULL GROUP BY memory_size_mb ORDER BY memory_size_mb",
                  "percentunit"), 8, 9),
            (bars("Init duration distribution",
                  "SELECT CAST(CAST(floor(init_duration_ms / 100) * 100 AS BIGINT) AS VARCHAR) || ' ms' "
                  "AS init_bucket, count(*) AS cold_starts "
                  f"{INV} AND cold_start AND init_duration_ms IS NOT NULL "
                  "GROUP BY floor(init_duration_ms / 100) ORDER BY floor(init_duration_ms / 100)",
                  "short", "Cold starts per 100 ms of init duration."), 12, 9),
            (series("Init duration percentiles",
                    "SELECT $__timeGroupAlias(time, $__interval), "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY init_duration_ms) AS p50_init, "
                    "percentile_cont(0.95) WITHIN GROUP (ORDER BY init_duration_ms) AS p95_init "
                    f"{INV} AND cold_start AND init_duration_ms IS NOT NULL GROUP BY 1 ORDER BY 1",
                    "ms"), 12, 9),
            (table("Cold starts in traces",
                   "SELECT i.trace_id, i.function_name, i.init_duration_ms, t.duration_ms AS trace_duration_ms, "
                   "i.init_duration_ms / t.duration_ms AS share_of_trace "
                   "FROM invocations i JOIN (SELECT trace_id, "
                   "(date_part('epoch', max(end_time)) - date_part('epoch', min(time))) * 1000 AS duration_ms "
                   "FROM spans WHERE $__timeFilter(time) GROUP BY trace_id) t ON i.trace_id = t.trace_id "
                   "WHERE $__timeFilter(i.time) AND i.cold_start AND i.init_duration_ms IS NOT NULL "
                   "AND i.function_name IN ($function) AND coalesce(i.region, 'n/a') IN ($region) "
                   "AND coalesce(i.architecture, 'n/a') IN ($architecture) AND t.duration_ms > 0 "
                   "ORDER BY share_of_trace DESC LIMIT 50",
                   {"init_duration_ms": "ms", "trace_duration_ms": "ms", "share_of_trace": "percentunit"},
                   "Traced requests that waited for a cold start, by the share of the request's latency "
                   "the init explains; open the trace for its critical path.",
                   trace_links=True), 24, 9),
            (table("Provisioned concurrency break-even",
                   "SELECT function_name, count(*) AS invocations, "
                   f"{rate}, "
                   "sum(duration_ms) / 1000.0 / greatest(date_part('epoch', CAST($__timeTo() AS TIMESTAMP)) "
                   "- date_part('epoch', CAST($__timeFrom() AS TIMESTAMP)), 1) AS avg_concurrency, "
                   f"{pc} / ({on_demand} - {pc_duration}) AS break_even_utilization "
                   f"{INV} AND coalesce(provider, 'aws') = 'aws' GROUP BY function_name "
                   "ORDER BY cold_start_rate DESC",
                   {"cold_start_rate": "percentunit", "avg_concurrency": "short",
                    "break_even_utilization": "percentunit"},
                   "Provisioned concurrency pays for itself when the provisioned environments are busy "
                   "more than the break-even share of the time (x86_64 prices of us-east-1 from the "
                   "catalog). Average concurrency is the busy time over the range."), 24, 9),
            (series("Provisioned concurrency utilization",
                    "SELECT $__timeGroupAlias(time, $__interval), function_name AS metric, "
                    "avg(coalesce(value, \"sum\" / nullif(\"count\", 0))) AS utilization "
                    "FROM metrics WHERE $__timeFilter(time) AND function_name IN ($function) "
                    "AND (name LIKE '%ProvisionedConcurrencyUtilization' "
                    "OR name = 'aws.lambda.provisioned_concurrency_utilization') "
                    "GROUP BY 1, 2 ORDER BY 1",
                    "percentunit",
                    "Share of the provisioned concurrency in use (Lambda's "
                    "ProvisionedConcurrencyUtilization from a CloudWatch metric stream through "
                    "/v1/firehose, or OTLP). Below the break-even above, on demand costs less; the "
                    "idle_provisioned_concurrency rule prices the difference."), 24, 9),
        ],
    )


def cost_explorer():
    def by(column, title):
        return (series(f"Cost by {title}",
                       f"SELECT $__timeGroupAlias(time, $__interval), coalesce({column}, 'n/a') AS metric, "
                       f"sum(cost_usd) AS cost {INV} GROUP BY 1, 2 ORDER BY 1", "currencyUSD",
                       stacked=True), 12, 8)

    return dashboard(
        "faasight-cost", "faasight · Cost explorer",
        "Where the money goes, what a whole request costs, and what arm64 and right-sized memory "
        "would save.",
        ["cost"],
        [
            by("function_name", "function"),
            by("account_id", "account"),
            by("region", "region"),
            by("architecture", "architecture"),
            (table("Most expensive traces",
                   "SELECT trace_id, time, root_service_name, route, invocations, functions, cold_starts, "
                   f"cost_usd FROM trace_costs WHERE $__timeFilter(time) AND {TRACES_OF_FUNCTIONS} "
                   "ORDER BY cost_usd DESC LIMIT 20",
                   {"time": "dateTimeAsIso", "cost_usd": "currencyUSD"},
                   "Cost of whole distributed requests: every invocation of the trace.",
                   trace_links=True), 12, 9),
            (table("Cost per route per day",
                   "SELECT date_trunc('day', time) AS day, coalesce(route, root_name) AS route, "
                   "count(*) AS requests, sum(cost_usd) AS cost_usd, sum(cost_usd) / count(*) AS cost_per_request_usd "
                   f"FROM trace_costs WHERE $__timeFilter(time) AND {TRACES_OF_FUNCTIONS} "
                   "GROUP BY 1, 2 ORDER BY 1 DESC, cost_usd DESC",
                   {"day": "dateTimeAsIso", "cost_usd": "currencyUSD",
                    "cost_per_request_usd": "currencyUSD"}), 12, 9),
            (table("What if: arm64 and right-sized memory",
                   "SELECT function_name, architecture, max(memory_size_mb) AS memory_mb, "
                   "max(max_memory_used_mb) AS peak_used_mb, "
                   "CAST(greatest(128, ceil(max(max_memory_used_mb) * 1.3 / 64) * 64) AS BIGINT) AS right_size_mb, "
                   "sum(cost_usd) AS cost_usd, "
                   "sum(cost_usd) - sum(lambda_cost_whatif(billed_duration_ms, memory_size_mb, architecture, "
                   "region, memory_size_mb, 'arm64')) AS arm64_saves_usd, "
                   "sum(cost_usd) - sum(lambda_cost_whatif(billed_duration_ms, memory_size_mb, architecture, "
                   "region, CAST(greatest(128, ceil(max_memory_used_mb * 1.3 / 64) * 64) AS BIGINT), "
                   "architecture)) AS right_size_saves_usd "
                   f"{INV} AND coalesce(provider, 'aws') = 'aws' AND memory_size_mb IS NOT NULL "
                   "AND max_memory_used_mb IS NOT NULL AND billed_duration_ms IS NOT NULL "
                   "GROUP BY function_name, architecture ORDER BY cost_usd DESC",
                   {"memory_mb": "decmbytes", "peak_used_mb": "decmbytes", "right_size_mb": "decmbytes",
                    "cost_usd": "currencyUSD", "arm64_saves_usd": "currencyUSD",
                    "right_size_saves_usd": "currencyUSD"},
                   "Savings over the time range, at the same billed durations: arm64 at the same memory, "
                   "and memory cut to the peak used + 30% (64 MB steps) per invocation."), 24, 9),
            (alerts_table("Savings recommendations",
                          "rule, summary, savings_usd_month, severity, since",
                          "savings_usd_month IS NOT NULL", "savings_usd_month DESC",
                          "Findings of the rules in rules/ with dollars a month "
                          "(see /api/v1/recommendations)."), 24, 8),
        ],
    )


def traces():
    durations = (
        "SELECT trace_id, min(time) AS start, "
        "(date_part('epoch', max(end_time)) - date_part('epoch', min(time))) * 1000 AS duration_ms, "
        "count(*) AS spans, count(DISTINCT service_name) AS services "
        f"FROM spans WHERE $__timeFilter(time) AND {TRACES_OF_FUNCTIONS} "
    )
    tempo_search = {
        "type": "table",
        "title": "TraceQL search: traces with errors",
        "description": "Tempo search through faasight's Tempo API; edit the TraceQL to search.",
        "datasource": TEMPO,
        "targets": [{"refId": "A", "datasource": TEMPO, "queryType": "traceql",
                     "query": "{ status = error }", "limit": 20, "tableType": "traces"}],
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "options": {},
        "faasight": {"expectRows": True},
    }
    return dashboard(
        "faasight-traces", "faasight · Traces",
        "Slow, expensive and failing requests across functions, linked into the trace view.",
        ["traces"],
        [
            (table("Slowest traces", durations + "GROUP BY trace_id ORDER BY duration_ms DESC LIMIT 20",
                   {"start": "dateTimeAsIso", "duration_ms": "ms"}, trace_links=True), 12, 10),
            (table("Most expensive traces",
                   "SELECT trace_id, time, root_name, functions, invocations, cold_starts, errors, cost_usd "
                   f"FROM trace_costs WHERE $__timeFilter(time) AND {TRACES_OF_FUNCTIONS} "
                   "ORDER BY cost_usd DESC LIMIT 20",
                   {"time": "dateTimeAsIso", "cost_usd": "currencyUSD"}, trace_links=True), 12, 10),
            (table("Error traces",
                   "SELECT trace_id, min(time) AS start, count(*) FILTER (WHERE status_code = 'error') AS error_spans, "
                   "max(CASE WHEN status_code = 'error' THEN name END) AS failing_span "
                   f"FROM spans WHERE $__timeFilter(time) AND {TRACES_OF_FUNCTIONS} "
                   "GROUP BY trace_id HAVING count(*) FILTER (WHERE status_code = 'error') > 0 "
                   "ORDER BY start DESC LIMIT 50",
                   {"start": "dateTimeAsIso"}, trace_links=True), 12, 10),
            (tempo_search, 12, 10),
            (series("Trace cost over time",
                    "SELECT $__timeGroupAlias(time, $__interval), sum(cost_usd) AS cost, "
                    f"count(*) AS traces FROM trace_costs WHERE $__timeFilter(time) AND {TRACES_OF_FUNCTIONS} "
                    "GROUP BY 1 ORDER BY 1", "currencyUSD"), 24, 8),
        ],
    )


DASHBOARDS = {
    "overview.json": overview,
    "function-detail.json": function_detail,
    "cold-starts.json": cold_starts,
    "cost-explorer.json": cost_explorer,
    "traces.json": traces,
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2) + "\n"
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale dashboards (run scripts/dashboards.py): " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
