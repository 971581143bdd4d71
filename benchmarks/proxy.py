"""The caching proxy (`llm-pgcache serve`): a hit through it against the same hit through
`Cache.get` in process, hits/s with 1 and 2 workers, the first byte of a streamed miss
against the upstream's own, and a sustained load.

    python benchmarks/proxy.py [--seconds 5] [--load-seconds 60]

The proxy runs as `llm-pgcache serve` (its own processes), in front of the tests'
OpenAI-compatible server (in this process). The hits come from `wrk` (Debian's package
`wrk`: a load generator in C, in a process of its own, one keep-alive connection per
caller, so that the client's cost stays out of the proxy's figures); the streamed misses
and the sustained load from a minimal HTTP/1.1 client here; all on the same 2 cores as
the proxy and PostgreSQL. Uses LLM_PGCACHE_DSN when set, else a fresh embedded
PostgreSQL. Writes docs/benchmarks/proxy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' OpenAI-compatible server

from tests.openai_server import OpenAIServer  # noqa: E402

from llm_pgcache import Cache  # noqa: E402
from llm_pgcache.postgres import embedded, migrate  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"
NAMESPACE = "bench-proxy"
SERVE = Path(sys.executable).with_name("llm-pgcache")


def ask(question: str, **params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}], **params}


class Connection:
    """One keep-alive HTTP/1.1 connection: POST JSON, read the whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer bench\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            content = await self.reader.readexactly(int(headers["content-length"]))
        else:  # chunked (a stream): read the chunks
            content = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                content += chunk[:-2]
        return status, headers, content

    async def first_byte(self, path: str, body: bytes) -> float:
        """Seconds to the first byte of a streamed answer's body; reads the rest."""
        started = time.perf_counter()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await self.reader.readuntil(b"\r\n\r\n")
        size = int((await self.reader.readline()).strip(), 16)
        first = time.perf_counter() - started
        await self.reader.readexactly(size + 2)
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            await self.reader.readexactly(size + 2)
            if size == 0:
                return first

    def close(self) -> None:
        self.writer.close()


def figures(latencies: list[float], seconds: float) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": q[49], "p99_ms": q[98], "ops_per_s": len(latencies) / seconds}


async def run_load(
    call: Callable[[int], Awaitable[bool]], in_flight: int, ops: int
) -> dict[str, float]:
    """`ops` calls, `in_flight` at a time (call(k) -> ok, k the runner: one connection
    each); latencies, and how many calls failed it (for hits: not an error status but a
    miss, a lookup over the cache's 50 ms budget)."""
    latencies: list[float] = []
    errors = 0
    next_op = 0

    async def runner(k: int) -> None:
        nonlocal next_op, errors
        while next_op < ops:
            next_op += 1
            started = time.perf_counter()
            ok = await call(k)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(runner(k) for k in range(in_flight)))
    return {**figures(latencies, time.perf_counter() - started), "failed": errors}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def start_proxy(dsn: str, upstream: str, workers: int) -> tuple[Any, int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(str(SERVE), "serve", "--workers", str(workers), "--port", str(port)),
        *("--upstream", upstream, "--dsn", dsn, "--namespace", NAMESPACE),
        stdout=asyncio.subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            probe = await Connection.open(port)
            probe.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0 if workers > 1 else 0.2)  # every worker listening
    return process, port


# wrk's script: POST the hit, count what did not answer 200 or was not a hit, and print
# the figures as JSON (latencies in microseconds).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) errors = 0; misses = 0 end
function response(status, headers, body)
  if status ~= 200 then errors = errors + 1
  elseif headers["x-llm-cache"] ~= "hit" then misses = misses + 1 end
end
function done(summary, latency, requests)
  local errors, misses = 0, 0
  for _, thread in ipairs(threads) do
    errors = errors + thread:get("errors"); misses = misses + thread:get("misses")
  end
  io.write(string.format(
    '{"p50_ms": %%f, "p99_ms": %%f, "calls": %%d, "seconds": %%f, "errors": %%d, "failed": %%d}\\n',
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests,
    summary.duration / 1e6, errors, misses))
