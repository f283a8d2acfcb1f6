"""Fetch model checkpoints from the Hugging Face Hub, or from the local HF cache when offline.

Design: the HF cache is the store, ``dest`` gets hard links
-------------------------------------------------------------
``download_checkpoint`` calls ``huggingface_hub.snapshot_download`` *without* ``local_dir``: the
files land in the ordinary HF cache (``$HF_HUB_CACHE``, by default ``$HF_HOME/hub``), and each
file of the snapshot is then hard-linked into ``dest`` (``models/<name>/``); where hard links
are impossible (``dest`` on another filesystem, or a filesystem without them) the file is copied.

Why not ``snapshot_download(local_dir=dest)``? With huggingface_hub 2.4 a ``local_dir`` download
does copy a file out of the cache when it is already there, but it never *reads* the cache when
the Hub cannot be reached: offline (``HF_HUB_OFFLINE=1`` or no network) it only returns
``local_dir`` itself, so a model that sits complete in ``$HF_HOME`` would still fail to land in a
fresh ``dest``. Going through the cache gives one code path for every case:

* online, nothing cached: downloaded into the cache, linked into ``dest``;
* online or offline, already cached: no file transfer at all (online, the Hub is still asked
  which commit the revision points to and for the file list with sizes and hashes);
* offline (``HF_HUB_OFFLINE`` or unreachable Hub): ``snapshot_download`` resolves the revision
  through the cache's ``refs/`` and refuses an incomplete snapshot (``IncompleteSnapshotError``);
* the cache is shared with every other HF tool on the machine, and a hard link costs no space.
  A ``dest`` file stays valid even after ``hf cache delete`` (the data lives while a link does).
  Keep ``HF_HOME`` on the same filesystem as ``models/`` to get links instead of copies. Do not
  edit a file in ``dest`` in place: it is the same inode as the cache blob.

Resuming: huggingface_hub 2.4 writes each file to a process-unique temporary file and renames it
into place, deleting the partial file when a download fails (``_download_to_tmp_and_move``).
Within one run a dropped connection is resumed with an HTTP Range request (``http_get`` retries);
across runs the granularity is the file: an interrupted download keeps every file that finished,
the next call fetches only the missing ones. ``local_dir`` would not do better, it uses the same
function. (Files the Hub stores with Xet go through ``hf_xet``'s own transfer code instead;
the fake Hub of the tests does not exercise that path.)

Hashes: the ``sha256`` of a weight file is not computed here when the Hub already knows it:
online it comes from the Hub's LFS metadata (``HfApi.model_info(files_metadata=True)``);
offline, from the name of the cache blob the file points to, which for an LFS file is the
``X-Linked-Etag`` the Hub sent at download time, i.e. the same LFS sha256. Small non-LFS files
(configs, tokenizers) and anything whose hash is not known that way are hashed locally.
huggingface_hub itself checks only sizes, so ``download_checkpoint`` compares every file's size
with the Hub's listing (or the cached listing offline) and re-fetches the ones that differ;
``verify_files`` re-checks a ``dest`` folder against a manifest later on.

Tokens: nothing here reads a token to use or keep it. huggingface_hub finds ``HF_TOKEN`` or the
login stored by ``hf auth login`` on its own. Every reason is scrubbed: the value of ``HF_TOKEN``
is looked up only to blank it out, along with any ``hf_...`` token or ``Bearer`` credential.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import httpx2
from huggingface_hub import (
    HfApi,
    constants,
    get_cached_repo_tree,
    get_session,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    DisabledRepoError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    XetDownloadError,
)
from huggingface_hub.utils import filter_repo_objects

from localbench.status import FAILED, PENDING_ACCESS

log = logging.getLogger(__name__)


SAFETENSORS_PATTERNS = ("*.safetensors",)
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
# Configs, generation settings, safetensors indexes, tokenizers (json, sentencepiece *.model,
# vocab/merges *.txt, tiktoken) and chat templates (*.jinja). Python files are left out on
# purpose: remote code is never fetched.
METADATA_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja")

# verify_files hashes files up to this size by default; weight shards are checked by size only.
CHEAP_HASH_BYTES = 64 * 1024 * 1024

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Hugging Face user access tokens are hf_ followed by 34 letters and digits.
_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{30,}")
_BEARER_RE = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
_MAX_REASON = 400


class AcquisitionError(Exception):
    """A checkpoint could not be acquired.

    ``status`` is ``"pending_access"`` when a person must act on credentials (gated repo, missing
    or insufficient token) and ``"failed"`` otherwise; ``reason`` is one line, free of tokens.
    """

    def __init__(self, status: str, reason: str) -> None:
        if status not in (PENDING_ACCESS, FAILED):
            raise ValueError(f"unknown acquisition status {status!r}")
        self.status = status
        self.reason = _one_line(reason)
        super().__init__(self.reason)


# ---------------------------------------------------------------------------------------------
# Reachability


def hub_reachable(timeout_s: float = 3.0) -> tuple[bool, str]:
    """Tell whether the Hub endpoint (``HF_ENDPOINT``) answers, within about ``timeout_s``.

    Returns ``(False, reason)`` at once when ``HF_HUB_OFFLINE`` is set. Otherwise sends one HEAD
    request through huggingface_hub's own HTTP session (so its proxy and client settings apply);
    any HTTP answer below 500 counts as reachable. The request runs in a daemon thread so that a
    slow DNS lookup (which HTTP timeouts do not cover) cannot hold the caller past ``timeout_s``.
    """
    endpoint = constants.ENDPOINT
    if constants.is_offline_mode():
        return False, "HF_HUB_OFFLINE is set: the Hub is not contacted"
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            response = get_session().head(f"{endpoint}/", timeout=timeout_s, follow_redirects=False)
            outcome["status"] = response.status_code
        except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
            outcome["error"] = error

    worker = threading.Thread(target=probe, name="hub-reachable", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        return False, f"no answer from {endpoint} within {timeout_s:g} s"
    if "error" in outcome:
        error = outcome["error"]
        return False, _one_line(f"cannot reach {endpoint}: {type(error).__name__}: {error}")
    status = outcome["status"]
    if status >= 500:
        return False, f"{endpoint} answered HTTP {status}"
    return True, f"{endpoint} answered HTTP {status}"


# ---------------------------------------------------------------------------------------------
# Download


def download_checkpoint(
    repo: str,
    revision: str,
    dest: Path,
    *,
    allow_pickle: bool = False,
    refetch: Iterable[str] = (),
) -> dict:
    """Fetch ``repo`` at ``revision`` into ``dest`` and return its manifest fields.

    Only safetensors weights, JSON configs and tokenizer files are fetched. Pickle weights
    (``*.bin``, ``*.pt``, ...) are fetched only when ``allow_pickle`` is true *and* the repo has
    no safetensors weights; without them the call fails with a hint to set ``allow_pickle``.
    Files come from the HF cache when they are there (always when ``HF_HUB_OFFLINE`` is set) and
    are hard-linked (or copied) into ``dest``; see the module docstring. Weight files left in
    ``dest`` by an earlier revision and absent from this one are removed; other files in
    ``dest`` (such as the caller's own manifest) are left alone.

    ``refetch`` names repo paths to download again even though cached, e.g. files that
    ``verify_files`` found corrupt with their size intact (a size mismatch is re-fetched anyway);
    paths that are not part of the checkpoint are ignored. Re-fetching needs the Hub.

    Returns ``{"source": "hub", "repo", "revision", "resolved_commit", "files": [{"path",
    "bytes", "sha256"}], "total_bytes", "weights_bytes", "downloaded_at"}``. ``revision`` is
    echoed as asked, ``resolved_commit`` is the 40-hex commit. ``weights_bytes`` counts the
    safetensors files, or the pickle weights when those are what was accepted.

    Raises ``AcquisitionError`` (see ``classify_hub_error``) on any failure.
    """
    try:
        return _download(repo, revision, Path(dest), allow_pickle, frozenset(refetch))
    except AcquisitionError:
        raise
    except Exception as error:
        raise classify_hub_error(error, repo, revision) from error


class _Listing:
    """Sizes and LFS sha256 of a commit's files, from the Hub or from the cached tree listing."""

    def __init__(self, commit: str, sizes: dict[str, int | None], sha256: dict[str, str]):
        self.commit = commit
        self.sizes = sizes
        self.sha256 = sha256


def _download(
    repo: str, revision: str, dest: Path, allow_pickle: bool, refetch: frozenset[str]
) -> dict:
    api = HfApi()  # endpoint and token resolved by huggingface_hub (HF_ENDPOINT, HF_TOKEN, login)
    remote = _remote_listing(api, repo, revision)

    safe = SAFETENSORS_PATTERNS + METADATA_PATTERNS
    patterns = safe
    if remote is not None:
        # Decide before downloading anything, so a refused repo costs no transfer.
        if not _matching(remote.sizes, SAFETENSORS_PATTERNS):
            if not allow_pickle:
                raise _no_safetensors(repo, revision)
            patterns = safe + PICKLE_PATTERNS

    snapshot = _snapshot(repo, revision, patterns)
    files = _snapshot_files(snapshot, patterns)
    if not _matching(files, SAFETENSORS_PATTERNS):
        # Offline (no listing beforehand), or a listing that had no safetensors either.
        if not allow_pickle:
            raise _no_safetensors(repo, revision)
        if patterns == safe:
            patterns = safe + PICKLE_PATTERNS
            snapshot = _snapshot(repo, revision, patterns)
            files = _snapshot_files(snapshot, patterns)
        if not _matching(files, PICKLE_PATTERNS):
            raise AcquisitionError(FAILED, f"no safetensors or pickle weights in {repo}@{revision}")

    commit = snapshot.name
    if not _COMMIT_RE.fullmatch(commit):
        raise AcquisitionError(FAILED, f"unexpected HF cache layout for {repo}: {snapshot}")
    if remote is not None and remote.commit != commit:
        # The branch moved between our listing and snapshot_download: list the commit we got.
        remote = _remote_listing(api, repo, commit)
    listing = remote if remote is not None else _cached_listing(repo, commit)

    if remote is not None:
        expected = set(filter_repo_objects(remote.sizes, allow_patterns=list(patterns)))
        missing = sorted(expected - set(files))
        if missing:
            raise AcquisitionError(
                FAILED, f"{repo}@{revision}: files missing after download: {', '.join(missing[:5])}"
            )
    _repair_sizes(
        repo, revision, commit, snapshot, files, listing, refetch, online=remote is not None
    )

    _materialize(snapshot, files, dest)
    _remove_stale_weights(dest, set(files))

    entries = []
    for path in files:
        target = dest / path
        size = target.stat().st_size
        sha = listing.sha256.get(path) if listing else None
        if sha is None:
            sha = _sha256_from_blob_name(snapshot / path)
        if sha is None:
            sha = _sha256_file(target)
        entries.append({"path": path, "bytes": size, "sha256": sha})

    def total(selected: Iterable[dict]) -> int:
        return sum(entry["bytes"] for entry in selected)

    safetensors = set(_matching(files, SAFETENSORS_PATTERNS))
    weights = safetensors or set(_matching(files, PICKLE_PATTERNS))
    return {
        "source": "hub",
        "repo": repo,
        "revision": revision,
        "resolved_commit": commit,
        "files": entries,
        "total_bytes": total(entries),
        "weights_bytes": total(e for e in entries if e["path"] in weights),
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _remote_listing(api: HfApi, repo: str, revision: str) -> _Listing | None:
    """Ask the Hub for the commit and the file list (sizes, LFS sha256); None if it won't say.

    Only an unknown revision is raised here. Every other failure (offline mode, network, 5xx,
    and also not found / gated / refused) returns None and is left to snapshot_download, which
    serves a complete cached copy when there is one (a repo made private or gated since, or a
    Hub that is down) and otherwise raises the Hub's error, which classify_hub_error maps.
    """
    if constants.is_offline_mode():
        return None
    try:
        # One GET without retries (list_repo_tree would back off for ~20 s when offline).
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except RevisionNotFoundError:
        raise
    except (HfHubHTTPError, httpx2.TransportError, OfflineModeIsEnabled):
        return None
    if not info.sha or info.siblings is None:
        return None
    sizes: dict[str, int | None] = {}
    sha256: dict[str, str] = {}
    for sibling in info.siblings:
        sizes[sibling.rfilename] = sibling.size
        if sibling.lfs is not None and sibling.lfs.sha256:
            sha256[sibling.rfilename] = sibling.lfs.sha256
    return _Listing(info.sha, sizes, sha256)


def _cached_listing(repo: str, commit: str) -> _Listing | None:
    """Sizes from the tree listing huggingface_hub cached at download time (no hashes in it)."""
    try:
        tree = get_cached_repo_tree(repo, revision=commit)
    except CachedRepoTreeNotFoundError:
        return None
    return _Listing(commit, {entry.path: entry.size for entry in tree}, {})


def _snapshot(repo: str, revision: str, patterns: tuple[str, ...]) -> Path:
    # cache_dir left to huggingface_hub: $HF_HUB_CACHE, i.e. $HF_HOME/hub by default.
    return Path(snapshot_download(repo, revision=revision, allow_patterns=list(patterns)))


def _snapshot_files(snapshot: Path, patterns: tuple[str, ...]) -> list[str]:
    """Repo paths under ``snapshot`` that match ``patterns``, sorted.

    A snapshot folder can hold more than this call asked for (an earlier call with other
    patterns), hence the filter, with huggingface_hub's own matcher so both agree.
    """
    found = [
        path.relative_to(snapshot).as_posix()
        for path in snapshot.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    ]
    return sorted(filter_repo_objects(found, allow_patterns=list(patterns)))


def _matching(paths: Iterable[str], patterns: tuple[str, ...]) -> list[str]:
    return list(filter_repo_objects(list(paths), allow_patterns=list(patterns)))


def _no_safetensors(repo: str, revision: str) -> AcquisitionError:
    return AcquisitionError(
        FAILED,
        f"no safetensors weights in {repo}@{revision}; "
        "set allow_pickle: true for this model to accept pickle files",
    )


def _repair_sizes(
    repo: str,
    revision: str,
    commit: str,
    snapshot: Path,
    files: list[str],
    listing: _Listing | None,
    refetch: frozenset[str],
    *,
    online: bool,
) -> None:
    """Re-download cached files whose size differs from the listing, and those in ``refetch``.

    huggingface_hub trusts a file that exists in the cache; a blob truncated or edited since
    (through a hard link in some ``dest``, say) would otherwise be handed out again.
    """
    for path in files:
        expected = listing.sizes.get(path) if listing else None
        actual = (snapshot / path).stat().st_size
        size_wrong = expected is not None and actual != expected
        if not (size_wrong or path in refetch):
            continue
        if not online:
            what = (
                f"has {actual} bytes, {expected} expected" if size_wrong else "was to be re-fetched"
            )
            raise AcquisitionError(
                FAILED,
                f"cached {path} of {repo}@{revision} {what}, and the Hub cannot be reached "
                "to fetch it again",
            )
        # A forced download replaces the blob with a new file, it never writes through links.
        hf_hub_download(repo, path, revision=commit, force_download=True)
        actual = (snapshot / path).stat().st_size
        if expected is not None and actual != expected:
            raise AcquisitionError(
                FAILED,
                f"{path} of {repo}@{revision} has {actual} bytes after a fresh download, "
                f"the Hub lists {expected}",
            )


def _materialize(snapshot: Path, files: list[str], dest: Path) -> None:
    """Hard-link (else copy) each snapshot file into ``dest``, atomically per file."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for path in files:
        source = Path(os.path.realpath(snapshot / path))  # the blob, past any symlinks
        target = dest / path
        if root not in target.resolve().parents:
            raise AcquisitionError(FAILED, f"refusing a repo path outside the model folder: {path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and os.path.samefile(source, target):
            continue
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            try:
                os.link(source, temporary)
            except OSError as error:
                # Other filesystem (EXDEV), no hard links there, or not permitted: copy.
                log.warning("copying %s into %s (no hard link: %s)", path, dest, error.strerror)
                shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


def _remove_stale_weights(dest: Path, keep: set[str]) -> None:
    """Delete weight files of an earlier revision, which loaders globbing weights would pick up."""
    weight_patterns = SAFETENSORS_PATTERNS + PICKLE_PATTERNS
    present = [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()]
    for path in _matching(present, weight_patterns):
        if path not in keep:
            (dest / path).unlink(missing_ok=True)


def _sha256_from_blob_name(pointer: Path) -> str | None:
    """The LFS sha256 the Hub gave for a cached file, read from the name of its blob.

    Cache snapshots are symlinks to ``blobs/<etag>``; for LFS files the etag is the sha256.
    Only the first link is read: the blob itself may link on into the shared Xet store.
    """
    try:
        name = PurePosixPath(os.readlink(pointer)).name
    except OSError:
        return None
    return name if _SHA256_RE.fullmatch(name) else None


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------
# Verification


def verify_files(dest: Path, manifest: dict, *, full_hash: bool = False) -> list[str]:
    """Check the files of ``manifest`` under ``dest``; return the problems, empty when all is well.

    Every file must exist with the manifest's size. The sha256 is checked too for files up to
    ``CHEAP_HASH_BYTES`` (configs, tokenizers, small models), or for all files when
    ``full_hash`` is true (slow on multi-GB weights). Each problem reads ``"<path>: <what>"``,
    so a caller can pass the paths to ``download_checkpoint(..., refetch=...)``.
    """
    dest = Path(dest)
    problems = []
    for entry in manifest.get("files", []):
        path = entry["path"]
        target = dest / path
        if not target.is_file():
            problems.append(f"{path}: missing")
            continue
        size = target.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{path}: {size} bytes on disk, {entry['bytes']} expected")
            continue
        expected = entry.get("sha256")
        if expected and (full_hash or size <= CHEAP_HASH_BYTES):
            actual = _sha256_file(target)
            if actual != expected:
                problems.append(f"{path}: sha256 {actual} differs from {expected}")
    return problems


# ---------------------------------------------------------------------------------------------
# Errors


def classify_hub_error(exc: BaseException, repo: str, revision: str) -> AcquisitionError:
    """Map an exception from a download of ``repo``@``revision`` to an ``AcquisitionError``.

    huggingface_hub 2.4 talks HTTP through ``httpx2``; it raises ``HfHubHTTPError`` subclasses
    for HTTP answers and wraps "not found locally after the Hub failed" in
    ``LocalEntryNotFoundError`` with the real cause chained, so the whole ``__cause__`` /
    ``__context__`` chain is searched, most specific cause first. Gated repos and 401/403
    answers give ``pending_access``; everything else ``failed``.
    """
    if isinstance(exc, AcquisitionError):
        return exc
    chain = _chain(exc)
    where = f"{repo}@{revision}"
    cache = constants.HF_HUB_CACHE

    def first(kind: type | tuple[type, ...]) -> Any:
        return next((error for error in chain if isinstance(error, kind)), None)

    if (error := first(GatedRepoError)) is not None:
        return _gated(error, repo, revision)
    if (error := first(DisabledRepoError)) is not None:
        return AcquisitionError(FAILED, f"{repo} is disabled on the Hub: {_hub_message(error)}")
    if (error := first(RevisionNotFoundError)) is not None:
        return AcquisitionError(
            FAILED, f"revision {revision!r} not found in {repo}: {_hub_message(error)}"
        )
    if (error := first(RepositoryNotFoundError)) is not None:
        return AcquisitionError(
            FAILED,
            f"repository {repo} not found on {constants.ENDPOINT} (HTTP {_status(error)}): "
            f"{_hub_message(error)}; if it is private or gated, HF_TOKEN (or `hf auth login`) "
            "must hold a token with access",
        )
    if (error := first(RemoteEntryNotFoundError)) is not None:
        return AcquisitionError(
            FAILED, f"a file of {where} is missing on the Hub: {_hub_message(error)}"
        )
    if (error := first(HfHubHTTPError)) is not None or (error := _foreign_http_error(chain)):
        return _http_status_error(error, _status(error), repo, revision)
    if (error := _disk_full(chain)) is not None:
        where_on_disk = f" ({error.filename})" if error.filename else ""
        return AcquisitionError(
            FAILED, f"disk full while fetching {where}{where_on_disk}: {error.strerror or error}"
        )
    if (error := first(IncompleteSnapshotError)) is not None:
        return AcquisitionError(
            FAILED,
            f"the HF cache at {cache} holds only part of {where} and the Hub cannot be used: "
            f"{_short(error)}",
        )
    if first(OfflineModeIsEnabled) is not None or (
        first(LocalEntryNotFoundError) is not None and constants.is_offline_mode()
    ):
        return AcquisitionError(
            FAILED,
            f"HF_HUB_OFFLINE is set and {where} is not in the HF cache at {cache}; "
            "unset HF_HUB_OFFLINE or fetch it once with network access",
        )
    if (error := first(httpx2.ProxyError)) is not None:
        return AcquisitionError(FAILED, f"proxy error reaching {constants.ENDPOINT}: {error}")
    if (error := _network_error(chain)) is not None:
        return AcquisitionError(
            FAILED,
            f"cannot reach the Hub at {constants.ENDPOINT} ({type(error).__name__}: {error}) "
            f"and {where} is not in the HF cache at {cache}",
        )
    if (error := first(LocalEntryNotFoundError)) is not None:
        return AcquisitionError(
            FAILED,
            f"{where} is not in the HF cache at {cache} and the Hub could not be used: {error}",
        )
    if (error := first(XetDownloadError)) is not None:
        return AcquisitionError(FAILED, f"Xet download of {where} failed: {error}")
    if (error := first(HFValidationError)) is not None:
        return AcquisitionError(FAILED, f"invalid repo id or revision {where}: {error}")
    if (error := first(FileMetadataError)) is not None:
        return AcquisitionError(
            FAILED, f"{constants.ENDPOINT} does not answer like a Hugging Face Hub: {error}"
        )
    return AcquisitionError(FAILED, f"fetching {where} failed: {type(exc).__name__}: {exc}")


def _gated(error: BaseException, repo: str, revision: str) -> AcquisitionError:
    status = _status(error)
    if status == 401:
        who = "no token was sent"
    elif status == 403:
        who = "the token's account has no access yet"
    else:
        who = f"HTTP {status}"
    return AcquisitionError(
        PENDING_ACCESS,
        f"{repo} is gated ({who}): {_hub_message(error)}; request access at "
        f"https://huggingface.co/{repo} and make HF_TOKEN (or `hf auth login`) hold a token "
        "of an account with access",
    )


def _http_status_error(error: BaseException, status: int | None, repo: str, revision: str):
    where = f"{repo}@{revision}"
    message = _hub_message(error)
    login = "HF_TOKEN (or `hf auth login`) must hold a valid token with access"
    if status == 401:
        return AcquisitionError(
            PENDING_ACCESS,
            f"the Hub refused {where} (HTTP 401): {message}; {login} "
            f"(https://huggingface.co/{repo})",
        )
    if status == 403:
        return AcquisitionError(
            PENDING_ACCESS,
            f"the Hub refused {where} (HTTP 403): {message}; {login}, and fine-grained tokens "
            f"need read access to gated repos (https://huggingface.co/{repo})",
        )
    if status == 429:
        return AcquisitionError(FAILED, f"rate limited by the Hub on {where} (HTTP 429): {message}")
    if status is not None and status >= 500:
        return AcquisitionError(
            FAILED,
            f"the Hub answered HTTP {status} for {where} and it is not in the HF cache at "
            f"{constants.HF_HUB_CACHE}: {message}",
        )
    return AcquisitionError(FAILED, f"the Hub answered HTTP {status} for {where}: {message}")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, breadth first, each once."""
    seen: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if any(current is known for known in seen):
            continue
        seen.append(current)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return seen


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _foreign_http_error(chain: list[BaseException]) -> BaseException | None:
    """An HTTP status error not raised through huggingface_hub (httpx2 or requests)."""
    for error in chain:
        if isinstance(error, httpx2.HTTPStatusError) and _status(error) is not None:
            return error
        requests = sys.modules.get("requests")  # never imported just for this check
        if requests is not None and isinstance(error, requests.HTTPError) and _status(error):
            return error
    return None


def _network_error(chain: list[BaseException]) -> BaseException | None:
    kinds: tuple[type, ...] = (httpx2.TransportError, ConnectionError, TimeoutError)
    requests = sys.modules.get("requests")
    if requests is not None:
        kinds += (requests.ConnectionError, requests.Timeout)
    return next((error for error in chain if isinstance(error, kinds)), None)


def _disk_full(chain: list[BaseException]) -> OSError | None:
    for error in chain:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
    return None


def _hub_message(error: BaseException) -> str:
    """The server's own message when it sent one, else the exception's text."""
    message = getattr(error, "server_message", None)
    # Without its final period, so that "; what to do next" reads well after it.
    return (_short(message) if message else _short(error)).rstrip(".")


def _short(value: object) -> str:
    return _one_line(str(value))


def _one_line(text: str) -> str:
    """Collapse to one line, drop token-looking strings, cap the length."""
    text = " ".join(str(text).split())
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        # The value is used only to blank it out of the message, never kept.
        value = (os.environ.get(name) or "").strip()
        if len(value) >= 4:
            text = text.replace(value, "<token>")
    text = _BEARER_RE.sub(r"\1<token>", _TOKEN_RE.sub("<token>", text))
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 1].rstrip() + "…"
    return text
