"""`cynode-node`: run the node daemon, check its prerequisites, or start the
development inference backend."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from .config import ConfigError, NodeConfig, load_config

DEFAULT_CONFIG = Path("/etc/cynode/node.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cynode-node", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the node daemon"), ("doctor", "check prerequisites")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "-c",
            "--config",
            type=Path,
            help="YAML config (default $CYNODE_NODE_CONFIG or "
            f"{DEFAULT_CONFIG} when it exists); env vars override it",
        )
        cmd.add_argument("-v", "--verbose", action="store_true")
    sub.add_parser("dev-inference", help="the development model backend", add_help=False)
    return parser


def _config_path(given: Path | None) -> Path | None:
    if given is not None:
        return given
    if os.environ.get("CYNODE_NODE_CONFIG"):
        return Path(os.environ["CYNODE_NODE_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


async def _run(config: NodeConfig) -> None:
    from .daemon import NodeDaemon

    daemon = NodeDaemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    await daemon.run()


async def _doctor(config: NodeConfig) -> int:
    from .doctor import run_doctor

    checks = await run_doctor(config)
    for check in checks:
        print(check.line())
    failed = [c.name for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dev-inference"]:
        from cynode.node import devinference

        return int(devinference.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(_config_path(args.config))
    except ConfigError as exc:
        print(f"cynode-node: config: {exc}", file=sys.stderr)
        return 2
    if args.command == "doctor":
        return asyncio.run(_doctor(config))
    asyncio.run(_run(config))
    return 0
