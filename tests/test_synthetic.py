"""Synthetic checkpoints: tiny builds load through load_model and run real inference on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from localbench.engine.loading import MissingSafetensors, UnsupportedTask, load_model
from localbench.fetch.architectures import count_parameters, tiny_config
from localbench.fetch.reference import (
    SEED_TASKS,
    UnknownArchitecture,
    checkpoint_dtype,
    is_buildable,
    load_architecture,
)
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.fetch.tokenizer import build_tokenizer
from PIL import Image

BUILDABLE = [repo for repo in SEED_TASKS if is_buildable(repo)]
TEXT_REPOS = [repo for repo in BUILDABLE if SEED_TASKS[repo] == "text-generation"]
CPU = torch.device("cpu")

# Exact counts from shared/reference/model-configs.md (stored tensors: BLIP base keeps its
# tied LM-head weight in the file, so 247,414,076; BLIP-2 with a full qkv bias).
FULL_PARAMETERS = {
    "Qwen/Qwen2.5-1.5B-Instruct": 1_543_714_304,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": 1_777_088_000,
    "meta-llama/Llama-3.2-3B-Instruct": 3_212_749_824,
    "Salesforce/blip-image-captioning-base": 247_414_076,
    "Salesforce/blip2-opt-2.7b": 3_744_761_856,
    "openai/whisper-base": 72_593_920,
    "deepseek-ai/deepseek-vl2-small": 16_148_349_504,
}

NEW_TOKENS = 5


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Each buildable seed repo, built tiny once for the whole module."""
    built = {}
    for repo in BUILDABLE:
        out = tmp_path_factory.mktemp(repo.replace("/", "--"))
        built[repo] = (out, build_synthetic_checkpoint(repo, "tiny", out, seed=0))
    return built


def _load(tiny_checkpoints, repo):
    folder, _ = tiny_checkpoints[repo]
    return load_model(folder, SEED_TASKS[repo], torch.float32, CPU)


@pytest.mark.parametrize("repo", sorted(FULL_PARAMETERS))
def test_full_parameter_counts_match_the_reference(repo):
    assert count_parameters(repo, "full") == FULL_PARAMETERS[repo]


def test_unknown_repo_names_the_shipped_ones():
    with pytest.raises(UnknownArchitecture, match="Qwen/Qwen2.5-1.5B-Instruct"):
        load_architecture("nobody/nothing")


def test_architecture_files_carry_the_published_facts():
    for repo in SEED_TASKS:
        architecture = load_architecture(repo)
        assert architecture["repo"] == repo
        assert architecture["task"] == SEED_TASKS[repo]
        assert architecture["source"]
    assert checkpoint_dtype("Qwen/Qwen2.5-1.5B-Instruct") == "bfloat16"
    assert checkpoint_dtype("Salesforce/blip2-opt-2.7b") == "float32"
    assert checkpoint_dtype("openai/whisper-base") == "float32"
    assert load_architecture("deepseek-ai/deepseek-vl2-small")["reconstructed"] is True


def test_tiny_config_keeps_structure():
    qwen = load_architecture("Qwen/Qwen2.5-1.5B-Instruct")["config"]
    tiny = tiny_config(qwen)
    assert tiny["model_type"] == "qwen2" and tiny["tie_word_embeddings"] is True
    assert tiny["num_attention_heads"] // tiny["num_key_value_heads"] == 6  # GQA ratio 12:2
    assert tiny["num_hidden_layers"] == 2
    # Special tokens keep their order at the top of the vocabulary.
    assert (tiny["bos_token_id"], tiny["eos_token_id"]) == (1024, 1026)
    blip2 = tiny_config(load_architecture("Salesforce/blip2-opt-2.7b")["config"])
    assert blip2["num_query_tokens"] == 32
    assert blip2["image_token_index"] < blip2["text_config"]["vocab_size"]


def test_deepseek_vl2_is_built_by_the_project_not_transformers():
    # No transformers class: tests/test_deepseek_vl2.py builds and runs it.
    assert not is_buildable("deepseek-ai/deepseek-vl2-small")
    assert count_parameters("deepseek-ai/deepseek-vl2-small", "tiny") < 5_000_000


