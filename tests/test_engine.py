"""The one inference interface: batched and streamed outputs equal batch-1 eager
generate() on tiny models (float32), on both backends."""

from __future__ import annotations

import pytest
import torch
from localbench.engine.backends.fast import FastDecoder
from localbench.engine.inference import Engine, Request
from localbench.engine.requests import PromptTooLong

TEXT_REPOS = ["Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"]
PROMPTS = [
    "Summarise this voice note.",
    "Write a short, vivid description of a photo of a harbour at dawn with boats.",
    "Hi",
    "List three things a benchmark should record about the machine it ran on, and why.",
    "One more prompt of middling length for the batch.",
]


def _alone_eager(loaded, request: Request, max_new_tokens: int):
    """The reference: one request at a time through eager generate()."""
    return Engine(loaded, "eager", max_batch=1).run([request], max_new_tokens)[0]


@pytest.mark.parametrize("repo", TEXT_REPOS)
@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_batched_outputs_equal_batch_one_eager(tiny_checkpoint_model, repo, backend):
    loaded = tiny_checkpoint_model(repo)
    requests = [Request(text=p) for p in PROMPTS]
    expected = [_alone_eager(loaded, r, 12) for r in requests]
    engine = Engine(loaded, backend, max_batch=4)  # two batches: 4 and 1
    got = engine.run(requests, 12)
    assert engine.backend == backend
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    assert [o.text for o in got] == [o.text for o in expected]
    assert [o.details["batch"] for o in got] == [4, 4, 4, 4, 1]
    for output in got:
        assert output.start <= output.first_token <= output.end
        assert 1 <= len(output.token_ids) <= 12


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_forced_length_gives_exactly_the_budget(tiny_checkpoint_model, backend):
    loaded = tiny_checkpoint_model(TEXT_REPOS[0])
    engine = Engine(loaded, backend)
    outputs = engine.run([Request(text=p) for p in PROMPTS[:3]], 9, force_new_tokens=True)
    assert [len(o.token_ids) for o in outputs] == [9, 9, 9]
    run = outputs[0].to_run()
    assert run.tokens == 9 and len(run.inter_token_s) in (0, 8)


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_streamed_tokens_are_the_outputs_tokens(tiny_checkpoint_model, backend):
    loaded = tiny_checkpoint_model(TEXT_REPOS[0])
    engine = Engine(loaded, backend)
    request = Request(text=PROMPTS[1])
    expected = _alone_eager(loaded, request, 10)
    events = list(engine.stream(request, 10))
    assert [e.token_id for e in events] == expected.token_ids
    assert "".join(e.text for e in events).strip() == expected.text
    assert all(a.time <= b.time for a, b in zip(events, events[1:], strict=False))
    # Streaming a batch: each event names its request.
    heard = []
    outputs = engine.run([Request(text=p) for p in PROMPTS[:3]], 6, on_token=heard.append)
    for index, output in enumerate(outputs):
        assert [e.token_id for e in heard if e.request == index] == output.token_ids


def test_a_prompt_longer_than_the_context_is_refused_in_one_line(tiny_checkpoint_model):
    loaded = tiny_checkpoint_model(TEXT_REPOS[0])
    limit = loaded.model.config.max_position_embeddings
    with pytest.raises(PromptTooLong, match=f"at most {limit}"):
        Engine(loaded, "eager").run([Request(prompt_ids=[5] * limit)], 4)


def test_unknown_backend_and_bad_batch_are_refused(tiny_checkpoint_model):
    loaded = tiny_checkpoint_model(TEXT_REPOS[0])
    with pytest.raises(ValueError, match="eager or fast"):
        Engine(loaded, "turbo")
    with pytest.raises(ValueError, match="at least 1"):
        Engine(loaded, "fast", max_batch=0)
    assert torch.is_inference_mode_enabled() is False


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_text_scenarios_measure_through_the_engine(tiny_checkpoint_model, backend):
    from localbench.measure.scenarios import text_generation, throughput

    loaded = tiny_checkpoint_model(TEXT_REPOS[0])
    bench = {"prompt_tokens": 16, "new_tokens": 6, "warmup_runs": 1, "repetitions": 2}
    single = text_generation.measure(loaded, bench, backend=backend)
    assert single["backend"]["used"] == backend
    assert len(single["generated_token_ids"]) == 6
    assert single["metrics"]["decode_tokens_per_s"]["count"] == 2
    batched = throughput.measure(loaded, {**bench, "batch_size": 3}, backend=backend)
    assert batched["same_tokens_in_every_sequence"] is True
    # The same prompt alone and three times over: the same greedy tokens.
    assert batched["generated_token_ids"] == single["generated_token_ids"]
    aggregate = batched["metrics"]["aggregate_tokens_per_s"]["median"]
    sequence = batched["metrics"]["sequence_tokens_per_s"]["median"]
    assert aggregate == pytest.approx(3 * sequence)


def test_a_batch_padded_to_a_longer_prompt_computes_the_same_tokens(tiny_checkpoint_model):
    """Prompts padded past their longest (as on CUDA, so batches share one prefill)
    decode what they decode unpadded, and a smaller batch reuses a larger decoder."""
    from localbench.engine.backends.fast import FastDecoder

    loaded = tiny_checkpoint_model(TEXT_REPOS[0])
    tokenizer = loaded.processor
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS[:3]]
    decoder = FastDecoder(loaded.model, max_len=128, batch=4)
    plain = decoder.generate_batch(prompts, 8)
    padded = decoder.generate_batch(prompts, 8, length=64)
    assert [r.tokens for r in padded] == [r.tokens for r in plain]
    engine = Engine(loaded, "fast", max_batch=4)
    engine.run([Request(text=p) for p in PROMPTS[:4]], 6)
    first = engine.runner.decoder
    engine.run([Request(text=PROMPTS[0]), Request(text=PROMPTS[2])], 6)
    assert engine.runner.decoder is first


@pytest.mark.parametrize("compile_steps", [True, False, None])
def test_the_engine_hands_its_compile_choice_to_the_fast_decoder(
    tiny_checkpoint_model, compile_steps
):
    loaded = tiny_checkpoint_model(TEXT_REPOS[0])
    engine = Engine(loaded, "fast", compile_steps=compile_steps)
    # torch.compile wraps now, compiles on use.
    decoder = engine.runner.fast_decoder(FastDecoder, 2, 16)
    # None: compiled where graphs are captured, which a CPU does not do.
    assert decoder.use_compile is bool(compile_steps)
    assert engine.details()["compiled"] is bool(compile_steps)
    engine.close()
