"""One stage on one file, as the inference engine sees it: the file's requests, and the
file's text from their outputs. Pure pieces: the engine (:mod:`localbench.engine.inference`)
runs the requests, :mod:`localbench.pipelines.batch` a job's files together.

Speech: one request of the whole recording (the engine cuts it into the model's windows).
Captioning: one request of the image. Visual question answering: one request per
question about the image, answers joined as ``Q:``/``A:`` lines. Text generation: one
request of the stage's prompt around the previous stage's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from localbench.engine.requests import Output, Request
from localbench.engine.vision import patch_size
from localbench.pipelines import media

# What a runner reports about the batch a request ran in; the file's record keeps its own
# fields for those (decode_batch, decode_batch_rule).
BATCH_DETAILS = ("batch", "batch_rule")


@dataclass
class FileRequests:
    """What one file asks of the stage's model, and what its record says of its input."""

    requests: list[Request]
    details: dict = field(default_factory=dict)
    questions: list[str] = field(default_factory=list)  # visual question answering


def sampling_rate(loaded) -> int:
    """The rate, in Hz, the speech model's feature extractor reads (Whisper: 16 kHz)."""
    return int(loaded.processor.feature_extractor.sampling_rate)


def build_prompt(template: str, previous: str, file_name: str) -> str:
    """The stage's prompt: ``{previous}`` and ``{file}`` filled in, other text verbatim
    (braces in a template need no escaping)."""
    return template.replace("{file}", file_name).replace("{previous}", previous)


def file_requests(
    loaded, task: str, settings: dict, source: str, file_name: str, questions: str | None
) -> FileRequests:
    """The requests of one file (``source``: the input file, or the previous stage's
    output for a text stage). Raises :class:`media.UnreadableInput` for a file that cannot
    be used, with the reason."""
    if task == "speech-recognition":
        rate = sampling_rate(loaded)
        samples = media.load_audio(source, rate)
        return FileRequests(
            [Request(audio=samples)], {"audio_seconds": round(len(samples) / rate, 3)}
        )
    if task == "image-captioning":
        image = media.load_image(source, min_side=patch_size(loaded))
        return FileRequests([Request(image=image)], {"image_size": list(image.size)})
    if task == "visual-question-answering":
        asked, origin = media.read_questions(questions, settings["questions"])
        image = media.load_image(source, min_side=patch_size(loaded))
        return FileRequests(
            [Request(image=image, text=question) for question in asked],
            {"image_size": list(image.size), "questions_from": origin},
            asked,
        )
    previous = media.read_text_file(source)
    return FileRequests([Request(text=build_prompt(settings["prompt"], previous, file_name))])


def file_text(work: FileRequests, outputs: list[Output]) -> tuple[str, dict]:
    """The file's output text and what its record adds: each question's answer, or the
    runner's details of a single request (a recording's windows)."""
    if work.questions:
        answers = [output.text for output in outputs]
        pairs = list(zip(work.questions, answers, strict=True))
        text = "\n\n".join(f"Q: {question}\nA: {answer}" for question, answer in pairs)
        return text, {"answers": [{"question": q, "answer": a} for q, a in pairs]}
    (output,) = outputs
    details = {
        key: value
        for key, value in output.details.items()
        if key not in BATCH_DETAILS and isinstance(value, (bool, int, float, str))
    }
    return output.text, details
