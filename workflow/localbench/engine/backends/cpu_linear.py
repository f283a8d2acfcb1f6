"""CPU products for the fast backend: decode at the memory bandwidth, prompts in float32
where the CPU has no native bfloat16 or float16 arithmetic.

A decode step of a batch-1 model is a chain of matrix-vector products: each reads its
weight once and does two flops per weight, so it should run at the memory bandwidth.
PyTorch's CPU product of a bfloat16 vector by a bfloat16 matrix reaches a fraction of it
(on CPUs without AVX-512 BF16 its reduced-precision products take a generic path), so the
fast backend runs these products with a small C++ kernel, ``cpu_linear.cpp``: each weight
row is converted to float32 in registers as it streams in, multiplied with up to
``MAX_ROWS`` input rows, accumulated in float32, split over PyTorch's intra-op threads.

The kernel is compiled once per machine with PyTorch's extension builder (a C++ compiler
and ninja; ``-march=native`` and OpenMP where the compiler takes them) and cached in
``localbench/cpu_kernel/`` under ``$XDG_CACHE_HOME`` (default ``~/.cache``), keyed by the
source, the flags and the PyTorch installation it links against (its build file names
that installation's paths: two virtual environments sharing one folder would rebuild it
in turn). Where it cannot be built the decoder runs PyTorch's products and
records why (``unavailable_reason``).

The same source holds ``decode_layer``: a whole Llama/Qwen2 layer's decode step for one
sequence in one call (the fast decoder's CPU path), with the products above and rows of
4096 inputs or more read four at a time.

Prompts (many rows) use PyTorch's matrix products. On CPUs without native bfloat16 or
float16 products (``native_reduced_precision``) a reduced-precision weight is converted to
float32 a block of rows at a time and the product runs in float32: on an AVX2-only CPU
this is several times faster than the reduced-precision product, and as exact (both
accumulate in float32 and round the result to the weight's dtype).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from localbench import atomic

SOURCE = Path(__file__).with_name("cpu_linear.cpp")
ROW_KERNEL_ROWS = 4  # input rows the row kernel takes (a decode step, a small batch)
# Rows of a reduced-precision weight converted to float32 at once for a prompt's product:
# a bounded temporary (64 MiB at 4 bytes each).
_BLOCK_VALUES = 16 * 2**20


def _flag_sets() -> list[tuple[list[str], list[str]]]:
    """Compiler and linker flags to try in order: the machine's own instructions with
    OpenMP, portable with OpenMP, then the same without it. ``at::parallel_for`` splits
    the work over torch's threads only in code compiled with OpenMP (its parallel region
    is in the header); linked with ``-fopenmp`` the kernel shares the OpenMP runtime torch
    loaded (same soname), so its threads are torch's intra-op threads. Without OpenMP
    (Apple's clang) the kernel runs on one thread."""
    native = "-mcpu=native" if platform.machine() in ("arm64", "aarch64") else "-march=native"
    sets = [["-O3", native], ["-O3"]]
    return [(flags + ["-fopenmp"], ["-fopenmp"]) for flags in sets] + [(f, []) for f in sets]


# The flags the loaded kernel was built with, once it is built.
built_with: list[str] = []


@functools.cache
def _extension():
    """The compiled kernel module, or the reason it cannot be built (a string)."""
    from torch.utils import cpp_extension

    # A venv's ninja sits beside its python, which a job started by path may not have on
    # its PATH.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    source = SOURCE.read_bytes()
    errors = []
    for cflags, ldflags in _flag_sets():
        flags = " ".join(cflags + ldflags)
        build_key = f"{flags}|{torch.__file__}|{torch.__version__}|{sys.version}"
        digest = hashlib.sha256(source + build_key.encode()).hexdigest()[:12]
        name = f"localbench_cpu_linear_{digest}"
        try:
            build = _build_folder(name, source)
            module = cpp_extension.load(
                name=name,
                sources=[str(build / SOURCE.name)],
                extra_cflags=cflags,
                extra_ldflags=ldflags,
                build_directory=str(build),
                verbose=False,
            )
        except Exception as error:  # noqa: BLE001 - compilers and builders fail in many ways
            errors.append(f"{' '.join(cflags)}: {type(error).__name__}: {_first_line(error)}")
            continue
        built_with[:] = cflags
        return module
    return "the C++ kernel could not be built (" + "; ".join(errors) + ")"


def _build_folder(name: str, source: bytes) -> Path:
    """The kernel's build folder, holding its own copy of the source: every checkout of
    the project with the same source and flags shares one build (ninja would rebuild a
    folder whose build file names another checkout's source path)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = root / "localbench" / "cpu_kernel" / name
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / SOURCE.name
    if not copy.exists() or copy.read_bytes() != source:
        atomic.write_bytes(copy, source)
    return folder


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def unavailable_reason() -> str | None:
    """None where the kernel is built and loaded, else why not (compiles on first call)."""
    if os.environ.get("LOCALBENCH_CPU_KERNEL") == "0":
        return "switched off with LOCALBENCH_CPU_KERNEL=0"
    built = _extension()
    return built if isinstance(built, str) else None


@functools.cache
def native_reduced_precision(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies ``dtype`` matrices natively (AVX-512 BF16, AMX, Arm)."""
    if dtype == torch.float32 or platform.machine() in ("arm64", "aarch64"):
        return True
    if dtype == torch.bfloat16:
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if dtype == torch.float16:
        return torch.cpu._is_amx_fp16_supported()
    return True


# The kernel as a PyTorch operator with a shape-only fake, so torch.compile and Dynamo
# trace a decode step around it as one graph.
@torch.library.custom_op("localbench::cpu_linear", mutates_args=())
def kernel_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The C++ kernel: ``F.linear(x, weight, bias)`` for a 2-D ``x`` (see the module)."""
    return _extension().linear(x, weight, bias)


@kernel_linear.register_fake
def _kernel_linear_shape(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[0], dtype=weight.dtype)


class Products:
    """The CPU products of a model whose weights are ``dtype``: what runs them is decided
    once (building the kernel if needed), so a traced decode step holds no such checks."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.kernel_error = unavailable_reason()
        self.kernel = self.kernel_error is None
        self.module = _extension() if self.kernel else None
        self.native = dtype == torch.float32 or native_reduced_precision(dtype)
        # Elementwise work and attention run in float32 where PyTorch has no fast path
        # for the reduced precision.
        self.compute_dtype = dtype if self.native else torch.float32

    def describe(self) -> dict:
        """What runs a decode step's projections and a prompt's, for the result."""
        if not self.kernel:
            prompt = "pytorch" if self.native else "pytorch, float32 blocks"
            return {
                "decode_projections": "pytorch",
                "prompt_projections": prompt,
                "cpu_kernel_error": self.kernel_error,
            }
        prompt = "pytorch" if self.native else "cpu kernel, float32 panels"
        return {
            "decode_projections": "cpu kernel",
            "prompt_projections": prompt,
            "cpu_kernel_flags": " ".join(built_with),
        }

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
        """``F.linear(x, weight, bias)``. With the kernel: the row kernel for up to
        ``ROW_KERNEL_ROWS`` input rows; for more, PyTorch's product where the CPU
        multiplies the weight's dtype natively, else the panel kernel. Without it,
        PyTorch, in float32 blocks of the weight where the product is not native."""
        rows = x.numel() // x.shape[-1]
        if self.kernel and (rows <= ROW_KERNEL_ROWS or not self.native):
            flat = x.reshape(rows, x.shape[-1])
            if torch.compiler.is_compiling():  # one operator to the tracer
                out = kernel_linear(flat, weight, bias)
            else:  # the module directly: the operator's dispatch costs more than a product
                out = self.module.linear(flat, weight, bias)
            return out.view(*x.shape[:-1], weight.shape[0])
        if self.native:
            return F.linear(x, weight, bias)
        x32 = x.float()
        bias32 = None if bias is None else bias.float()
        step = max(1, _BLOCK_VALUES // weight.shape[1])
        blocks = [
            F.linear(
                x32, weight[i : i + step].float(), None if bias32 is None else bias32[i : i + step]
            )
            for i in range(0, weight.shape[0], step)
        ]
        return torch.cat(blocks, dim=-1).to(weight.dtype)
