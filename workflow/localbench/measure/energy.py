"""Energy of the measured runs: one counter interface, one implementation per source.

A counter is read before the measured runs, between them and after them, never inside a
timed run: reading it cannot perturb a timing. Sources:

- NVIDIA GPUs: NVML's total energy of the board (``nvmlDeviceGetTotalEnergyConsumption``,
  millijoules since the driver loaded; Volta and newer).
- Linux CPUs: RAPL through ``/sys/class/powercap/intel-rapl*`` (AMD's too, under the same
  name): the packages' ``energy_uj`` counters and their DRAM domains, each wrapping at its
  ``max_energy_range_uj``. Readable by root only on Linux 5.10 and later.
- Anything else (Apple silicon, whose counters need root through ``powermetrics``; a VM
  without powercap): ``not available``, with the reason.

The warm-up rule measures the idle power of the same counter (:func:`idle_power`); each
result states joules per generated token and per request above that idle power.
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from localbench.measure.observers import RunObserver
from localbench.results import MEASURED, NOT_AVAILABLE

if TYPE_CHECKING:
    from localbench.engine.generation import Run

POWERCAP = Path("/sys/class/powercap")
# Idle power is read over this long a pause in the warm-up rule. NVML's counter advances
# in steps (every 100 ms on an H200 with driver 580), RAPL's about every millisecond.
IDLE_SECONDS = 3.0
# Under this, a window's joules can be off by a tenth from NVML's 100 ms steps alone.
SHORT_WINDOW_S = 2.0


class EnergyUnavailable(Exception):
    """No energy counter can be read here; the message says why, in one line."""


class EnergyCounter(ABC):
    """A cumulative energy counter: read it twice, get the joules in between."""

    source: str  # "nvml", "rapl"
    domain: str  # what it covers, in words

    @abstractmethod
    def read(self) -> object:
        """The counter now (opaque: what :meth:`joules_between` takes)."""

    @abstractmethod
    def joules_between(self, before: object, after: object) -> float:
        """Joules from reading ``before`` to reading ``after`` (at most one wraparound)."""


class NvmlCounter(EnergyCounter):
    """The board energy of one NVIDIA GPU, through NVML (64-bit millijoules: no wrap)."""

    source = "nvml"
    domain = "GPU board (NVML total energy consumption)"

    def __init__(self, device: torch.device) -> None:
        try:
            # Optional dependency: nvidia-ml-py, only on CUDA machines.
            import pynvml
        except ImportError:
            raise EnergyUnavailable("pynvml is not installed (pip package nvidia-ml-py)") from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
            self._handle = _nvml_handle(pynvml, device)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except pynvml.NVMLError as error:
            raise EnergyUnavailable(f"NVML cannot report the GPU's energy ({error})") from None

    def read(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def joules_between(self, before: int, after: int) -> float:
        return (after - before) / 1e3


def _nvml_handle(pynvml, device: torch.device):
    """NVML's handle of the GPU torch calls ``device``: matched by its UUID (else its PCI
    bus id), since CUDA's numbering (CUDA_VISIBLE_DEVICES, fastest first) need not be
    NVML's. Both matches were checked on an H200 (driver 580, nvidia-ml-py 13.610)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        bus_id = f"{props.pci_domain_id:08X}:{bus:02X}:{props.pci_device_id:02X}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
    return pynvml.nvmlDeviceGetHandleByIndex(index)


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL energy counter of the powercap tree."""

    path: Path  # its folder
    name: str
    max_range_uj: int


class RaplCounter(EnergyCounter):
    """The CPU packages' energy (and their DRAM domains) through Linux powercap RAPL."""

    source = "rapl"

    def __init__(self, root: Path = POWERCAP) -> None:
        self.domains = rapl_domains(root)
        self.domain = "CPU " + ", ".join(d.name for d in self.domains) + " (RAPL)"

    def read(self) -> list[int]:
        return [_read_uj(domain.path / "energy_uj") for domain in self.domains]

    def joules_between(self, before: list[int], after: list[int]) -> float:
        total_uj = 0
        for domain, start, end in zip(self.domains, before, after, strict=True):
            # The counter wraps to 0 past max_energy_range_uj (262 kJ on many CPUs: over
            # 20 minutes at 200 W); it is read after every run, so a wrap is seen once.
            total_uj += end - start if end >= start else end + domain.max_range_uj - start
        return total_uj / 1e6


