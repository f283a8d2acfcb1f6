"""The fast backend: batch-1 greedy decoding near the memory-bandwidth limit.

Eager ``generate()`` spends most of a small model's decode step in Python: logits
processors, stopping criteria, a dynamic cache that grows, and a host-device sync per
token. This decoder keeps only the work the model needs, in the spirit of gpt-fast:

- a static KV cache allocated once for prompt + new tokens;
- attention over the whole cache with a position mask, so every decode step has the
  same shapes and the same memory addresses;
- on an accelerator, the query, key and value projections, and the MLP's gate and up
  projections, run as one matrix each (the model's weights are re-pointed into the fused
  matrix, so no memory is added): fewer, larger matrix-vector products per layer (on
  the CPU the weights stay memory-mapped from the checkpoint, where a fused copy would
  add memory, so the projections run as loaded);
- decode-step attention written out for grouped heads (a batched product per key/value
  head, a masked float32 softmax) so the compiler fuses it into a few kernels; the
  prompt's attention is causal over its own keys, through the same
  ``scaled_dot_product_attention`` kernel that ``generate()`` uses;
- greedy argmax on the device, the next token and position written in place;
- on CUDA the decode step and the prefill (for the prompt's length) are compiled with
  ``torch.compile`` (fewer, fused kernels) and captured once as CUDA graphs: one launch
  per token and no host synchronisation until the end. An uncompiled prefill of more
  than ``PREFILL_GRAPH_TOKENS`` (sequences x prompt length) runs as it is: its kernels
  are long enough that launching them costs nothing, while capturing it would run it
  four more times (a pipeline's batch of 64 prompts of 868 tokens: 1.7 s). On CUDA a
  decode step's attention (bias, rotary embedding, cache write, softmax) is a pair of
  Triton kernels per layer (``decode_attention.py``), and each projection, the LM head
  included, one Triton matrix-vector kernel with the norm, the SiLU gate or the
  residual sum folded in (``gemv.py``). If compilation fails the uncompiled step with
  PyTorch attention and projections is captured instead, and the result says so;
- on the CPU a decode step of one sequence runs each layer as one call of a C++ kernel
  (``cpu_linear.cpp``: norm, products, rotary embedding, cache write, attention, SiLU
  gate and residuals, rounded where the model's modules round), so a step is some thirty
  calls instead of a thousand small PyTorch operations, and every product streams its
  weight at the memory bandwidth; prompts and batches run the model's modules with the
  kernel's products.

It runs the model's own modules and weights (embeddings, norms, projections, MLPs, LM
head) and only re-implements attention, the cache and the projections' grouping, so its
greedy tokens equal ``generate()``'s. Supported: decoder-only models of the Llama family
(Llama, Qwen2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from localbench.engine.backends import cpu_linear, decode_attention, gemv
from localbench.engine.generation import Run

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
# Steps between host reads of a batch's new tokens when sequences may stop early and
# nobody streams them: a few wasted steps at most, against a sync per step.
CHECK_EVERY = 8
# The largest uncompiled prefill (sequences x prompt positions) captured as a CUDA graph.
# The benchmark's prompts (one of 128 tokens) and the throughput scenario's (64 of 32)
# are under it; a pipeline's batch of long prompts is over it and runs uncaptured.
PREFILL_GRAPH_TOKENS = 4096


def supports(model) -> tuple[bool, str]:
    """Whether the fast decoder can run ``model``, and why not."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return (
            False,
            f"the fast backend supports {', '.join(SUPPORTED_MODEL_TYPES)}, not {model_type}",
        )
    return True, ""


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _fuse_rows(linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) stacking ``linears``' rows; each module now views its slice.

    Concatenation copies one layer's matrices at a time; the modules' old tensors are
    released when their parameters are re-pointed, so the model's footprint is unchanged
    and the modules still compute what they did.
    """
    weight = torch.cat([linear.weight.detach() for linear in linears])
    biases = [linear.bias for linear in linears]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    if bias is None and any(b is not None for b in biases):
        raise ValueError("cannot fuse projections of which only some have a bias")
    start = 0
    for linear in linears:
        rows = linear.out_features
        linear.weight = torch.nn.Parameter(weight[start : start + rows], requires_grad=False)
        if bias is not None:
            linear.bias = torch.nn.Parameter(bias[start : start + rows], requires_grad=False)
        start += rows
    return weight, bias


def _argmax(values: torch.Tensor) -> torch.Tensor:
    """``values.argmax()`` of a 1-D tensor in two stages, the same index (the first maximum).

    A vocabulary of 150k logits reduced by one program takes tens of microseconds; rows
    reduced in parallel, then the row maxima, take a few.
    """
    size = values.numel()
    rows = next((r for r in (256, 128, 64, 32, 16, 8) if size % r == 0 and size > 4 * r), 1)
    if rows == 1:
        return values.argmax()
    table = values.view(rows, size // rows)
    best_in_row, column = table.max(dim=-1)
    row = best_in_row.argmax()
    row = row.view(1)
    return (row * table.shape[1] + column.index_select(0, row)).view(())


def _grouped_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Causal attention of ``q`` (1, heads, T, D) over the whole cache (1, kv_heads, L, D).

    Query heads sharing a key/value head are stacked along the rows of one product, as
    transformers' ``repeat_kv`` orders them (head h reads key/value head h // group), so
    the cache is read once and never repeated. ``mask`` (T, L), or (B, 1, 1, T, L) for a
    batch of B sequences (q (B, heads, T, D), cache (B, kv_heads, L, D)), marks visible
    positions.
    ``compute_dtype`` (float32 on CPUs without native products of the cache's dtype) is
    the dtype of the two products; the softmax is float32 either way.
    """
    batch, heads, length, dim = q.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    dtype = compute_dtype or values.dtype
    rows = q.reshape(batch, kv_heads, group * length, dim).to(dtype)
    scores = torch.matmul(rows, keys.to(dtype).transpose(-1, -2)).float() * scale
    scores = scores.view(batch, kv_heads, group, length, -1).masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).to(values.dtype).to(dtype)
    out = torch.matmul(weights.view(batch, kv_heads, group * length, -1), values.to(dtype))
    return out.view(batch, heads, length, dim).to(q.dtype)


