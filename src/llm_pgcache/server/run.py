"""`llm-pgcache serve`: the proxy under uvicorn, in `--workers` processes sharing one
listening socket, under this process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import os
import signal
import socket
import sys

import uvicorn

from llm_pgcache.config import Settings
from llm_pgcache.errors import EXIT_OK, ConfigurationError
from llm_pgcache.server.config import ENV_CONFIG, ProxyConfig, read_tenants

APP = "llm_pgcache.server.app:create_app"


def config_of(args: argparse.Namespace) -> ProxyConfig:
    options: dict[str, object] = {}
    if args.namespace:
        options["namespace"] = args.namespace
    return ProxyConfig(
        upstream=args.upstream,
        dsn=args.dsn,
        upstream_key_env=args.upstream_key_env,
        admin_token_env=args.admin_token_env,
        tenants=read_tenants(args.tenant_map) if args.tenant_map else None,
        max_body_bytes=args.max_body_bytes,
        upstream_timeout=args.upstream_timeout,
        max_upstream_in_flight=args.max_upstream_in_flight,
        cache_options=options,
        embedder=args.embedder,
        memory_entries=args.memory_entries,
        redis_url=args.redis,
    )


async def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    config = config_of(args)
    if args.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP said out loud: asyncio then sets TCP_NODELAY on every accepted
    # connection (it checks the protocol); without, Nagle and delayed ACKs add 40 ms to
    # every answer sent in two writes (headers, then body).
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((args.host, args.port))
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    listening.listen(2048)
    print(f"llm-pgcache proxy on http://{args.host}:{args.port} -> {config.upstream}", flush=True)
    os.environ[ENV_CONFIG] = config.to_env()
    return await supervise(listening, args.workers)


async def supervise(listening: socket.socket, workers: int) -> int:
    """Run `workers` uvicorn processes on the one socket until a signal stops us (then
    them); one that dies is started again. (Workers are processes even when there is
    one: each runs on uvloop with httptools when installed, as uvicorn picks them.)"""
    fd = listening.fileno()
    command = [sys.executable, "-m", "llm_pgcache.server.run", str(fd)]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    async def worker() -> None:
        while not stopping.is_set():
            process = await asyncio.create_subprocess_exec(*command, pass_fds=(fd,))
            waiting = asyncio.ensure_future(process.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if stopping.is_set():
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                await waiting
                return
            await asyncio.sleep(1.0)  # died: started again, not in a tight loop

    await asyncio.gather(*(worker() for _ in range(workers)))
    return EXIT_OK


def worker(fd: int) -> None:
    """One worker of `supervise`: uvicorn on the inherited listening socket `fd` (its
    family and protocol read off the descriptor, so that TCP_NODELAY is set as above)."""
    listening = socket.socket(fileno=fd)
    importlib.import_module(APP.partition(":")[0])  # all the app needs, loaded now,
    gc.freeze()  # then kept out of the collector's scans: its full passes took 40 ms
    # proxy_headers off: nothing here reads the client's address, so X-Forwarded-For
    # need not be parsed on every request
    config = uvicorn.Config(APP, factory=True, log_level="warning", proxy_headers=False)
    uvicorn.Server(config).run(sockets=[listening])


if __name__ == "__main__":
    worker(int(sys.argv[1]))
