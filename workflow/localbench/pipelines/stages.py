"""One stage on one input: the model call that turns a file, or the previous stage's text,
into this stage's text. Greedy decoding through transformers' generate(), stopping at the
end of sequence or at ``max_new_tokens``.

Each function returns the text and a dict of details for the batch record; the caller
times it. A model is never loaded here.
"""

from __future__ import annotations

import torch
from transformers import GenerationMixin

from localbench.engine.device import available_memory_bytes
from localbench.engine.generation import GREEDY
from localbench.engine.vision import VQA_PROMPT, patch_size
from localbench.measure.scenarios.speech_recognition import SAMPLING_RATE, decoder_prompt
from localbench.pipelines import media
from localbench.pipelines.media import UnreadableInput

# The shortest audio transcribed, in hops of the feature extractor. Whisper's extractor
# makes one log-mel frame of 25 ms (n_fft 400) every 10 ms (hop_length 160 at 16 kHz),
# and its encoder keeps one position per two frames; 10 frames, 0.1 s, is about the
# shortest spoken word. Anything shorter holds no word, and Whisper, which pads every
# input to 30 s, would "transcribe" the padding into invented text.
MIN_AUDIO_FRAMES = 10


def _new_tokens(output: torch.Tensor, prompt_length: int) -> list[int]:
    """The generated ids of a decoder-only output, which repeats the prompt first."""
    return output[0, prompt_length:].tolist()


def _token_budget(limit: int | None, prompt_length: int, wanted: int, what: str) -> int:
    if limit is None:
        return wanted
    room = limit - prompt_length
    if room < 1:
        raise UnreadableInput(
            f"{what} is {prompt_length} tokens; the model takes at most {limit} in all"
        )
    return min(wanted, room)


def transcribe(loaded, path: str, settings: dict) -> tuple[str, dict]:
    """Whisper over the whole file: one 30 s window after another, texts joined."""
    samples = media.load_audio(path, SAMPLING_RATE)
    extractor = loaded.processor.feature_extractor
    media.require_duration(
        samples,
        SAMPLING_RATE,
        max(extractor.n_fft, MIN_AUDIO_FRAMES * extractor.hop_length),
        f"{MIN_AUDIO_FRAMES} frames of {extractor.hop_length} samples, about one spoken word",
    )
    window = extractor.n_samples
    prompt = torch.tensor([decoder_prompt(loaded.model.generation_config)], device=loaded.device)
    limit = getattr(loaded.model.config, "max_target_positions", None)
    budget = _token_budget(limit, prompt.shape[1], settings["max_new_tokens"], "the prompt")
    texts = []
    for piece in media.split_windows(samples, window):
        features = loaded.processor(piece, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        # The generic generate(): Whisper's own adds timestamp-driven seeking that is
        # not needed on one window at a time (as in the speech-recognition scenario).
        output = GenerationMixin.generate(
            loaded.model,
            input_features=features.input_features.to(loaded.device, loaded.dtype),
            decoder_input_ids=prompt,
            max_new_tokens=budget,
            **GREEDY,
        )
        tokens = _new_tokens(output, prompt.shape[1])
        texts.append(loaded.processor.decode(tokens, skip_special_tokens=True).strip())
    details = {
        "audio_seconds": round(len(samples) / SAMPLING_RATE, 3),
        "windows": len(texts),
        "window_seconds": window / SAMPLING_RATE,
    }
    return " ".join(text for text in texts if text), details


def _image_inputs(loaded, image, prompt: str | None):
    kwargs = {"images": image, "return_tensors": "pt"}
    if prompt is not None:
        kwargs["text"] = prompt
    inputs = loaded.processor(**kwargs).to(loaded.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
    return inputs


def _image_text(loaded, inputs, max_new_tokens: int) -> str:
    output = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, **GREEDY)
    prompt = inputs.get("input_ids")
    # BLIP-2 (decoder-only language model) repeats the prompt, BLIP's caption does not.
    if prompt is not None and output.shape[1] > prompt.shape[1]:
        if torch.equal(output[0, : prompt.shape[1]], prompt[0].to(output.device)):
            output = output[:, prompt.shape[1] :]
    return loaded.processor.tokenizer.decode(output[0], skip_special_tokens=True).strip()


def caption(loaded, path: str, settings: dict) -> tuple[str, dict]:
    """BLIP's caption of one image."""
    image = media.load_image(path, min_side=patch_size(loaded))
    text = _image_text(loaded, _image_inputs(loaded, image, None), settings["max_new_tokens"])
    return text, {"image_size": list(image.size)}


def answer(loaded, path: str, settings: dict, questions_path: str | None) -> tuple[str, dict]:
    """BLIP-2's answer to each question about one image, as Q/A lines."""
    questions, source = media.read_questions(questions_path, settings["questions"])
    image = media.load_image(path, min_side=patch_size(loaded))
    answers = []
    for question in questions:
        inputs = _image_inputs(loaded, image, VQA_PROMPT.format(question=question))
        answers.append(_image_text(loaded, inputs, settings["max_new_tokens"]))
    text = "\n\n".join(f"Q: {q}\nA: {a}" for q, a in zip(questions, answers, strict=True))
    details = {
        "image_size": list(image.size),
        "questions_from": source,
        "answers": [{"question": q, "answer": a} for q, a in zip(questions, answers, strict=True)],
    }
    return text, details


def build_prompt(template: str, previous: str, file_name: str) -> str:
    """The stage's prompt: ``{previous}`` and ``{file}`` filled in, other text verbatim
    (braces in a template need no escaping)."""
    return template.replace("{file}", file_name).replace("{previous}", previous)


def text_request(loaded, previous: str, settings: dict, file_name: str) -> tuple[list[int], int]:
    """The prompt's token ids for the stage's prompt (through the tokenizer's chat template
    when it has one) and the new-token budget the model's context leaves."""
    tokenizer = loaded.processor
    prompt = build_prompt(settings["prompt"], previous, file_name)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    ids = ids[0].tolist()
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    return ids, _token_budget(limit, len(ids), settings["max_new_tokens"], "the prompt")


def generate_text(loaded, previous: str, settings: dict, file_name: str) -> tuple[str, dict]:
    """The language model's answer to the stage's prompt through generate() (the eager
    backend, one file at a time)."""
    tokenizer = loaded.processor
    prompt, budget = text_request(loaded, previous, settings, file_name)
    ids = torch.tensor([prompt], device=loaded.device)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    output = loaded.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pad_token_id=pad_id,
        max_new_tokens=budget,
        **GREEDY,
    )
    tokens = _new_tokens(output, ids.shape[1])
    text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return text, {"prompt_tokens": int(ids.shape[1]), "new_tokens": len(tokens)}


