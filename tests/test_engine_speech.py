"""Speech recognition through the inference engine: windows of many requests batched on
eager and fast equal each request alone on batch-1 eager (tiny Whisper, float32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from localbench.engine.inference import Engine, Request
from localbench.engine.loading import load_model
from localbench.engine.speech import SAMPLING_RATE, AudioTooShort
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.measure.inputs import benchmark_audio
from localbench.measure.scenarios import speech_recognition
from localbench.pipelines.media import load_audio
from media_files import write_speech

NEW_TOKENS = 12
# Windows per request of REQUESTS below: the second is longer than one 30 s window.
WINDOWS = [1, 2, 1, 1]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whisper") / "model"
    build_synthetic_checkpoint("openai/whisper-base", "tiny", folder)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(folder, "speech-recognition", torch.float32, device)
    # Seeded random weights of this size repeat one token; larger decoder weights make
    # the greedy sequence vary, so equal sequences say more.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in loaded.model.model.decoder.parameters():
            if parameter.dim() == 2:
                noise = torch.randn(parameter.shape, generator=generator) * 0.2
                parameter.copy_(noise.to(parameter.device))
    return loaded


@pytest.fixture(scope="module")
def requests_(tmp_path_factory) -> list[Request]:
    spoken = write_speech(tmp_path_factory.mktemp("audio") / "note.wav", "Call me at nine.")
    return [
        Request(audio=load_audio(spoken, SAMPLING_RATE)),
        Request(audio=benchmark_audio(35.0, SAMPLING_RATE, seed=1)),
        Request(audio=benchmark_audio(7.5, SAMPLING_RATE, seed=2)),
        Request(audio=benchmark_audio(3.0, SAMPLING_RATE, seed=3)),
    ]


def _alone_eager(loaded, request: Request, max_new_tokens: int, force: bool = False):
    """The reference: one request at a time, one window at a time, eager generate()."""
    engine = Engine(loaded, "eager", max_batch=1)
    return engine.run([request], max_new_tokens, force_new_tokens=force)[0]


@pytest.fixture(scope="module")
def expected(tiny_whisper, requests_):
    return [_alone_eager(tiny_whisper, r, NEW_TOKENS) for r in requests_]


@pytest.mark.parametrize("backend", ["eager", "fast"])
@pytest.mark.parametrize("max_batch", [2, 3])
def test_batched_windows_equal_each_request_alone(
    tiny_whisper, requests_, expected, backend, max_batch
):
    assert [o.details["windows"] for o in expected] == WINDOWS
    assert all(len(set(o.token_ids)) > 3 for o in expected)  # varied, not one token
    assert len(expected[1].token_ids) == 2 * NEW_TOKENS  # two windows' tokens
    # Five windows in batches of 2 (a request's windows in two batches, a last batch of
    # one) or 3 (a request's two windows side by side, a last batch of two).
    engine = Engine(tiny_whisper, backend, max_batch=max_batch)
    got = engine.run(requests_, NEW_TOKENS)
    assert engine.backend == backend
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    assert [o.text for o in got] == [o.text for o in expected]
    assert [o.details["windows"] for o in got] == WINDOWS
    assert got[1].details["audio_seconds"] == 35.0 and got[1].details["window_seconds"] == 30.0
    for output in got:
        assert output.start <= output.first_token <= output.end


def test_a_sequence_stops_at_its_end_and_a_forced_one_does_not(tiny_whisper, requests_, expected):
    # An end-of-sequence id that the first request's greedy sequence reaches after a few
    # tokens: it stops there alone and in a batch; a forced length goes on without it.
    tokens = expected[0].token_ids
    end = next(t for i, t in enumerate(tokens) if i >= 2 and t not in tokens[:i])
    config = tiny_whisper.model.generation_config
    saved = config.eos_token_id
    try:
        config.eos_token_id = end
        alone = [_alone_eager(tiny_whisper, r, NEW_TOKENS) for r in requests_]
        assert alone[0].token_ids == tokens[: tokens.index(end)]
        for backend in ("eager", "fast"):
            got = Engine(tiny_whisper, backend, max_batch=3).run(requests_, NEW_TOKENS)
            assert [o.token_ids for o in got] == [o.token_ids for o in alone]
            forced = Engine(tiny_whisper, backend).run(requests_, NEW_TOKENS, force_new_tokens=True)
            assert [len(o.token_ids) for o in forced] == [w * NEW_TOKENS for w in WINDOWS]
            # The end id is banned, not just ignored (as generate()'s min_new_tokens does).
            stop = tokens.index(end)
            assert forced[0].token_ids[:stop] == tokens[:stop] and end not in forced[0].token_ids
    finally:
        config.eos_token_id = saved


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_forced_length_gives_the_budget_per_window(tiny_whisper, requests_, backend):
    reference = [_alone_eager(tiny_whisper, r, 9, force=True) for r in requests_[:2]]
    outputs = Engine(tiny_whisper, backend).run(requests_[:2], 9, force_new_tokens=True)
    assert [o.token_ids for o in outputs] == [o.token_ids for o in reference]
    assert [len(o.token_ids) for o in outputs] == [9, 18]
    for output in outputs:
        run = output.to_run()
        assert run.tokens == len(output.token_ids)
        assert len(run.inter_token_s) in (0, run.tokens - 1)


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_streamed_tokens_are_the_outputs_tokens(tiny_whisper, requests_, expected, backend):
    engine = Engine(tiny_whisper, backend)
    for index in (1, 0):  # two windows decoded side by side; one window
        events = list(engine.stream(requests_[index], NEW_TOKENS))
        assert [e.token_id for e in events] == expected[index].token_ids
        assert {e.request for e in events} == {0}
    assert "".join(e.text for e in events).strip() == expected[0].text
    assert all(a.time <= b.time for a, b in zip(events, events[1:], strict=False))
    # Streaming a batch whose windows straddle batches: each request's tokens in order.
    heard = []
    outputs = Engine(tiny_whisper, backend, max_batch=2).run(
        requests_, NEW_TOKENS, on_token=heard.append
    )
    for index, output in enumerate(outputs):
        assert [e.token_id for e in heard if e.request == index] == output.token_ids
        assert output.token_ids == expected[index].token_ids


def test_audio_shorter_than_a_word_is_refused_in_one_line(tiny_whisper):
    engine = Engine(tiny_whisper, "eager")
    too_short = Request(audio=np.zeros(SAMPLING_RATE // 10 - 1, dtype=np.float32))
    with pytest.raises(AudioTooShort, match=r"^audio is 0\.100 s long .*at least 0\.10 s") as info:
        engine.run([Request(audio=benchmark_audio(2.0, SAMPLING_RATE)), too_short], 4)
    assert "\n" not in str(info.value)
    shortest = Request(audio=benchmark_audio(0.1, SAMPLING_RATE))
    assert len(engine.run([shortest], 2, force_new_tokens=True)[0].token_ids) == 2
    with pytest.raises(ValueError, match="1-D"):
        engine.run([Request(audio=np.zeros((2, SAMPLING_RATE), dtype=np.float32))], 4)


def test_the_budget_is_what_the_decoder_positions_leave(tiny_whisper):
    runner = Engine(tiny_whisper, "eager").runner
    room = tiny_whisper.model.config.max_target_positions - len(runner.prompt)
    assert runner.budget(Request(audio=None), 10_000) == room
    assert runner.budget(Request(audio=None, max_new_tokens=5), 10_000) == 5
    bench = {"audio_seconds": 1.0, "new_tokens": room + 1, "warmup_runs": 0, "repetitions": 1}
    with pytest.raises(ValueError, match=f"room for {room}"):
        speech_recognition.measure(tiny_whisper, bench, "eager")


@pytest.mark.parametrize("backend", ["eager", "fast"])
def test_the_scenario_measures_one_forced_request_through_the_engine(tiny_whisper, backend):
    bench = {"audio_seconds": 3.0, "new_tokens": 6, "warmup_runs": 1, "repetitions": 2}
    result = speech_recognition.measure(tiny_whisper, bench, backend)
    reference = _alone_eager(
        tiny_whisper, Request(audio=benchmark_audio(3.0, SAMPLING_RATE)), 6, force=True
    )
    assert result["generated_token_ids"] == reference.token_ids
    assert result["sample_output"] == reference.text[:200]
    assert result["inputs"] == {"audio_seconds": 3.0, "sampling_rate": 16_000, "new_tokens": 6}
    assert result["backend"]["requested"] == result["backend"]["used"] == backend
    metrics = result["metrics"]
    assert metrics["tokens_generated"]["values"] == [6, 6]
    # One window of a fixed length: every gap between its tokens is measured.
    assert metrics["inter_token_latency_ms"]["count"] == 2 * 5
    latencies = metrics["latency_ms"]["values"]
    assert metrics["real_time_factor"]["values"] == pytest.approx([ms / 3e3 for ms in latencies])
    if backend == "fast":
        assert "before feature extraction" in result["backend"]["timer"]
