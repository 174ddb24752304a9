"""Plays three Lambda invocations the way a Lambda function with the
OpenTelemetry Python SDK reports them: a handler span per invocation (OTLP
traces) and the platform lines START/REPORT as log records (OTLP logs), all
through the SDK's own OTLP/HTTP exporters. Prints request id → trace id.

usage: send_lambda.py ENDPOINT FUNCTION
"""
import json
import logging
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def main():
    endpoint, function = sys.argv[1], sys.argv[2]
    resource = Resource.create({
        "service.name": function,
        "faas.name": function,
        "faas.version": "7",
        "faas.max_memory": 536870912,
        "cloud.provider": "aws",
        "cloud.region": "eu-west-1",
        "cloud.account.id": "123456789012",
        "host.arch": "arm64",
    })
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")))
    platform = logging.getLogger("lambda.platform")
    platform.propagate = False
    platform.setLevel(logging.INFO)
    platform.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))
    tracer = tp.get_tracer("lambda")
    out = {}
    for i in range(3):
        rid = f"{function}-req-{i}"
        platform.info(f"START RequestId: {rid} Version: 7")
        with tracer.start_as_current_span(
            "handler",
            kind=trace.SpanKind.SERVER,
            attributes={"faas.invocation_id": rid, "faas.coldstart": i == 0, "faas.trigger": "http"},
        ) as span:
            out[rid] = f"{span.get_span_context().trace_id:032x}"
        report = f"REPORT RequestId: {rid}\tDuration: {100.5 + i} ms\tBilled Duration: {101 + i} ms\tMemory Size: 512 MB\tMax Memory Used: 80 MB\t"
        if i == 0:
            report += "Init Duration: 200.25 ms\t"
        if i == 2:
            report += "Status: timeout"
        platform.info(report)
    tp.shutdown()
    lp.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
