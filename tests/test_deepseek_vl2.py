"""DeepSeek-VL2 on the project's own implementation: tiling, key mapping, generation."""

from __future__ import annotations

import json

import pytest
import torch
from localbench import results
from localbench.deepseek_vl2 import synthetic, tiling
from localbench.deepseek_vl2.config import REPO, ConfigMismatch, resolve
from localbench.deepseek_vl2.loading import load
from localbench.deepseek_vl2.model import Projector
from localbench.engine.loading import load_model
from localbench.fetch import acquire
from localbench.fetch.architectures import architecture_for, count_parameters
from localbench.fetch.synthetic import build_synthetic_checkpoint
from localbench.measure.inputs import QUESTION, benchmark_image
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch.nn import functional as F

CPU = torch.device("cpu")
FULL = architecture_for(REPO, "full")
CANDIDATES = [tuple(pair) for pair in FULL["config"]["candidate_resolutions"]]
SIDE = tiling.tokens_per_side(384, 14, 2)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deepseek-vl2-tiny")
    build_synthetic_checkpoint(REPO, "tiny", folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tiny_folder):
    return load(tiny_folder, torch.float32, CPU)


# ---------------------------------------------------------------------------
# Tiling


@pytest.mark.parametrize(
    ("width_tiles", "height_tiles", "tokens"),
    [(1, 1, 421), (2, 2, 1023), (3, 3, 2017), (1, 9, 2101), (9, 1, 1989)],
)
def test_image_token_counts_follow_the_reference_formula(width_tiles, height_tiles, tokens):
    assert SIDE == 14  # 27 patches per side, padded to 28, merged 2x2
    assert tiling.image_token_count(tiling.Tiling(width_tiles, height_tiles, 384), SIDE) == tokens


