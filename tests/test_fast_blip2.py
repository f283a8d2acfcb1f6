"""BLIP-2's fast decoder (its OPT language model) gives the same greedy tokens as generate()."""

from __future__ import annotations

import pytest
import torch
from localbench.engine.backends.blip2 import Blip2FastDecoder, supports
from localbench.engine.generation import greedy_fixed_length
from localbench.engine.loading import load_model
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.measure.inputs import benchmark_image

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip2") / "model"
    build_synthetic_checkpoint("Salesforce/blip2-opt-2.7b", "tiny", folder)
    loaded = load_model(folder, "visual-question-answering", torch.float32, torch.device("cpu"))
    # Larger language-model and projection weights make the greedy sequence vary and
    # depend on the image, so equality says more.
    generator = torch.Generator().manual_seed(0)
    model = loaded.model
    with torch.no_grad():
        for parameter in [*model.language_model.parameters(), model.language_projection.weight]:
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return loaded


def _inputs(loaded, size, question):
    image = benchmark_image(*size)
    text = f"Question: {question} Answer:"
    return loaded.processor(images=image, text=text, return_tensors="pt")


def _eager(loaded, inputs):
    output = loaded.model.generate(**inputs, **greedy_fixed_length(NEW_TOKENS))
    return output[0, -NEW_TOKENS:].tolist()


@pytest.mark.parametrize(
    ("size", "question"),
    [((640, 480), "What is shown in this picture?"), ((200, 300), "Which colour is it?")],
)
def test_blip2_fast_tokens_equal_eager(tiny_blip2, size, question):
    inputs = _inputs(tiny_blip2, size, question)
    eager = _eager(tiny_blip2, inputs)
    prompt = inputs["input_ids"]
    decoder = Blip2FastDecoder(tiny_blip2.model, max_len=prompt.shape[1] + NEW_TOKENS)
    decoder.encode(inputs["pixel_values"])
    assert decoder.generate(prompt, NEW_TOKENS).tokens == eager
    assert len(set(eager)) > 3  # a varied sequence, not one repeated token


def test_blip2_image_features_change_the_answer(tiny_blip2):
    """The image features reach the prompt: another image, another answer, both as eager."""
    first, second = (_inputs(tiny_blip2, size, "What is it?") for size in [(64, 64), (900, 90)])
    torch.manual_seed(1)
    second["pixel_values"] = torch.randn_like(second["pixel_values"]) * 3
    decoder = Blip2FastDecoder(tiny_blip2.model, max_len=first["input_ids"].shape[1] + NEW_TOKENS)
    answers = []
    for inputs in (first, second):
        decoder.encode(inputs["pixel_values"])
        answers.append(decoder.generate(inputs["input_ids"], NEW_TOKENS).tokens)
        assert answers[-1] == _eager(tiny_blip2, inputs)
    assert answers[0] != answers[1]


def test_blip_base_is_not_the_blip2_decoders(tmp_path):
    build_synthetic_checkpoint("Salesforce/blip-image-captioning-base", "tiny", tmp_path / "b")
    loaded = load_model(tmp_path / "b", "image-captioning", torch.float32, torch.device("cpu"))
    ok, why = supports(loaded.model)
    assert not ok and "blip" in why
