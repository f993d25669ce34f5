"""Start and stop the development inference server (in-process, for tests and benches)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web

from cynode.node.devinference._api import OllamaAPI
from cynode.node.devinference._model import DEFAULT_MODEL_NAME, DEFAULT_NUM_PREDICT, DevModel
from cynode.node.devinference._worker import ModelWorker


@dataclass
class DevInferenceHandle:
    """A running server: ``url`` (``http://host:port``), the loaded ``model``, ``close()``."""

    host: str
    port: int
    model: DevModel
    _runner: web.AppRunner
    _executor: ThreadPoolExecutor
    _closed: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def load_seconds(self) -> float:
        return self.model.load_seconds

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> DevInferenceHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_dev_inference(
    host: str = "127.0.0.1",
    port: int = 11434,
    *,
    model_path: Path | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    default_num_predict: int = DEFAULT_NUM_PREDICT,
) -> DevInferenceHandle:
    """Load the model (on the model thread, so the loop stays free) and serve it.

    ``port=0`` picks a free port; read it back from ``handle.port``. Raises
    ``DevModelUnavailable`` when the ``inference-dev`` extra is not installed.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devinference")
    try:
        model = await asyncio.get_running_loop().run_in_executor(
            executor,
            lambda: DevModel.load(model_path, name=model_name, n_ctx=n_ctx, n_threads=n_threads),
        )
        api = OllamaAPI(model, ModelWorker(executor), default_num_predict=default_num_predict)
        runner = web.AppRunner(api.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
    except BaseException:
        executor.shutdown(wait=False)
        raise
    bound_port = int(runner.addresses[0][1])
    return DevInferenceHandle(host, bound_port, model, runner, executor)
