"""Test inputs made on the spot: speech from espeak-ng, pictures from Pillow.

espeak-ng comes as a wheel (``espeakng-loader``: the library and its voice data); it is
driven here through ctypes, so no system binary is needed.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

_AUDIO_OUTPUT_RETRIEVAL = 1  # samples go to a callback, nothing is played
_POS_CHARACTER = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_espeak = None


def _engine():
    global _espeak
    if _espeak is None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_RETRIEVAL, 0, data_parent, 0)
        if rate <= 0:
            raise RuntimeError("espeak-ng did not initialise")
        if lib.espeak_SetVoiceByName(b"en") != 0:
            raise RuntimeError("espeak-ng has no English voice")
        _espeak = (lib, rate)
    return _espeak


def speech(text: str) -> tuple[np.ndarray, int]:
    """``text`` spoken by espeak-ng: int16 mono samples and their rate (22050 Hz)."""
    lib, rate = _engine()
    chunks: list[np.ndarray] = []

    def collect(wav, count, events):
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    callback = _SYNTH_CALLBACK(collect)  # kept alive until synthesis ends
    lib.espeak_SetSynthCallback(callback)
    encoded = text.encode("utf-8")
    if lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, 0, None, None) != 0:
        raise RuntimeError("espeak-ng could not synthesise")
    lib.espeak_Synchronize()
    return np.concatenate(chunks), rate


def write_speech(path: Path, text: str, rate: int | None = None, channels: int = 1) -> Path:
    """Speech in any format soundfile writes (wav, flac, ogg, mp3), optionally resampled
    and with several channels."""
    samples, native = speech(text)
    audio = samples.astype(np.float32) / 32768
    if rate and rate != native:
        import librosa

        audio = librosa.resample(audio, orig_sr=native, target_sr=rate)
    audio = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    soundfile.write(str(path), audio, rate or native)
    return path


def write_m4a(path: Path, text: str) -> Path:
    """Speech as AAC in an MP4 container, encoded by PyAV's FFmpeg."""
    import av

    samples, rate = speech(text)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def picture(width: int = 320, height: int = 240, mode: str = "RGB") -> Image.Image:
    """A picture with a sky, a sun and a house, converted to ``mode``."""
    image = Image.new("RGB", (width, height), (120, 170, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 0.7, width, height), fill=(60, 150, 60))
    draw.ellipse((width * 0.7, height * 0.1, width * 0.85, height * 0.3), fill=(250, 220, 60))
    draw.rectangle((width * 0.2, height * 0.4, width * 0.45, height * 0.75), fill=(170, 60, 50))
    return image.convert(mode)
