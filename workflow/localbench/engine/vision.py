"""Image-to-text requests: BLIP's captions, BLIP-2's answers to a question about an
image, and DeepSeek-VL2's (the project's own model, :mod:`localbench.deepseek_vl2`).

BLIP and BLIP-2 take many requests at once: the images (and questions) go through the
processor, the vision tower and the decoder together. Fast backend: the project's
decoders (:mod:`~localbench.engine.backends.blip`, :mod:`~localbench.engine.backends.blip2`)
holding B sequences, shorter prompts padded on the left and the padding hidden; eager:
transformers ``generate()`` on the same batch. DeepSeek-VL2 runs one request at a time
through its language model's ``generate()``, eager only.

A request includes turning its image into tensors and the vision tower: every output's
``start`` is taken before preprocessing, after a device sync.
"""

from __future__ import annotations

import time

import torch
from transformers import StoppingCriteriaList

from localbench.engine.backends import blip, blip2
from localbench.engine.backends.fast import end_of_sequence_ids
from localbench.engine.device import synchronize
from localbench.engine.generation import GREEDY, greedy_fixed_length
from localbench.engine.requests import (
    Output,
    Request,
    Runner,
    gaps,
    token_budget,
    tokens_until_end,
)
from localbench.engine.text import StepClock, kv_bytes_per_token

# BLIP-2's prompt for a question, as its model card asks.
VQA_PROMPT = "Question: {question} Answer:"
# Vision encoders cut the resized image into square patches; a picture smaller than one
# patch side has less detail than a single patch. Used when a config names no patch.
DEFAULT_PATCH_SIZE = 16

# The fast decoder of each vision-language architecture: its support check and class.
FAST_DECODERS = [(blip2.supports, blip2.Blip2FastDecoder), (blip.supports, blip.BlipFastDecoder)]


def patch_size(loaded) -> int:
    """The side in pixels of the model's vision patches: the smallest image it can use."""
    vision = getattr(loaded.model.config, "vision_config", None)
    return int(getattr(vision, "patch_size", None) or DEFAULT_PATCH_SIZE)


def fast_decoder_class(model):
    """The fast decoder class for ``model``, or None and the reasons none applies."""
    reasons = []
    for supports, decoder_class in FAST_DECODERS:
        ok, why = supports(model)
        if ok:
            return decoder_class, ""
        reasons.append(why)
    return None, "; ".join(reasons)


