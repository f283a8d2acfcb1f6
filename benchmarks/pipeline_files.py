"""Input files for the pipeline benchmark: voice notes and photos, made on the spot.

    python benchmarks/pipeline_files.py --audio inputs/audio --images inputs/images --count 100

Writes ``--count`` voice notes (``note-001.wav`` ...: 16 kHz mono 16-bit WAV, about 8 s
of English speech from espeak-ng, different sentences in each) and ``--count`` photos
(``photo-001.jpg`` ...: 640x480 JPEG, a different scene in each), the same bytes for the
same ``--seed``. The speech comes from the test helpers (tests/media_files.py).

The notes are written at Whisper's 16 kHz, so neither our pipeline nor the peer resamples
(the GPU machine has no librosa); espeak-ng's 22050 Hz is converted here with scipy's
polyphase filter (linear interpolation without scipy). Needs numpy, Pillow, soundfile
and espeakng-loader only. On a
machine without a package index, carry the wheels in the git-ignored ``.whl/``:

    pip download --no-deps espeakng-loader -d .whl
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        -d .whl soundfile cffi pycparser

(espeakng-loader 0.2.4 is one 10 MB wheel, py3-none-manylinux x86-64: the espeak-ng
library and its voice data; soundfile's wheel carries libsndfile.)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import media_files  # noqa: E402 - the test helpers, after the path above

SAMPLING_RATE = 16_000  # Whisper's
TARGET_SECONDS = 8.0
PAUSE_SECONDS = 0.3
SLACK_SECONDS = 0.6
CLOSER_GAP_SECONDS = 2.5  # what is left to fill when a closer is spoken
IMAGE_SIZE = (640, 480)

OPENERS = [
    "Quick note to self.",
    "Okay, recording this before I forget.",
    "Hi, it's me again with a few things.",
    "Reminder for later today.",
    "Just a short voice memo.",
    "Note from the car on the way home.",
]
CLOSERS = [
    "Thanks.",
    "That's all.",
    "That's all for now.",
    "Okay, that's it, bye.",
    "Talk to you later, bye for now.",
    "Don't forget any of this, please.",
    "Right, that's everything I wanted to say.",
]
PEOPLE = ["Anna", "the plumber", "my sister", "Doctor Patel", "the landlord", "Marco", "the school"]
ERRANDS = [
    "call {person} about the leaking kitchen tap",
    "pay the electricity bill",
    "book a table for four at the Italian place",
    "return the library books",
    "pick up the dry cleaning",
    "order new ink for the printer",
    "send {person} the photos from the weekend",
    "renew the car insurance",
    "buy batteries for the smoke alarm",
    "water the tomatoes on the balcony",
]
WHEN = [
    "on Monday morning",
    "before Friday",
    "right after lunch",
    "tomorrow at nine",
    "by the end of the month",
    "this evening",
    "on the way to work",
]
PLACES = ["the office", "the café on the corner", "the train station", "the garden centre"]
ITEMS = ["chairs", "plates", "blankets", "candles", "bottles of water", "name tags"]
EVENTS = ["birthday party", "team lunch", "school fair", "camping trip", "book club"]
THINGS = [
    "the spare key is under the blue flower pot",
    "the meeting with {person} moved to three o'clock at {place}",
    "we need {count} more {item} for the {event}",
    "the parcel should arrive {when}",
    "the train leaves at half past seven from platform {count}",
    "{person} said the report is due {when}",
]


def sentence(rng: random.Random) -> str:
    """One clause of a voice note, filled from the lists above."""
    if rng.random() < 0.5:
        text = f"Remember to {rng.choice(ERRANDS)} {rng.choice(WHEN)}."
    else:
        text = rng.choice(THINGS) + "."
    text = text.format(
        person=rng.choice(PEOPLE),
        place=rng.choice(PLACES),
        when=rng.choice(WHEN),
        count=rng.choice(["two", "three", "five", "eight", "twelve"]),
        item=rng.choice(ITEMS),
        event=rng.choice(EVENTS),
    )
    return text[0].upper() + text[1:]


def to_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """float32 samples in [-1, 1] at SAMPLING_RATE, from espeak-ng's int16 at ``rate``."""
    audio = samples.astype(np.float32) / 32768
    if rate != SAMPLING_RATE:
        common = math.gcd(rate, SAMPLING_RATE)
        try:  # scipy comes with librosa, and is on the GPU machine
            from scipy.signal import resample_poly
        except ImportError:  # linear interpolation: speech stays intelligible
            times = np.arange(round(len(audio) * SAMPLING_RATE / rate)) * (rate / SAMPLING_RATE)
            audio = np.interp(times, np.arange(len(audio)), audio)
        else:
            audio = resample_poly(audio, SAMPLING_RATE // common, rate // common)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def voice_note(rng: random.Random) -> tuple[np.ndarray, str]:
    """About TARGET_SECONDS of speech: an opener, then clauses with a short pause between
    them; a clause that would run past the target by more than SLACK_SECONDS is swapped
    for another (a few tries); the last gap is filled with a short closing phrase."""
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLING_RATE), dtype=np.float32)
    opener = rng.choice(OPENERS)
    pieces, texts = [to_rate(*media_files.speech(opener))], [opener]
    seconds = len(pieces[0]) / SAMPLING_RATE
    tries = 0
    while seconds < TARGET_SECONDS - SLACK_SECONDS:
        short = TARGET_SECONDS - seconds < CLOSER_GAP_SECONDS
        clause = rng.choice(CLOSERS) if short else sentence(rng)
        audio = to_rate(*media_files.speech(clause))
        longer = seconds + PAUSE_SECONDS + len(audio) / SAMPLING_RATE
        tries += 1
        if longer > TARGET_SECONDS + SLACK_SECONDS and tries < 30:
            continue
        pieces += [pause, audio]
        texts.append(clause)
        seconds = longer
    return np.concatenate(pieces), " ".join(texts)


