"""Synthetic checkpoints: the real architecture with seeded random weights, built offline.

A synthetic checkpoint folder looks like a Hub download of the seed repo: the
real transformers class and config (or its tiny variant), safetensors weights in
the published dtype (so the bytes on disk match the real checkpoint), a
generation config, and a tokenizer/processor whose special tokens carry the real
ids. It is built here from ``localbench.architectures`` without any download, so
benchmarks can run on machines that cannot reach the Hub, and tests can run the
whole pipeline on tiny models.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import string
from collections import Counter
from pathlib import Path
from typing import Any

from localbench import architectures

# Random weights: normal(0, 0.02) like the models' own initializer_range; norms
# start at one and biases at zero, so activations stay small and finite in fp16.
_WEIGHT_STD = 0.02
_DEFAULT_MAX_SHARD_SIZE = "5GB"

# Text the tiny BPE / WordPiece vocabularies are trained on. Any English prose
# works: it only gives the tokenizers some real merges so prompts do not split
# into single bytes.
_CORPUS = """\
Local benchmarks measure how quickly a model answers on the machine in front of you.
A language model reads the prompt, fills a cache of keys and values, and then writes
one token at a time. The first token waits for the whole prompt to be processed; every
later token only needs the newest position, so the two phases are timed apart.
Images are cut into square patches before a vision encoder turns them into vectors.
Audio is resampled to sixteen thousand samples per second and turned into a mel
spectrogram of eighty bands. Text is split into tokens, and tokens become numbers.
We repeat every measurement several times, report the median together with its
spread, and keep the raw numbers so that anyone can check the summary later.
Warm runs hide the cost of loading weights from disk; cold runs show it. Both matter,
because people care about the first answer as much as about the hundredth one.
What is in this picture? A cat sits on a red chair next to the window in the sun.
Question: what is this? Answer: a photo of a small dog playing in the green grass.
Hello, how are you today? Please describe the weather, the city and the people.
Write a short story about a robot who learns to paint with water colours at night.
Explain why the sky is blue, in three sentences, for a child of seven years old.
The quick brown fox jumps over the lazy dog while the band plays music in the park.
Numbers such as 1, 2, 3, 10, 42, 100 and 2024 appear in text as well as words do.
Hello world, this is a test of the new tokenizer.
"""

# Llama 3's split pattern (cl100k style): contractions, words, 1-3 digit groups,
# punctuation runs, newlines and other whitespace.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Largest learned vocabulary (bytes or characters included). Tiny vocabularies
# have about 1000 regular slots, so this must stay below that.
_LEARNED_VOCAB = 900

# ---------------------------------------------------------------------------
# Vocabularies


def _learn_merges(words: Counter[str], limit: int) -> list[tuple[str, str]]:
    """Plain BPE learning: merge the most frequent adjacent pair, ties broken by the pair itself.

    Written out here rather than using the tokenizers trainer so the merges, and
    with them the token counts of every prompt, are the same with any library version.
    """
    splits = {word: tuple(word) for word in words}
    merges: list[tuple[str, str]] = []
    while len(merges) < limit:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            symbols = splits[word]
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        joined = best[0] + best[1]
        for word, symbols in splits.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i : i + 2] == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            splits[word] = tuple(out)
    return merges


@functools.cache
def _byte_level_pieces() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Byte-level BPE tokens (256 byte symbols first, then merge results) and merges."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = Counter(
        piece for line in _CORPUS.splitlines() for piece, _ in split.pre_tokenize_str(line)
    )
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = _learn_merges(words, _LEARNED_VOCAB - len(alphabet))
    # All 256 byte symbols come first so any text stays encodable.
    pieces = alphabet + ["".join(pair) for pair in merges]
    return tuple(dict.fromkeys(pieces)), tuple(merges)


@functools.cache
def _wordpiece_pieces() -> tuple[str, ...]:
    """Lower-case WordPiece tokens: ASCII characters, their ``##`` forms, then corpus words
    by falling frequency."""
    from tokenizers import pre_tokenizers

    chars = [c for c in string.printable.lower() if not c.isspace()]
    split = pre_tokenizers.BertPreTokenizer()
    words = Counter(
        piece for line in _CORPUS.splitlines() for piece, _ in split.pre_tokenize_str(line.lower())
    )
    ranked = sorted(words, key=lambda word: (-words[word], word))
    pieces = chars + ["##" + c for c in chars] + ranked
    return tuple(dict.fromkeys(pieces))[:_LEARNED_VOCAB]


def _layout_vocab(spec: dict, pieces: tuple[str, ...], filler: str) -> dict[str, int]:
    """Place added tokens and pinned tokens at their ids, learned pieces in the free slots
    from the bottom, and numbered filler tokens in the rest up to ``spec["length"]``.

    Added tokens are put into the model vocabulary too, so every id is fixed by
    this layout and nothing depends on the order transformers adds tokens in.
    """
    vocab: dict[str, int] = {content: token_id for token_id, content, _ in spec["added_tokens"]}
    vocab.update(spec["pinned_tokens"])
    taken = set(vocab.values())
    if len(taken) != len(vocab):
        raise ValueError("two tokens share an id in the tokenizer spec")
    free = (i for i in range(spec["length"]) if i not in taken)
    for piece in pieces:
        if piece in vocab:
            continue
        slot = next(free, None)
        if slot is None:
            break
        vocab[piece] = slot
    number = 0
    for slot in free:
        while filler.format(number) in vocab:
            number += 1
        vocab[filler.format(number)] = slot
        number += 1
    return vocab


# ---------------------------------------------------------------------------
# Tokenizers


def _added_tokens(spec: dict):
    from tokenizers import AddedToken

    return [
        AddedToken(content, special=special, normalized=False, lstrip=False, rstrip=False)
        for _, content, special in sorted(spec["added_tokens"])
    ]


def _tokenizer_kwargs(spec: dict) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bos_token": None,
        "eos_token": None,
        "unk_token": None,
        "pad_token": None,
    }
    kwargs.update(spec["special_tokens"])
    kwargs.update(spec["settings"])
    extra = spec.get("extra_special_tokens")
    if extra:
        kwargs["extra_special_tokens"] = extra
    return kwargs


def _byte_level_vocab(spec: dict) -> tuple[dict[str, int], list[tuple[str, str]]]:
    pieces, merges = _byte_level_pieces()
    vocab = _layout_vocab(spec, pieces, "Ġfill{}")
    # A merge is only usable when both parts and the result have ids.
    usable = [m for m in merges if m[0] in vocab and m[1] in vocab and "".join(m) in vocab]
    return vocab, usable


def _llama3_backend(vocab: dict[str, int], merges: list, spec: dict):
    """The tokenizers pipeline of Llama 3: split pattern, byte-level BPE, BOS post-processor."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    backend = Tokenizer(
        models.BPE(
            vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False, byte_fallback=False
        )
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    bos = spec["special_tokens"]["bos_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, vocab[bos])],
    )
    return backend


