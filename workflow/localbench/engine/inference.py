"""One inference interface for every task and backend.

Open a model once, then serve requests of its task: one or many at a time, each with
its own output and timings, and, when asked, each new token's text as it is made::

    engine = open_engine(model_dir, "text-generation", backend="fast")
    outputs = engine.run([Request(text="Hello"), Request(text="Hi there")], max_new_tokens=64)
    for event in engine.stream(Request(text="Hello"), max_new_tokens=64):
        print(event.text, end="", flush=True)

The benchmark scenarios, the pipelines and a web UI all go through it; what differs per
task (a prompt, an image, an image and a question, audio) lives in one runner per task
(:mod:`localbench.engine.text`, ...), registered in ``RUNNERS``.

Greedy decoding everywhere (``GREEDY``). A request stops at the end of sequence or at
its token budget; ``force_new_tokens`` makes every request generate exactly its budget
(end of sequence suppressed), which is how the benchmark measures a fixed length.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from localbench.engine.device import DTYPES, resolve_device, resolve_dtype
from localbench.engine.generation import Run
from localbench.engine.loading import LoadedModel, load_model


@dataclass
class Request:
    """One input of the model's task. Text models read ``text`` (or ``prompt_ids``,
    a prompt already in token ids); captioning reads ``image``; visual question
    answering and DeepSeek-VL2 read ``image`` and ``text`` (the question); speech
    recognition reads ``audio`` (mono float samples at the runner's sampling rate)."""

    text: str | None = None
    prompt_ids: list[int] | None = None
    image: Any = None
    audio: Any = None
    # This request's budget of new tokens; None: the one run() is given.
    max_new_tokens: int | None = None
    # Text models: wrap ``text`` in the tokenizer's chat template where it has one.
    chat: bool = True


@dataclass
class Output:
    """What one request produced, on the host clock (seconds, ``time.perf_counter``):
    ``start`` when its batch began (after a device sync), ``first_token`` when its first
    token was on the host, ``end`` when its last was."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    start: float
    first_token: float
    end: float
    # Gaps between this request's tokens where each was read as it was made (streaming,
    # eager, or batch 1 on the fast backend); empty otherwise.
    inter_token_s: list[float] = field(default_factory=list)
    # Task details: audio windows, image size, the batch the request ran in, ...
    details: dict = field(default_factory=dict)
    # When its last token was on the host where that is before ``end`` (eager generate()
    # returns a little after its last step); None: at ``end``.
    last_token: float | None = None

    @property
    def latency_s(self) -> float:
        return self.end - self.start

    @property
    def first_token_s(self) -> float:
        return self.first_token - self.start

    def to_run(self, start: float | None = None) -> Run:
        """The timing record of this request; ``start`` when it began earlier (the
        preprocessing before the batch)."""
        return Run(
            start=self.start if start is None else start,
            first_token=self.first_token,
            last_token=self.end if self.last_token is None else self.last_token,
            end=self.end,
            tokens=len(self.token_ids),
            inter_token_s=list(self.inter_token_s),
            extra={"tokens": self.token_ids, "output": self},
        )


@dataclass
class TokenEvent:
    """One new token of one request, streamed: its id, the text it adds (may be empty
    while a multi-byte character is incomplete) and when it reached the host."""

    request: int
    token_id: int
    text: str
    time: float


class Runner:
    """What one task does with requests. A subclass sets ``tasks`` and implements
    ``generate``; ``batch_size`` says how many requests it takes at once."""

    tasks: tuple[str, ...] = ()

    def __init__(self, loaded: LoadedModel, backend: str, max_batch: int | None) -> None:
        self.loaded = loaded
        self.backend = backend  # the one used: a runner falls back to eager and says why
        self.note: str | None = None
        self.max_batch = max_batch

    def batch_size(self, requests: list[Request], max_new_tokens: int) -> int:
        """How many of ``requests`` run together (at least one)."""
        return 1

    def generate(
        self,
        requests: list[Request],
        max_new_tokens: int,
        force_new_tokens: bool,
        on_token: Callable[[int, int, float], None] | None,
    ) -> list[Output]:
        """Outputs of ``requests`` (at most ``batch_size``), in order. ``on_token(i,
        token_id, time)`` hears of each new token of request ``i`` as it is made."""
        raise NotImplementedError

    def details(self) -> dict:
        """What a result records about how the requests ran (decoder, graphs, compile)."""
        return {}

    def close(self) -> None:
        """Free what the runner holds beside the model (caches, graphs)."""


# task -> Runner subclass; each runner module registers itself on import.
RUNNERS: dict[str, type[Runner]] = {}


def register(runner: type[Runner]) -> type[Runner]:
    for task in runner.tasks:
        RUNNERS[task] = runner
    return runner


def _load_runners() -> None:
    # The runner modules import this one; they are imported here, on first use.
    from localbench.engine import text  # noqa: F401

    for module in ("speech", "vision"):
        try:
            __import__(f"localbench.engine.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"localbench.engine.{module}":
                raise


class _Detokenizer:
    """Each new token's text for streaming: the whole output decoded again, minus what
    was already given (a token may complete a character only with the next one)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.tokens: dict[int, list[int]] = {}
        self.given: dict[int, str] = {}

    def __call__(self, request: int, token_id: int) -> str:
        tokens = self.tokens.setdefault(request, [])
        tokens.append(token_id)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        before = self.given.get(request, "")
        self.given[request] = text
        return text[len(before) :] if text.startswith(before) else text


class Engine:
    """A model opened once for its task and backend; see the module docstring."""

    def __init__(self, loaded: LoadedModel, backend: str = "fast", max_batch: int | None = None):
        _load_runners()
        if loaded.task not in RUNNERS:
            raise ValueError(
                f"no inference runner for task {loaded.task!r}; "
                f"available: {', '.join(sorted(RUNNERS))}"
            )
        if backend not in ("eager", "fast"):
            raise ValueError(f"backend must be eager or fast, got {backend!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.loaded = loaded
        self.task = loaded.task
        self.requested_backend = backend
        self.runner = RUNNERS[loaded.task](loaded, backend, max_batch)

    @property
    def backend(self) -> str:
        """The backend the requests run on (a model the fast backend cannot run: eager)."""
        return self.runner.backend

    @property
    def note(self) -> str | None:
        """Why the backend differs from the one asked for, if it does."""
        return self.runner.note

    @property
    def tokenizer(self):
        processor = self.loaded.processor
        return getattr(processor, "tokenizer", processor)

    def batch_size(self, requests: list[Request], max_new_tokens: int) -> int:
        return max(1, self.runner.batch_size(requests, max_new_tokens))

    @torch.inference_mode()
    def run(
        self,
        requests: list[Request],
        max_new_tokens: int = 64,
        *,
        force_new_tokens: bool = False,
        on_token: Callable[[TokenEvent], None] | None = None,
    ) -> list[Output]:
        """Every request's output, in order: as many together as the runner's batch
        size allows. ``on_token`` hears of each new token (streaming)."""
        if not requests:
            return []
        hook = None
        if on_token is not None:
            detokenize = _Detokenizer(self.tokenizer)
            offset = 0

            def hook(index: int, token_id: int, time: float) -> None:
                request = offset + index
                on_token(TokenEvent(request, token_id, detokenize(request, token_id), time))

        size = self.batch_size(requests, max_new_tokens)
        outputs: list[Output] = []
        for start in range(0, len(requests), size):
            offset = start
            group = requests[start : start + size]
            outputs.extend(self.runner.generate(group, max_new_tokens, force_new_tokens, hook))
        return outputs

    def stream(self, request: Request, max_new_tokens: int = 64) -> Iterator[TokenEvent]:
        """The request's tokens as they are made. Generation runs in a worker thread;
        an error there is raised here."""
        events: queue.Queue = queue.Queue()
        done = object()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self.run([request], max_new_tokens, on_token=events.put)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                failure.append(error)
            finally:
                events.put(done)

        worker = threading.Thread(target=work, name="localbench-stream", daemon=True)
        worker.start()
        while (event := events.get()) is not done:
            yield event
        worker.join()
        if failure:
            raise failure[0]

    def details(self) -> dict:
        return {
            "requested": self.requested_backend,
            "used": self.backend,
            "note": self.note,
            **self.runner.details(),
        }

    def close(self) -> None:
        self.runner.close()


def open_engine(
    model_dir: Path,
    task: str,
    backend: str = "fast",
    dtype: str = "auto",
    device: str = "auto",
    max_batch: int | None = None,
) -> Engine:
    """The one way to open a model for inference: load the checkpoint folder for ``task``
    on ``device`` in ``dtype`` (names as in the config: ``auto`` picks), then wrap it."""
    target = resolve_device(device)
    dtype_name, _ = resolve_dtype(dtype, target)
    loaded = load_model(Path(model_dir), task, DTYPES[dtype_name], target)
    return Engine(loaded, backend, max_batch)
