"""Sends traces, logs and metrics to faasight with the OpenTelemetry Python
SDK's own OTLP exporters (HTTP protobuf or gRPC, gzip) and prints what it
created as JSON for the test to check.

usage: send_otlp.py --protocol http|grpc --endpoint URL --service NAME --traces N
"""
import argparse
import json
import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader


def exporters(protocol, endpoint):
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        kw = dict(compression=Compression.Gzip, timeout=5)
        return (
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", **kw),
            OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", **kw),
            OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", **kw),
        )
    from grpc import Compression
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    kw = dict(endpoint=endpoint, insecure=True, compression=Compression.Gzip, timeout=5)
    return OTLPSpanExporter(**kw), OTLPLogExporter(**kw), OTLPMetricExporter(**kw)


class CheckedProcessor(SimpleSpanProcessor):
    """Exports every span at once and fails loudly if faasight refuses it."""

    def on_end(self, span):
        result = self.span_exporter.export((span,))
        if result != SpanExportResult.SUCCESS:
            sys.exit(f"export of span {span.name} failed: {result}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", choices=["http", "grpc"], required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--traces", type=int, default=3)
    args = p.parse_args()

    resource = Resource.create({
        "service.name": args.service,
        "faas.name": f"{args.service}-fn",
        "cloud.provider": "aws",
        "cloud.region": "eu-west-1",
    })
    span_exp, log_exp, metric_exp = exporters(args.protocol, args.endpoint)
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(CheckedProcessor(span_exp))
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(log_exp))
    logger = logging.getLogger(f"e2e.{args.service}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))
    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    meter = mp.get_meter("e2e")
    invocations = meter.create_counter("faas.invocations")
    duration = meter.create_histogram("faas.invoke_duration", unit="ms")

    tracer = tp.get_tracer("faasight-e2e")
    created = {"spans": [], "logs": []}
    for i in range(args.traces):
        with tracer.start_as_current_span(
            "handler",
            kind=trace.SpanKind.SERVER,
            attributes={
                "faas.invocation_id": f"{args.service}-req-{i}",
                "faas.coldstart": i == 0,
                "http.route": "/orders/{id}",
                "app.index": i,
            },
        ) as root:
            with tracer.start_as_current_span("s3.GetObject", kind=trace.SpanKind.CLIENT) as child:
                child.add_event("retry", {"attempt": 1})
                logger.warning("fetching object %d", i)
            rc, cc = root.get_span_context(), child.get_span_context()
        created["spans"].append({"trace_id": f"{rc.trace_id:032x}", "span_id": f"{rc.span_id:016x}", "parent_span_id": None, "name": "handler", "start_ns": root.start_time, "end_ns": root.end_time})
        created["spans"].append({"trace_id": f"{cc.trace_id:032x}", "span_id": f"{cc.span_id:016x}", "parent_span_id": f"{rc.span_id:016x}", "name": "s3.GetObject", "start_ns": child.start_time, "end_ns": child.end_time})
        created["logs"].append({"trace_id": f"{cc.trace_id:032x}", "span_id": f"{cc.span_id:016x}", "body": f"fetching object {i}"})
        invocations.add(1, {"outcome": "ok"})
        duration.record(10.0 * (i + 1))

    if not lp.force_flush(10_000):
        sys.exit("log export did not finish")
    tp.shutdown()
    lp.shutdown()
    mp.shutdown()  # exports the cumulative metrics once
    print(json.dumps(created))


if __name__ == "__main__":
    main()
