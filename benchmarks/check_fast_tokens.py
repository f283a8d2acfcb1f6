"""Check on a GPU that the fast backend's greedy tokens equal eager generate()'s.

Runs on the checkpoints the pipeline fetched (models/<name>/), in float32 so that the
comparison tests the decoder, not bfloat16 rounding: random-weight models have nearly
flat logits, where any rounding difference flips the argmax.

    python benchmarks/check_fast_tokens.py qwen2.5-1.5b-instruct llama-3.2-3b-instruct
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

from localbench.engine.backends.fast import FastDecoder  # noqa: E402
from localbench.engine.generation import greedy_fixed_length  # noqa: E402
from localbench.engine.loading import load_model
from localbench.measure.inputs import prompt_ids  # noqa: E402

PROMPT_TOKENS, NEW_TOKENS = 128, 256


def check(name: str) -> dict:
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    loaded = load_model(Path("models") / name, "text-generation", torch.float32, device)
    input_ids = prompt_ids(loaded.processor, PROMPT_TOKENS).to(device)
    eager = loaded.model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        **greedy_fixed_length(NEW_TOKENS),
        pad_token_id=0,
    )[0, PROMPT_TOKENS:].tolist()
    fast = FastDecoder(loaded.model, PROMPT_TOKENS + NEW_TOKENS).generate(input_ids, NEW_TOKENS)
    same = next(
        (i for i, (a, b) in enumerate(zip(eager, fast.tokens, strict=True)) if a != b), len(eager)
    )
    return {"model": name, "dtype": "float32", "equal": eager == fast.tokens, "equal_prefix": same}


if __name__ == "__main__":
    for model_name in sys.argv[1:]:
        print(json.dumps(check(model_name)), flush=True)
