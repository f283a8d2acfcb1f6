"""The fast decoder gives the same greedy tokens as transformers' generate()."""

from __future__ import annotations

import pytest
import torch
from conftest import trace_as_one_graph
from localbench.engine.backends import cpu_linear
from localbench.engine.backends.fast import FastDecoder, _argmax, supports
from localbench.engine.generation import GREEDY, greedy_fixed_length
from localbench.engine.loading import load_model
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.measure.inputs import prompt_ids
from localbench.measure.roofline import decode_roofline, kv_cache_bytes, weight_bytes_read_per_token

TEXT_REPOS = [
    "Qwen/Qwen2.5-1.5B-Instruct",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "meta-llama/Llama-3.2-3B-Instruct",
]


@pytest.fixture(scope="module", params=TEXT_REPOS)
def tiny_text_model(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fast") / "model"
    build_synthetic_checkpoint(request.param, "tiny", folder)
    return load_model(folder, "text-generation", torch.float32, torch.device("cpu"))


def _eager_tokens(loaded, input_ids, new_tokens):
    output = loaded.model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        **greedy_fixed_length(new_tokens),
        pad_token_id=loaded.processor.pad_token_id or 0,
    )
    return output[0, input_ids.shape[1] :].tolist()


@pytest.mark.parametrize("fuse", [False, True], ids=["as-loaded", "fused"])
@pytest.mark.parametrize("prompt_tokens", [1, 7, 40])
def test_fast_greedy_tokens_equal_eager(tiny_text_model, prompt_tokens, fuse):
    input_ids = prompt_ids(tiny_text_model.processor, prompt_tokens)
    new_tokens = 24
    eager = _eager_tokens(tiny_text_model, input_ids, new_tokens)
    decoder = FastDecoder(tiny_text_model.model, max_len=prompt_tokens + new_tokens, fuse=fuse)
    fast = decoder.generate(input_ids, new_tokens)
    assert fast.tokens == eager
    assert len(fast.inter_token_s) == new_tokens - 1
    # A second request on the same decoder (reused cache) gives the same tokens.
    assert decoder.generate(input_ids, new_tokens).tokens == eager


@pytest.mark.skipif(
    cpu_linear.unavailable_reason() is not None, reason="the CPU kernel is not built here"
)
@pytest.mark.parametrize(
    ("kernel", "layers", "projections"),
    [
        ("1", None, "cpu kernel, one call per layer"),
        ("1", False, "cpu kernel"),
        ("0", None, "pytorch"),
    ],
    ids=["layers", "products", "pytorch"],
)
def test_cpu_decoder_tokens_equal_eager(tiny_text_model, kernel, layers, projections, monkeypatch):
    """Greedy tokens of the fast decoder on the CPU, whole layers in C++, each product
    through the kernel or none through it, equal generate()'s (float32 tiny models,
    prompts through both product kernels)."""
    monkeypatch.setenv("LOCALBENCH_CPU_KERNEL", kernel)
    input_ids = prompt_ids(tiny_text_model.processor, 11)
    decoder = FastDecoder(tiny_text_model.model, max_len=11 + 16 + 1, cpu_layers=layers)
    details = decoder.details("host clock")
    assert details["decode_projections"] == projections
    assert decoder.generate(input_ids, 16).tokens == _eager_tokens(tiny_text_model, input_ids, 16)
    # The traced step (+ 1 cache position) runs the products as one operator each.
    trace_as_one_graph(decoder._decode_step)