class ImageTextRunner(Runner):
    """BLIP captions (the image only) and BLIP-2 answers (the image and ``text``, the
    question, asked as ``VQA_PROMPT``), many requests at once."""

    tasks = ("image-captioning", "visual-question-answering")

    def __init__(
        self, loaded, backend: str, max_batch: int | None, compile_steps: bool | None = None
    ) -> None:
        super().__init__(loaded, backend, max_batch, compile_steps)
        model = loaded.model
        self.decoder_class = None
        if backend == "fast":
            self.decoder_class, why = fast_decoder_class(model)
            if self.decoder_class is None:
                self.backend = "eager"
                self.note = f"fast backend not available ({why}); ran eager"
        self.asks = loaded.task == "visual-question-answering"
        self.text_config = model.config.text_config
        tokenizer = loaded.processor.tokenizer
        if model.config.model_type == "blip":
            # generate() ends BLIP's caption at the separator token and pads with its pad.
            self.ends = {self.text_config.sep_token_id}
            pad_id = self.text_config.pad_token_id
        else:
            generation_config = getattr(model, "language_model", model).generation_config
            self.ends = set(end_of_sequence_ids(generation_config))
            pad_id = generation_config.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_id = pad_id

    # -- prompts ---------------------------------------------------------------

    def _prompt_text(self, request: Request) -> str | None:
        if request.image is None:
            raise ValueError(f"a {self.loaded.task} request needs an image")
        if not self.asks:
            return None
        if request.text is None:
            raise ValueError("a visual-question-answering request needs text (the question)")
        return VQA_PROMPT.format(question=request.text)

    def _inputs(self, requests: list[Request]):
        """The processor's tensors of the requests' images (and prompts), on the host."""
        texts = [self._prompt_text(r) for r in requests]
        kwargs = {"images": [r.image for r in requests], "return_tensors": "pt"}
        if self.asks:
            # The padding of shorter questions goes before each question (BLIP-2's
            # processor puts the image tokens first): every prompt ends where its answer
            # starts, and the attention mask hides the padding.
            kwargs.update(text=texts, padding=True, padding_side="left")
        return self.loaded.processor(**kwargs)

    def _prompts(self, inputs, count: int) -> list[list[int]]:
        """Each request's decoder prompt without padding: the processor's ids (BLIP-2,
        image placeholders first), or BLIP's start token."""
        if "input_ids" not in inputs:
            return [blip.start_ids(self.loaded.model)] * count
        rows = zip(inputs["input_ids"], inputs["attention_mask"], strict=True)
        return [ids[mask.bool()].tolist() for ids, mask in rows]

    def _prompt_length(self, request: Request) -> int:
        text = self._prompt_text(request)
        if text is None:
            return len(blip.start_ids(self.loaded.model))
        queries = getattr(self.loaded.model.config, "num_query_tokens", 0)
        return queries + len(self.loaded.processor.tokenizer(text)["input_ids"])

    # -- batch size ------------------------------------------------------------

    def _cache_bytes(self, length: int) -> int:
        """Bytes of decoder cache one sequence of ``length`` tokens takes: its own keys
        and values, and BLIP's cross-attention keys and values over the image patches."""
        config = self.loaded.model.config
        if config.model_type == "blip":
            vision = config.vision_config
            length += (vision.image_size // vision.patch_size) ** 2 + 1  # and the class token
        return kv_bytes_per_token(self.text_config, self.loaded.dtype) * length

    def batch_size(self, requests: list[Request], max_new_tokens: int) -> int:
        """As many as asked, up to ``max_batch`` when set, else up to what the decoder's
        cache may take of the memory free now (``KV_CACHE_SHARE``) and ``MAX_DECODE_BATCH``."""
        longest = max(
            self._prompt_length(r) + (r.max_new_tokens or max_new_tokens) for r in requests
        )
        per_sequence = self._cache_bytes(longest)
        return self.memory_batch(len(requests), per_sequence, "requests", "decoder cache")

    # -- generation --------------------------------------------------------------

    def generate(self, requests, max_new_tokens, force_new_tokens, on_token) -> list[Output]:
        loaded = self.loaded
        synchronize(loaded.device)
        start = time.perf_counter()
        inputs = self._inputs(requests)
        prompts = self._prompts(inputs, len(requests))
        limit = getattr(self.text_config, "max_position_embeddings", None)
        budgets = [
            token_budget(r, len(p), max_new_tokens, limit)
            for r, p in zip(requests, prompts, strict=True)
        ]
        inputs = inputs.to(loaded.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
        run = self._fast if self.backend == "fast" else self._eager
        outputs = run(inputs, prompts, budgets, force_new_tokens, on_token, start)
        for request, output in zip(requests, outputs, strict=True):
            output.details["image_size"] = list(request.image.size)
            output.details["batch"] = len(requests)
            if self.batch_rule:
                output.details["batch_rule"] = self.batch_rule
        return outputs

    def _output(self, tokens, prompt, start, first_token, end, gaps, last_token=None) -> Output:
        tokenizer = self.loaded.processor.tokenizer
        return Output(
            text=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
            token_ids=tokens,
            prompt_tokens=len(prompt),
            start=start,
            first_token=first_token,
            end=end,
            inter_token_s=gaps,
            last_token=last_token,
        )

    def _fast(self, inputs, prompts, budgets, force, on_token, start) -> list[Output]:
        budget = max(budgets)
        decoder = self.fast_decoder(
            self.decoder_class, len(prompts), max(len(p) for p in prompts) + budget
        )
        decoder.encode(inputs["pixel_values"])
        if decoder.batch == 1 and force and on_token is None:
            # One sequence of a fixed length: the decoder's timed single-sequence path
            # (per-token gaps from CUDA events, no sync per token).
            ids = torch.tensor([prompts[0]], device=self.loaded.device)
            runs = [decoder.generate(ids, budget)]
        else:
            runs = decoder.generate_batch(
                prompts, budget, stop_at_end=not force, on_token=on_token, pad_id=self.pad_id
            )
        outputs = []
        for prompt, own, run in zip(prompts, budgets, runs, strict=True):
            tokens = run.tokens[:own]
            gaps = list(run.inter_token_s[: max(len(tokens) - 1, 0)])
            outputs.append(self._output(tokens, prompt, start, run.first_token, run.end, gaps))
        return outputs

    def _eager(self, inputs, prompts, budgets, force, on_token, start) -> list[Output]:
        loaded = self.loaded
        budget = max(budgets)
        ends = set() if force else self.ends
        clock = StepClock(loaded.device, len(prompts), on_token, ends)
        kwargs = greedy_fixed_length(budget) if force else {"max_new_tokens": budget, **GREEDY}
        output = loaded.model.generate(
            **inputs, stopping_criteria=StoppingCriteriaList([clock]), **kwargs
        )
        synchronize(loaded.device)
        end = time.perf_counter()
        # One clock stamp per step, one new column per step: the new tokens are the last
        # columns (BLIP-2's generate() repeats the prompt first, BLIP's its start token).
        steps = len(clock.times)
        new = output[:, output.shape[1] - steps :].tolist()
        outputs = []
        for prompt, own, row in zip(prompts, budgets, new, strict=True):
            tokens = tokens_until_end(row, own, ends)
            times = clock.times[: len(tokens)] or clock.times[:1] or [end]
            last = end if len(prompts) == 1 else times[-1]
            outputs.append(
                self._output(tokens, prompt, start, times[0], last, gaps(times), times[-1])
            )
        return outputs

    def details(self) -> dict:
        if self.decoder is None:
            return {}
        return self.decoder.details(
            "start: host clock after a device sync, before preprocessing and the vision "
            "tower; first token: after a device sync; inter-token gaps: CUDA events between "
            "graph replays (host clock on CPU), no sync per token, for one sequence of a "
            "fixed length, else the host clock where tokens are read as they are made"
        )


class DeepseekVL2Runner(Runner):
    """DeepSeek-VL2's answer to ``text`` (the question) about ``image``: one request at a
    time (its processor tiles one image), eager only (no fast decoder for its mixture of
    experts). Each output's details say when the prompt's embeddings were ready."""

    tasks = ("multimodal",)

    def __init__(
        self, loaded, backend: str, max_batch: int | None, compile_steps: bool | None = None
    ) -> None:
        super().__init__(loaded, backend, max_batch, compile_steps)
        if backend == "fast":
            self.backend = "eager"
            self.note = (
                "fast backend not available (no fast decoder for DeepSeek-VL2's MoE); ran eager"
            )
        tokenizer = loaded.processor.tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    def generate(self, requests, max_new_tokens, force_new_tokens, on_token) -> list[Output]:
        (request,) = requests
        if request.image is None or request.text is None:
            raise ValueError("a multimodal request needs an image and text (the question)")
        loaded = self.loaded
        model, processor = loaded.model, loaded.processor
        synchronize(loaded.device)
        start = time.perf_counter()
        inputs = processor(request.image, request.text).to(loaded.device)
        prompt_tokens = int(inputs.input_ids.shape[1])
        limit = getattr(model.language.config, "max_position_embeddings", None)
        budget = token_budget(request, prompt_tokens, max_new_tokens, limit)
        embeds = model.embed(
            inputs.input_ids, processor.image_token_id, inputs.pixel_values, inputs.tiling
        )
        synchronize(loaded.device)
        embeddings_ready = time.perf_counter()
        ends = set() if force_new_tokens else {self.eos_id}
        clock = StepClock(loaded.device, 1, on_token, ends)
        kwargs = (
            greedy_fixed_length(budget)
            if force_new_tokens
            else {"max_new_tokens": budget, **GREEDY}
        )
        output = model.language.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            stopping_criteria=StoppingCriteriaList([clock]),
            **kwargs,
        )
        synchronize(loaded.device)
        end = time.perf_counter()
        tokens = tokens_until_end(
            output[0, output.shape[1] - len(clock.times) :].tolist(), budget, ends
        )
        times = clock.times[: len(tokens)] or clock.times[:1] or [end]
        tiling = inputs.tiling
        details = {
            "image_size": list(request.image.size),
            "tiling": [tiling.width_tiles, tiling.height_tiles],
            "tiles": tiling.tiles,
            "image_tokens": inputs.image_tokens,
            # Host clock after a device sync: tiling, preprocessing, vision tower and
            # projector done, before the language model's prefill.
            "embeddings_ready": embeddings_ready,
            "batch": 1,
        }
        return [
            Output(
                text=processor.decode(tokens, skip_special_tokens=True).strip(),
                token_ids=tokens,
                prompt_tokens=prompt_tokens,
                start=start,
                first_token=times[0],
                end=end,
                inter_token_s=gaps(times),
                details=details,
                last_token=times[-1],
            )
        ]