@dataclass
class FastRun:
    """One fast generation: tokens, and times on the host clock (seconds)."""

    tokens: list[int]
    start: float
    first_token: float
    end: float
    inter_token_s: list[float] = field(default_factory=list)

    def to_run(self, start: float | None = None) -> Run:
        """The timing record of this generation; ``start`` if the request began earlier."""
        return Run(
            start=self.start if start is None else start,
            first_token=self.first_token,
            last_token=self.end,
            end=self.end,
            tokens=len(self.tokens),
            inter_token_s=self.inter_token_s,
            extra={"tokens": self.tokens},
        )


def suppressed_logits(vocab_size: int, token_ids, device, dtype) -> torch.Tensor:
    """An additive bias over the vocabulary: minus infinity at ``token_ids``, zero elsewhere.

    Forcing a fixed number of new tokens means the end-of-sequence tokens may not be
    chosen (generate()'s ``min_new_tokens`` does the same), and Whisper's generation
    config suppresses further tokens.
    """
    bias = torch.zeros(vocab_size, device=device, dtype=dtype)
    ids = sorted({int(i) for i in token_ids if i is not None and 0 <= int(i) < vocab_size})
    if ids:
        bias[torch.tensor(ids, device=device)] = float("-inf")
    return bias


def end_of_sequence_ids(generation_config) -> list[int]:
    """The end-of-sequence ids of a generation config (one id or a list)."""
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


