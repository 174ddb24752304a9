"""Sends hostile bytes to faasight's OTLP/gRPC TraceService with grpcio and
prints the status code name of each call as JSON.

usage: grpc_raw.py HOST:PORT [valid-only]
"""
import json
import sys

import grpc

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def field(tag, payload):
    """A length-delimited protobuf field: the hostile payloads are built as
    bytes because building them as messages would recurse as deep."""
    key = bytes([(tag << 3) | 2])
    n, out = len(payload), bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return key + bytes(out) + payload


def deep_request(depth):
    any_value = b"\x18\x01"
    for _ in range(depth):
        any_value = field(5, field(1, any_value))
    kv = field(1, b"deep") + field(2, any_value)
    span = field(1, b"\x01" * 16) + field(2, b"\x02" * 8) + field(5, b"deep") + field(9, kv)
    return field(1, field(2, field(2, span)))


def repeating_request(resource_bytes, spans):
    """~300 KB whose rows would repeat a 200 KB resource on 2,000 spans."""
    resource = field(1, field(1, b"padding") + field(2, field(1, b"r" * resource_bytes)))
    span = lambda i: field(1, (i + 1).to_bytes(16, "big")) + field(2, (i + 1).to_bytes(8, "big")) + field(5, b"s")
    scope_spans = b"".join(field(2, span(i)) for i in range(spans))
    return field(1, field(1, resource) + field(2, scope_spans))


def call(channel, body, compression=None):
    stub = channel.unary_unary(METHOD)
    try:
        stub(body, timeout=20, compression=compression)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def main():
    target = sys.argv[1]
    opts = [("grpc.max_send_message_length", 512 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(target, options=opts) as ch:
        if sys.argv[2:] == ["valid-only"]:
            span = field(1, b"\x01" * 16) + field(2, b"\x02" * 8) + field(5, b"ok")
            print(json.dumps({"valid": call(ch, field(1, field(2, field(2, span))))}))
            return
        out = {
            "garbage": call(ch, b"\xff\xff\xff\x0f\x00garbage"),
            "deep": call(ch, deep_request(10_000)),
            "oversized": call(ch, field(1, b"\x00" * (6 << 20))),
            "gzip_bomb": call(ch, field(1, field(2, field(2, b"\x00" * (64 << 20)))), grpc.Compression.Gzip),
            "repeating": call(ch, repeating_request(200_000, 2_000)),
            "empty": call(ch, b""),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
