"""Image-to-text requests through the inference engine: BLIP captions and BLIP-2 answers,
batched on both backends, equal each request run alone on eager generate(); DeepSeek-VL2
gives what its scenario's path (embed, then the language model's generate()) gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import trace_as_one_graph
from localbench.engine.backends.blip import start_ids
from localbench.engine.generation import greedy_fixed_length
from localbench.engine.inference import Engine, Request
from localbench.engine.loading import load_model
from localbench.engine.vision import VQA_PROMPT, fast_decoder_class
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.measure.inputs import QUESTION, benchmark_image
from localbench.measure.scenarios import image_to_text, multimodal
from media_files import picture
from PIL import Image

CPU = torch.device("cpu")
NEW_TOKENS = 10
BENCH = {"new_tokens": 6, "warmup_runs": 1, "repetitions": 2, "image_size": [320, 240]}
# A drawing, a gradient with shapes, and noise: images that a tiny model tells apart.
IMAGES = [
    picture(320, 240),
    benchmark_image(90, 400, seed=2),
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (150, 200, 3), dtype=np.uint8)),
]
QUESTIONS = ["What is it?", "Which colour is the big shape on the left of the picture?", "Why?"]


def _varied(loaded, parameters):
    """Larger decoder weights make the greedy tokens vary and depend on the image."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in parameters:
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return loaded


def _tiny(tmp_path_factory, repo, task):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    build_synthetic_checkpoint(repo, "tiny", folder)
    return load_model(folder, task, torch.float32, CPU)


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    loaded = _tiny(tmp_path_factory, "Salesforce/blip-image-captioning-base", "image-captioning")
    return _varied(loaded, loaded.model.text_decoder.parameters())


@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory):
    loaded = _tiny(tmp_path_factory, "Salesforce/blip2-opt-2.7b", "visual-question-answering")
    model = loaded.model
    return _varied(loaded, [*model.language_model.parameters(), model.language_projection.weight])


@pytest.fixture(scope="module")
def tiny_vl2(tmp_path_factory):
    return _tiny(tmp_path_factory, "deepseek-ai/deepseek-vl2-small", "multimodal")


@pytest.fixture(params=["blip", "blip2"])
def vision_model(request, tiny_blip, tiny_blip2):
    """A loaded model, its requests, and a setter of its end-of-sequence token."""
    if request.param == "blip":
        config = tiny_blip.model.config.text_config
        saved = config.sep_token_id

        def set_end(token):
            config.sep_token_id = token  # generate() ends BLIP's caption at the separator

        yield tiny_blip, [Request(image=image) for image in IMAGES], set_end
        config.sep_token_id = saved
    else:
        config = tiny_blip2.model.language_model.generation_config
        saved = config.eos_token_id

        def set_end(token):
            config.eos_token_id = token

        requests = [Request(image=i, text=q) for i, q in zip(IMAGES, QUESTIONS, strict=True)]
        yield tiny_blip2, requests, set_end
        config.eos_token_id = saved


def _alone_eager(loaded, request, max_new_tokens=NEW_TOKENS, force=False):
    """The reference: one request at a time through eager generate()."""
    engine = Engine(loaded, "eager", max_batch=1)
    return engine.run([request], max_new_tokens, force_new_tokens=force)[0]