def build_tokenizer(spec: dict):
    """Build the tokenizer a ``tokenizer`` spec of an architecture file describes, offline.

    The class is the one the Hub tokenizer uses (``save_class``), built from a
    locally trained vocabulary padded with filler tokens so that every special
    token sits at its real id and ``len(tokenizer) == spec["length"]``.
    """
    import transformers

    name = spec.get("save_class")
    if not name:
        raise NotImplementedError("this tokenizer spec has no buildable class")
    kwargs = _tokenizer_kwargs(spec)
    if spec["model"] == "wordpiece":
        vocab = _layout_vocab(spec, _wordpiece_pieces(), "[unused{}]")
        tokenizer = getattr(transformers, name)(vocab=vocab, **kwargs)
    elif spec["pre_tokenizer"] == "llama3":
        vocab, merges = _byte_level_vocab(spec)
        backend = _llama3_backend(vocab, merges, spec)
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    else:
        vocab, merges = _byte_level_vocab(spec)
        tokenizer = getattr(transformers, name)(vocab=vocab, merges=merges, **kwargs)
    tokenizer.add_tokens(_added_tokens(spec))
    if spec.get("chat_template"):
        tokenizer.chat_template = spec["chat_template"]
    _check_token_ids(tokenizer, spec)
    return tokenizer


def _check_token_ids(tokenizer, spec: dict) -> None:
    if len(tokenizer) != spec["length"]:
        raise RuntimeError(
            f"built tokenizer has {len(tokenizer)} tokens, expected {spec['length']}"
        )
    for token_id, content, _ in spec["added_tokens"]:
        if tokenizer.convert_tokens_to_ids(content) != token_id:
            raise RuntimeError(f"token {content!r} did not land on id {token_id}")


# ---------------------------------------------------------------------------
# Processors


def _processor_class(architecture: dict) -> str | None:
    preprocessor = architecture.get("preprocessor") or {}
    for part in ("processor_config", "preprocessor_config"):
        if (preprocessor.get(part) or {}).get("processor_class"):
            return preprocessor[part]["processor_class"]
    return None


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_processor(architecture: dict, tokenizer, out_dir: Path):
    """Save the tokenizer and the processor settings into ``out_dir``; return the processor.

    The processor files are written in the layout of the Hub repo
    (preprocessor_config.json, plus processor_config.json where the repo has
    one) rather than by ``processor.save_pretrained``: newer transformers nest
    them differently, and every transformers 5 release reads the Hub layout.
    The processor is still built here once, so a broken combination fails now.
    """
    import transformers

    tokenizer.save_pretrained(out_dir)
    name = _processor_class(architecture)
    if name is None:
        return tokenizer
    preprocessor = architecture["preprocessor"]
    settings = preprocessor["preprocessor_config"]
    _write_json(out_dir / "preprocessor_config.json", settings)
    if preprocessor.get("processor_config"):
        _write_json(out_dir / "processor_config.json", preprocessor["processor_config"])
    # transformers picks the image-processor backend (torchvision or PIL) that is installed.
    if "feature_extractor_type" in settings:
        main = transformers.AutoFeatureExtractor.from_pretrained(out_dir, local_files_only=True)
    else:
        main = transformers.AutoImageProcessor.from_pretrained(out_dir, local_files_only=True)
    extra = {
        key: value
        for key, value in (preprocessor.get("processor_config") or {}).items()
        if key != "processor_class"
    }
    return getattr(transformers, name)(main, tokenizer, **extra)


