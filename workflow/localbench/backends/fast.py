"""The fast backend: batch-1 greedy decoding near the memory-bandwidth limit.

Eager ``generate()`` spends most of a small model's decode step in Python: logits
processors, stopping criteria, a dynamic cache that grows, and a host-device sync per
token. This decoder keeps only the work the model needs, in the spirit of gpt-fast:

- a static KV cache allocated once for prompt + new tokens;
- attention over the whole cache with a position mask, so every decode step has the
  same shapes and the same memory addresses;
- greedy argmax on the device, the next token and position written in place;
- on CUDA the decode step and the prefill (for the prompt's length) are compiled with
  ``torch.compile`` (fewer, fused kernels) and captured once as CUDA graphs: one launch
  per token and no host synchronisation until the end. If compilation fails the
  uncompiled step is captured instead, and the result says so.

It runs the model's own modules and weights (embeddings, norms, projections, MLPs, LM
head) and only re-implements attention and the cache, so its greedy tokens equal
``generate()``'s. Supported: decoder-only models of the Llama family (Llama, Qwen2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


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


@dataclass
class FastRun:
    """One fast generation: tokens, and times on the host clock (seconds)."""

    tokens: list[int]
    start: float
    first_token: float
    end: float
    inter_token_s: list[float] = field(default_factory=list)


class FastDecoder:
    """Greedy decoding of one sequence with a static cache; see the module docstring."""

    def __init__(
        self,
        model,
        max_len: int,
        use_cuda_graph: bool | None = None,
        use_compile: bool | None = None,
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
        self.max_len = max_len
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        shape = (1, self.n_kv_heads, max_len, self.head_dim)
        self.keys = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.positions = torch.arange(max_len, device=self.device)
        # The model's own rotary embedding gives the exact cos/sin it would use
        # (rope scaling included), once for every position.
        probe = torch.zeros(1, 1, self.head_dim, device=self.device, dtype=self.dtype)
        cos, sin = inner.rotary_emb(probe, self.positions[None])
        self.cos, self.sin = cos[0], sin[0]
        self.scaling = [
            getattr(layer.self_attn, "scaling", self.head_dim**-0.5) for layer in self.layers
        ]
        # Decode-step state, at fixed addresses so a CUDA graph can replay it.
        self.token = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self.output = torch.zeros(1, max_len, dtype=torch.long, device=self.device)
        if use_cuda_graph is None:
            use_cuda_graph = self.device.type == "cuda"
        self.use_cuda_graph = use_cuda_graph
        self.use_compile = use_cuda_graph if use_compile is None else use_compile
        self.compile_error: str | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.prefill_graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.capture_s = 0.0
        self._step = self._decode_step
        self._prefill = self._prefill_step
        if self.use_compile:
            self._step = torch.compile(self._decode_step, fullgraph=True, dynamic=False)
            self._prefill = torch.compile(self._prefill_step, fullgraph=True, dynamic=False)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last position after writing all positions to the cache."""
        length = input_ids.shape[1]
        x = self.embed(input_ids)
        cos = self.cos[positions][None, None]
        sin = self.sin[positions][None, None]
        mask = (self.positions[None, :] <= positions[:, None])[None, None]
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            h = layer.input_layernorm(x)
            q = attention.q_proj(h).view(1, length, self.n_heads, self.head_dim).transpose(1, 2)
            k = attention.k_proj(h).view(1, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = attention.v_proj(h).view(1, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[index].index_copy_(2, positions, k)
            self.values[index].index_copy_(2, positions, v)
            out = F.scaled_dot_product_attention(
                q,
                self.keys[index],
                self.values[index],
                attn_mask=mask,
                scale=self.scaling[index],
                enable_gqa=self.n_kv_heads != self.n_heads,
            )
            out = out.transpose(1, 2).reshape(1, length, self.n_heads * self.head_dim)
            x = x + attention.o_proj(out)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.norm(x[:, -1:])

    def _next_token(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self._forward(input_ids, positions))
        return logits.argmax(dim=-1)  # shape (1, 1)

    def _decode_step(self) -> None:
        """Generate the token after ``self.position``; all state stays on the device."""
        following = self._next_token(self.token, self.position)
        self.output.index_copy_(1, self.position + 1, following)
        self.token.copy_(following)
        self.position.add_(1)

    def _prefill_step(self, prompt: torch.Tensor) -> None:
        """Run the prompt, write its first generated token, set the decode state."""
        length = prompt.shape[1]
        first = self._next_token(prompt, self.positions[:length])
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

    def prepare(self, prompt_length: int) -> None:
        """Compile and capture the prefill and decode step (once per prompt length).

        Not part of any timing: its cost is reported as ``capture_s``.
        """
        if not self.use_cuda_graph or prompt_length in self.prefill_graphs:
            return
        start = time.perf_counter()
        prompt = torch.zeros(1, prompt_length, dtype=torch.long, device=self.device)
        try:
            prefill = self._capture(self._prefill, prompt)
            self.graph = self.graph or self._capture(self._step)
        except Exception as error:  # noqa: BLE001 - compilers fail in many ways
            if not self.use_compile:
                raise
            self.compile_error = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            self.use_compile = False
            self._step, self._prefill = self._decode_step, self._prefill_step
            prefill = self._capture(self._prefill, prompt)
            self.graph = self._capture(self._step)
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
