"""Where one Whisper request's time goes on the fast backend: the engine's request (as
the speech benchmark times it), then its parts one by one with a device sync between
(features, encoder, prefill, decode), then a decoder driven directly, then a profile of
one request. A diagnostic, not a benchmark; run on the machine in question:

    python benchmarks/speech_request_split.py [model folder] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

import torch  # noqa: E402
from localbench.engine.backends.whisper import WhisperFastDecoder  # noqa: E402
from localbench.engine.device import synchronize  # noqa: E402
from localbench.engine.inference import Request, open_engine  # noqa: E402
from localbench.engine.speech import SAMPLING_RATE, audio_windows  # noqa: E402
from localbench.measure.inputs import benchmark_audio  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="models/whisper-base")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    engine = open_engine(Path(args.model), "speech-recognition", "fast", device=args.device)
    device = engine.loaded.device
    request = Request(audio=benchmark_audio(10.0, SAMPLING_RATE))
    print("engine.run (the benchmark's request):")
    for _ in range(args.runs):
        out = engine.run([request], args.new_tokens, force_new_tokens=True)[0]
        print(f"  first token {ms(out.first_token - out.start)}  latency {ms(out.end - out.start)}")
    runner = engine.runner
    prompt = torch.tensor([runner.prompt], device=device)
    print("its parts, a device sync between each:")
    with torch.inference_mode():
        for _ in range(args.runs):
            pieces = audio_windows(request.audio, runner.extractor)
            synchronize(device)
            t0 = time.perf_counter()
            features = runner._features(pieces)
            synchronize(device)
            t1 = time.perf_counter()
            runner.decoder.encode(features)
            synchronize(device)
            t2 = time.perf_counter()
            run = runner.decoder.generate(prompt, args.new_tokens)
            print(
                f"  features {ms(t1 - t0)}  encoder {ms(t2 - t1)}  "
                f"prefill {ms(run.first_token - run.start)}  decode {ms(run.end - run.first_token)}"
            )
    print("a decoder of its own, driven directly:")
    decoder = WhisperFastDecoder(engine.loaded.model, max_len=prompt.shape[1] + args.new_tokens)
    decoder.prepare(prompt.shape[1])
    for _ in range(args.runs):
        synchronize(device)
        t0 = time.perf_counter()
        decoder.encode(runner._features(audio_windows(request.audio, runner.extractor)))
        run = decoder.generate(prompt, args.new_tokens)
        print(f"  first token {ms(run.first_token - t0)}  latency {ms(run.end - t0)}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        engine.run([request], args.new_tokens, force_new_tokens=True)
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if device.type == "cuda":
        print(profile.key_averages().table(sort_by="self_cuda_time_total", row_limit=10))


if __name__ == "__main__":
    main()
