"""Command line of the simulators.

    python -m adapters.simulators serve --host 127.0.0.1 --base-port 9100 \
        [--parties all|p1,p2] [--families N] [--seed S] [--ready-file PATH] \
        [--latency-ms MS] [--fail-rate R] [--fault-status CODE] [--drop-connection] \
        [--malformed] [--extra-item] [--no-admin] \
        [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
    python -m adapters.simulators generate --families N [--seed S] [--out FILE]

``serve`` prints (and writes to ``--ready-file``, atomically) the JSON
``{"brp": url, "parties": {party: url}, "fhir": {"ggz": url, "huisarts": url}}`` once
everything listens, and stops cleanly on
SIGTERM/SIGINT. Port order: see adapters/simulators/runner.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import yaml

from adapters.simulators.faults import FaultConfig
from adapters.simulators.generate import generate_families
from adapters.simulators.registry import Registry
from adapters.simulators.runner import (
    DEFAULT_SEED,
    build_world,
    parse_parties,
    server_tls_context,
    start_simulators,
    write_ready_file,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adapters.simulators")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the BRP and partner simulators")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--base-port", type=int, default=9100)
    serve.add_argument("--parties", default="all", help="all or a comma-separated list")
    serve.add_argument("--families", type=int, default=0, help="synthetic families to add")
    serve.add_argument("--seed", type=int, default=DEFAULT_SEED)
    serve.add_argument("--ready-file", type=Path)
    serve.add_argument("--latency-ms", type=int, default=0)
    serve.add_argument("--fail-rate", type=float)
    serve.add_argument("--fault-status", type=int)
    serve.add_argument("--drop-connection", action="store_true")
    serve.add_argument("--malformed", action="store_true")
    serve.add_argument(
        "--extra-item", action="store_true", help="add an unrequested item to every answer"
    )
    serve.add_argument("--no-admin", action="store_true", help="disable /_sim endpoints")
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate")
    serve.add_argument("--tls-key", type=Path, help="the PEM key of --tls-cert")
    serve.add_argument(
        "--tls-client-ca", type=Path, help="require client certificates issued by this CA (mTLS)"
    )

    gen = sub.add_parser("generate", help="print synthetic families as registry YAML")
    gen.add_argument("--families", type=int, required=True)
    gen.add_argument("--seed", type=int, default=DEFAULT_SEED)
    gen.add_argument("--out", type=Path)
    return parser


async def _serve(args: argparse.Namespace) -> int:
    faults = FaultConfig(
        latency_ms=args.latency_ms,
        fail_rate=args.fail_rate,
        status=args.fault_status,
        drop_connection=args.drop_connection,
        malformed=args.malformed,
        extra_item=args.extra_item,
    )
    world = build_world(args.families, seed=args.seed)
    if (args.tls_cert is None) != (args.tls_key is None) or (
        args.tls_client_ca is not None and args.tls_cert is None
    ):
        sys.stderr.write("--tls-cert and --tls-key go together (and --tls-client-ca needs them)\n")
        return 2
    tls = (
        server_tls_context(args.tls_cert, args.tls_key, args.tls_client_ca)
        if args.tls_cert is not None
        else None
    )
    running = await start_simulators(
        args.host,
        args.base_port,
        parse_parties(args.parties),
        args.families,
        seed=args.seed,
        faults=faults,
        admin=not args.no_admin,
        world=world,
        ssl_context=tls,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.ready_file is not None:
            write_ready_file(args.ready_file, running.urls)
        sys.stdout.write(json.dumps(running.urls) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await running.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "generate":
        exclude = {p.bsn for p in Registry.load().iter_persons()}
        text = yaml.safe_dump(
            generate_families(args.families, args.seed, exclude),
            sort_keys=False,
            allow_unicode=True,
        )
        if args.out is not None:
            args.out.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
