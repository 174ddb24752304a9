"""Sends a distributed trace across three functions (api → orders → payments,
each its own OpenTelemetry resource, context propagated with W3C trace
context as a Lambda invoke would carry it) and a second, short trace, with the
OpenTelemetry Python SDK's own OTLP/HTTP exporter. Span times are set
explicitly (offsets in ms from a common start) so the test knows the critical
path. Prints the ids as JSON.

usage: send_trace.py --endpoint http://127.0.0.1:4318
"""
import argparse
import json
import sys
import time
import uuid

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


class CheckedProcessor(SimpleSpanProcessor):
    def on_end(self, span):
        result = self.span_exporter.export((span,))
        if result != SpanExportResult.SUCCESS:
            sys.exit(f"export of span {span.name} failed: {result}")


def provider(endpoint, function):
    resource = Resource.create({
        "service.name": function,
        "faas.name": function,
        "cloud.provider": "aws",
        "cloud.region": "eu-west-1",
    })
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(CheckedProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=5)))
    return tp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    args = p.parse_args()
    tps = {f: provider(args.endpoint, f) for f in ("api", "orders", "payments")}
    tracers = {f: tp.get_tracer("e2e.traces") for f, tp in tps.items()}
    t0 = time.time_ns() - 5_000_000_000
    at = lambda ms: t0 + ms * 1_000_000
    prop = TraceContextTextMapPropagator()
    rid = {f: f"{f}-{uuid.uuid4()}" for f in ("api", "orders", "payments")}
    ids = {}

    def record(span):
        ids[span.name] = format(span.get_span_context().span_id, "016x")

    api = tracers["api"]
    root = api.start_span("POST /checkout", kind=SpanKind.SERVER, start_time=at(0), attributes={
        "http.route": "/checkout", "faas.invocation_id": rid["api"], "faas.coldstart": False,
    })
    trace_id = format(root.get_span_context().trace_id, "032x")
    root_ctx = trace.set_span_in_context(root)
    validate = api.start_span("validate", context=root_ctx, start_time=at(10))
    validate.end(end_time=at(60))
    record(validate)
    prefetch = api.start_span("prefetch", context=root_ctx, kind=SpanKind.CLIENT, start_time=at(120))
    prefetch.end(end_time=at(300))
    record(prefetch)
    call_orders = api.start_span("invoke orders", context=root_ctx, kind=SpanKind.CLIENT, start_time=at(100))
    carrier = {}
    prop.inject(carrier, context=trace.set_span_in_context(call_orders))

    # orders: a separate function, cold, continuing the propagated context.
    orders = tracers["orders"]
    handler = orders.start_span("orders handler", context=prop.extract(carrier), kind=SpanKind.SERVER,
                                start_time=at(400), attributes={
                                    "faas.invocation_id": rid["orders"], "faas.coldstart": True})
    h_ctx = trace.set_span_in_context(handler)
    audit = orders.start_span("audit log", context=h_ctx, start_time=at(455))
    audit.end(end_time=at(480))
    record(audit)
    call_payments = orders.start_span("invoke payments", context=h_ctx, kind=SpanKind.CLIENT, start_time=at(450))
    carrier2 = {}
    prop.inject(carrier2, context=trace.set_span_in_context(call_payments))

    payments = tracers["payments"]
    p_handler = payments.start_span("payments handler", context=prop.extract(carrier2), kind=SpanKind.SERVER,
                                    start_time=at(470), attributes={
                                        "faas.invocation_id": rid["payments"], "faas.coldstart": False})
    charge = payments.start_span("charge card", context=trace.set_span_in_context(p_handler),
                                 start_time=at(500), attributes={"card.brand": "visa"})
    charge.set_status(Status(StatusCode.ERROR, "card declined"))
    charge.end(end_time=at(850))
    record(charge)
    p_handler.end(end_time=at(890))
    record(p_handler)
    call_payments.end(end_time=at(900))
    record(call_payments)
    handler.end(end_time=at(930))
    record(handler)
    call_orders.end(end_time=at(950))
    record(call_orders)
    root.end(end_time=at(1000))
    record(root)

    # A second, short trace from the same service that searches must exclude.
    # It links to the checkout's charge (an async hop, as through a queue).
    link = trace.Link(charge.get_span_context(), attributes={"messaging.operation": "process"})
    health = api.start_span("GET /health", kind=SpanKind.SERVER, start_time=at(2000),
                            attributes={"http.route": "/health"}, links=[link])
    other_trace_id = format(health.get_span_context().trace_id, "032x")
    health.end(end_time=at(2020))
    record(health)

    for tp in tps.values():
        tp.shutdown()
    print(json.dumps({
        "trace_id": trace_id,
        "other_trace_id": other_trace_id,
        "start_ns": t0,
        "spans": ids,
        "request_ids": rid,
    }))


if __name__ == "__main__":
    main()
