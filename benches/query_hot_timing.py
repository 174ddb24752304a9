"""Median of N hot HTTP queries against a running faasight (the API port),
after two warm-up runs: the cost query and its EXPLAIN (planning alone), and
a p99. Used for the A/B in query-report.md, "Functions held to the limit".

usage: python3 query_hot_timing.py API_PORT N
"""
import sys,json,urllib.request,time,statistics
port=sys.argv[1]; n=int(sys.argv[2])
qs={"cost":"SELECT function_name, date_trunc('day', time) AS day, sum(cost_usd) AS cost FROM invocations GROUP BY 1, 2",
    "explain":"EXPLAIN SELECT function_name, date_trunc('day', time) AS day, sum(cost_usd) AS cost FROM invocations GROUP BY 1, 2",
    "p99":"SELECT function_name, approx_percentile_cont(duration_ms, 0.99) AS p99 FROM invocations GROUP BY 1"}
for name,q in qs.items():
    ts=[]
    for i in range(n+2):
        t=time.perf_counter()
        urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%s/api/v1/query"%port,data=json.dumps({"sql":q}).encode(),headers={"content-type":"application/json"}),timeout=60).read()
        ts.append((time.perf_counter()-t)*1000)
    ts=ts[2:]
    print(name, "median %.1f ms"%statistics.median(ts), "min %.1f"%min(ts))