def _read_uj(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except PermissionError:
        raise EnergyUnavailable(
            f"{path} is readable by root only (Linux 5.10 and later restrict RAPL)"
        ) from None
    except OSError as error:
        raise EnergyUnavailable(f"{path} cannot be read ({error.strerror})") from None
    if not text.isdigit():
        raise EnergyUnavailable(f"{path}: {text[:20]!r} is not a counter in microjoules")
    return int(text)


def rapl_domains(root: Path = POWERCAP) -> list[RaplDomain]:
    """The RAPL domains to add up under ``root``: each package (``intel-rapl:N``) and the
    DRAM domains below them; ``psys`` (the whole platform, overlapping the packages) and
    the core/uncore parts of a package (inside its count) are left out.
    :class:`EnergyUnavailable` when there are none or one cannot be read."""
    if not root.is_dir():
        raise EnergyUnavailable(
            f"no readable {root} (a virtual machine, or a kernel without powercap)"
        )
    zones = sorted(p for p in root.glob("intel-rapl:*") if (p / "energy_uj").exists())
    domains = []
    for zone in zones:
        depth = zone.name.count(":")
        name = _name(zone)
        if (depth == 1 and name != "psys") or (depth == 2 and name == "dram"):
            max_range = _read_uj(zone / "max_energy_range_uj")
            _read_uj(zone / "energy_uj")  # readable now, or the reason why not
            label = name if depth == 1 else f"{zone.name.split(':')[1]}-dram"
            domains.append(RaplDomain(zone, label, max_range))
    if not domains:
        raise EnergyUnavailable(f"no RAPL package domain under {root} (intel-rapl:N)")
    return domains


def _name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip()
    except OSError:
        return zone.name


def energy_counter(device: torch.device, powercap: Path = POWERCAP) -> EnergyCounter:
    """The energy counter of ``device``; :class:`EnergyUnavailable` with the reason."""
    if device.type == "cuda":
        return NvmlCounter(device)
    if device.type == "mps" or sys.platform == "darwin":
        raise EnergyUnavailable(
            "macOS gives energy counters to root only (powermetrics); not read without sudo"
        )
    if device.type == "cpu" and sys.platform.startswith("linux"):
        return RaplCounter(powercap)
    raise EnergyUnavailable(f"no energy counter is read for {device.type} on {sys.platform}")


def unavailable(reason: str) -> dict:
    """The energy record where no counter can be read."""
    return {"status": NOT_AVAILABLE, "reason": reason}


def idle_power(counter: EnergyCounter, seconds: float = IDLE_SECONDS) -> dict:
    """The counter over ``seconds`` of this process sleeping: the power the device draws
    while it waits, subtracted from every result's energy."""
    before = counter.read()
    start = time.perf_counter()
    time.sleep(seconds)
    after = counter.read()
    elapsed = time.perf_counter() - start
    joules = counter.joules_between(before, after)
    return {
        "status": MEASURED,
        "source": counter.source,
        "domain": counter.domain,
        "idle_watts": joules / elapsed,
        "idle_seconds": elapsed,
    }


def warmup_energy(device: torch.device) -> dict:
    """The warm-up record's energy: the idle power of ``device``'s counter, or why not."""
    try:
        return idle_power(energy_counter(device))
    except EnergyUnavailable as reason:
        return unavailable(str(reason))


class EnergyObserver(RunObserver):
    """Reads the counter when the measured runs start, after each one and at the end:
    joules over the measured runs, never a read inside one."""

    def __init__(self, counter: EnergyCounter, idle: dict | None) -> None:
        self.counter = counter
        # The warm-up's idle power counts only if it came from the same counter.
        same = idle and idle.get("status") == MEASURED and idle.get("source") == counter.source
        self.idle_watts = idle["idle_watts"] if same else None
        self.joules = 0.0
        self.tokens = 0
        self.requests = 0
        self._last = None
        self._start = self._end = 0.0

    def measured_started(self) -> None:
        self.joules, self.tokens, self.requests = 0.0, 0, 0
        self._start = time.perf_counter()
        self._last = self.counter.read()

    def run_finished(self, run: Run, index: int, measured: bool) -> None:
        if measured:
            self._advance()
            self.tokens += run.tokens
            self.requests += run.extra.get("requests", 1)  # a batch: one per sequence

    def measured_finished(self) -> None:
        self._advance()
        self._end = time.perf_counter()

    def _advance(self) -> None:
        now = self.counter.read()
        self.joules += self.counter.joules_between(self._last, now)
        self._last = now

    def record(self) -> dict:
        """The result's energy record: totals, average power, idle power, and joules per
        generated token and per request above idle (total where idle is unknown)."""
        window = self._end - self._start
        above = self.joules - self.idle_watts * window if self.idle_watts is not None else None
        per = above if above is not None else self.joules
        record = {
            "status": MEASURED,
            "source": self.counter.source,
            "domain": self.counter.domain,
            "window_s": window,
            "joules": self.joules,
            "average_watts": self.joules / window if window > 0 else None,
            "idle_watts": self.idle_watts,
            "joules_above_idle": above,
            "tokens": self.tokens,
            "requests": self.requests,
            "joules_per_token": per / self.tokens if self.tokens else None,
            "joules_per_request": per / self.requests if self.requests else None,
            "per_token_and_request": "above idle" if above is not None else "total (idle unknown)",
            "method": (
                "counter read when the measured runs start, after each run and at the end "
                "(never inside a timed run); idle power from the warm-up rule's pause"
            ),
        }
        if window < SHORT_WINDOW_S:
            record["note"] = (
                f"measured runs took {window:.2f} s, under {SHORT_WINDOW_S:.0f} s: the "
                "counter's update steps (NVML: 100 ms) make these figures coarse; more "
                "repetitions give a longer window"
            )
        return record


def measured_energy_observer(device: torch.device, idle: dict | None):
    """An :class:`EnergyObserver` for ``device``, or the not-available record and why."""
    try:
        return EnergyObserver(energy_counter(device), idle), None
    except EnergyUnavailable as reason:
        return None, unavailable(str(reason))