def _end_inside(output) -> int:
    """A token ``output`` makes first at its third place or later: as the end of
    sequence it ends that output there, and the others elsewhere."""
    tokens = output.token_ids
    return next(t for i, t in enumerate(tokens) if i >= 2 and t not in tokens[:i])


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_batched_outputs_equal_each_alone_on_eager(vision_model, backend):
    loaded, requests, set_end = vision_model
    set_end(_end_inside(_alone_eager(loaded, requests[0])))
    expected = [_alone_eager(loaded, r) for r in requests]
    lengths = [len(o.token_ids) for o in expected]
    assert len(set(lengths)) > 1 and min(lengths) < NEW_TOKENS  # some end early
    assert len({tuple(o.token_ids) for o in expected}) == 3  # the image and question count
    for max_batch, batches in [(None, [3, 3, 3]), (2, [2, 2, 1])]:
        engine = Engine(loaded, backend, max_batch=max_batch)
        got = engine.run(requests, NEW_TOKENS)
        assert engine.backend == backend
        assert [o.token_ids for o in got] == [o.token_ids for o in expected]
        assert [o.text for o in got] == [o.text for o in expected]
        assert [o.details["batch"] for o in got] == batches
        assert [o.details["image_size"] for o in got] == [list(i.size) for i in IMAGES]
        for output in got:
            assert output.start <= output.first_token <= output.end
    # One request in the same engine: on the fast backend, the decoder made for two
    # sequences runs one, its spare row repeating it (as the batch of one above did).
    assert engine.run([requests[1]], NEW_TOKENS)[0].token_ids == expected[1].token_ids


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_streamed_tokens_are_the_outputs_tokens(vision_model, backend):
    loaded, requests, _ = vision_model
    engine = Engine(loaded, backend)
    expected = _alone_eager(loaded, requests[1])
    events = list(engine.stream(requests[1], NEW_TOKENS))
    assert [e.token_id for e in events] == expected.token_ids
    assert "".join(e.text for e in events).strip() == expected.text
    heard = []
    outputs = engine.run(requests, NEW_TOKENS, on_token=heard.append)
    for index, output in enumerate(outputs):
        assert [e.token_id for e in heard if e.request == index] == output.token_ids
        assert len(output.inter_token_s) == max(len(output.token_ids) - 1, 0)


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_forced_length_gives_exactly_the_budget(vision_model, backend):
    loaded, requests, set_end = vision_model
    end = _end_inside(_alone_eager(loaded, requests[0]))
    set_end(end)
    assert 2 <= len(_alone_eager(loaded, requests[0]).token_ids) < NEW_TOKENS
    outputs = Engine(loaded, backend).run(requests, NEW_TOKENS, force_new_tokens=True)
    assert [len(o.token_ids) for o in outputs] == [NEW_TOKENS] * 3
    assert all(end not in o.token_ids for o in outputs)  # the end of sequence is banned
    alone = [_alone_eager(loaded, r, force=True) for r in requests]
    assert [o.token_ids for o in outputs] == [o.token_ids for o in alone]


def test_a_question_is_needed_for_visual_question_answering(tiny_blip2):
    with pytest.raises(ValueError, match="needs text"):
        Engine(tiny_blip2, "eager").run([Request(image=IMAGES[0])], 4)


def test_blip2_answer_is_generate_without_the_repeated_prompt(tiny_blip2):
    inputs = tiny_blip2.processor(
        images=IMAGES[0], text=VQA_PROMPT.format(question=QUESTIONS[0]), return_tensors="pt"
    )
    with torch.inference_mode():
        output = tiny_blip2.model.generate(**inputs, **greedy_fixed_length(NEW_TOKENS))
    prompt = inputs["input_ids"].shape[1]
    got = _alone_eager(tiny_blip2, Request(image=IMAGES[0], text=QUESTIONS[0]), force=True)
    assert got.token_ids == output[0, prompt:].tolist()
    assert got.prompt_tokens == prompt


def test_batched_fast_steps_trace_as_one_graph(vision_model):
    """The batched prefill and decode step compile without a graph break, as CUDA graph
    capture needs (checked here on the CPU)."""
    loaded, _, _ = vision_model
    pixels = loaded.processor(images=IMAGES[:2], return_tensors="pt")["pixel_values"]
    if loaded.task == "visual-question-answering":
        prompts = [
            loaded.processor(images=i, text=VQA_PROMPT.format(question=q))["input_ids"][0]
            for i, q in zip(IMAGES[:2], QUESTIONS, strict=False)
        ]
    else:
        prompts = [start_ids(loaded.model)] * 2
    length = max(len(p) for p in prompts)
    decoder_class, _ = fast_decoder_class(loaded.model)
    decoder = decoder_class(loaded.model, max_len=length + 4, batch=2, use_cuda_graph=False)
    decoder.encode(pixels)
    decoder.pad.copy_(torch.tensor([length - len(p) for p in prompts]))
    ids = torch.tensor([[0] * (length - len(p)) + list(p) for p in prompts])
    trace_as_one_graph(decoder._prefill_step, ids)
    trace_as_one_graph(decoder._decode_step)