class StaticDecoder:
    """The engine of every fast decoder: static state, compile and capture, the token loop.

    A subclass provides ``_embed(input_ids, positions, prefill)`` (the input vectors;
    ``prefill`` is true for the prompt, where a multimodal model places its image
    features), ``_forward(x, positions)`` (the hidden state of the last position, after
    writing every position to its caches) and ``_logits(hidden)``, and calls ``_setup``
    at the end of its ``__init__``.
    """

    def _setup(
        self,
        max_len: int,
        vocab_size: int,
        suppress: list[int],
        suppress_first: list[int] = (),
        kv_heads: int | None = None,
        use_cuda_graph: bool | None = None,
        use_compile: bool | None = None,
        batch: int = 1,
        end_of_sequence: list[int] | None = None,
    ) -> None:
        """Allocate the self-attention cache (``kv_heads``, default ``self.n_heads``, of
        ``self.head_dim`` per layer in ``self.layers``, for ``batch`` sequences) and the
        decode-step state."""
        self.max_len = max_len
        self.batch = batch
        shape = (batch, kv_heads or self.n_heads, max_len, self.head_dim)
        self.keys = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.positions = torch.arange(max_len, device=self.device)
        # ``suppress`` holds the end-of-sequence ids (``end_of_sequence``, default all of
        # them), banned while a fixed number of tokens is forced and allowed when a
        # generation stops at the end of sequence (``generate_batch``): the decoder's
        # biases are one pair of tensors, overwritten in place for either mode.
        ends = set(suppress if end_of_sequence is None else end_of_sequence)
        self.end_of_sequence = sorted(int(i) for i in ends if i is not None)
        first = [*suppress, *suppress_first]
        self.biases = {
            stop: tuple(
                suppressed_logits(
                    vocab_size,
                    [i for i in ids if not stop or i not in ends],
                    self.device,
                    self.dtype,
                )
                for ids in (suppress, first)
            )
            for stop in (False, True)
        }
        self.suppress, self.suppress_first = (b.clone() for b in self.biases[False])
        self.stops_at_end = False
        # Decode-step state, at fixed addresses so a CUDA graph can replay it.
        # One cache position for every sequence of a batch: a shorter prompt is padded on
        # the left, and ``pad`` (per sequence) hides its padding from attention.
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self.output = torch.zeros(batch, max_len, dtype=torch.long, device=self.device)
        self.pad = torch.zeros(batch, dtype=torch.long, device=self.device)
        if use_cuda_graph is None:
            use_cuda_graph = self.device.type == "cuda"
        self.use_cuda_graph = use_cuda_graph
        self.use_compile = use_cuda_graph if use_compile is None else use_compile
        self.compile_error: str | None = None
        # A decoder with its own kernels sets these.
        self.attention_kernel = self.linear_kernels = False
        self.graph: torch.cuda.CUDAGraph | None = None
        self.prefill_graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.capture_s = 0.0
        self._step = self._decode_step
        self._prefill = self._prefill_step
        if self.use_compile:
            self._step = torch.compile(self._decode_step, fullgraph=True, dynamic=False)
            self._prefill = torch.compile(self._prefill_step, fullgraph=True, dynamic=False)

    def details(self, timer: str) -> dict:
        """What a result records about this decoder: graphs, compilation, the timer."""
        return {
            "cuda_graph": self.graph is not None,
            "compiled": self.use_compile,
            "compile_error": self.compile_error,
            "decode_attention": "triton kernel" if self.attention_kernel else "pytorch",
            **self._projections(),
            "graph_capture_s": self.capture_s,
            # The prompt lengths whose prefill replays a graph (``capture_prefill``).
            "prefill_graphs": sorted(self.prefill_graphs),
            "timer": timer,
        }

    def _projections(self) -> dict:
        """What runs a decode step's projections and a prompt's."""
        return {
            "decode_projections": "triton kernel" if self.linear_kernels else "pytorch",
            "prompt_projections": "pytorch",
        }

    def _heads(self, states: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """(B, T, heads * head_dim) projections as (B, heads, T, head_dim)."""
        batch = states.shape[0]
        return states.view(batch, -1, heads or self.n_heads, self.head_dim).transpose(1, 2)

    def _visible_keys(self, positions: torch.Tensor) -> torch.Tensor:
        """The cache positions each query at ``positions`` attends to, as
        ``_grouped_attention`` takes them: (T, L) for one sequence; (B, 1, 1, T, L) for a
        batch, where a sequence sees none of its left padding (``self.pad``) and a padding
        query sees itself (its output is never used), so no row of the softmax is empty."""
        causal = self.positions[None, :] <= positions[:, None]
        if self.batch == 1:
            return causal
        unpadded = self.positions[None, :] >= self.pad[:, None]
        own = self.positions[None, :] == positions[:, None]
        return ((causal[None] & unpadded[:, None, :]) | own)[:, None, None]

    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor, prefill: bool):
        raise NotImplementedError

    def _forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _next_token(
        self, input_ids: torch.Tensor, positions: torch.Tensor, prefill: bool
    ) -> torch.Tensor:
        x = self._embed(input_ids, positions, prefill)
        suppress = self.suppress_first if prefill else self.suppress
        logits = self._logits(self._forward(x, positions))
        if self.batch == 1:
            return _argmax(logits.view(-1) + suppress).view(1, 1)
        return (logits.view(self.batch, -1) + suppress).argmax(dim=-1, keepdim=True)

    def _decode_step(self) -> None:
        """Generate the token after ``self.position``; all state stays on the device."""
        following = self._next_token(self.token, self.position, prefill=False)
        self.output.index_copy_(1, self.position + 1, following)
        self.token.copy_(following)
        self.position.add_(1)

    def _prefill_step(self, prompt: torch.Tensor) -> None:
        """Run the prompt, write its first generated token, set the decode state."""
        length = prompt.shape[1]
        first = self._next_token(prompt, self.positions[:length], prefill=True)
        self.output[:, length : length + 1].copy_(first)
        self.token.copy_(first)
        self.position.fill_(length)

    def _capture(self, fn, *args) -> torch.cuda.CUDAGraph:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # compiles on the first call, then settles the allocator
                fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn(*args)
        return graph

    def capture_prefill(self, prompt_length: int) -> bool:
        """Whether a prefill of ``prompt_length`` positions is captured: always where it is
        compiled (compiling runs it anyway), else up to ``PREFILL_GRAPH_TOKENS``."""
        return self.use_compile or self.batch * prompt_length <= PREFILL_GRAPH_TOKENS

    def prepare(self, prompt_length: int) -> None:
        """Compile and capture the decode step, and the prefill of ``prompt_length``
        positions where ``capture_prefill`` says so (once per prompt length).

        Not part of any timing: its cost is reported as ``capture_s``.
        """
        if (
            not self.use_cuda_graph
            or prompt_length in self.prefill_graphs
            or (self.graph is not None and not self.capture_prefill(prompt_length))
        ):
            return
        start = time.perf_counter()
        prompt = torch.zeros(self.batch, prompt_length, dtype=torch.long, device=self.device)

        def capture() -> torch.cuda.CUDAGraph | None:
            """The decode step's graph (once), and the prefill's where it is captured."""
            prefill = None
            if self.capture_prefill(prompt_length):
                prefill = self._capture(self._prefill, prompt)
            self.graph = self.graph or self._capture(self._step)
            return prefill

        try:
            prefill = capture()
        except Exception as error:  # noqa: BLE001 - compilers fail in many ways
            if not (self.use_compile or self.attention_kernel):
                raise
            # The plain path: uncompiled, attention and projections in PyTorch; the result
            # says why. The compiled step's graph, if any, is captured again.
            self.compile_error = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            self.use_compile = self.attention_kernel = self.linear_kernels = False
            self._step, self._prefill = self._decode_step, self._prefill_step
            self.graph = None
            prefill = capture()
        if prefill is not None:
            self.prefill_graphs[prompt_length] = (prefill, prompt)
        torch.cuda.synchronize()
        self.capture_s += time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, new_tokens: int) -> FastRun:
        """Greedy-generate exactly ``new_tokens`` tokens after ``input_ids`` (batch 1)."""
        if self.batch != 1:
            raise ValueError(f"generate() runs one sequence; this decoder holds {self.batch}")
        self._stop_at_end(False)
        prompt_length = input_ids.shape[1]
        if prompt_length + new_tokens > self.max_len:
            raise ValueError(
                f"prompt {prompt_length} + {new_tokens} new tokens exceed "
                f"the cache of {self.max_len}"
            )
        self.prepare(prompt_length)
        timed = self.device.type == "cuda"
        events = [torch.cuda.Event(enable_timing=True) for _ in range(new_tokens)] if timed else []
        host_times: list[float] = []

        self._sync()
        start = time.perf_counter()
        if prompt_length in self.prefill_graphs:
            graph, prompt = self.prefill_graphs[prompt_length]
            prompt.copy_(input_ids)
            graph.replay()
        else:
            self._prefill(input_ids)
        # The first token is what a streaming client sees first: wait for it.
        self._sync()
        first_token = time.perf_counter()
        if timed:
            events[0].record()
        for step in range(1, new_tokens):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
            if timed:
                events[step].record()
            else:
                host_times.append(time.perf_counter())
        self._sync()
        end = time.perf_counter()
        if timed:
            gaps = [events[i - 1].elapsed_time(events[i]) / 1e3 for i in range(1, new_tokens)]
        else:
            stamps = [first_token, *host_times]
            gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        tokens = self.output[0, prompt_length : prompt_length + new_tokens].tolist()
        return FastRun(
            tokens=tokens, start=start, first_token=first_token, end=end, inter_token_s=gaps
        )

    def _stop_at_end(self, stop: bool) -> None:
        """Allow (``stop``) or ban the end-of-sequence ids, in place."""
        if stop != self.stops_at_end:
            self.suppress.copy_(self.biases[stop][0])
            self.suppress_first.copy_(self.biases[stop][1])
            self.stops_at_end = stop

    @torch.inference_mode()
    def generate_batch(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        stop_at_end: bool = True,
        on_token=None,
        pad_id: int = 0,
        length: int | None = None,
    ) -> list[FastRun]:
        """Greedy-generate for up to ``self.batch`` prompts at once; each sequence's run.

        Shorter prompts are padded on the left and their padding is hidden from attention
        (and from the rotary positions), so each sequence computes what it would alone.
        With ``stop_at_end`` a sequence ends at its first end-of-sequence id (not part of
        its tokens) and the batch stops when every sequence has ended or after
        ``max_new_tokens``; an ended sequence's later steps are computed (the shapes stay
        fixed) and ignored. Without it, exactly ``max_new_tokens`` tokens each.
        ``on_token(sequence, token_id, time)`` is called for each new token as it is made
        (time on the host clock, after the step's sync): streaming; the runs then carry
        the gaps between tokens (``inter_token_s``), which are not measured otherwise.
        ``length`` pads every prompt to at least that many positions, so that batches of
        different prompt lengths replay one compiled, captured prefill (a batch decoder).
        """
        count = len(prompts)
        if not 1 <= count <= self.batch or any(len(p) == 0 for p in prompts):
            raise ValueError(f"expected 1 to {self.batch} non-empty prompts, got {count}")
        if length is not None and self.batch == 1:
            raise ValueError("a decoder of one sequence has no padding to hide")
        length = max(length or 0, *(len(p) for p in prompts))
        if length + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt {length} + {max_new_tokens} new tokens exceed the cache of {self.max_len}"
            )
        # Rows past the requests repeat the first one; their results are dropped.
        rows = [*prompts, *[prompts[0]] * (self.batch - count)]
        ids = torch.tensor(
            [[pad_id] * (length - len(p)) + list(p) for p in rows], device=self.device
        )
        self.pad.copy_(torch.tensor([length - len(p) for p in rows], device=self.device))
        self._stop_at_end(stop_at_end)
        self.prepare(length)
        ends = set(self.end_of_sequence) if stop_at_end else set()
        tokens: list[list[int]] = [[] for _ in range(count)]
        stamps: list[list[float]] = [[] for _ in range(count)]
        live = set(range(count))
        ended: dict[int, float] = {}
        # The host reads the new tokens after every step when streaming; otherwise every
        # CHECK_EVERY steps when sequences may end early, else once at the end, so steps
        # queue on the device without a sync between them.
        if on_token is not None:
            check_every = 1
        else:
            check_every = CHECK_EVERY if stop_at_end else max_new_tokens
        read = 0

        def collect(upto: int, now: float) -> None:
            nonlocal read
            new = self.output[:count, length + read : length + upto].tolist()
            for index in sorted(live):
                for token in new[index]:
                    if token in ends:
                        live.discard(index)
                        break
                    tokens[index].append(token)
                    stamps[index].append(now)
                    if on_token is not None:
                        on_token(index, token, now)
                    if len(tokens[index]) == max_new_tokens:
                        live.discard(index)
                        break
                if index not in live:
                    ended[index] = now
            read = upto

        self._sync()
        start = time.perf_counter()
        if length in self.prefill_graphs:
            graph, prompt = self.prefill_graphs[length]
            prompt.copy_(ids)
            graph.replay()
        else:
            self._prefill(ids)
        self._sync()
        first_token = time.perf_counter()
        collect(1, first_token)
        for step in range(1, max_new_tokens):
            if not live:
                break
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
            if (step + 1) % check_every == 0 or step == max_new_tokens - 1:
                self._sync()
                collect(step + 1, time.perf_counter())
        end = time.perf_counter()
        runs = []
        for index in range(count):
            # Gaps between tokens only where each token was read as it was made.
            times = stamps[index] if check_every == 1 else []
            runs.append(
                FastRun(
                    tokens=tokens[index],
                    start=start,
                    first_token=first_token,
                    end=ended.get(index, end),
                    inter_token_s=[b - a for a, b in zip(times, times[1:], strict=False)],
                )
            )
        return runs