# ---------------------------------------------------------------------------
# Weights


def _is_norm(module) -> bool:
    import torch

    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm)
    return isinstance(module, norms) or "Norm" in type(module).__name__


def _materialize(model, seed: int) -> None:
    """Give every meta parameter CPU storage in its dtype and fill it with seeded values.

    One pass, one copy of the weights: tied parameters (one Parameter object in
    two modules) get the same new tensor. transformers' own initialisation is
    skipped: on CPU it took about three times as long (20 s against 8 s for Qwen2.5-1.5B).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    replaced: dict[int, torch.nn.Parameter] = {}
    originals = []  # keeps the meta parameters alive, so their ids stay unique
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in replaced:
                data = torch.empty(param.shape, dtype=param.dtype, device="cpu")
                if name.endswith("bias"):
                    data.zero_()
                elif _is_norm(module) and name == "weight":
                    data.fill_(1.0)
                else:
                    data.normal_(0.0, _WEIGHT_STD, generator=generator)
                originals.append(param)
                replaced[id(param)] = torch.nn.Parameter(data, requires_grad=False)
            module._parameters[name] = replaced[id(param)]


def _instantiate(config: dict, dtype, seed: int):
    """The model of ``config`` with random weights in ``dtype``, built via the meta device."""
    model = architectures.meta_model(config, dtype=dtype)
    _materialize(model, seed)
    # Non-persistent buffers (rotary frequencies and the like) stay on meta: they
    # are not saved, and from_pretrained recomputes them when the folder is loaded.
    return model


def _store_tied_copies(out_dir: Path, names: dict[str, str]) -> None:
    """Add tied weights the Hub checkpoint stores although transformers saves them once."""
    if not names:
        return
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = out_dir / "model.safetensors"
    if not path.is_file():
        raise NotImplementedError("stored tied weights are supported for unsharded checkpoints")
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for name, source in names.items():
        tensors.setdefault(name, tensors[source].clone())
    tmp = path.with_name(".model.safetensors.tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def _save_generation_config(model, architecture: dict, out_dir: Path) -> None:
    """Write the published generation_config.json (save_pretrained wrote one from the config)."""
    from transformers import GenerationConfig

    if architecture.get("generation_config"):
        generation = GenerationConfig.from_dict(dict(architecture["generation_config"]))
    elif not (out_dir / "generation_config.json").is_file():
        generation = GenerationConfig.from_model_config(model.config)
    else:
        return
    generation.save_pretrained(out_dir)


def build_synthetic_checkpoint(repo: str, size: str, out_dir: Path, seed: int = 0) -> dict:
    """Write a random-weight checkpoint of ``repo`` at ``size`` ("full"/"tiny") to ``out_dir``.

    The folder holds config.json, generation_config.json, safetensors weights in
    the published dtype, and the tokenizer or processor files, so that
    ``localbench.loading.load_model`` (or any ``from_pretrained``) reads it
    offline. Returns ``{"parameters", "checkpoint_dtype", "architecture",
    "model_type", "size"}``. DeepSeek-VL2, which has no transformers class, is
    written tensor by tensor in its published layout (``localbench.deepseek_vl2``).
    """
    import torch

    out_dir = Path(out_dir)
    architecture = architectures.architecture_for(repo, size)
    config = architecture["config"]
    dtype_name = config["torch_dtype"]
    # Leftover shards from an earlier build would be loaded alongside the new ones.
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: not empty; synthetic checkpoints go into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not architectures.is_buildable(repo):
        from localbench.deepseek_vl2 import synthetic as deepseek_vl2_synthetic

        return deepseek_vl2_synthetic.build(architecture, size, out_dir, seed)

    # Seeded so the same (repo, size, seed) always gives the same weights.
    model = _instantiate(config, getattr(torch, dtype_name), seed)
    parameters = sum(p.numel() for p in model.parameters())
    parameters += architectures.stored_tied_numel(model, architecture)
    # transformers 5 always writes safetensors (the safe_serialization switch is gone).
    model.save_pretrained(
        out_dir, max_shard_size=architecture.get("max_shard_size", _DEFAULT_MAX_SHARD_SIZE)
    )
    _save_generation_config(model, architecture, out_dir)
    model_type = model.config.model_type
    del model
    gc.collect()
    _store_tied_copies(out_dir, architecture.get("stored_tied_weights", {}))

    tokenizer = build_tokenizer(architecture["tokenizer"])
    _save_processor(architecture, tokenizer, out_dir)
    return {
        "parameters": parameters,
        "checkpoint_dtype": dtype_name,
        "architecture": config["architectures"][0],
        "model_type": model_type,
        "size": size,
    }