def _colour(rng: random.Random, low: int = 0, high: int = 255) -> tuple[int, int, int]:
    return tuple(rng.randint(low, high) for _ in range(3))


def _sky(draw: ImageDraw.ImageDraw, rng: random.Random, horizon: int, width: int) -> None:
    top, bottom = _colour(rng, 60, 200), _colour(rng, 150, 255)
    for y in range(horizon):
        t = y / max(1, horizon - 1)
        draw.line(
            (0, y, width, y),
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )


def _landscape(draw, rng, width, height) -> None:
    horizon = rng.randint(height // 3, height * 2 // 3)
    _sky(draw, rng, horizon, width)
    x, y, r = rng.randint(40, width - 40), rng.randint(20, horizon - 20), rng.randint(15, 45)
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(250, rng.randint(180, 240), 60))
    for _ in range(rng.randint(1, 3)):  # hills
        cx, w = rng.randint(0, width), rng.randint(200, 500)
        h = rng.randint(40, 140)
        draw.ellipse((cx - w, horizon - h, cx + w, horizon + h), fill=_colour(rng, 30, 140))
    draw.rectangle(
        (0, horizon, width, height), fill=(rng.randint(30, 90), rng.randint(110, 180), 50)
    )
    for _ in range(rng.randint(0, 6)):  # trees
        tx, ty = rng.randint(0, width), rng.randint(horizon, height - 20)
        s = rng.randint(15, 50)
        draw.rectangle((tx - s // 6, ty - s, tx + s // 6, ty), fill=(90, 60, 30))
        draw.ellipse(
            (tx - s // 2, ty - 2 * s, tx + s // 2, ty - s // 2), fill=_colour(rng, 20, 120)
        )
    if rng.random() < 0.7:  # a house
        hx, hy = rng.randint(40, width - 200), rng.randint(horizon - 20, height - 140)
        hw, hh = rng.randint(100, 180), rng.randint(70, 120)
        draw.rectangle((hx, hy, hx + hw, hy + hh), fill=_colour(rng, 120, 230))
        draw.polygon(
            [(hx - 10, hy), (hx + hw + 10, hy), (hx + hw // 2, hy - hh // 2)],
            fill=_colour(rng, 80, 180),
        )
        draw.rectangle(
            (hx + hw // 2 - 12, hy + hh - 40, hx + hw // 2 + 12, hy + hh), fill=(70, 40, 20)
        )


def _city(draw, rng, width, height) -> None:
    street = rng.randint(height * 3 // 4, height - 30)
    _sky(draw, rng, street, width)
    x = 0
    while x < width:
        w, h = rng.randint(50, 130), rng.randint(120, street - 20)
        draw.rectangle((x, street - h, x + w, street), fill=_colour(rng, 60, 200))
        lit = _colour(rng, 200, 255)
        for wy in range(street - h + 12, street - 20, 24):
            for wx in range(x + 8, x + w - 14, 20):
                if rng.random() < 0.6:
                    draw.rectangle((wx, wy, wx + 10, wy + 12), fill=lit)
        x += w + rng.randint(0, 12)
    draw.rectangle((0, street, width, height), fill=(rng.randint(50, 90),) * 3)
    for _ in range(rng.randint(0, 4)):  # cars
        cx = rng.randint(0, width - 80)
        draw.rounded_rectangle((cx, street + 5, cx + 70, street + 25), 6, fill=_colour(rng))


def _beach(draw, rng, width, height) -> None:
    horizon = rng.randint(height // 3, height // 2)
    _sky(draw, rng, horizon, width)
    shore = rng.randint(horizon + 60, height - 60)
    draw.rectangle(
        (0, horizon, width, shore),
        fill=(rng.randint(10, 60), rng.randint(90, 150), rng.randint(150, 220)),
    )
    draw.rectangle(
        (0, shore, width, height), fill=(rng.randint(210, 240), rng.randint(190, 215), 140)
    )
    for _ in range(rng.randint(0, 3)):  # boats
        bx, by = rng.randint(20, width - 80), rng.randint(horizon + 10, shore - 20)
        draw.polygon(
            [(bx, by), (bx + 60, by), (bx + 50, by + 12), (bx + 10, by + 12)], fill=_colour(rng)
        )
        draw.polygon(
            [(bx + 30, by - 40), (bx + 30, by - 2), (bx + 55, by - 2)], fill=(245, 245, 245)
        )
    for _ in range(rng.randint(0, 5)):  # umbrellas
        ux, uy = rng.randint(20, width - 20), rng.randint(shore + 10, height - 10)
        draw.line((ux, uy, ux, uy - 45), fill=(80, 80, 80), width=3)
        draw.pieslice((ux - 30, uy - 70, ux + 30, uy - 20), 180, 360, fill=_colour(rng, 100))


def _table(draw, rng, width, height) -> None:
    edge = rng.randint(height // 2, height * 2 // 3)
    draw.rectangle((0, 0, width, edge), fill=_colour(rng, 120, 240))
    draw.rectangle((0, edge, width, height), fill=(rng.randint(110, 170), rng.randint(70, 110), 40))
    for _ in range(rng.randint(2, 7)):  # fruit, cups, a vase
        x, r = rng.randint(60, width - 60), rng.randint(20, 60)
        y = rng.randint(edge, height - r)
        if rng.random() < 0.6:
            draw.ellipse((x - r, y - 2 * r, x + r, y), fill=_colour(rng, 40))
        else:
            draw.rectangle((x - r // 2, y - 2 * r, x + r // 2, y), fill=_colour(rng, 40))
            draw.ellipse(
                (x - r // 2, y - 2 * r - 8, x + r // 2, y - 2 * r + 8), fill=_colour(rng, 40)
            )


SCENES = (_landscape, _city, _beach, _table)


def photo(rng: random.Random, index: int) -> Image.Image:
    """A 640x480 scene (landscape, street, beach or table top), camera-like noise added."""
    width, height = IMAGE_SIZE
    image = Image.new("RGB", IMAGE_SIZE)
    SCENES[index % len(SCENES)](ImageDraw.Draw(image), rng, width, height)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, (height, width, 3))
    pixels = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, help="folder for the voice notes")
    parser.add_argument("--images", type=Path, help="folder for the photos")
    parser.add_argument("--count", type=int, default=100, help="files of each kind (100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--texts", type=Path, help="also write the spoken texts here (JSON)")
    args = parser.parse_args(argv)
    if not (args.audio or args.images):
        parser.error("give --audio, --images or both")
    digits = max(3, len(str(args.count)))
    spoken = {}
    if args.audio:
        args.audio.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"audio-{args.seed}")
        seconds = []
        for index in range(1, args.count + 1):
            name = f"note-{index:0{digits}d}.wav"
            audio, text = voice_note(rng)
            soundfile.write(str(args.audio / name), audio, SAMPLING_RATE, subtype="PCM_16")
            spoken[name] = text
            seconds.append(len(audio) / SAMPLING_RATE)
        print(
            f"{args.count} voice notes in {args.audio}/: {min(seconds):.1f}-{max(seconds):.1f} s, "
            f"mean {sum(seconds) / len(seconds):.1f} s, {SAMPLING_RATE} Hz"
        )
    if args.images:
        args.images.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"images-{args.seed}")
        for index in range(1, args.count + 1):
            path = args.images / f"photo-{index:0{digits}d}.jpg"
            photo(rng, index - 1).save(path, quality=90)
        print(f"{args.count} photos in {args.images}/: {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEG")
    if args.texts and spoken:
        args.texts.parent.mkdir(parents=True, exist_ok=True)
        args.texts.write_text(json.dumps(spoken, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