@pytest.mark.skipif(
    cpu_linear.unavailable_reason() is not None, reason="the CPU kernel is not built here"
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_decode_layer_rounds_as_the_model_does(dtype, tmp_path):
    """In reduced precision the C++ layer rounds where the model's modules round: over a
    whole generation its tokens equal those of the per-product path, and the last
    layer's cached keys stay within a unit or two in the last place of that path's."""
    folder = tmp_path / "model"
    build_synthetic_checkpoint("Qwen/Qwen2.5-1.5B-Instruct", "tiny", folder)
    loaded = load_model(folder, "text-generation", dtype, torch.device("cpu"))
    input_ids = prompt_ids(loaded.processor, 9)
    decoders = {
        layers: FastDecoder(loaded.model, max_len=9 + 20, cpu_layers=layers)
        for layers in (True, False)
    }
    runs = {layers: decoder.generate(input_ids, 20) for layers, decoder in decoders.items()}
    assert runs[True].tokens == runs[False].tokens
    keys = {layers: decoder.keys[-1].float() for layers, decoder in decoders.items()}
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(keys[True], keys[False], rtol=4 * ulp, atol=4 * ulp)


def _prompts(loaded, spans):
    """Prompts cut from the benchmark passage: (start, length) each."""
    passage = prompt_ids(loaded.processor, 64)[0].tolist()
    return [passage[start : start + length] for start, length in spans]


SPANS = [(0, 5), (3, 9), (10, 2), (20, 7), (1, 12), (30, 3)]


@pytest.mark.parametrize("batch", [1, 2, 6])
def test_batched_greedy_tokens_equal_each_prompt_alone(tiny_text_model, batch):
    """Prompts of different lengths decoded together (left-padded, padding hidden from
    attention and rotary positions) give each the tokens generate() gives it alone."""
    prompts = _prompts(tiny_text_model, SPANS[:batch])
    decoder = FastDecoder(tiny_text_model.model, max_len=12 + 10, batch=batch)
    runs = decoder.generate_batch(prompts, 10, stop_at_end=False)
    for prompt, run in zip(prompts, runs, strict=True):
        assert run.tokens == _eager_tokens(tiny_text_model, torch.tensor([prompt]), 10)
        assert run.inter_token_s == []  # not streamed: tokens were read at the end
    # Fewer requests than the decoder holds: the rows left over are not returned.
    assert len(decoder.generate_batch(prompts[:1], 4, stop_at_end=False)) == 1


def test_batched_sequences_stop_at_their_end_of_sequence(tiny_text_model):
    """Each sequence ends at its first end-of-sequence token, as generate() ends it; the
    tokens are streamed as they are made, in order, each sequence on its own."""
    model = tiny_text_model.model
    prompts = _prompts(tiny_text_model, SPANS[:3])
    forced = [_eager_tokens(tiny_text_model, torch.tensor([p]), 12) for p in prompts]
    config = model.generation_config
    saved = config.eos_token_id
    try:
        config.eos_token_id = forced[1][4]  # the second sequence would end after 4 tokens
        expected = []
        for prompt in prompts:
            output = model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=12,
                pad_token_id=0,
                **GREEDY,
            )[0, len(prompt) :].tolist()
            end = output.index(config.eos_token_id) if config.eos_token_id in output else None
            expected.append(output[:end])
        # With that end of sequence banned, as a fixed length needs.
        forced = [_eager_tokens(tiny_text_model, torch.tensor([p]), 12) for p in prompts]
        decoder = FastDecoder(model, max_len=12 + 12, batch=3)
        streamed: dict[int, list] = {0: [], 1: [], 2: []}
        runs = decoder.generate_batch(
            prompts, 12, on_token=lambda i, token, at: streamed[i].append((token, at))
        )
        again = decoder.generate_batch(prompts, 12, stop_at_end=False)
    finally:
        config.eos_token_id = saved
    assert [run.tokens for run in runs] == expected
    assert len(runs[1].tokens) <= 4
    for index, run in enumerate(runs):
        assert [token for token, _ in streamed[index]] == run.tokens
        times = [at for _, at in streamed[index]]
        assert times == sorted(times) and run.first_token <= run.end
        assert len(run.inter_token_s) == max(len(run.tokens) - 1, 0)
    # The same decoder then forces a fixed length again, end-of-sequence ids banned.
    assert [run.tokens for run in again] == forced


def test_batch_sizes_are_checked(tiny_text_model):
    decoder = FastDecoder(tiny_text_model.model, max_len=20, batch=2)
    prompt = _prompts(tiny_text_model, SPANS[:1])[0]
    with pytest.raises(ValueError, match="1 to 2 non-empty prompts"):
        decoder.generate_batch([prompt] * 3, 4)
    with pytest.raises(ValueError, match="1 to 2 non-empty prompts"):
        decoder.generate_batch([prompt, []], 4)
    with pytest.raises(ValueError, match="one sequence"):
        decoder.generate(torch.tensor([prompt]), 4)
    with pytest.raises(ValueError, match="exceed"):
        decoder.generate_batch([prompt], 20)


