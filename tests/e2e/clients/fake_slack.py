"""A local stand-in for a Slack incoming webhook. Answers the first POST with
429 and `Retry-After: 2`, every later one with 200 "ok"; only the path given
with --path is a webhook (others get 404). Appends one JSON line per request
(time, status, path, body) to --log. Prints its port on the first line.

usage: fake_slack.py --log FILE --path /services/T0/B0/SECRET
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--log", required=True)
    p.add_argument("--path", required=True)
    args = p.parse_args()
    lock = threading.Lock()
    state = {"posts": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                if self.path != args.path:
                    status = 404
                else:
                    state["posts"] += 1
                    status = 429 if state["posts"] == 1 else 200
                with open(args.log, "a") as f:
                    f.write(json.dumps({
                        "time": time.time(),
                        "status": status,
                        "path_ok": self.path == args.path,
                        "content_type": self.headers.get("Content-Type"),
                        "body": json.loads(body or b"null"),
                    }) + "\n")
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "2")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"rate_limited" if status == 429 else b"no_service")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
