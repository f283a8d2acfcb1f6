"""Synthetic tokenizers: the real tokenizer's class and special-token ids, with a small
vocabulary learned from a fixed English text, built offline.

Used by every synthetic checkpoint (:mod:`localbench.fetch.synthetic`) and by
DeepSeek-VL2's own builder (:mod:`localbench.deepseek_vl2.synthetic`).
"""

from __future__ import annotations

import functools
import string
from collections import Counter
from typing import Any

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
