"""The `my_handler.py` of the README's quick start: plain code that makes
spans through the global tracer, which `opentelemetry-instrument` (the
distro) sets up with an OTLP exporter from the OTEL_* variables. Three
invocations, each a `handler` span with a `db` child.

usage: opentelemetry-instrument python quick_start_handler.py
"""
from opentelemetry import trace

tracer = trace.get_tracer("quick-start")
for i in range(3):
    with tracer.start_as_current_span("handler") as span:
        span.set_attribute("faas.invocation_id", f"quick-start-{i}")
        with tracer.start_as_current_span("db"):
            pass
