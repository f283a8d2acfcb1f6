"""Model acquisition: put a checkpoint in ``models/<name>/`` and describe it in a manifest.

The source is decided here: the Hugging Face Hub (real weights) or a synthetic build of
the real architecture with random weights. Either way the folder ends up holding a
``save_pretrained`` checkpoint that the benchmark loads through the same code. A model
that cannot or need not be fetched (does not fit, gated, not supported yet) gets a
manifest saying so, and the workflow goes on with the other models. The memory
preflight runs before anything is fetched or built, so a model too large for this
machine (DeepSeek-VL2-Small's 32 GB on a 24 GB one) never costs its download or build.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from localbench import results
from localbench.engine import memory
from localbench.engine.device import available_memory_bytes, resolve_device
from localbench.fetch import checkpoint
from localbench.status import READY


def _preflight(settings: dict, parameters: int) -> memory.MemoryEstimate:
    # 16-bit, the smallest dtype a model runs in: fetching is skipped only for models
    # that cannot fit in any dtype, so changing a model's dtype never refetches it. The
    # benchmark's own preflight checks the real dtype.
    device = resolve_device(settings["device"])
    dtype = "bfloat16"
    available, source = available_memory_bytes(device)
    return memory.estimate(parameters, dtype, settings["memory_headroom_gb"], available, source)


def _choose_source(settings: dict) -> tuple[str, str]:
    """``hub`` or ``synthetic``, and why."""
    if settings["size"] == "tiny":
        return "synthetic", "size: tiny builds scaled-down architectures"
    if settings["weights"] == "synthetic":
        return "synthetic", "weights: synthetic in config"
    if settings["weights"] == "hub":
        return "hub", "weights: hub in config"
    from localbench.fetch.hub import hub_reachable

    reachable, why = hub_reachable()
    if reachable:
        return "hub", "weights: auto, and the Hugging Face Hub answered"
    return "synthetic", f"weights: auto, and the Hugging Face Hub cannot be reached ({why})"


def _replace_folder(build, dest: Path) -> dict:
    """Build into a sibling temporary folder, then swap it in, so dest is never half-built."""
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        info = build(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return info


def acquire(settings: dict, dest: Path) -> dict:
    """Fetch or build the checkpoint of one model into ``dest``; return its manifest."""
    from localbench.fetch.architectures import count_parameters
    from localbench.fetch.reference import UnknownArchitecture

    manifest = {
        "model": settings["name"],
        "repo": settings["repo"],
        "revision": settings["revision"],
        "task": settings["task"],
        "size": settings["size"],
        "weights_requested": settings["weights"],
        "created_at": results.now_utc(),
    }
    try:
        manifest["parameters"] = count_parameters(settings["repo"], settings["size"])
    except (UnknownArchitecture, NotImplementedError):
        # No shipped architecture (a user's own model), or no tiny variant of it.
        manifest["parameters"] = None

    if manifest["parameters"]:
        estimate = _preflight(settings, manifest["parameters"])
        manifest["memory_estimate"] = estimate.to_dict()
        if not estimate.fits:
            return {
                **manifest,
                "status": results.SKIPPED,
                "reason": estimate.reason(),
                "source": None,
            }

    source, why = _choose_source(settings)
    manifest["source"] = source
    manifest["source_reason"] = why
    manifest["synthetic"] = source == "synthetic"

    if source == "synthetic":
        if manifest["parameters"] is None:
            return {
                **manifest,
                "status": results.FAILED,
                "reason": (
                    f"no architecture is shipped for {settings['repo']}, so no synthetic copy "
                    "can be built; use weights: hub for this model"
                ),
            }
        from localbench.fetch.synthetic import build_synthetic_checkpoint

        info = _replace_folder(
            lambda folder: build_synthetic_checkpoint(settings["repo"], settings["size"], folder),
            dest,
        )
        manifest.update(info)
    else:
        from localbench.fetch.hub import AcquisitionError, download_checkpoint

        try:
            info = download_checkpoint(
                settings["repo"],
                settings["revision"],
                dest,
                allow_pickle=settings["allow_pickle"],
            )
        except AcquisitionError as error:
            return {**manifest, "status": error.status, "reason": error.reason}
        manifest.update(info)

    # The hub's own file list (with its hashes) wins over our local listing.
    for key, value in checkpoint.summarize(dest).items():
        manifest.setdefault(key, value)
    if manifest["parameters"] is None:
        manifest["parameters"] = manifest["stored_parameters"]
    return {**manifest, "status": READY, "reason": None}


def ensure_intact(settings: dict, manifest: dict, dest: Path) -> list[str]:
    """Check ``dest`` against its manifest and fetch again what is missing or damaged.

    Sizes always, sha256 where the manifest has one (hub files up to 64 MB). A file that
    fails is downloaded again (hub, by the manifest's commit) or rebuilt (synthetic builds
    are seeded, so they give the same bytes) and put in place atomically; the manifest
    stays as it is. Returns the problems left, empty when the checkpoint is whole.
    """
    import fcntl

    from localbench.fetch.hub import download_checkpoint, verify_files

    if not verify_files(dest, manifest):
        return []
    # The eager and fast benchmarks of one model may repair it at the same time.
    with open(dest.with_name(f".{dest.name}.repair.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problems = verify_files(dest, manifest)
        if not problems:
            return []
        broken = [problem.split(": ", 1)[0] for problem in problems]
        if manifest.get("source") == "hub":
            from localbench.fetch.hub import AcquisitionError

            try:
                download_checkpoint(
                    settings["repo"],
                    manifest.get("resolved_commit") or settings["revision"],
                    dest,
                    allow_pickle=settings["allow_pickle"],
                    refetch=broken,
                )
            except AcquisitionError as error:
                return [*problems, f"fetching again failed: {error.reason}"]
        else:
            from localbench.fetch.synthetic import build_synthetic_checkpoint

            fresh = dest.with_name(f".{dest.name}.rebuild")
            shutil.rmtree(fresh, ignore_errors=True)
            try:
                build_synthetic_checkpoint(settings["repo"], settings["size"], fresh)
                for path in broken:
                    if (fresh / path).is_file():
                        (dest / path).parent.mkdir(parents=True, exist_ok=True)
                        (fresh / path).replace(dest / path)
            finally:
                shutil.rmtree(fresh, ignore_errors=True)
        return verify_files(dest, manifest)