class FastDecoder(StaticDecoder):
    """Greedy decoding of one sequence of a Llama-family model; see the module docstring."""

    def __init__(
        self,
        model,
        max_len: int,
        use_cuda_graph: bool | None = None,
        use_compile: bool | None = None,
        fuse: bool | None = None,
        attention_kernel: bool | None = None,
        linear_kernels: bool | None = None,
        batch: int = 1,
        cpu_layers: bool | None = None,
    ) -> None:
        ok, why = supports(model)
        if not ok:
            raise ValueError(why)
        config = model.config
        inner = model.model
        self.model = model
        self.layers = list(inner.layers)
        self.embed = inner.embed_tokens
        self.norm = inner.norm
        self.lm_head = model.lm_head
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        # The model's own rotary embedding gives the exact cos/sin it would use
        # (rope scaling included), once for every position.
        probe = torch.zeros(1, 1, self.head_dim, device=self.device, dtype=self.dtype)
        cos, sin = inner.rotary_emb(probe, torch.arange(max_len, device=self.device)[None])
        self.cos, self.sin = cos[0], sin[0]
        self.scaling = [
            getattr(layer.self_attn, "scaling", self.head_dim**-0.5) for layer in self.layers
        ]
        # On the CPU the loaded weights stay memory-mapped from the checkpoint file, and the
        # mapping keeps the originals resident: a fused copy would add their size to the
        # process. Elsewhere loading copied them to the device, and fusing adds nothing.
        self.fused = self.device.type != "cpu" if fuse is None else fuse
        self.qkv, self.gate_up = [], []
        if self.fused:
            for layer in self.layers:
                attention = layer.self_attn
                self.qkv.append(_fuse_rows([attention.q_proj, attention.k_proj, attention.v_proj]))
                self.gate_up.append(_fuse_rows([layer.mlp.gate_proj, layer.mlp.up_proj])[0])
        self.q_size = self.n_heads * self.head_dim
        self.grouped_heads = bool(self.n_kv_heads != self.n_heads)  # a constant to the compiler
        self.kv_size = self.n_kv_heads * self.head_dim
        # On CUDA a decode step's attention (bias, rotary embedding, cache write, softmax)
        # is one Triton kernel per layer; it reads the fused projection's output.
        # The Triton kernels decode one sequence; a batch runs PyTorch's products.
        if batch > 1 and (attention_kernel or linear_kernels):
            raise ValueError("the decode kernels run one sequence, not a batch")
        if attention_kernel is None:
            attention_kernel = (
                batch == 1 and self.fused and decode_attention.available(self.device, self.head_dim)
            )
        if attention_kernel and not self.fused:
            raise ValueError("the decode-attention kernel needs the fused projections")
        # The projections as matrix-vector kernels with the norms, the SiLU gate and the
        # residual sums folded in; they hand the attention kernel its input.
        plain_mlp = (
            config.hidden_act == "silu"
            and not any(
                linear.bias is not None
                for layer in self.layers
                for linear in (layer.self_attn.o_proj, layer.mlp.down_proj, layer.mlp.gate_proj)
            )
            and self.lm_head.bias is None
        )
        if linear_kernels is None:
            linear_kernels = attention_kernel and plain_mlp and gemv.available(self.device)
        if linear_kernels and not (attention_kernel and plain_mlp):
            raise ValueError(
                "the matrix-vector kernels need the decode-attention kernel, "
                "a SiLU MLP and projections without bias after attention"
            )
        self._setup(
            max_len,
            self.lm_head.out_features,
            end_of_sequence_ids(model.generation_config),
            kv_heads=self.n_kv_heads,
            use_cuda_graph=use_cuda_graph,
            use_compile=use_compile,
            batch=batch,
        )
        self.attention_kernel = attention_kernel
        self.linear_kernels = linear_kernels
        # On the CPU every projection runs through cpu_linear: its C++ kernel, compiled
        # here once per machine (not part of any timing), or PyTorch with the reason.
        self.cpu: cpu_linear.Products | None = None
        self.compute_dtype = self.dtype
        if self.device.type == "cpu":
            start = time.perf_counter()
            self.cpu = cpu_linear.Products(self.dtype)
            self.compute_dtype = self.cpu.compute_dtype
            self.capture_s += time.perf_counter() - start
        # On the CPU a decode step of one sequence runs each layer as one C++ call.
        # (``cpu_layers=False``: each product through ``cpu_linear`` instead.)
        layers_wanted = self.cpu is not None and batch == 1 and cpu_layers is not False
        self.cpu_layers = self._cpu_layers(config) if layers_wanted else None
        if cpu_layers and self.cpu_layers is None:
            raise ValueError("the C++ decode layer runs one sequence of a SiLU model on the CPU")

    def _cpu_layers(self, config) -> list[tuple] | None:
        """Each layer's arguments to the C++ decode layer, or None where it cannot run the
        model (no kernel, another activation, MLP biases)."""
        mlp_bias = any(
            linear.bias is not None
            for layer in self.layers
            for linear in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)
        )
        if not self.cpu.kernel or config.hidden_act != "silu" or mlp_bias:
            return None
        cos, sin = self.cos.contiguous(), self.sin.contiguous()
        layers = []
        for index, layer in enumerate(self.layers):
            attention, mlp = layer.self_attn, layer.mlp
            projections = (attention.q_proj, attention.k_proj, attention.v_proj)
            tensors = [
                layer.input_layernorm.weight,
                *(p.weight for p in projections),
                cos,
                sin,
                self.keys[index],
                self.values[index],
                attention.o_proj.weight,
                layer.post_attention_layernorm.weight,
                mlp.gate_proj.weight,
                mlp.up_proj.weight,
                mlp.down_proj.weight,
            ]
            biases = [p.bias for p in (*projections, attention.o_proj)]
            eps = (
                layer.input_layernorm.variance_epsilon,
                layer.post_attention_layernorm.variance_epsilon,
            )
            layers.append(
                (
                    [t.detach().contiguous() for t in tensors],
                    [None if b is None else b.detach().contiguous() for b in biases],
                    *eps,
                    self.scaling[index],
                )
            )
        return layers

    def _cpu_decode(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """A decode step's layers, one C++ call each (``cpu_linear.cpp``)."""
        at = int(position)
        x = x.contiguous()
        for tensors, biases, in_eps, post_eps, scale in self.cpu_layers:
            self.cpu.module.decode_layer(x, tensors, biases, in_eps, post_eps, at, scale)
        return x

    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor, prefill: bool):
        return self.embed(input_ids)

    def _forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last position (before the final norm) after writing all
        positions to the cache."""
        length = x.shape[1]
        if length == 1 and self.linear_kernels:
            return self._kernel_decode(x, positions)
        if length == 1 and self.cpu_layers is not None and not torch.compiler.is_compiling():
            return self._cpu_decode(x, positions)
        mask = self.positions[None, :] <= positions[:, None]
        causal = None
        if self.batch == 1:
            cos = self.cos[positions][None, None]
            sin = self.sin[positions][None, None]
        else:
            # Each sequence counts its positions from its first token, after its padding,
            # and sees no padding: keys at or past its ``pad``.
            rotary = (positions[None, :] - self.pad[:, None]).clamp(min=0)
            cos, sin = self.cos[rotary][:, None], self.sin[rotary][:, None]
            visible = self.positions[None, :] >= self.pad[:, None]
            mask = (mask[None] & visible[:, None, :])[:, None, None]
            if length > 1:
                # The prompt's causal mask without padded keys; a padding row sees itself
                # (its output is never used), so no row of the softmax is empty.
                own = torch.eye(length, dtype=torch.bool, device=self.device)
                causal = mask[:, :, 0, :, :length] | own
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            h = layer.input_layernorm(x)
            if self.fused:
                weight, bias = self.qkv[index]
                # Product and bias apart: the compiler fuses a bias-free batch-1 product
                # with the norm before it, where a fused bias sends it to a library kernel.
                qkv = self._linear(h, weight)
                if length == 1 and self.attention_kernel:
                    out = decode_attention.decode_attention(
                        qkv.view(-1),
                        bias,
                        self.cos,
                        self.sin,
                        positions,
                        self.keys[index],
                        self.values[index],
                        self.scaling[index],
                    )
                    x = x + attention.o_proj(out.view(1, 1, self.q_size))
                    x = self._mlp(index, layer, x)
                    continue
                if bias is not None:
                    qkv = qkv + bias
                q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
            else:
                q, k, v = (
                    self._project(p, h)
                    for p in (attention.q_proj, attention.k_proj, attention.v_proj)
                )
            q = self._heads(q)
            k, v = self._heads(k, self.n_kv_heads), self._heads(v, self.n_kv_heads)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[index].index_copy_(2, positions, k)
            self.values[index].index_copy_(2, positions, v)
            if length > 1:
                # The prompt always starts at position 0 and fills the cache from there:
                # causal attention over its own keys, the kernel generate() uses too.
                out = F.scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    attn_mask=causal,
                    is_causal=causal is None,
                    scale=self.scaling[index],
                    enable_gqa=self.grouped_heads,
                )
            else:
                out = _grouped_attention(
                    q,
                    self.keys[index],
                    self.values[index],
                    mask,
                    self.scaling[index],
                    self.compute_dtype,
                )
            out = out.transpose(1, 2).reshape(x.shape[0], length, self.q_size)
            x = x + self._project(attention.o_proj, out)
            x = self._mlp(index, layer, x)
        return x[:, -1:]

    def _kernel_decode(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """A decode step's layers as four matrix-vector kernels and the attention kernels
        each: norm and query/key/value product, attention, output product and residual,
        norm and gate/up product and SiLU gate, down product and residual."""
        x = x.view(-1)
        for index, layer in enumerate(self.layers):
            weight, bias = self.qkv[index]
            norm = layer.input_layernorm
            qkv = self._gemv(x, weight, norm)
            out = decode_attention.decode_attention(
                qkv,
                bias,
                self.cos,
                self.sin,
                position,
                self.keys[index],
                self.values[index],
                self.scaling[index],
            )
            x = self._gemv(out, layer.self_attn.o_proj.weight, residual=x)
            norm = layer.post_attention_layernorm
            gated = self._gemv(x, self.gate_up[index], norm, gated=True)
            x = self._gemv(gated, layer.mlp.down_proj.weight, residual=x)
        return x.view(1, 1, -1)

    def _gemv(self, x, weight, norm=None, gated=False, residual=None) -> torch.Tensor:
        """One matrix-vector kernel (``gemv.gemv``), after ``norm`` if given."""
        norm_weight, eps = (norm.weight, norm.variance_epsilon) if norm else (None, 0.0)
        return gemv.gemv(x, weight, norm_weight, eps, gated, residual)

    def _mlp(self, index: int, layer, x: torch.Tensor) -> torch.Tensor:
        """The layer's second half: norm, MLP, residual."""
        h = layer.post_attention_layernorm(x)
        mlp = layer.mlp
        if self.fused:
            gate, up = self._linear(h, self.gate_up[index]).chunk(2, dim=-1)
        else:
            gate, up = self._project(mlp.gate_proj, h), self._project(mlp.up_proj, h)
        # The activation in the compute dtype, rounded where the module rounds.
        gate = mlp.act_fn(gate.to(self.compute_dtype)).to(self.dtype)
        return x + self._project(mlp.down_proj, gate * up)

    def _projections(self) -> dict:
        if self.cpu and not self.linear_kernels:
            described = self.cpu.describe()
            if self.cpu_layers is not None:
                described["decode_projections"] = "cpu kernel, one call per layer"
            return described
        return super()._projections()

    def _project(self, linear: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
        """``linear(h)``; on the CPU through ``cpu_linear`` (its kernel where built)."""
        return self._linear(h, linear.weight, linear.bias)

    def _linear(self, h, weight, bias=None) -> torch.Tensor:
        """``F.linear(h, weight, bias)``; on the CPU through ``cpu_linear``."""
        return self.cpu.linear(h, weight, bias) if self.cpu else F.linear(h, weight, bias)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final norm and the LM head of the last position's hidden state."""
        if self.linear_kernels:
            return self._gemv(hidden.view(-1), self.lm_head.weight, self.norm)
        return self._project(self.lm_head, self.norm(hidden))
