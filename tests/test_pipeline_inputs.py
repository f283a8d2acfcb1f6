"""Reading the user's files and planning batches, on real files made with espeak-ng,
soundfile, PyAV and Pillow (no workflow run)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile
from localbench.engine.speech import audio_windows
from localbench.pipelines import media
from localbench.pipelines.plan import name_problem, output_path, scan_inputs, stable_batches
from localbench.pipelines.report import md_block
from media_files import picture, speech, write_m4a, write_speech
from PIL import Image
from transformers import WhisperFeatureExtractor


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [("a.wav", None, 1), ("b.flac", 44100, 2), ("c.ogg", 48000, 1), ("d.mp3", 44100, 2)],
)
def test_audio_of_any_format_rate_and_channels_becomes_16k_mono(tmp_path, name, rate, channels):
    samples, native = speech("Testing one two three.")
    path = write_speech(tmp_path / name, "Testing one two three.", rate, channels)
    audio = media.load_audio(path, 16_000)
    assert audio.ndim == 1 and audio.dtype == np.float32
    # mp3 encoders pad a few milliseconds; the length is otherwise the speech's own.
    assert abs(len(audio) / 16_000 - len(samples) / native) < 0.1
    assert np.abs(audio).max() > 0.05  # speech, not silence


def test_m4a_decodes_through_ffmpeg(tmp_path):
    samples, native = speech("An idea for the garden.")
    audio = media.load_audio(write_m4a(tmp_path / "idea.m4a", "An idea for the garden."), 16_000)
    assert abs(len(audio) / 16_000 - len(samples) / native) < 0.1


def test_long_audio_is_split_into_windows_not_truncated(tmp_path):
    path = tmp_path / "long.wav"
    soundfile.write(str(path), np.full(8_000 * 65, 0.1, dtype=np.float32), 8_000)
    audio = media.load_audio(path, 16_000)
    windows = audio_windows(audio, WhisperFeatureExtractor())  # Whisper's 30 s windows
    assert [len(w) for w in windows] == [480_000, 480_000, 80_000]


def test_corrupt_and_silent_files_fail_with_a_reason(tmp_path):
    (tmp_path / "bad.ogg").write_bytes(b"OggS but not really")
    with pytest.raises(media.UnreadableInput, match="cannot decode as audio"):
        media.load_audio(tmp_path / "bad.ogg", 16_000)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(media.UnreadableInput, match="image"):
        media.load_image(tmp_path / "bad.jpg")


def test_exif_orientation_is_applied(tmp_path):
    image = picture(40, 20)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert media.load_image(tmp_path / "rotated.jpg").size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_every_pixel_mode_becomes_rgb(tmp_path, mode):
    suffix = "tiff" if mode in ("CMYK", "I;16", "LA") else "png"
    picture(64, 48, mode="RGBA" if mode == "LA" else mode).convert(mode).save(
        tmp_path / f"x.{suffix}"
    )
    image = media.load_image(tmp_path / f"x.{suffix}")
    assert image.mode == "RGB" and image.size == (64, 48)


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.webp", lossless=True)
    assert media.load_image(tmp_path / "clear.webp").getpixel((4, 4)) == (255, 255, 255)


def test_an_animation_gives_its_first_frame(tmp_path):
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    red.save(tmp_path / "anim.gif", save_all=True, append_images=[blue])
    assert media.load_image(tmp_path / "anim.gif").getpixel((8, 8)) == (255, 0, 0)


def test_a_huge_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    Image.new("RGB", (12_000, 9_000), (90, 120, 200)).save(tmp_path / "huge.jpg", quality=50)
    image = media.load_image(tmp_path / "huge.jpg")
    assert max(image.size) <= media.MAX_SIDE and image.size[0] > image.size[1]


def test_adding_a_file_changes_one_batch_only():
    names = [f"memo {i:03d}.wav" for i in range(300)]
    before = stable_batches(names, 16)
    assert 8 < len(before) < 40 and sorted(n for b in before for n in b.names) == sorted(names)
    after = stable_batches([*names, "memo 150b.wav"], 16)
    changed = set(after) - set(before)
    assert 1 <= len(changed) <= 2  # the batch it joined, or that batch split in two
    assert len(set(before) - set(after)) == 1


def test_file_names_cannot_escape_or_break_the_workflow(tmp_path):
    assert name_problem("réunion du 3.v2 final.m4a") is None
    assert "UTF-8" in name_problem("caf\udce9.wav")  # a Latin-1 byte, as os.listdir gives it
    assert "control" in name_problem("two\nlines.wav")
    for bad in ("../x", ".hidden", ".."):
        with pytest.raises(ValueError, match="would leave"):
            output_path(tmp_path, bad, "txt")
    os.close(os.open(bytes(tmp_path) + b"/caf\xe9.wav", os.O_CREAT | os.O_WRONLY))
    (tmp_path / "ok.wav").write_bytes(b"RIFF")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    listing = scan_inputs(str(tmp_path), "audio")
    assert listing.usable == ["ok.wav"]
    assert [r["name"] for r in listing.rejected] == ["caf\\xe9.wav"]
    assert "not valid UTF-8" in listing.rejected[0]["reason"]


def test_model_output_cannot_break_the_report():
    block = md_block("# Heading\n| a | b |\n[link](http://x) <script>\n\n> quote")
    lines = block.splitlines()
    assert all(line.startswith("> ") for line in lines) and len(lines) == 4
    assert "\\#" in lines[0] and "\\|" in lines[1] and "&lt;script&gt;" in lines[2]