# ---------------------------------------------------------------------------
# DeepSeek-VL2


def _scenario_path(loaded, image, question, new_tokens):
    """DeepSeek-VL2 as its benchmark scenario ran it before the engine: embed the prompt
    with the image, then the language model's generate() at a forced length."""
    processor, model = loaded.processor, loaded.model
    tokenizer = processor.tokenizer
    inputs = processor(image, question)
    with torch.inference_mode():
        embeds = model.embed(
            inputs.input_ids, processor.image_token_id, inputs.pixel_values, inputs.tiling
        )
        output = model.language.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **greedy_fixed_length(new_tokens),
        )
    return output[0, -new_tokens:].tolist(), inputs


def test_deepseek_vl2_through_the_engine_gives_the_scenarios_tokens(tiny_vl2):
    image = benchmark_image(320, 240)
    expected, inputs = _scenario_path(tiny_vl2, image, QUESTION, NEW_TOKENS)
    engine = Engine(tiny_vl2, "fast")
    assert engine.backend == "eager" and "DeepSeek-VL2" in engine.note
    output = engine.run([Request(image=image, text=QUESTION)], NEW_TOKENS, force_new_tokens=True)
    (output,) = output
    assert output.token_ids == expected
    assert output.text == tiny_vl2.processor.decode(expected, skip_special_tokens=True).strip()
    assert output.prompt_tokens == inputs.input_ids.shape[1]
    assert output.details["image_tokens"] == inputs.image_tokens
    assert output.start <= output.details["embeddings_ready"] <= output.first_token
    # Two requests run one after the other; streaming hears the same tokens.
    other = Request(image=picture(200, 500), text="Which colour is the roof?")
    both = engine.run([Request(image=image, text=QUESTION), other], 5, force_new_tokens=True)
    assert both[0].token_ids == expected[:5]
    assert both[1].token_ids == _scenario_path(tiny_vl2, other.image, other.text, 5)[0]
    events = list(engine.stream(other, 5))
    unforced = engine.run([other], 5)[0]
    assert [e.token_id for e in events] == unforced.token_ids


def test_multimodal_scenario_measures_through_the_engine(tiny_vl2):
    result = multimodal.measure(tiny_vl2, BENCH, backend="fast")
    expected, inputs = _scenario_path(tiny_vl2, benchmark_image(320, 240), QUESTION, 6)
    assert result["generated_token_ids"] == expected
    assert result["backend"]["used"] == "eager" and result["backend"]["requested"] == "fast"
    assert result["inputs"]["prompt_tokens"] == inputs.input_ids.shape[1]
    assert result["inputs"]["tiling"] == [inputs.tiling.width_tiles, inputs.tiling.height_tiles]
    metrics = result["metrics"]
    assert metrics["tokens_generated"]["values"] == [6, 6]
    assert metrics["inter_token_latency_ms"]["count"] == 2 * 5
    for name in ("image_embedding_ms", "prefill_ms", "prefill_tokens_per_s", "images_per_s"):
        assert metrics[name]["count"] == 2


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_image_to_text_scenario_measures_through_the_engine(vision_model, backend):
    loaded, _, _ = vision_model
    result = image_to_text.measure(loaded, BENCH, backend=backend)
    asks = loaded.task == "visual-question-answering"
    # What the scenario measured before the engine: generate() on the processor's inputs.
    prompt = VQA_PROMPT.format(question=QUESTION) if asks else None
    inputs = loaded.processor(images=benchmark_image(320, 240), text=prompt, return_tensors="pt")
    with torch.inference_mode():
        expected = loaded.model.generate(**inputs, **greedy_fixed_length(6))[0, -6:].tolist()
    assert result["generated_token_ids"] == expected
    text = loaded.processor.tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert result["sample_output"] == text
    assert result["backend"]["used"] == backend
    assert ("cuda_graph" in result["backend"]) == (backend == "fast")
    assert result["inputs"]["prompt"] == prompt
    metrics = result["metrics"]
    assert metrics["tokens_generated"]["values"] == [6, 6]
    assert metrics["inter_token_latency_ms"]["count"] == 2 * 5
    assert metrics["images_per_s"]["count"] == 2