end
"""


async def wrk(port: int, script: Path, in_flight: int, seconds: int) -> dict[str, float]:
    """One `wrk` run: `in_flight` connections for `seconds`."""
    process = await asyncio.create_subprocess_exec(
        *("wrk", "-t1", f"-c{in_flight}", f"-d{seconds}s", "-s", str(script)),
        f"http://127.0.0.1:{port}/v1/chat/completions",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith('{"p50_ms"')]
    if not lines:
        raise SystemExit(f"wrk gave no figures:\n{out.decode()}")
    found: dict[str, float] = json.loads(lines[0])
    if found["errors"]:
        raise SystemExit(f"{found['errors']} hits answered an error status: the run stops")
    return {**found, "ops_per_s": found["calls"] / found["seconds"]}


async def hits(port: int, body: bytes, seconds: int) -> dict[str, dict[str, float]]:
    """Exact hits through the proxy at 1 and 32 in flight (best p50 of 3 rounds; "failed":
    answered as a miss, a lookup over the cache's 50 ms budget)."""
    connection = await Connection.open(port)
    status, _, _ = await connection.post("/v1/chat/completions", body)
    connection.close()
    assert status == 200  # stored: every call below hits
    script = Path(tempfile.mkdtemp(prefix="llm-pgcache-wrk-")) / "hit.lua"
    script.write_text(WRK_SCRIPT % body.decode())
    await wrk(port, script, 32, 2)  # warm: every worker's pool open
    found = {}
    for in_flight in (1, 32):
        runs = [await wrk(port, script, in_flight, seconds) for _ in range(3)]
        found[str(in_flight)] = min(runs, key=lambda r: r["p50_ms"])
    return found


async def first_bytes(port: int, upstream_port: int, misses: int) -> dict[str, float]:
    """The first byte of a streamed miss through the proxy and from the upstream itself."""
    through: list[float] = []
    direct: list[float] = []
    for n in range(misses):
        for target, into in ((upstream_port, direct), (port, through)):
            body = json.dumps(ask(f"stream {n} {target} {time.time()}", stream=True))
            connection = await Connection.open(target)
            into.append(await connection.first_byte("/v1/chat/completions", body.encode()) * 1000)
            connection.close()
    return {
        "through_proxy_p50": statistics.median(through),
        "upstream_direct_p50": statistics.median(direct),
        "added_p50": statistics.median(through) - statistics.median(direct),
    }


async def sustained(port: int, hit_body: bytes, seconds: float) -> dict[str, float]:
    """32 in flight for `seconds`, one call in twenty a miss; calls and errors."""
    deadline = time.perf_counter() + seconds
    done = {"seconds": seconds, "calls": 0, "errors": 0}

    async def loader(k: int) -> None:
        connection = await Connection.open(port)
        n = k
        while time.perf_counter() < deadline:
            body = json.dumps(ask(f"load {n} {time.time()}")).encode() if n % 20 == 0 else hit_body
            status, _, _ = await connection.post("/v1/chat/completions", body)
            done["calls"] += 1
            done["errors"] += status != 200
            n += 32
        connection.close()

    await asyncio.gather(*(loader(k) for k in range(32)))
    return done


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="each round of hits")
    parser.add_argument("--ops", type=int, default=4000, help="each round of Cache.get")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--misses", type=int, default=30)
    parser.add_argument("--plot-only", action="store_true", help="plot the last results")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((OUT / "proxy.json").read_text()))
        return

    dsn = os.environ.get("LLM_PGCACHE_DSN") or await embedded.start(
        Path(tempfile.mkdtemp(prefix="llm-pgcache-bench-")) / "data"
    )
    await migrate.upgrade(dsn)
    upstream = OpenAIServer()
    await upstream.start()
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/proxy.py needs wrk: apt-get install wrk")
    report: dict[str, Any] = {"seconds": args.seconds, "cache_get_ops": args.ops}
    request = ask("What is the capital of France?")
    hit_body = json.dumps(request).encode()
    try:
        async with Cache.connect(dsn, namespace=NAMESPACE) as cache:
            await cache.invalidate(namespace=NAMESPACE)
            for workers in (1, 2):
                process, port = await start_proxy(dsn, upstream.base_url, workers)
                try:
                    report[f"proxy_hit_{workers}_workers"] = await hits(
                        port, hit_body, args.seconds
                    )
                    if workers == 2:
                        report["streamed_miss_first_byte_ms"] = await first_bytes(
                            port, upstream.port, args.misses
                        )
                        report["sustained_2_workers"] = await sustained(
                            port, hit_body, args.load_seconds
                        )
                finally:
                    process.terminate()
                    await process.wait()

            async def get(k: int) -> bool:
                return await cache.get(request) is not None

            report["cache_get"] = {}
            for in_flight in (1, 32):
                runs = [await run_load(get, in_flight, args.ops) for _ in range(3)]
                report["cache_get"][str(in_flight)] = min(runs, key=lambda r: r["p50_ms"])
    finally:
        await upstream.stop()
    report["overhead_p50_ms"] = {
        f"{workers} workers, {n} in flight": report[f"proxy_hit_{workers}_workers"][n]["p50_ms"]
        - report["cache_get"][n]["p50_ms"]
        for workers in (1, 2)
        for n in ("1", "32")
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "proxy.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report)
    print(json.dumps(report, indent=2))


def plot(report: dict[str, Any]) -> None:
    import matplotlib  # noqa: PLC0415 - only for the report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = {
        "Cache.get (in process)": report["cache_get"],
        "proxy, 1 worker": report["proxy_hit_1_workers"],
        "proxy, 2 workers": report["proxy_hit_2_workers"],
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (metric, label) in zip(
        axes,
        (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("ops_per_s", "hits/s")),
        strict=True,
    ):
        for k, (name, runs) in enumerate(rows.items()):
            ax.bar(
                [i + (k - 1) * 0.27 for i in range(2)],
                [runs[n][metric] for n in ("1", "32")],
                0.27,
                label=name,
            )
        ax.set_xticks([0, 1], ["1 in flight", "32 in flight"])
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("Exact hits: through the proxy vs Cache.get, same server and run")
    fig.tight_layout()
    fig.savefig(OUT / "proxy.png", dpi=110)


if __name__ == "__main__":
    asyncio.run(main())
