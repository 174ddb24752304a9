// Sends traces to faasight with the OpenTelemetry JS SDK's OTLP/HTTP JSON
// exporter and prints the spans it created as JSON, for the test to check.
// usage: node send_traces.js ENDPOINT SERVICE TRACES
const api = require('@opentelemetry/api');
const { BasicTracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');

// An SDK HrTime ([seconds, nanoseconds]) as exact decimal nanoseconds.
const nanos = ([s, ns]) => (BigInt(s) * 1000000000n + BigInt(ns)).toString();

async function main() {
  const [endpoint, service, traces] = process.argv.slice(2);
  const exporter = new OTLPTraceExporter({ url: `${endpoint}/v1/traces` });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': service, 'faas.name': `${service}-fn` }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('faasight-e2e');
  const created = [];
  for (let i = 0; i < Number(traces); i++) {
    const root = tracer.startSpan('handler', {
      kind: api.SpanKind.SERVER,
      attributes: { 'faas.invocation_id': `${service}-req-${i}`, 'faas.coldstart': i === 0, 'http.route': '/orders/{id}', 'app.index': i },
    });
    const ctx = api.trace.setSpan(api.context.active(), root);
    const child = tracer.startSpan('dynamodb.GetItem', { kind: api.SpanKind.CLIENT, attributes: { 'db.system': 'dynamodb' } }, ctx);
    child.addEvent('retry', { attempt: 1 });
    child.end();
    root.end();
    const r = root.spanContext();
    const c = child.spanContext();
    created.push({ trace_id: r.traceId, span_id: r.spanId, parent_span_id: null, name: 'handler', start_ns: nanos(root.startTime), end_ns: nanos(root.endTime) });
    created.push({ trace_id: c.traceId, span_id: c.spanId, parent_span_id: r.spanId, name: 'dynamodb.GetItem', start_ns: nanos(child.startTime), end_ns: nanos(child.endTime) });
  }
  await provider.forceFlush();
  await provider.shutdown();
  process.stdout.write(JSON.stringify(created) + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
