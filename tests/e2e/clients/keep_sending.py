"""Sends one span per export (as a Lambda flushes per invocation) with the
OpenTelemetry Python SDK's OTLP/HTTP exporter until killed, printing the span
id of every export faasight acknowledged, one per line.

usage: keep_sending.py ENDPOINT SERVICE
"""
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult, SpanProcessor


class AckPrinter(SpanProcessor):
    def __init__(self, exporter):
        self.exporter = exporter

    def on_end(self, span):
        if self.exporter.export((span,)) == SpanExportResult.SUCCESS:
            print(f"{span.get_span_context().span_id:016x}", flush=True)

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=0):
        return True


def main():
    endpoint, service = sys.argv[1], sys.argv[2]
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=2)
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(AckPrinter(exporter))
    tracer = tp.get_tracer("keep-sending")
    i = 0
    while i < 200_000:  # bounded; the test kills it long before
        with tracer.start_as_current_span("invocation", attributes={"n": i}):
            pass
        i += 1


if __name__ == "__main__":
    main()
