"""Reading the user's files: audio to mono float32 at the model's rate, images to RGB.

Every problem with a file's content becomes :class:`UnreadableInput` with one line that
says what was expected, so the batch records it and goes on with the next file.
"""

from __future__ import annotations

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


class UnreadableInput(ValueError):
    """A file whose content cannot be used, with the reason in one line."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _decode_with_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def _decode_with_av(path: Path, sampling_rate: int) -> tuple[np.ndarray, int]:
    # PyAV carries its own FFmpeg build: AAC in m4a, and anything libsndfile rejects.
    import av

    pieces = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise UnreadableInput("the file has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    if not pieces:
        return np.zeros(0, dtype=np.float32), sampling_rate
    return np.concatenate(pieces).astype(np.float32), sampling_rate


def load_audio(path: str | Path, sampling_rate: int) -> np.ndarray:
    """The whole file as mono float32 samples at ``sampling_rate``.

    wav, flac, mp3 and ogg go through libsndfile (soundfile); m4a, and any file
    libsndfile cannot read, through FFmpeg (PyAV). Channels are averaged; the rate is
    converted with soxr (librosa).
    """
    path = Path(path)
    errors = []
    samples = rate = None
    if path.suffix.lower() != ".m4a":
        try:
            samples, rate = _decode_with_soundfile(path)
        except Exception as error:  # noqa: BLE001 - libsndfile raises several kinds
            errors.append(f"libsndfile: {_first_line(error)}")
    if samples is None:
        try:
            samples, rate = _decode_with_av(path, sampling_rate)
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


def split_windows(samples: np.ndarray, window: int) -> list[np.ndarray]:
    """Consecutive windows of ``window`` samples covering all of ``samples`` (the last
    one shorter); audio longer than a model's window is split, never cut off."""
    return [samples[start : start + window] for start in range(0, len(samples), window)]


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


def load_image(path: str | Path) -> Image.Image:
    """The image as RGB, upright (EXIF orientation applied), at most MAX_SIDE pixels a side.

    The first frame of an animation is used. JPEGs are decoded at a reduced scale when
    they are larger than needed, so a huge photo never has to fit in memory whole.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "truncated EXIF": the pixels still load
            image = Image.open(path)
            image.seek(0)
            if image.format == "JPEG":
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))
            width, height = image.size
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
    return image


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file's content (a BOM is dropped)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
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