@pytest.mark.parametrize("repo", BUILDABLE)
def test_tiny_checkpoint_is_small_safetensors_only(tiny_checkpoints, repo):
    folder, info = tiny_checkpoints[repo]
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and "generation_config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in names)
    assert info["parameters"] == count_parameters(repo, "tiny") < 5_000_000
    assert info["checkpoint_dtype"] == checkpoint_dtype(repo)
    assert info["architecture"] == load_architecture(repo)["config"]["architectures"][0]
    assert info["size"] == "tiny"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == info["model_type"]


@pytest.mark.parametrize("repo", BUILDABLE)
def test_tiny_tokenizer_decodes_every_model_id(tiny_checkpoints, repo):
    loaded = _load(tiny_checkpoints, repo)
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    config = loaded.model.config
    vocab_size = getattr(config, "vocab_size", None) or config.text_config.vocab_size
    assert len(tokenizer) <= vocab_size
    assert isinstance(tokenizer.decode(list(range(vocab_size))), str)


@pytest.mark.parametrize("repo", TEXT_REPOS)
def test_text_model_generates(tiny_checkpoints, repo):
    loaded = _load(tiny_checkpoints, repo)
    tokenizer, model = loaded.processor, loaded.model
    assert loaded.dtype == torch.float32 and model.dtype == torch.float32
    assert len(tokenizer) <= model.config.vocab_size
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello, how are you today?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    prompt = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
        )
    assert out.shape == (1, prompt + NEW_TOKENS)
    assert isinstance(tokenizer.decode(out[0, prompt:], skip_special_tokens=True), str)


def test_special_token_ids_match_the_real_tokenizers(tiny_checkpoints):
    qwen = _load(tiny_checkpoints, "Qwen/Qwen2.5-1.5B-Instruct").processor
    assert qwen.eos_token == "<|im_end|>" and qwen.pad_token == "<|endoftext|>"
    assert qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        1024,
        1025,
        1026,
    ]
    r1 = _load(tiny_checkpoints, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    assert r1.processor("Hi")["input_ids"][0] == r1.model.generation_config.bos_token_id
    llama = _load(tiny_checkpoints, "meta-llama/Llama-3.2-3B-Instruct")
    assert llama.processor.convert_tokens_to_ids("<|eot_id|>") in llama.model.config.eos_token_id


@pytest.mark.parametrize("repo", BUILDABLE)
def test_full_size_tokenizer_uses_real_ids(repo):
    architecture = load_architecture(repo)
    spec = architecture["tokenizer"]
    tokenizer = build_tokenizer(spec)
    assert len(tokenizer) == spec["length"]
    for token_id, content, _ in spec["added_tokens"]:
        assert tokenizer.convert_tokens_to_ids(content) == token_id
    config = architecture["config"]
    vocab_size = config.get("vocab_size") or config["text_config"]["vocab_size"]
    assert len(tokenizer) <= vocab_size
    tokenizer.decode(list(range(vocab_size)))


def test_real_ids_the_models_rely_on():
    qwen = build_tokenizer(load_architecture("Qwen/Qwen2.5-1.5B-Instruct")["tokenizer"])
    assert qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"]) == [151643, 151645]
    blip2 = load_architecture("Salesforce/blip2-opt-2.7b")
    opt = build_tokenizer(blip2["tokenizer"])
    assert opt.convert_tokens_to_ids("<image>") == blip2["config"]["image_token_index"] == 50265
    assert opt.decode([blip2["config"]["text_config"]["eos_token_id"]]) == "\n"
    whisper = build_tokenizer(load_architecture("openai/whisper-base")["tokenizer"])
    assert whisper.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"]) == [
        50257,
        50258,
    ]
    assert whisper.convert_tokens_to_ids("<|notimestamps|>") == 50363
    assert whisper.decode([220]) == " "


