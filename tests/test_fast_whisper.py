"""Whisper's fast decoder gives the same greedy tokens as generate()."""

from __future__ import annotations

import pytest
import torch
from localbench.engine.backends.whisper import WhisperFastDecoder, supports
from localbench.engine.generation import greedy_fixed_length
from localbench.engine.loading import load_model
from localbench.engine.speech import SAMPLING_RATE, decoder_prompt
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.measure.inputs import benchmark_audio
from transformers import GenerationMixin

NEW_TOKENS = 24


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whisper") / "model"
    build_synthetic_checkpoint("openai/whisper-base", "tiny", folder)
    loaded = load_model(folder, "speech-recognition", torch.float32, torch.device("cpu"))
    # Seeded random weights of this size repeat one token; larger decoder weights make
    # the greedy sequence vary, so equal sequences say more.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in loaded.model.model.decoder.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return loaded


def _features(loaded, seconds: float):
    audio = benchmark_audio(seconds, SAMPLING_RATE)
    return loaded.processor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features


def _prompt(loaded):
    return torch.tensor([decoder_prompt(loaded.model.generation_config)])


def _eager(loaded, features, prompt):
    output = GenerationMixin.generate(
        loaded.model,
        input_features=features,
        decoder_input_ids=prompt,
        **greedy_fixed_length(NEW_TOKENS),
    )
    return output[0, prompt.shape[1] :].tolist()


def _fast(loaded, features, prompt):
    decoder = WhisperFastDecoder(loaded.model, max_len=prompt.shape[1] + NEW_TOKENS)
    decoder.encode(features)
    return decoder, decoder.generate(prompt, NEW_TOKENS).tokens


@pytest.mark.parametrize("seconds", [1.0, 7.5])
def test_whisper_fast_tokens_equal_eager(tiny_whisper, seconds):
    features, prompt = _features(tiny_whisper, seconds), _prompt(tiny_whisper)
    eager = _eager(tiny_whisper, features, prompt)
    decoder, fast = _fast(tiny_whisper, features, prompt)
    assert fast == eager
    assert len(set(eager)) > 3  # a varied sequence, not one repeated token
    # New audio through the same decoder: the cross-attention buffers are refilled.
    other = _features(tiny_whisper, 12.0 - seconds)
    decoder.encode(other)
    assert decoder.generate(prompt, NEW_TOKENS).tokens == _eager(tiny_whisper, other, prompt)


def test_whisper_suppression_lists_apply_as_in_generate(tiny_whisper):
    features, prompt = _features(tiny_whisper, 3.0), _prompt(tiny_whisper)
    before = _eager(tiny_whisper, features, prompt)
    config = tiny_whisper.model.generation_config
    saved = (config.suppress_tokens, config.begin_suppress_tokens, config.eos_token_id)
    try:
        config.suppress_tokens = [*(config.suppress_tokens or []), before[4]]
        config.begin_suppress_tokens = [*(config.begin_suppress_tokens or []), before[0]]
        config.eos_token_id = before[2]  # a forced length never ends on it
        eager = _eager(tiny_whisper, features, prompt)
        assert eager != before and {before[4], before[2]}.isdisjoint(eager)
        assert eager[0] != before[0]
        assert _fast(tiny_whisper, features, prompt)[1] == eager
    finally:
        config.suppress_tokens, config.begin_suppress_tokens, config.eos_token_id = saved


def test_whisper_decoder_refuses_more_positions_than_the_model_has(tiny_whisper):
    positions = tiny_whisper.model.model.decoder.embed_positions.weight.shape[0]
    with pytest.raises(ValueError, match="decoder positions"):
        WhisperFastDecoder(tiny_whisper.model, max_len=positions + 1)


def test_only_whisper_is_supported(tmp_path):
    build_synthetic_checkpoint("Qwen/Qwen2.5-1.5B-Instruct", "tiny", tmp_path / "q")
    loaded = load_model(tmp_path / "q", "text-generation", torch.float32, torch.device("cpu"))
    ok, why = supports(loaded.model)
    assert not ok and "qwen2" in why
