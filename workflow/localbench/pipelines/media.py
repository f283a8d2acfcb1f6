"""Reading the user's files: audio to mono float32 at the model's rate, images to RGB.

Every problem with a file's content becomes :class:`UnreadableInput` with one line that
says what was expected, so the batch records it and goes on with the next file.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own decompression-bomb check would refuse a huge JPEG before draft() could
# shrink it while decoding; the limit below is checked after that, on what is decoded.
Image.MAX_IMAGE_PIXELS = None
MAX_DECODED_PIXELS = 250_000_000  # about 750 MB as RGB: larger images fail with a reason
# Every vision processor here resizes to a few hundred pixels; decoding to this side at
# most keeps a 100-megapixel photo's memory small.
MAX_SIDE = 2048
# Speech needs frequencies up to about 3.4 kHz (the telephone band, sampled at 8 kHz);
# below 4 kHz a recording holds nothing above 2 kHz, too little of any voice, and a
# header claiming a few hertz would stretch a handful of samples into seconds of noise.
MIN_SAMPLE_RATE = 4_000
# The highest rate audio interfaces record at; a larger one is a damaged header.
MAX_SAMPLE_RATE = 768_000
# Longer recordings are refused before decoding: a few kilobytes of FLAC can declare
# days of silence, which would not fit in memory once decoded (3 h of 16 kHz mono
# float32 is 0.7 GB).
MAX_AUDIO_SECONDS = 3 * 3600
# A text input or question file larger than this holds more than any configured
# model's context (32k tokens is about 128 KB of English); it is refused, not read.
MAX_TEXT_BYTES = 1 << 20


class UnreadableInput(ValueError):
    """A file whose content cannot be used, with the reason in one line."""


def require_regular_file(path: str | Path) -> None:
    """Raise UnreadableInput unless ``path`` is (or links to) a regular file: opening a
    FIFO or a device would block or never end, even if the folder listing found a file
    there when the workflow was planned."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise UnreadableInput(
            f"cannot be read ({error.strerror or type(error).__name__})"
        ) from None
    if not stat.S_ISREG(mode):
        raise UnreadableInput("not a regular file (a folder, FIFO, socket or device)")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _check_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UnreadableInput(
            f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz: "
            "not usable speech audio"
        )


def _check_duration(seconds: float) -> None:
    if seconds > MAX_AUDIO_SECONDS:
        raise UnreadableInput(
            f"audio is {seconds / 3600:.1f} hours long; at most "
            f"{MAX_AUDIO_SECONDS / 3600:.0f} are transcribed: split the file"
        )


def _decode_with_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    with soundfile.SoundFile(str(path)) as sound:
        # The header's rate and length are checked before a sample is decoded.
        _check_rate(int(sound.samplerate))
        _check_duration(sound.frames / sound.samplerate)
        data = sound.read(dtype="float32", always_2d=True)
        return data.mean(axis=1), int(sound.samplerate)


def _decode_with_av(path: Path, sampling_rate: int) -> tuple[np.ndarray, int]:
    # PyAV carries its own FFmpeg build: AAC in m4a, and anything libsndfile rejects.
    import av

    pieces = []
    decoded = 0
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise UnreadableInput("the file has no audio stream")
        if native_rate := container.streams.audio[0].rate:
            _check_rate(int(native_rate))
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
                decoded += pieces[-1].size
            # Counted while decoding: a container's declared duration may be absent or false.
            _check_duration(decoded / sampling_rate)
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    if not pieces:
        return np.zeros(0, dtype=np.float32), sampling_rate
    return np.concatenate(pieces).astype(np.float32), sampling_rate


