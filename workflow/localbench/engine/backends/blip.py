"""The fast backend for BLIP's captioning decoder (a BERT-style text decoder).

BLIP captions with a post-norm BERT decoder that cross-attends to the vision tower's
patch embeddings. ``encode`` runs the model's own vision tower once per image (up to
``batch`` images, one per sequence) and writes every layer's cross-attention keys and
values into fixed buffers; the prompt is the decoder's start token, as ``generate()``
builds it without text, so the prompts of a batch are never padded. Decoding then runs
on the same engine as the other fast decoders (``StaticDecoder``), with learned
positions, the model's own norms, MLPs and prediction head, and the separator token
(BLIP's end of caption) banned for a forced length, as ``min_new_tokens`` bans it.
"""

from __future__ import annotations

import torch

from localbench.engine.backends.fast import StaticDecoder, _grouped_attention


def supports(model) -> tuple[bool, str]:
    """Whether ``model`` is BLIP with its text decoder, and why not."""
    model_type = getattr(model.config, "model_type", None)
    if model_type != "blip" or not hasattr(model, "text_decoder"):
        return False, f"the BLIP fast decoder runs BLIP captioning models, not {model_type}"
    return True, ""


def start_ids(model) -> list[int]:
    """The caption prompt generate() uses without text: the decoder's start token."""
    return [model.config.text_config.bos_token_id]


class BlipFastDecoder(StaticDecoder):
    """Greedy captions for up to ``batch`` images; call ``encode`` first, then
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
        text = model.text_decoder
        config = text.config
        embeddings = text.bert.embeddings
        self.word_embeddings = embeddings.word_embeddings
        self.position_table = embeddings.position_embeddings.weight
        self.embedding_norm = embeddings.LayerNorm
        self.layers = list(text.bert.encoder.layer)
        self.head = text.cls.predictions
        if max_len > self.position_table.shape[0]:
            raise ValueError(
                f"prompt + new tokens ({max_len}) exceed BLIP's "
                f"{self.position_table.shape[0]} text positions"
            )
        self.n_heads = config.num_attention_heads
        self.width = config.hidden_size
        self.head_dim = self.width // self.n_heads
        weight = self.word_embeddings.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.cross_keys: list[torch.Tensor] = []
        self.cross_values: list[torch.Tensor] = []
        self._setup(
            max_len,
            self.head.decoder.out_features,
            [model.config.text_config.sep_token_id],
            use_cuda_graph=use_cuda_graph,
            use_compile=use_compile,
            batch=batch,
        )

    @torch.inference_mode()
    def encode(self, pixel_values: torch.Tensor) -> None:
        """Vision tower of up to ``batch`` images, sequence i's image in row i; every
        layer's cross-attention keys/values kept. Rows past the images repeat the first,
        as ``generate_batch`` repeats the first prompt there."""
        count = pixel_values.shape[0]
        if not 1 <= count <= self.batch:
            raise ValueError(f"expected 1 to {self.batch} images, got {count}")
        image = self.model.vision_model(pixel_values=pixel_values)[0]
        if count < self.batch:
            image = torch.cat([image, image[:1].expand(self.batch - count, -1, -1)])
        for index, layer in enumerate(self.layers):
            cross = layer.crossattention.self
            keys, values = self._heads(cross.key(image)), self._heads(cross.value(image))
            if len(self.cross_keys) <= index:
                self.cross_keys.append(keys.contiguous())
                self.cross_values.append(values.contiguous())
            elif keys.shape != self.cross_keys[index].shape:
                raise ValueError(
                    f"the vision tower gave {keys.shape[2]} patches, "
                    f"the decoder was prepared for {self.cross_keys[index].shape[2]}"
                )
            else:
                self.cross_keys[index].copy_(keys)
                self.cross_values[index].copy_(values)

    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor, prefill: bool):
        x = self.word_embeddings(input_ids) + self.position_table[positions][None]
        return self.embedding_norm(x)

    def _attend(self, block, x: torch.Tensor, keys, values, mask) -> torch.Tensor:
        length = x.shape[1]
        q = self._heads(block.self.query(x))
        out = _grouped_attention(q, keys, values, mask, self.head_dim**-0.5)
        out = out.transpose(1, 2).reshape(x.shape[0], length, self.width)
        return block.output.LayerNorm(block.output.dense(out) + x)

    def _forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last position after writing all positions to the cache."""
        mask = self._visible_keys(positions)
        everything = torch.ones(1, self.cross_keys[0].shape[2], dtype=torch.bool, device=x.device)
        for index, layer in enumerate(self.layers):
            attention = layer.attention.self
            self.keys[index].index_copy_(2, positions, self._heads(attention.key(x)))
            self.values[index].index_copy_(2, positions, self._heads(attention.value(x)))
            x = self._attend(layer.attention, x, self.keys[index], self.values[index], mask)
            x = self._attend(
                layer.crossattention,
                x,
                self.cross_keys[index],
                self.cross_values[index],
                everything,
            )
            x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(x)) + x)
        return x[:, -1:]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)