def test_fast_decoder_refuses_too_long_requests(tiny_text_model):
    decoder = FastDecoder(tiny_text_model.model, max_len=8)
    with pytest.raises(ValueError, match="exceed"):
        decoder.generate(prompt_ids(tiny_text_model.processor, 5), 4)


def test_unsupported_architectures_are_named(tmp_path):
    build_synthetic_checkpoint("openai/whisper-base", "tiny", tmp_path / "w")
    loaded = load_model(tmp_path / "w", "speech-recognition", torch.float32, torch.device("cpu"))
    ok, why = supports(loaded.model)
    assert not ok and "whisper" in why


def test_roofline_counts_weights_once_and_the_kv_cache(tiny_text_model):
    model = tiny_text_model.model
    unique = {id(p): p for p in model.parameters()}
    all_bytes = sum(p.numel() * p.element_size() for p in unique.values())
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    expected = all_bytes if tied else all_bytes - (embed.numel() - embed.shape[1]) * 4
    assert weight_bytes_read_per_token(model) == expected
    config = model.config
    kv = kv_cache_bytes(config, 100, 4)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert kv == 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 100 * 4
    roofline = decode_roofline(model, 128, 256, bandwidth_gb_per_s=1000.0)
    assert roofline.at_position == 256
    assert roofline.tokens_per_s == pytest.approx(1e12 / roofline.bytes_per_token)


@pytest.mark.parametrize("fuse", [False, True], ids=["as-loaded", "fused"])
def test_decode_and_prefill_trace_as_one_graph(tiny_text_model, fuse):
    """A graph break would put host work between kernels, which CUDA graph capture refuses.

    Tracing with the "eager" backend runs no compiler, so this checks on any machine what
    the GPU path needs: the whole step is one graph, with no data-dependent Python.
    """
    decoder = FastDecoder(tiny_text_model.model, max_len=16, fuse=fuse)
    trace_as_one_graph(decoder._prefill_step, prompt_ids(tiny_text_model.processor, 5))
    trace_as_one_graph(decoder._decode_step)
    assert decoder.position.item() == 6


@pytest.mark.parametrize("size", [7, 1000, 51865, 128256, 151936])
def test_two_stage_argmax_returns_the_first_maximum(size):
    generator = torch.Generator().manual_seed(size)
    values = torch.randn(size, generator=generator).to(torch.bfloat16)
    assert _argmax(values).item() == values.argmax().item()
    ties = torch.randint(0, size, (3,), generator=generator)
    values[ties] = 10.0  # the first of several equal maxima wins, as in torch.argmax
    assert _argmax(values).item() == ties.min().item()


def test_forced_length_never_picks_end_of_sequence(tiny_text_model):
    """generate()'s min_new_tokens bans the end-of-sequence ids; the fast decoder too."""
    input_ids = prompt_ids(tiny_text_model.processor, 7)
    before = _eager_tokens(tiny_text_model, input_ids, 12)
    config = tiny_text_model.model.generation_config
    saved = config.eos_token_id
    try:
        config.eos_token_id = before[3]  # a token greedy decoding would pick
        eager = _eager_tokens(tiny_text_model, input_ids, 12)
        assert before[3] not in eager
        fast = FastDecoder(tiny_text_model.model, max_len=19).generate(input_ids, 12)
        assert fast.tokens == eager
    finally:
        config.eos_token_id = saved


def test_cpu_weights_are_not_copied_into_fused_matrices(tiny_text_model):
    """On the CPU the checkpoint's mapped weights stay in place (a fused copy adds memory)."""
    attention = tiny_text_model.model.model.layers[0].self_attn
    before = attention.q_proj.weight.data_ptr()
    decoder = FastDecoder(tiny_text_model.model, max_len=16)
    assert not decoder.fused and decoder.qkv == []
    assert attention.q_proj.weight.data_ptr() == before
