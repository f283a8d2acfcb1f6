"""BLIP's fast caption decoder gives the same greedy tokens as generate()."""

from __future__ import annotations

import pytest
import torch
from localbench.engine.backends.blip import BlipFastDecoder, start_ids, supports
from localbench.engine.generation import greedy_fixed_length
from localbench.engine.loading import load_model
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.measure.inputs import benchmark_image

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip") / "model"
    build_synthetic_checkpoint("Salesforce/blip-image-captioning-base", "tiny", folder)
    loaded = load_model(folder, "image-captioning", torch.float32, torch.device("cpu"))
    # Larger text-decoder weights make the greedy caption vary and depend on the image.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in loaded.model.text_decoder.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return loaded


def _pixels(loaded, size):
    return loaded.processor(images=benchmark_image(*size), return_tensors="pt")["pixel_values"]


def _eager(loaded, pixel_values):
    output = loaded.model.generate(pixel_values=pixel_values, **greedy_fixed_length(NEW_TOKENS))
    return output[0, -NEW_TOKENS:].tolist()


def test_blip_fast_captions_equal_eager_for_several_images(tiny_blip):
    prompt = torch.tensor([start_ids(tiny_blip.model)])
    decoder = BlipFastDecoder(tiny_blip.model, max_len=1 + NEW_TOKENS)
    captions = []
    for size in [(640, 480), (90, 900)]:
        pixels = _pixels(tiny_blip, size)
        pixels = pixels + torch.randn(pixels.shape, generator=torch.Generator().manual_seed(1))
        decoder.encode(pixels)  # the second image refills the same buffers
        captions.append(decoder.generate(prompt, NEW_TOKENS).tokens)
        assert captions[-1] == _eager(tiny_blip, pixels)
        assert len(set(captions[-1])) > 3  # a varied caption, not one repeated token


def test_blip_separator_is_banned_for_a_forced_length(tiny_blip):
    pixels = _pixels(tiny_blip, (640, 480))
    before = _eager(tiny_blip, pixels)
    config = tiny_blip.model.config.text_config
    saved = config.sep_token_id
    try:
        config.sep_token_id = before[2]  # generate() passes it as end of sequence
        eager = _eager(tiny_blip, pixels)
        assert before[2] not in eager
        decoder = BlipFastDecoder(tiny_blip.model, max_len=1 + NEW_TOKENS)
        decoder.encode(pixels)
        prompt = torch.tensor([start_ids(tiny_blip.model)])
        assert decoder.generate(prompt, NEW_TOKENS).tokens == eager
    finally:
        config.sep_token_id = saved


def test_blip2_is_not_the_blip_decoders(tmp_path):
    build_synthetic_checkpoint("Salesforce/blip2-opt-2.7b", "tiny", tmp_path / "b")
    loaded = load_model(tmp_path / "b", "visual-question-answering", torch.float32, "cpu")
    ok, why = supports(loaded.model)
    assert not ok and "blip-2" in why
