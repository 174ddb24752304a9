"""Sorts a server profile's samples into the phases the ingest report names.

    perf record -F 499 --call-graph dwarf,16384 -p "$(pgrep -f 'faasight serve')" -o p.data -- sleep 3
    perf script -i p.data > p.txt
    python3 benches/support/phases.py p.txt [server CPU µs per request]

Each sample goes to the first phase whose frames it holds, in the order
below; with the CPU per request (the bench prints it) each phase's share
is also given in µs per request.
"""

import collections
import sys

ENCODE_LEAVES = ("ZSTD", "FSE_", "HUF_", "HIST_")


def phase(thread, stack):
    text = "\n".join(stack)
    if stack[0].startswith(ENCODE_LEAVES):
        return "flush: parquet encode"
    if thread == "faasight-wal":
        if "fdatasync" in text or "ext4_sync" in text:
            return "WAL thread: fdatasync"
        if "vfs_write" in text or "ksys_write" in text or "pwrite" in text:
            return "WAL thread: write"
        if "collector::decode::" in text:
            return "WAL thread: one-span rows"
        return "WAL thread: other"
    if "buffer::flush" in text or "storage::" in text or "write_table" in text:
        for frame in stack:
            if "storage::take" in frame or "arrow_select::take" in frame or "take_rows" in frame:
                return "flush: take"
            if frame.startswith(("parquet::", "<parquet::")) or "zstd" in frame.lower():
                return "flush: parquet encode"
            if "concat" in frame:
                return "flush: concat"
            if "sort" in frame and "faasight" in frame:
                return "flush: sort"
        return "flush: other"
    if "collector::decode::" in text:
        return "decode: prost" if "prost::" in text else "decode: rows"
    if "wal::" in text:
        return "request: WAL record"
    if "buffer::" in text:
        return "request: buffer"
    network = ("hyper", "h2::", "tonic", "axum", "receive::", "tcp_", "sock_", "recvfrom", "sendto", "epoll")
    if any(k in text for k in network):
        return "receive: network, HTTP, gRPC"
    return "other"


def samples(path):
    """(thread, frames from the leaf up) for each sample of `perf script`."""
    thread, stack = None, []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if stack:
                    yield thread, stack
                thread, stack = None, []
            elif not line.startswith((" ", "\t")):
                thread, stack = line.split()[0], []
            else:
                parts = line.strip().split(None, 1)
                stack.append((parts[1] if len(parts) > 1 else parts[0]).split("+0x")[0])
    if stack:
        yield thread, stack


def main():
    counts = collections.Counter(phase(t, s) for t, s in samples(sys.argv[1]))
    total = sum(counts.values())
    per_request = float(sys.argv[2]) if len(sys.argv) > 2 else None
    for name, n in sorted(counts.items()):
        line = f"{name:32s} {100 * n / total:5.1f} %"
        if per_request:
            line += f" {per_request * n / total:8.1f} µs"
        print(line)
    print(f"{total} samples")


if __name__ == "__main__":
    main()
