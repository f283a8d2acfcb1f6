"""Memory preflight: will a model fit on this device before we try to load it?

The estimate is deliberately simple and stated in every result: parameters times bytes
per parameter for the run dtype, plus 10% for activations, caches and allocator slack,
plus a fixed headroom for the runtime itself (config ``memory_headroom_gb``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from localbench.engine.device import BYTES_PER_ELEMENT

GB = 1e9
ACTIVATION_ALLOWANCE = 0.10


@dataclass(frozen=True)
class MemoryEstimate:
    """What a model needs against what the device has, in bytes."""

    parameters: int
    dtype: str
    weights_bytes: int
    needed_bytes: int
    available_bytes: int
    available_source: str

    @property
    def fits(self) -> bool:
        """True when the estimate is within the available memory."""
        return self.needed_bytes <= self.available_bytes

    def reason(self) -> str:
        """``needs ~36 GB, 24 GB available`` in the words of the seed report."""
        return (
            f"needs ~{self.needed_bytes / GB:.0f} GB, "
            f"{self.available_bytes / GB:.0f} GB available ({self.available_source})"
        )

    def to_dict(self) -> dict:
        """A plain dict for JSON, with the verdict."""
        return {**asdict(self), "fits": self.fits, "method": describe_method()}


def describe_method() -> str:
    """The estimate's formula, for result files and docs."""
    return (
        "parameters x bytes per parameter of the run dtype x "
        f"{1 + ACTIVATION_ALLOWANCE:.2f} + memory_headroom_gb"
    )


def estimate(
    parameters: int,
    dtype: str,
    headroom_gb: float,
    available_bytes: int,
    available_source: str,
) -> MemoryEstimate:
    """Estimate the memory a model of ``parameters`` needs in ``dtype``."""
    if parameters < 0:
        raise ValueError(f"parameters must be >= 0, got {parameters}")
    weights = parameters * BYTES_PER_ELEMENT[dtype]
    needed = int(weights * (1 + ACTIVATION_ALLOWANCE) + headroom_gb * GB)
    return MemoryEstimate(
        parameters=parameters,
        dtype=dtype,
        weights_bytes=weights,
        needed_bytes=needed,
        available_bytes=int(available_bytes),
        available_source=available_source,
    )


def is_out_of_memory(error: BaseException) -> bool:
    """True for an allocation failure: the CUDA/MPS allocator's, the CPU allocator's, NumPy's."""
    import torch

    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    # PyTorch's CPU and MPS allocators raise a plain RuntimeError.
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )
