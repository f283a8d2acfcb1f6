"""What is measured for each task. Each scenario takes a loaded model, the benchmark
settings and the backend (eager or fast; a model without a fast decoder runs eager and
its result says so) and returns its metrics; none of them loads models or writes files."""

from __future__ import annotations

from localbench.measure.scenarios import (
    image_to_text,
    multimodal,
    speech_recognition,
    text_generation,
)

SCENARIOS = {
    "text-generation": text_generation.measure,
    "image-captioning": image_to_text.measure,
    "visual-question-answering": image_to_text.measure,
    "speech-recognition": speech_recognition.measure,
    "multimodal": multimodal.measure,
}
