"""The fast backend for BLIP-2's language model (OPT).

BLIP-2 answers with an OPT decoder whose prompt starts with image-token placeholders;
``generate()`` replaces their embeddings with the Q-Former's projected query outputs.
``encode`` runs the model's own vision tower, Q-Former and projection once per image (up
to ``batch`` images, one per sequence) and writes the result into a fixed buffer; the
prefill puts each sequence's features in place of its placeholders (in order, as
``masked_scatter`` does) with fixed-shape operations, so the step compiles and captures
like the text decoder's. In a batch, shorter prompts are padded on the left; the padding
is hidden from attention and each sequence counts its positions from its first token, as
OPT counts them from the attention mask. Decoding then reads the OPT weights only: the
same engine (``StaticDecoder``), with OPT's learned positions (offset by two), pre- or
post-norm layers as the config says, and the language model's own suppression of
end-of-sequence for a forced length.
"""

from __future__ import annotations

import torch

from localbench.engine.backends.fast import StaticDecoder, _grouped_attention, end_of_sequence_ids

# OPT's learned position table starts two rows in (its padding convention).
POSITION_OFFSET = 2


def supports(model) -> tuple[bool, str]:
    """Whether ``model`` is BLIP-2 with an OPT language model, and why not."""
    model_type = getattr(model.config, "model_type", None)
    if model_type != "blip-2":
        return False, f"the BLIP-2 fast decoder runs blip-2 models, not {model_type}"
    text_type = getattr(model.config.text_config, "model_type", None)
    if text_type != "opt":
        return False, f"the BLIP-2 fast decoder runs an OPT language model, not {text_type}"
    return True, ""


class Blip2FastDecoder(StaticDecoder):
    """Greedy answers for up to ``batch`` images; call ``encode`` first, then
    ``generate`` (one image) or ``generate_batch``."""

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
        self.model = model
        language = model.language_model
        decoder = language.model.decoder
        config = language.config
        self.layers = list(decoder.layers)
        self.embed = decoder.embed_tokens
        self.position_table = decoder.embed_positions.weight
        self.project_in, self.project_out = decoder.project_in, decoder.project_out
        self.final_norm = decoder.final_layer_norm
        self.lm_head = language.lm_head
        self.pre_norm = config.do_layer_norm_before
        self.image_token_id = model.config.image_token_id
        if max_len + POSITION_OFFSET > self.position_table.shape[0]:
            raise ValueError(
                f"prompt + new tokens ({max_len}) exceed OPT's "
                f"{self.position_table.shape[0] - POSITION_OFFSET} positions"
            )
        self.n_heads = config.num_attention_heads
        self.width = config.hidden_size
        self.head_dim = self.width // self.n_heads
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        queries = (batch, model.config.num_query_tokens, self.embed.embedding_dim)
        self.image_features = torch.zeros(queries, device=self.device, dtype=self.dtype)
        self._setup(
            max_len,
            self.lm_head.out_features,
            end_of_sequence_ids(language.generation_config),
            use_cuda_graph=use_cuda_graph,
            use_compile=use_compile,
            batch=batch,
        )

    @torch.inference_mode()
    def encode(self, pixel_values: torch.Tensor) -> None:
        """Vision tower, Q-Former and projection of up to ``batch`` images, sequence i's
        image in row i, kept for the next prompts. Rows past the images repeat the first,
        as ``generate_batch`` repeats the first prompt there."""
        count = pixel_values.shape[0]
        if not 1 <= count <= self.batch:
            raise ValueError(f"expected 1 to {self.batch} images, got {count}")
        features = self.model.get_image_features(pixel_values).pooler_output.to(self.dtype)
        self.image_features[:count].copy_(features)
        self.image_features[count:].copy_(features[:1].expand(self.batch - count, -1, -1))

    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor, prefill: bool):
        x = self.embed(input_ids)
        if prefill:
            # A sequence's n-th placeholder takes its n-th image feature, as masked_scatter
            # fills.
            placeholders = input_ids == self.image_token_id
            order = (torch.cumsum(placeholders.long(), dim=1) - 1).clamp(min=0)
            order = order.clamp(max=self.image_features.shape[1] - 1)
            features = torch.gather(
                self.image_features, 1, order[..., None].expand(-1, -1, x.shape[-1])
            )
            x = torch.where(placeholders[..., None], features, x)
        if self.project_in is not None:
            x = self.project_in(x)
        # Positions count from each sequence's first token, after its padding.
        own_positions = (positions[None, :] - self.pad[:, None]).clamp(min=0)
        return x + self.position_table[own_positions + POSITION_OFFSET]

    def _forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last position after writing all positions to the cache."""
        length = x.shape[1]
        mask = self._visible_keys(positions)
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            h = layer.self_attn_layer_norm(x) if self.pre_norm else x
            # The query is scaled before the product, in the order transformers uses.
            q = self._heads(attention.q_proj(h) * attention.scaling)
            self.keys[index].index_copy_(2, positions, self._heads(attention.k_proj(h)))
            self.values[index].index_copy_(2, positions, self._heads(attention.v_proj(h)))
            out = _grouped_attention(q, self.keys[index], self.values[index], mask, 1.0)
            out = out.transpose(1, 2).reshape(x.shape[0], length, self.width)
            x = x + attention.out_proj(out)
            if not self.pre_norm:
                x = layer.self_attn_layer_norm(x)
            h = layer.final_layer_norm(x) if self.pre_norm else x
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
            if not self.pre_norm:
                x = layer.final_layer_norm(x)
        x = x[:, -1:]
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.project_out is not None:
            x = self.project_out(x)
        return x

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)