def test_blip_captions_an_image(tiny_checkpoints):
    loaded = _load(tiny_checkpoints, "Salesforce/blip-image-captioning-base")
    assert type(loaded.model).__name__ == "BlipForConditionalGeneration"
    image = Image.new("RGB", (120, 90), (200, 40, 40))
    inputs = loaded.processor(images=image, return_tensors="pt")
    side = loaded.model.config.vision_config.image_size
    assert inputs["pixel_values"].shape == (1, 3, side, side)
    with torch.inference_mode():
        out = loaded.model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
        )
    # BLIP's output starts with the [DEC] (bos) token it was prompted with.
    assert out.shape == (1, 1 + NEW_TOKENS)
    assert out[0, 0] == loaded.model.config.text_config.bos_token_id
    assert isinstance(loaded.processor.decode(out[0], skip_special_tokens=True), str)


def test_blip2_answers_a_question(tiny_checkpoints):
    loaded = _load(tiny_checkpoints, "Salesforce/blip2-opt-2.7b")
    assert type(loaded.model).__name__ == "Blip2ForConditionalGeneration"
    image = Image.new("RGB", (120, 90), (40, 160, 40))
    inputs = loaded.processor(
        images=image, text="Question: what is this? Answer:", return_tensors="pt"
    )
    ids = inputs["input_ids"][0]
    queries = loaded.model.config.num_query_tokens
    # Blip2Processor puts one <image> token per query before the text.
    assert (ids[:queries] == loaded.model.config.image_token_index).all()
    prompt = ids.shape[0]
    with torch.inference_mode():
        out = loaded.model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
        )
    assert out.shape == (1, prompt + NEW_TOKENS)
    text = loaded.processor.batch_decode(out, skip_special_tokens=True)[0]
    assert text.startswith("Question: what is this? Answer:")


def test_whisper_transcribes_a_sine(tiny_checkpoints):
    from transformers import GenerationMixin

    loaded = _load(tiny_checkpoints, "openai/whisper-base")
    model, processor = loaded.model, loaded.processor
    assert type(model).__name__ == "WhisperForConditionalGeneration"
    audio = np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000).astype(np.float32)
    inputs = processor(audio, sampling_rate=16_000, return_tensors="pt")
    assert inputs["input_features"].shape == (1, 80, 3000)
    with torch.inference_mode():
        out = model.generate(
            **inputs, language="en", task="transcribe", max_new_tokens=3, do_sample=False
        )
    assert out.ndim == 2 and out.shape[0] == 1 and out.shape[1] >= 1
    assert isinstance(processor.batch_decode(out, skip_special_tokens=True)[0], str)

    # A fixed number of new tokens: the plain decoding loop, without Whisper's
    # segment seeking (random weights emit timestamp tokens, which start new segments).
    config = model.generation_config
    prompt = torch.tensor(
        [
            [
                config.decoder_start_token_id,
                config.lang_to_id["<|en|>"],
                config.task_to_id["transcribe"],
                config.no_timestamps_token_id,
            ]
        ]
    )
    with torch.inference_mode():
        fixed = GenerationMixin.generate(
            model,
            input_features=inputs["input_features"],
            decoder_input_ids=prompt,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    assert fixed.shape == (1, prompt.shape[1] + NEW_TOKENS)
    assert isinstance(processor.decode(fixed[0], skip_special_tokens=True), str)


def test_load_model_refuses_folders_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(MissingSafetensors, match="pytorch_model.bin"):
        load_model(tmp_path, "text-generation", torch.float32, CPU)


def test_load_model_refuses_unknown_tasks(tiny_checkpoints):
    folder, _ = tiny_checkpoints["Qwen/Qwen2.5-1.5B-Instruct"]
    with pytest.raises(UnsupportedTask):
        load_model(folder, "dancing", torch.float32, CPU)


def test_build_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "old.safetensors").write_bytes(b"")
    with pytest.raises(FileExistsError):
        build_synthetic_checkpoint("openai/whisper-base", "tiny", tmp_path)


def test_builds_are_seeded(tmp_path):
    from safetensors.torch import load_file

    repo = "openai/whisper-base"
    build_synthetic_checkpoint(repo, "tiny", tmp_path / "a", seed=3)
    build_synthetic_checkpoint(repo, "tiny", tmp_path / "b", seed=3)
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
