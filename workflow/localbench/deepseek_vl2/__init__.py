"""DeepSeek-VL2 on transformers building blocks: the project's own implementation.

transformers has no DeepSeek-VL2 model and DeepSeek's package needs torch 2.2, so the
model is put together here from ``SiglipVisionModel`` (vision tower),
``DeepseekV2ForCausalLM`` (MoE language model) and a small projector, and loaded
from the published safetensors checkpoint by its own parameter names.

Modules: ``config`` (the published config checked against what is implemented),
``tiling`` (dynamic tiling and image-token counts), ``model`` (the network),
``weights`` (checkpoint key mapping and loading), ``processor`` (prompt format and
image preprocessing), ``synthetic`` (random-weight checkpoints in the published layout).
"""
