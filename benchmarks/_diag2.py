import sys, time
sys.path.insert(0, "workflow")
from pathlib import Path
import torch
from localbench.engine.loading import load_model
from localbench.engine.device import RssSampler, use_threads
from localbench.measure.scenarios import speech_recognition
dev = torch.device("cuda")
loaded = load_model(Path("models/whisper-base"), "speech-recognition", torch.bfloat16, dev)
bench = {"audio_seconds": 10.0, "new_tokens": 32, "warmup_runs": 1, "repetitions": 3}
def show(tag, r):
    m = r["metrics"]
    print(tag, "ttft", round(m["ttft_ms"]["median"], 2), "lat", round(m["latency_ms"]["median"], 2), "min ttft", round(m["ttft_ms"]["min"], 2), flush=True)
for tag, sampler in (("plain", False), ("plain again", False), ("rss sampler", True), ("rss sampler again", True)):
    if sampler:
        with RssSampler():
            with torch.inference_mode():
                show(tag, speech_recognition.measure(loaded, bench, "fast"))
    else:
        with torch.inference_mode():
            show(tag, speech_recognition.measure(loaded, bench, "fast"))
use_threads(16)
with RssSampler():
    with torch.inference_mode():
        show("threads16+rss", speech_recognition.measure(loaded, bench, "fast"))
with torch.inference_mode():
    show("eager", speech_recognition.measure(loaded, bench, "eager"))