def test_the_most_tokens_an_image_can_take_is_2101():
    counts = [
        tiling.image_token_count(tiling.Tiling(w // 384, h // 384, 384), SIDE)
        for w, h in CANDIDATES
    ]
    assert len(CANDIDATES) == 23 and max(counts) == 2101 and min(counts) == 421


@pytest.mark.parametrize(
    ("size", "grid"),
    [
        ((384, 384), (1, 1)),
        ((640, 480), (2, 2)),  # 768x768 keeps all 307,200 pixels with the least waste
        ((1000, 300), (3, 1)),
        ((100, 3000), (1, 8)),  # 1x8 already keeps every pixel, 1x9 wastes more
        ((100, 4000), (1, 9)),
        ((4000, 4000), (3, 3)),
    ],
)
def test_the_candidate_keeping_the_most_pixels_wins(size, grid):
    chosen = tiling.select_tiling(size, CANDIDATES, 384)
    assert (chosen.width_tiles, chosen.height_tiles) == grid


def test_views_are_the_global_view_then_tiles_row_by_row():
    image = Image.new("RGB", (768, 384), (255, 0, 0))
    image.paste((0, 0, 255), (384, 0, 768, 384))
    chosen = tiling.select_tiling(image.size, CANDIDATES, 384)
    views = tiling.tile_views(image, chosen)
    assert (chosen.width_tiles, chosen.height_tiles) == (2, 1) and len(views) == 3
    assert all(view.size == (384, 384) for view in views)
    # Global view: the whole image shrunk and centred on grey; then left tile, right tile.
    assert views[0].getpixel((0, 0)) == tiling.PAD_COLOR
    assert views[1].getpixel((100, 100)) == (255, 0, 0)
    assert views[2].getpixel((100, 100)) == (0, 0, 255)


def test_projector_merges_2x2_blocks_as_the_reference_unfold():
    config = resolve(FULL["config"])
    projector = Projector(config)
    features = torch.randn(2, 729, 1152)
    grid = features.transpose(1, 2).reshape(2, 1152, 27, 27)
    # The reference pads bottom/right to 28 and unfolds 2x2 blocks, stride 2.
    expected = F.unfold(F.pad(grid, (0, 1, 0, 1)), kernel_size=2, stride=2).transpose(1, 2)
    captured = {}
    projector.layers[0].register_forward_hook(lambda m, args, out: captured.update(x=args[0]))
    with torch.no_grad():
        out = projector(features)
    assert out.shape == (2, 196, 2048)
    torch.testing.assert_close(captured["x"], expected)


# ---------------------------------------------------------------------------
# Checkpoint layout and key mapping


def test_published_layout_has_the_closed_form_parameter_count():
    tensors = dict(synthetic.published_tensors(FULL["config"]))
    assert sum(synthetic._numel(shape) for shape in tensors.values()) == 16_148_349_504
    assert tensors["vision.pos_embed"] == [1, 729, 1152]
    assert tensors["vision.blocks.26.attn.qkv.weight"] == [3456, 1152]
    assert tensors["projector.layers.0.weight"] == [2048, 4608]
    assert tensors["language.model.layers.1.mlp.experts.63.gate_proj.weight"] == [1408, 2048]
    assert tensors["language.model.layers.0.mlp.gate_proj.weight"] == [10944, 2048]
    assert tensors["language.lm_head.weight"] == [102400, 2048]
    assert tensors["view_seperator"] == [2048]


def test_tiny_checkpoint_is_sharded_with_the_published_names(tiny_folder):
    index = json.loads((tiny_folder / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and all((tiny_folder / s).is_file() for s in shards)
    assert "vision.blocks.0.attn.qkv.weight" in index["weight_map"]
    assert "language.model.layers.1.mlp.experts.7.down_proj.weight" in index["weight_map"]
    assert "vision.attn_pool.latent" in index["weight_map"]
    stored = 0
    for shard in shards:
        with safe_open(tiny_folder / shard, framework="pt") as handle:
            stored += sum(
                torch.Size(handle.get_slice(k).get_shape()).numel() for k in handle.keys()
            )
    assert stored == count_parameters(REPO, "tiny")
    assert not any(p.suffix in (".bin", ".pt") for p in tiny_folder.iterdir())


def _published(folder, key):
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    with safe_open(folder / index["weight_map"][key], framework="pt") as handle:
        return handle.get_tensor(key).float()


def test_loading_maps_the_published_tensors_onto_transformers_modules(tiny_folder, tiny_model):
    model, _ = tiny_model
    layer = model.vision.get_submodule(
        "vision_model.encoder.layers.1"
        if hasattr(model.vision, "vision_model")
        else "encoder.layers.1"
    )
    qkv = _published(tiny_folder, "vision.blocks.1.attn.qkv.weight")
    torch.testing.assert_close(layer.self_attn.k_proj.weight, qkv.chunk(3)[1])
    pos = _published(tiny_folder, "vision.pos_embed")
    embeddings = model.vision.get_input_embeddings()
    assert embeddings.weight.shape[1] == 3
    experts = model.language.model.layers[1].mlp.experts
    gate = _published(tiny_folder, "language.model.layers.1.mlp.experts.5.gate_proj.weight")
    up = _published(tiny_folder, "language.model.layers.1.mlp.experts.5.up_proj.weight")
    torch.testing.assert_close(experts.gate_up_proj[5], torch.cat([gate, up]))
    down = _published(tiny_folder, "language.model.layers.1.mlp.experts.6.down_proj.weight")
    torch.testing.assert_close(experts.down_proj[6], down)
    position = [m for n, m in model.vision.named_modules() if n.endswith("position_embedding")]
    torch.testing.assert_close(position[0].weight, pos[0])
    torch.testing.assert_close(model.view_seperator, _published(tiny_folder, "view_seperator"))
    assert not any(p.is_meta for p in model.parameters())
    assert model.checkpoint_info["unused_tensors"][0].startswith("vision.attn_pool.")


def _copy_folder(src, dest):
    dest.mkdir()
    for path in src.iterdir():
        (dest / path.name).write_bytes(path.read_bytes())
    return dest


def test_a_config_that_disagrees_with_the_headers_fails_naming_both(tiny_folder, tmp_path):
    folder = _copy_folder(tiny_folder, tmp_path / "bad-vocab")
    config = json.loads((folder / "config.json").read_text())
    config["language_config"]["vocab_size"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigMismatch, match=r"embed_tokens.*language_config.vocab_size"):
        load(folder, torch.float32, CPU)


def test_unknown_and_missing_tensors_fail_with_their_names(tiny_folder, tmp_path):
    folder = _copy_folder(tiny_folder, tmp_path / "extra")
    save_file({"language.model.mystery": torch.zeros(2)}, folder / "extra.safetensors")
    with pytest.raises(ConfigMismatch, match="does not know, e.g. language.model.mystery"):
        load(folder, torch.float32, CPU)
    folder = _copy_folder(tiny_folder, tmp_path / "missing")
    config = json.loads((folder / "config.json").read_text())
    config["language_config"]["num_hidden_layers"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigMismatch, match="no tensor language.model.layers.2"):
        load(folder, torch.float32, CPU)


def test_unimplemented_config_values_are_named(tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    config["language_config"]["scoring_func"] = "sigmoid"
    with pytest.raises(ConfigMismatch, match="language_config.scoring_func='sigmoid'"):
        resolve(config, "x/config.json")
    config = json.loads((tiny_folder / "config.json").read_text())
    config["projector_config"]["projector_type"] = "linear"
    with pytest.raises(ConfigMismatch, match="projector_type='linear' is not implemented"):
        resolve(config)


# ---------------------------------------------------------------------------
# Prompt, embeddings, generation


def test_prompt_is_the_deepseek_conversation_with_one_slot_per_image_embedding(tiny_model):
    _, processor = tiny_model
    inputs = processor(Image.new("RGB", (384, 384), (10, 200, 30)), QUESTION)
    ids = inputs.input_ids[0].tolist()
    tokenizer = processor.tokenizer
    assert inputs.image_tokens == 421 and ids.count(processor.image_token_id) == 421
    assert ids[0] == tokenizer.bos_token_id
    text = tokenizer.decode(ids[1:]).replace("<image>", "")
    assert text == f"<|User|>: \n{QUESTION}\n\n<|Assistant|>:"
    assert tuple(inputs.pixel_values.shape) == (2, 3, 384, 384)
    assert float(inputs.pixel_values.min()) >= -1 and float(inputs.pixel_values.max()) <= 1


def test_image_embeddings_end_every_row_with_a_newline(tiny_model):
    model, processor = tiny_model
    inputs = processor(benchmark_image(640, 480), QUESTION)  # 2x2 tiles
    with torch.no_grad():
        embedded = model.image_embeddings(inputs.pixel_values, inputs.tiling)
    assert embedded.shape[0] == inputs.image_tokens == 1023
    newline = (embedded == model.image_newline).all(dim=1).nonzero().flatten().tolist()
    separator = (embedded == model.view_seperator).all(dim=1).nonzero().flatten().tolist()
    global_rows = [15 * r + 14 for r in range(14)]
    local_rows = [211 + 29 * r + 28 for r in range(28)]
    assert newline == global_rows + local_rows
    assert separator == [210]


def test_generation_runs_end_to_end_through_load_model(tiny_folder):
    loaded = load_model(tiny_folder, "multimodal", torch.float32, CPU)
    inputs = loaded.processor(benchmark_image(320, 240), QUESTION)
    with torch.inference_mode():
        embeds = loaded.model.embed(
            inputs.input_ids, loaded.processor.image_token_id, inputs.pixel_values, inputs.tiling
        )
        out = loaded.model.language.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            max_new_tokens=4,
            min_new_tokens=4,
            do_sample=False,
            eos_token_id=loaded.processor.tokenizer.eos_token_id,
            pad_token_id=loaded.processor.tokenizer.pad_token_id,
        )
    assert out.shape[-1] == 4
    assert torch.isfinite(embeds).all()
    assert isinstance(loaded.processor.decode(out[0]), str)


def test_full_size_is_skipped_before_anything_is_built(tmp_path):
    settings = {
        "name": "deepseek-vl2-small",
        "repo": REPO,
        "revision": "main",
        "task": "multimodal",
        "size": "full",
        "weights": "synthetic",
        "device": "cpu",
        "memory_headroom_gb": 100_000,
        "allow_pickle": False,
    }
    manifest = acquire.acquire(settings, tmp_path / "deepseek-vl2-small")
    assert manifest["status"] == results.SKIPPED
    assert manifest["reason"].startswith("needs ~100036 GB")
    assert manifest["parameters"] == 16_148_349_504
    assert not (tmp_path / "deepseek-vl2-small").exists()
