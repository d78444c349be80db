"""Micro-benchmark: the HTTP kit's cost per request over a bare ``httpx.Client``.

Both send the same GET through the same ``httpx.MockTransport`` (no network, so only client
code is measured) and parse the same JSON answer: a small annotation (~0.4 kB) and a content
tree (~60 kB, where the JSON depth guard works). The kit runs with a static token, a rate
limiter that never waits, and everything else at its defaults. A last line measures the
client process's CPU per request against a loopback HTTP/1.1 server in another process, where
the kit's deadline machinery (trace callbacks, the watchdog) runs too.

    .venv/bin/python bench/bench_http.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from connectors.auth import StaticToken  # noqa: E402
from connectors.http import HttpClient  # noqa: E402

BASE = "https://bench.example/api/v1"


def small_body() -> bytes:
    return json.dumps(
        {
            "id": 12,
            "url": f"{BASE}/annotations/12",
            "status": "to_review",
            "queue": f"{BASE}/queues/1",
            "document": f"{BASE}/documents/1012",
            "metadata": {"docrelay_document_id": 7, "docrelay_sha256": "ab" * 32},
            "messages": [],
            "modifier": None,
            "assignees": [],
        }
    ).encode()


def tree_body() -> bytes:
    def datapoint(n: int) -> dict:
        return {
            "id": n,
            "category": "datapoint",
            "schema_id": f"field_{n}",
            "content": {
                "value": f"value [{n}]",
                "normalized_value": str(n),
                "page": 1,
                "position": [10.0, 20.0, 30.0, 40.0],
                "rir_confidence": 0.97,
            },
            "validation_sources": ["score"],
        }

    sections = [
        {"category": "section", "children": [datapoint(s * 100 + i) for i in range(25)]}
        for s in range(10)
    ]
    return json.dumps({"content": sections}).encode()


def per_call(fn, calls: int) -> float:
    for _ in range(min(500, calls)):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def measure(body: bytes, calls: int) -> tuple[float, float]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    bare = httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False)
    kit = HttpClient(
        BASE,
        name="Bench",
        auth=StaticToken("t" * 40),
        rate_limit=1e9,
        transport=httpx.MockTransport(handler),
    )
    headers = {"Authorization": "Bearer " + "t" * 40}
    url = f"{BASE}/annotations/12"

    def with_bare() -> object:
        response = bare.get(url, headers=headers)
        response.raise_for_status()
        return response.json()

    def with_kit() -> object:
        return kit.json(kit.request("GET", "annotations/12"), "GET", "annotations/12")

    results = []
    for _ in range(3):  # interleaved, best of three: the machine is shared
        results.append((per_call(with_bare, calls), per_call(with_kit, calls)))
    bare.close()
    kit.close()
    return min(r[0] for r in results), min(r[1] for r in results)


SERVER = """
import http.server, sys
BODY = sys.stdin.buffer.read()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def cpu_per_call(fn, calls: int) -> float:
    for _ in range(200):
        fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def measure_network(body: bytes, calls: int) -> tuple[float, float]:
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(body)
    proc.stdin.close()
    port = int(proc.stdout.readline())
    base = f"http://127.0.0.1:{port}/v1"
    try:
        bare = httpx.Client(follow_redirects=False)
        kit = HttpClient(base, name="Bench", auth=StaticToken("t" * 40), rate_limit=1e9)
        headers = {"Authorization": "Bearer " + "t" * 40}

        def with_bare() -> object:
            response = bare.get(f"{base}/annotations/12", headers=headers)
            response.raise_for_status()
            return response.json()

        def with_kit() -> object:
            return kit.json(kit.request("GET", "annotations/12"), "GET", "annotations/12")

        results = [(cpu_per_call(with_bare, calls), cpu_per_call(with_kit, calls)) for _ in "abc"]
        bare.close()
        kit.close()
        return min(r[0] for r in results), min(r[1] for r in results)
    finally:
        proc.terminate()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    for name, body in (("annotation", small_body()), ("content tree", tree_body())):
        bare, kit = measure(body, args.calls if name == "annotation" else args.calls // 10)
        print(
            f"{name:12s} ({len(body) / 1024:5.1f} kB): bare httpx {bare:7.1f} µs, "
            f"kit {kit:7.1f} µs, overhead {kit - bare:+6.1f} µs ({(kit - bare) / bare:+.0%})"
        )
    bare, kit = measure_network(small_body(), args.calls // 5)
    print(
        f"loopback CPU (  0.4 kB): bare httpx {bare:7.1f} µs, kit {kit:7.1f} µs, "
        f"overhead {kit - bare:+6.1f} µs ({(kit - bare) / bare:+.0%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