# The most sequences decoded together, and the share of the free memory their KV cache
# may take (the rest is left for activations and the allocator).
MAX_DECODE_BATCH = 64
KV_CACHE_SHARE = 0.5


def decode_batch_size(loaded, max_len: int, wanted: int, setting: int | None) -> tuple[int, str]:
    """How many sequences the fast decoder holds, and why: the stage's ``decode_batch``
    when set, else as many as ``wanted`` up to what the KV cache may take of the memory
    free now (half of it) and at most ``MAX_DECODE_BATCH``."""
    if setting:
        return min(setting, wanted), f"decode_batch: {setting} in the stage's settings"
    config = loaded.model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    itemsize = torch.empty((), dtype=loaded.dtype).element_size()
    per_sequence = 2 * config.num_hidden_layers * heads * head_dim * max_len * itemsize
    free, _ = available_memory_bytes(loaded.device)
    fits = max(1, int(free * KV_CACHE_SHARE // per_sequence))
    size = min(wanted, fits, MAX_DECODE_BATCH)
    return size, (
        f"{size} of {wanted} files: {per_sequence / 2**20:.1f} MiB of KV cache each, "
        f"{free / 2**30:.1f} GiB free, at most {MAX_DECODE_BATCH}"
    )


def generate_texts(loaded, requests: list[tuple[list[int], int]], decoder) -> list[dict]:
    """The fast decoder's answers to prompts decoded together: each request is the prompt's
    ids and its budget; each answer its text, tokens and times. Greedy, each sequence
    stopping at its end of sequence or its budget, as generate() does alone."""
    tokenizer = loaded.processor
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    budget = max(b for _, b in requests)
    runs = decoder.generate_batch([ids for ids, _ in requests], budget, pad_id=pad_id)
    answers = []
    for (ids, own_budget), run in zip(requests, runs, strict=True):
        tokens = run.tokens[:own_budget]
        answers.append(
            {
                "text": tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                "prompt_tokens": len(ids),
                "new_tokens": len(tokens),
                "first_token_s": run.first_token - run.start,
                "latency_s": run.end - run.start,
            }
        )
    return answers