def load_audio(path: str | Path, sampling_rate: int) -> np.ndarray:
    """The whole file as mono float32 samples at ``sampling_rate``.

    wav, flac, mp3 and ogg go through libsndfile (soundfile); m4a, and any file
    libsndfile cannot read, through FFmpeg (PyAV). Channels are averaged; the rate is
    converted with soxr (librosa). Rates outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE and
    audio longer than MAX_AUDIO_SECONDS are refused with the reason.
    """
    path = Path(path)
    require_regular_file(path)
    errors = []
    samples = rate = None
    if path.suffix.lower() != ".m4a":
        try:
            samples, rate = _decode_with_soundfile(path)
        except UnreadableInput:
            raise  # the file decodes, and is unusable for the reason given
        except Exception as error:  # noqa: BLE001 - libsndfile raises several kinds
            errors.append(f"libsndfile: {_first_line(error)}")
    if samples is None:
        try:
            samples, rate = _decode_with_av(path, sampling_rate)
        except UnreadableInput:
            raise
        except Exception as error:  # noqa: BLE001 - FFmpeg raises several kinds
            errors.append(f"ffmpeg: {_first_line(error)}")
    if samples is None:
        raise UnreadableInput(f"cannot decode as audio ({'; '.join(errors)})")
    if samples.size == 0:
        raise UnreadableInput("the audio holds no samples")
    if not np.isfinite(samples).all():
        raise UnreadableInput("the audio holds NaN or infinite samples")
    if rate != sampling_rate:
        import librosa

        samples = librosa.resample(samples, orig_sr=rate, target_sr=sampling_rate)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        # A palette may carry transparency; through RGBA it is flattened like alpha.
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        # Transparent pixels become white, as most viewers show them.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).astype(np.uint8), mode="L")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, F: Pillow's own conversions


def load_image(path: str | Path, min_side: int = 1) -> Image.Image:
    """The image as RGB, upright (EXIF orientation applied), at most MAX_SIDE pixels a side.

    The first frame of an animation is used. JPEGs are decoded at a reduced scale when
    they are larger than needed, so a huge photo never has to fit in memory whole. An
    image narrower or lower than ``min_side`` pixels (a model's patch) holds less than
    one patch of picture, so it is refused, before decoding and again at its final size
    (a very thin image shrinks below it).
    """
    require_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "truncated EXIF": the pixels still load
            image = Image.open(path)
            image.seek(0)
            if image.format == "JPEG":
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))
            width, height = image.size
            if min(width, height) < min_side:
                raise UnreadableInput(
                    f"image is {width}x{height} pixels; the model needs at least "
                    f"{min_side}x{min_side} (one patch of its vision encoder)"
                )
            if width * height > MAX_DECODED_PIXELS:
                raise UnreadableInput(
                    f"image is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
                    f"at most {MAX_DECODED_PIXELS / 1e6:.0f} are decoded"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
    except UnidentifiedImageError:
        raise UnreadableInput("not an image Pillow can read (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, UnreadableInput):
            raise
        raise UnreadableInput(f"cannot decode the image: {_first_line(error)}") from None
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    if min(image.size) < min_side:
        raise UnreadableInput(
            f"image is {width}x{height} pixels, too thin: at most {MAX_SIDE} pixels a side, "
            f"its short side is {min(image.size)}, below one patch of the model "
            f"({min_side} pixels)"
        )
    return image


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file's content (a BOM is dropped); at most MAX_TEXT_BYTES are read."""
    require_regular_file(path)
    with open(path, "rb") as handle:
        data = handle.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise UnreadableInput(f"text file larger than {MAX_TEXT_BYTES >> 20} MB; not read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnreadableInput(f"not UTF-8 text (byte {error.start} cannot be decoded)") from None


def read_questions(path: str | Path | None, default: list[str]) -> tuple[list[str], str]:
    """The questions for one image: the sidecar's non-blank lines, else ``default``; and
    where they came from."""
    if not path or not Path(path).exists():
        return list(default), "default questions"
    try:
        text = read_text_file(path)
    except UnreadableInput as error:
        raise UnreadableInput(f"question file {Path(path).name}: {error}") from None
    questions = [line.strip() for line in text.splitlines() if line.strip()]
    if not questions:
        return list(default), f"{Path(path).name} is empty: default questions"
    return questions, Path(path).name
