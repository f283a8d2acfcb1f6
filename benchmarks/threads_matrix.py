"""First-token times of Whisper and BLIP (fast backend) under OpenMP/torch thread settings.

Each setting runs in a process of its own, since OpenMP reads its variables once, when
torch is imported: ``OMP_NUM_THREADS`` at the start (unset, or a count), then
``torch.set_num_threads(n)`` as a job does, then the speech and captioning scenarios
(1 warm-up, 3 measured runs) and the CPU halves of their requests timed alone (Whisper's
feature extraction, BLIP's image preprocessing). A diagnostic for a CUDA machine
(docs/benchmarks/2026-12-03-cuda-h200-engine-before-after.md):

    python benchmarks/threads_matrix.py [--whisper models/whisper-base] [--blip models/blip-base]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (OMP_NUM_THREADS at start or None, torch.set_num_threads or None, extra environment)
SETTINGS = [
    (None, None, {}),
    ("1", "16", {}),
    ("16", "16", {}),
    ("1", "1", {}),
    ("4", "4", {}),
    ("16", "16", {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("1", "16", {}),
    ("16", "16", {}),
]
BENCH = {"audio_seconds": 10.0, "image_size": [640, 480], "warmup_runs": 1, "repetitions": 3}


def child(args) -> None:
    sys.path.insert(0, str(ROOT / "workflow"))
    import torch
    from localbench.engine.device import synchronize
    from localbench.engine.inference import Engine
    from localbench.engine.loading import load_model
    from localbench.engine.speech import SAMPLING_RATE, audio_windows
    from localbench.measure.inputs import benchmark_audio, benchmark_image
    from localbench.measure.scenarios import image_to_text, speech_recognition

    if args.set_threads:
        torch.set_num_threads(int(args.set_threads))
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result = {"torch_threads": torch.get_num_threads()}
    with torch.inference_mode():
        whisper = load_model(Path(args.whisper), "speech-recognition", dtype, device)
        measured = speech_recognition.measure(whisper, {**BENCH, "new_tokens": 32}, "fast")
        result["whisper_ttft_ms"] = measured["metrics"]["ttft_ms"]["values"]
        engine = Engine(whisper, "fast", max_batch=1)
        audio = benchmark_audio(10.0, SAMPLING_RATE)
        times = []
        for _ in range(5):
            synchronize(device)
            start = time.perf_counter()
            engine.runner._features(audio_windows(audio, engine.runner.extractor))
            synchronize(device)
            times.append((time.perf_counter() - start) * 1e3)
        result["whisper_features_ms"] = times
        blip = load_model(Path(args.blip), "image-captioning", dtype, device)
        measured = image_to_text.measure(blip, {**BENCH, "new_tokens": 20}, "fast")
        result["blip_ttft_ms"] = measured["metrics"]["ttft_ms"]["values"]
        processor = blip.processor
        image = benchmark_image(640, 480)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            processor(images=image, return_tensors="pt")
            times.append((time.perf_counter() - start) * 1e3)
        result["blip_preprocess_ms"] = times
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whisper", default="models/whisper-base")
    parser.add_argument("--blip", default="models/blip-base")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--settings", type=int, default=len(SETTINGS), help="the first N")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--set-threads", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    for omp, threads, extra in SETTINGS[: args.settings]:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env.update(extra)
        if omp is not None:
            env["OMP_NUM_THREADS"] = omp
        command = [sys.executable, __file__, "--child", "--whisper", args.whisper]
        command += ["--blip", args.blip, "--device", args.device]
        if threads:
            command += ["--set-threads", threads]
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [x for x in completed.stdout.splitlines() if x.startswith("RESULT ")]
        tag = f"OMP_NUM_THREADS={omp} set_num_threads={threads} {extra or ''}"
        if not lines:
            print(tag, "FAILED", completed.stderr[-2000:], flush=True)
            continue
        result = json.loads(lines[-1][7:])
        print(
            tag,
            " ".join(
                f"{k}={[round(v, 1) for v in val] if isinstance(val, list) else val}"
                for k, val in result.items()
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
