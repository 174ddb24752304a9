"""Fetches a trace from faasight's Tempo API in every form Grafana's Tempo
datasource may ask for (v1/v2, OTLP JSON/protobuf) and parses each with the
official OpenTelemetry proto definitions (Tempo's `TraceByIDResponse`
wrapper, `message TraceByIDResponse { Trace trace = 1; }`, is declared here
around the official `TracesData`). Prints, per form, the span ids and names.

usage: tempo_check.py --api http://127.0.0.1:8080 --trace-id HEX
"""
import argparse
import base64
import json
import urllib.request

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from opentelemetry.proto.trace.v1 import trace_pb2


def trace_by_id_response_class():
    pool = descriptor_pool.Default()
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tempo_check/tempopb.proto",
        package="tempopb_check",
        dependency=["opentelemetry/proto/trace/v1/trace.proto"],
        syntax="proto3",
    )
    msg = fdp.message_type.add(name="TraceByIDResponse")
    msg.field.add(name="trace", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                  type_name=".opentelemetry.proto.trace.v1.TracesData")
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tempopb_check.TraceByIDResponse"))


def hex_ids_to_base64(node):
    """OTLP/JSON writes trace and span ids as hex where the proto3 JSON
    mapping expects base64: convert them, as the OTLP/JSON spec tells
    receivers to, before parsing with the official classes."""
    if isinstance(node, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode()
                    if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
                    else hex_ids_to_base64(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [hex_ids_to_base64(v) for v in node]
    return node


def fetch(url, accept):
    req = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("Content-Type"), r.read()


def spans_of(data):
    out = []
    for rs in data.resource_spans:
        service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), None)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "span_id": s.span_id.hex(),
                    "trace_id": s.trace_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "service": service,
                    "kind": s.kind,
                    "status": s.status.code,
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "links": [[l.trace_id.hex(), l.span_id.hex()] for l in s.links],
                })
    return sorted(out, key=lambda s: s["span_id"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--trace-id", required=True)
    a = p.parse_args()
    result = {}
    ctype, body = fetch(f"{a.api}/api/traces/{a.trace_id}", "application/json")
    doc = json.loads(body)
    data = json_format.ParseDict(hex_ids_to_base64({"resourceSpans": doc["batches"]}), trace_pb2.TracesData())
    result["v1_json"] = {"content_type": ctype, "spans": spans_of(data)}

    ctype, body = fetch(f"{a.api}/api/v2/traces/{a.trace_id}", "application/json")
    doc = json.loads(body)
    data = json_format.ParseDict(hex_ids_to_base64(doc["trace"]), trace_pb2.TracesData())
    result["v2_json"] = {"content_type": ctype, "spans": spans_of(data)}

    ctype, body = fetch(f"{a.api}/api/traces/{a.trace_id}", "application/protobuf")
    data = trace_pb2.TracesData()
    data.ParseFromString(body)
    result["v1_protobuf"] = {"content_type": ctype, "spans": spans_of(data)}

    ctype, body = fetch(f"{a.api}/api/v2/traces/{a.trace_id}", "application/protobuf")
    wrapper = trace_by_id_response_class()()
    wrapper.ParseFromString(body)
    result["v2_protobuf"] = {"content_type": ctype, "spans": spans_of(wrapper.trace)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
