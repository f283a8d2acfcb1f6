"""One inference interface for every task and backend.

Open a model once, then serve requests of its task: one or many at a time, each with
its own output and timings, and, when asked, each new token's text as it is made::

    engine = open_engine(model_dir, "text-generation", backend="fast")
    outputs = engine.run([Request(text="Hello"), Request(text="Hi there")], max_new_tokens=64)
    for event in engine.stream(Request(text="Hello"), max_new_tokens=64):
        print(event.text, end="", flush=True)

The benchmark scenarios, the pipelines and a web UI all go through it; what differs per
task (a prompt, an image, an image and a question, audio) lives in one runner per task
(:mod:`localbench.engine.text`, :mod:`~localbench.engine.speech`,
:mod:`~localbench.engine.vision`), listed in ``RUNNERS``; what they take and give is in
:mod:`localbench.engine.requests`.

Greedy decoding everywhere (``GREEDY``). A request stops at the end of sequence or at
its token budget; ``force_new_tokens`` makes every request generate exactly its budget
(end of sequence suppressed), which is how the benchmark measures a fixed length.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from localbench.engine.device import DTYPES, resolve_device, resolve_dtype
from localbench.engine.loading import LoadedModel, load_model
from localbench.engine.requests import Output, Request, Runner, TokenEvent
from localbench.engine.speech import SpeechRunner
from localbench.engine.text import TextRunner
from localbench.engine.vision import DeepseekVL2Runner, ImageTextRunner

# task -> the runner that serves its requests.
RUNNERS: dict[str, type[Runner]] = {
    task: runner
    for runner in (TextRunner, SpeechRunner, ImageTextRunner, DeepseekVL2Runner)
    for task in runner.tasks
}


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

    def __init__(
        self,
        loaded: LoadedModel,
        backend: str = "fast",
        max_batch: int | None = None,
        compile_steps: bool | None = None,
    ):
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
        self.runner = RUNNERS[loaded.task](loaded, backend, max_batch, compile_steps)

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
    compile_steps: bool | None = None,
) -> Engine:
    """The one way to open a model for inference: load the checkpoint folder for ``task``
    on ``device`` in ``dtype`` (names as in the config: ``auto`` picks), then wrap it.

    ``compile_steps``: whether the fast backend compiles its prefill and decode steps with
    ``torch.compile`` before capturing them as CUDA graphs (fewer, fused kernels, for a
    compile of tens of seconds the first time on a machine); False captures them as they
    are; None: compile wherever graphs are captured."""
    target = resolve_device(device)
    dtype_name, _ = resolve_dtype(dtype, target)
    loaded = load_model(Path(model_dir), task, DTYPES[dtype_name], target)
    return Engine(loaded, backend, max_batch, compile_steps)
