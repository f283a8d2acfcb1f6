"""The fast backend for Whisper's decoder.

The same engine as the text decoder (``StaticDecoder``: static self-attention cache,
greedy argmax on the device, compiled and graph-captured steps on CUDA), plus what an
encoder-decoder needs: the cross-attention keys and values of every decoder layer are
computed once per batch of audio windows by ``encode`` and written into fixed buffers,
so the captured steps read the new audio without being captured again. A decoder for B
windows decodes up to B at once (``generate_batch``); every window's prompt is the same
task prompt, so no row is padded.

It runs the model's own encoder, projections, norms and MLPs; the suppression lists of
the generation config (``suppress_tokens`` at every step, ``begin_suppress_tokens`` at
the first) and the end-of-sequence ban of a forced length apply as in ``generate()``, so
the greedy tokens equal it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from localbench.engine.backends.fast import StaticDecoder, _grouped_attention, end_of_sequence_ids


def supports(model) -> tuple[bool, str]:
    """Whether ``model`` is a Whisper encoder-decoder, and why not."""
    model_type = getattr(model.config, "model_type", None)
    if model_type != "whisper":
        return False, f"the Whisper fast decoder runs whisper models, not {model_type}"
    return True, ""


class WhisperFastDecoder(StaticDecoder):
    """Greedy decoding of up to ``batch`` audio windows at once; call ``encode`` first,
    then ``generate`` (one window) or ``generate_batch``."""

    def __init__(
        self,
        model,
        max_len: int,
        use_cuda_graph: bool | None = None,
        use_compile: bool | None = None,
        batch: int = 1,
    ) -> None:
        ok, why = supports(model)
        if not ok:
            raise ValueError(why)
        config = model.config
        decoder = model.model.decoder
        self.model = model
        self.encoder = model.model.encoder
        self.layers = list(decoder.layers)
        self.embed = decoder.embed_tokens
        self.position_table = decoder.embed_positions.weight
        self.norm = decoder.layer_norm
        self.proj_out = model.proj_out
        if max_len > self.position_table.shape[0]:
            raise ValueError(
                f"prompt + new tokens ({max_len}) exceed Whisper's "
                f"{self.position_table.shape[0]} decoder positions"
            )
        self.n_heads = config.decoder_attention_heads
        self.width = config.d_model
        self.head_dim = self.width // self.n_heads
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        frames = (batch, self.n_heads, config.max_source_positions, self.head_dim)
        self.cross_keys = [
            torch.zeros(frames, device=self.device, dtype=self.dtype) for _ in self.layers
        ]
        self.cross_values = [torch.zeros_like(k) for k in self.cross_keys]
        generation = model.generation_config
        self._setup(
            max_len,
            self.proj_out.out_features,
            [*end_of_sequence_ids(generation), *(generation.suppress_tokens or [])],
            list(generation.begin_suppress_tokens or []),
            use_cuda_graph=use_cuda_graph,
            use_compile=use_compile,
            batch=batch,
            end_of_sequence=end_of_sequence_ids(generation),
        )

    @torch.inference_mode()
    def encode(self, input_features: torch.Tensor) -> None:
        """Run the encoder on up to ``batch`` windows (B, mel bins, frames) and store every
        layer's cross-attention keys/values; rows past the windows repeat the first."""
        count = input_features.shape[0]
        if not 1 <= count <= self.batch:
            raise ValueError(f"expected 1 to {self.batch} windows, got {count}")
        hidden = self.encoder(input_features).last_hidden_state
        if hidden.shape[1] != self.cross_keys[0].shape[2]:
            raise ValueError(
                f"the encoder gave {hidden.shape[1]} frames, "
                f"the decoder expects {self.cross_keys[0].shape[2]}"
            )
        for index, layer in enumerate(self.layers):
            for buffer, projection in (
                (self.cross_keys[index], layer.encoder_attn.k_proj),
                (self.cross_values[index], layer.encoder_attn.v_proj),
            ):
                buffer[:count].copy_(self._heads(projection(hidden)))
                buffer[count:].copy_(buffer[:1].expand_as(buffer[count:]))

    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int, **kwargs):
        """``StaticDecoder.generate_batch`` for windows given to ``encode`` in the same
        order; the prompts must be of one length (this decoder pads no row)."""
        if len({len(p) for p in prompts}) > 1:
            raise ValueError("the Whisper decoder takes prompts of one length")
        return super().generate_batch(prompts, max_new_tokens, **kwargs)

    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor, prefill: bool):
        return self.embed(input_ids) + self.position_table[positions][None]

    def _forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last position after writing all positions to the cache."""
        length = x.shape[1]
        mask = self.positions[None, :] <= positions[:, None]
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            # The query is scaled before the product, in the order transformers uses.
            q = self._heads(attention.q_proj(h) * attention.scaling)
            self.keys[index].index_copy_(2, positions, self._heads(attention.k_proj(h)))
            self.values[index].index_copy_(2, positions, self._heads(attention.v_proj(h)))
            out = _grouped_attention(q, self.keys[index], self.values[index], mask, 1.0)
            x = x + attention.out_proj(out.transpose(1, 2).reshape(x.shape[0], length, self.width))
            cross = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = self._heads(cross.q_proj(h) * cross.scaling)
            out = F.scaled_dot_product_attention(
                q, self.cross_keys[index], self.cross_values[index], scale=1.0
            )
            x = x + cross.out_proj(out.transpose(1, 2).reshape(x.shape[0], length, self.width))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        return self.norm(x[:, -1:])

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj_out(hidden)
