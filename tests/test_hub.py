"""Tests for localbench.fetch.hub against a fake Hugging Face Hub served on loopback.

The real huggingface_hub code runs unchanged; only its endpoint points at ``FakeHub``, which
answers the few routes a snapshot download uses in huggingface_hub 2.4:

* ``GET /api/models/{repo}/revision/{rev}``: model info (``sha``, ``siblings`` with sizes and
  LFS sha256 when ``?blobs=true``), used by ``model_info`` and by ``snapshot_download``;
* ``GET /api/models/{repo}/tree/{rev}``: the recursive file listing ``snapshot_download`` uses;
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``: file metadata (``X-Repo-Commit``, ``ETag``, and for
  LFS files ``X-Linked-Etag`` / ``X-Linked-Size``) and content, with Range support;
* anything else, such as the ``/api/agent-harnesses`` registry huggingface_hub fetches once per
  process (best effort, for its user agent), gets a plain 404;
* errors the way the Hub sends them: ``X-Error-Code`` (``GatedRepo``, ``RepoNotFound``,
  ``RevisionNotFound``) and ``X-Error-Message`` headers plus a JSON ``{"error": ...}`` body.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE`` and friends once, at
import, into ``huggingface_hub.constants`` (``ENDPOINT`` also into the URL template
``HUGGINGFACE_CO_URL_TEMPLATE``), and the library looks those constants up at call time. So the
in-process tests set the environment variables *and* monkeypatch the constants;
``test_environment_variables_alone_configure_a_fresh_process`` runs subprocesses that get only
environment variables, to show the real start-up path honours them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx2
import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import close_session
from localbench.fetch.hub import (
    AcquisitionError,
    classify_hub_error,
    download_checkpoint,
    hub_reachable,
    verify_files,
)
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

TOKEN = "hf_TestTokenThatMustNeverLeak0123456789"

WEIGHTS = save_safetensors({"w": np.arange(64, dtype=np.float32).reshape(8, 8)})
CONFIG = json.dumps({"model_type": "tiny", "hidden_size": 8}).encode()
TOKENIZER = json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}).encode()
PICKLE = b"\x80\x04fake pickle weights" * 50


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith((".safetensors", ".bin"))


class FakeRepo:
    """A repo with named revisions; each revision is a commit holding a set of files."""

    def __init__(self, repo_id: str, revisions: dict[str, dict[str, bytes]], kind: str = "public"):
        self.repo_id = repo_id
        self.kind = kind
        self.commits = {
            name: (_sha1(f"{repo_id}@{name}".encode()), files) for name, files in revisions.items()
        }

    def commit(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        for sha, files in self.commits.values():
            if rev == sha:
                return sha, files
        return self.commits.get(rev)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.fail_get_once: set[str] = set()  # "repo/path" whose next GET answers 500

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def gets(self, repo_id: str) -> list[str]:
        """Paths of the files whose content was requested (GET on /resolve/)."""
        prefix = f"/{repo_id}/resolve/"
        paths = []
        for method, path, _ in self.log:
            if method == "GET" and path.startswith(prefix):
                paths.append(path[len(prefix) :].split("/", 1)[1])  # drop the revision
        return paths


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_HEAD(self):
            self._route(body=False)

        def do_GET(self):
            self._route(body=True)

        # -- helpers ---------------------------------------------------------------------
        def _send(
            self, status, payload=b"", headers=None, body=True, content_type="application/json"
        ):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def _error(self, status, code, message, body):
            payload = json.dumps({"error": message}).encode()
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, payload, headers, body)

        def _route(self, body):
            raw_path = urlsplit(self.path).path
            auth = self.headers.get("Authorization")
            hub.log.append((self.command, unquote(raw_path), auth))
            parts = [unquote(p) for p in raw_path.split("/")[1:]]
            if parts == [""]:
                return self._send(200, b"fake hub", body=body, content_type="text/plain")
            if (
                len(parts) >= 6
                and parts[:2] == ["api", "models"]
                and parts[4] in ("revision", "tree")
            ):
                repo_id, what, rev = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
                return self._api(repo_id, what, rev, auth, body)
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id, rev, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
                return self._resolve(repo_id, rev, path, auth, body)
            return self._error(404, None, "Not Found", body)

        def _lookup(self, repo_id, rev, body):
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found", body)
                return None
            if repo.kind == "broken":
                self._error(500, None, "Internal Error - We're working hard to fix this", body)
                return None
            if repo.kind == "echo":  # a careless server that repeats the credentials it got
                self._error(
                    403, None, f"token '{self.headers.get('Authorization')}' lacks scope", body
                )
                return None
            found = repo.commit(rev)
            if found is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", body)
                return None
            return repo, found

        def _api(self, repo_id, what, rev, auth, body):
            looked_up = self._lookup(repo_id, rev, body)
            if looked_up is None:
                return
            repo, (sha, files) = looked_up
            if what == "revision":
                siblings = []
                for path, data in sorted(files.items()):
                    sibling = {"rfilename": path, "size": len(data), "blobId": _sha1(data)}
                    if _is_lfs(path):
                        sibling["lfs"] = {
                            "sha256": _sha256(data),
                            "size": len(data),
                            "pointerSize": 134,
                        }
                    siblings.append(sibling)
                info = {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": sha,
                    "private": False,
                    "gated": repo.kind == "gated" and "manual",
                    "siblings": siblings,
                }
                return self._send(200, json.dumps(info).encode(), body=body)
            entries = []
            for path, data in sorted(files.items()):
                entry = {"type": "file", "oid": _sha1(data), "size": len(data), "path": path}
                if _is_lfs(path):
                    entry["lfs"] = {"oid": _sha256(data), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            return self._send(200, json.dumps(entries).encode(), body=body)

        def _resolve(self, repo_id, rev, path, auth, body):
            looked_up = self._lookup(repo_id, rev, body)
            if looked_up is None:
                return
            repo, (sha, files) = looked_up
            if repo.kind == "gated":
                # What the Hub answers: 401 without a token, 403 with one that has no access.
                if auth is None:
                    message = (
                        f"Access to model {repo_id} is restricted. You must have access to it "
                        "and be authenticated to access it. Please log in."
                    )
                    return self._error(401, "GatedRepo", message, body)
                message = (
                    f"Access to model {repo_id} is restricted and you are not in the authorized "
                    f"list. Visit https://huggingface.co/{repo_id} to ask for access."
                )
                return self._error(403, "GatedRepo", message, body)
            if path not in files:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", body)
            key = f"{repo_id}/{path}"
            if body and key in hub.fail_get_once:
                hub.fail_get_once.discard(key)
                return self._error(500, None, "storage hiccup", body)
            data = files[path]
            headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
            if _is_lfs(path):
                headers.update(
                    {
                        "ETag": f'"{_sha256(data)}"',
                        "X-Linked-Etag": f'"{_sha256(data)}"',
                        "X-Linked-Size": str(len(data)),
                    }
                )
            else:
                headers["ETag"] = f'"{_sha1(data)}"'
            status, payload = 200, data
            ranged = self.headers.get("Range")
            if body and ranged and ranged.startswith("bytes="):
                start = int(ranged[6:].split("-")[0])
                status, payload = 206, data[start:]
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(
                status, payload, headers, body, content_type="application/octet-stream"
            )

    return Handler


PUBLIC = {
    "config.json": CONFIG,
    "model.safetensors": WEIGHTS,
    "tokenizer.json": TOKENIZER,
    "pytorch_model.bin": PICKLE,
}


@pytest.fixture(scope="module")
def fake_hub():
    hub = FakeHub()
    hub.add(FakeRepo("acme/tiny", {"main": PUBLIC}))
    hub.add(FakeRepo("acme/gated", {"main": PUBLIC}, kind="gated"))
    hub.add(FakeRepo("meta-llama/Llama-3.2-3B-Instruct", {"main": PUBLIC}, kind="gated"))
    hub.add(
        FakeRepo("acme/pickled", {"main": {"config.json": CONFIG, "pytorch_model.bin": PICKLE}})
    )
    hub.add(FakeRepo("acme/broken", {"main": PUBLIC}, kind="broken"))
    hub.add(FakeRepo("acme/echo", {"main": PUBLIC}, kind="echo"))
    shards = {
        "config.json": CONFIG,
        "model-00001-of-00002.safetensors": WEIGHTS,
        "model-00002-of-00002.safetensors": WEIGHTS[::-1],
        "model.safetensors.index.json": b'{"weight_map": {}}',
    }
    hub.add(
        FakeRepo(
            "acme/evolving",
            {"v1": {"config.json": CONFIG, "model.safetensors": WEIGHTS}, "v2": shards},
        )
    )
    hub.add(FakeRepo("acme/flaky", {"main": PUBLIC}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield hub
    server.shutdown()
    server.server_close()


def _point_hf_at(monkeypatch, endpoint: str, home: Path, *, offline: bool = False) -> None:
    """Configure huggingface_hub as if the process had started with these variables."""
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    set_offline(monkeypatch, offline)


def set_offline(monkeypatch, offline: bool) -> None:
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


@pytest.fixture
def hf(fake_hub, tmp_path, monkeypatch):
    """huggingface_hub pointed at the fake hub, with an empty HF_HOME and no token."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    _point_hf_at(monkeypatch, fake_hub.url, tmp_path / "hf_home")
    close_session()  # the shared httpx2 client is rebuilt under this environment
    fake_hub.log.clear()
    yield fake_hub
    close_session()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------


def test_download_returns_manifest_and_skips_pickle(hf, tmp_path):
    dest = tmp_path / "models" / "tiny"
    manifest = download_checkpoint("acme/tiny", "main", dest)

    sha, _ = hf.repos["acme/tiny"].commit("main")
    assert manifest["source"] == "hub"
    assert manifest["repo"] == "acme/tiny"
    assert manifest["revision"] == "main"
    assert manifest["resolved_commit"] == sha
    expected = {"config.json": CONFIG, "model.safetensors": WEIGHTS, "tokenizer.json": TOKENIZER}
    assert manifest["files"] == [
        {"path": path, "bytes": len(data), "sha256": _sha256(data)}
        for path, data in sorted(expected.items())
    ]
    assert manifest["total_bytes"] == sum(len(d) for d in expected.values())
    assert manifest["weights_bytes"] == len(WEIGHTS)
    assert datetime.fromisoformat(manifest["downloaded_at"]).utcoffset().total_seconds() == 0

    assert sorted(p.name for p in dest.iterdir()) == sorted(expected)
    assert load_safetensors((dest / "model.safetensors").read_bytes())["w"].shape == (8, 8)
    assert "pytorch_model.bin" not in hf.gets("acme/tiny")
    assert not any("pytorch_model.bin" in path for _, path, _ in hf.log)
    assert verify_files(dest, manifest) == []

    # The HF cache under HF_HOME holds the files; dest shares their inodes (hard links).
    cached = (
        Path(constants.HF_HUB_CACHE)
        / "models--acme--tiny"
        / "snapshots"
        / sha
        / "model.safetensors"
    )
    assert os.path.samefile(cached, dest / "model.safetensors")


def test_second_call_reuses_cache_and_other_dest(hf, tmp_path):
    download_checkpoint("acme/tiny", "main", tmp_path / "a")
    hf.log.clear()
    manifest = download_checkpoint("acme/tiny", "main", tmp_path / "b")
    assert hf.gets("acme/tiny") == []  # nothing transferred again
    assert verify_files(tmp_path / "b", manifest) == []


def test_commit_hash_revision_is_pinned(hf, tmp_path):
    sha, _ = hf.repos["acme/evolving"].commit("v1")
    manifest = download_checkpoint("acme/evolving", sha, tmp_path / "m")
    assert manifest["revision"] == sha
    assert manifest["resolved_commit"] == sha
    assert [f["path"] for f in manifest["files"]] == ["config.json", "model.safetensors"]


def test_gated_repo_without_token_is_pending_access(hf, tmp_path):
    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/gated", "main", tmp_path / "g")
    error = caught.value
    assert error.status == "pending_access"
    assert "https://huggingface.co/acme/gated" in error.reason
    assert "HF_TOKEN" in error.reason
    assert "no token was sent" in error.reason
    assert "\n" not in error.reason


def test_gated_repo_with_token_lacking_access(hf, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/gated", "main", tmp_path / "g")
    assert caught.value.status == "pending_access"
    assert "not in the authorized list" in caught.value.reason
    assert TOKEN not in caught.value.reason
    # huggingface_hub found the token by itself and sent it.
    assert any(auth == f"Bearer {TOKEN}" for _, _, auth in hf.log)


def test_gated_llama_is_a_pending_access_result_not_a_crash(hf, tmp_path):
    from localbench.fetch.acquire import acquire
    from localbench.measure.runner import run_benchmark

    settings = {
        "name": "llama-3.2-3b-instruct",
        "repo": "meta-llama/Llama-3.2-3B-Instruct",
        "revision": "main",
        "task": "text-generation",
        "size": "full",
        "weights": "hub",
        "device": "cpu",
        "dtype": "auto",
        # Negative headroom: the preflight passes on any machine, so the request reaches
        # the (fake) hub, which answers as the real one does for a gated repo.
        "memory_headroom_gb": -1e6,
        "allow_pickle": False,
        "backend": "eager",
        "benchmark": {},
    }
    dest = tmp_path / "models" / "llama-3.2-3b-instruct"
    manifest = acquire(settings, dest)
    assert manifest["status"] == "pending_access"
    reason = manifest["reason"]
    assert "Access to model meta-llama/Llama-3.2-3B-Instruct is restricted" in reason
    assert "request access at https://huggingface.co/meta-llama/Llama-3.2-3B-Instruct" in reason
    assert not dest.exists()
    result = run_benchmark(settings, manifest, dest, {})
    assert result["status"] == "pending_access" and result["reason"] == reason
    assert "metrics" not in result


def test_unknown_repo_and_revision_fail(hf, tmp_path):
    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/nope", "main", tmp_path / "n")
    assert caught.value.status == "failed"
    assert "acme/nope" in caught.value.reason
    assert "Repository not found" in caught.value.reason

    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/tiny", "no-such-branch", tmp_path / "n")
    assert caught.value.status == "failed"
    assert "'no-such-branch' not found in acme/tiny" in caught.value.reason


def test_pickle_only_repo_needs_allow_pickle(hf, tmp_path):
    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/pickled", "main", tmp_path / "p")
    assert caught.value.status == "failed"
    assert caught.value.reason == (
        "no safetensors weights in acme/pickled@main; "
        "set allow_pickle: true for this model to accept pickle files"
    )
    assert hf.gets("acme/pickled") == []  # refused from the listing, before any transfer

    manifest = download_checkpoint("acme/pickled", "main", tmp_path / "p", allow_pickle=True)
    assert [f["path"] for f in manifest["files"]] == ["config.json", "pytorch_model.bin"]
    assert manifest["weights_bytes"] == len(PICKLE)
    assert (tmp_path / "p" / "pytorch_model.bin").read_bytes() == PICKLE


def test_allow_pickle_still_prefers_safetensors(hf, tmp_path):
    manifest = download_checkpoint("acme/tiny", "main", tmp_path / "t", allow_pickle=True)
    assert "pytorch_model.bin" not in [f["path"] for f in manifest["files"]]
    assert "pytorch_model.bin" not in hf.gets("acme/tiny")


def test_offline_with_empty_cache_fails(hf, tmp_path, monkeypatch):
    set_offline(monkeypatch, True)
    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/tiny", "main", tmp_path / "o")
    assert caught.value.status == "failed"
    assert "HF_HUB_OFFLINE" in caught.value.reason
    assert hf.log == []  # nothing was asked of the network


def test_offline_takes_files_from_the_cache(hf, tmp_path, monkeypatch):
    online = download_checkpoint("acme/tiny", "main", tmp_path / "online")
    set_offline(monkeypatch, True)
    hf.log.clear()

    offline = download_checkpoint("acme/tiny", "main", tmp_path / "offline")
    assert hf.log == []
    assert offline["resolved_commit"] == online["resolved_commit"]
    assert offline["files"] == online["files"]  # sha256 too: taken from the cache blobs' names
    assert verify_files(tmp_path / "offline", offline) == []

    with pytest.raises(AcquisitionError) as caught:  # never cached
        download_checkpoint("acme/tiny", "no-such-branch", tmp_path / "x")
    assert "HF_HUB_OFFLINE" in caught.value.reason


def test_unreachable_hub_uses_cache_or_fails(hf, tmp_path, monkeypatch):
    download_checkpoint("acme/tiny", "main", tmp_path / "first")
    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}"
    )

    start = time.monotonic()
    manifest = download_checkpoint("acme/tiny", "main", tmp_path / "second")
    assert verify_files(tmp_path / "second", manifest) == []
    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/pickled", "main", tmp_path / "third")
    assert time.monotonic() - start < 5
    assert caught.value.status == "failed"
    assert "cannot reach the Hub" in caught.value.reason


def test_server_error_fails(hf, tmp_path):
    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/broken", "main", tmp_path / "b")
    assert caught.value.status == "failed"
    assert "HTTP 500" in caught.value.reason


def test_interrupted_download_resumes_file_by_file(hf, tmp_path):
    hf.fail_get_once.add("acme/flaky/model.safetensors")
    with pytest.raises(AcquisitionError) as caught:
        download_checkpoint("acme/flaky", "main", tmp_path / "f")
    assert caught.value.status == "failed"
    assert "storage hiccup" in caught.value.reason

    manifest = download_checkpoint("acme/flaky", "main", tmp_path / "f")
    assert verify_files(tmp_path / "f", manifest) == []
    assert sorted(hf.gets("acme/flaky")) == [
        "config.json",
        "model.safetensors",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_token_never_reaches_manifest_or_reasons(hf, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    manifest = download_checkpoint("acme/tiny", "main", tmp_path / "t")
    assert TOKEN not in json.dumps(manifest)
    repo_requests = [(path, auth) for _, path, auth in hf.log if "acme/tiny" in path]
    assert repo_requests and all(auth == f"Bearer {TOKEN}" for _, auth in repo_requests)

    reasons = []
    for repo in ("acme/gated", "acme/echo", "acme/nope", "acme/broken"):
        with pytest.raises(AcquisitionError) as caught:
            download_checkpoint(repo, "main", tmp_path / "x")
        reasons.append(caught.value.reason)
        assert TOKEN not in str(caught.value)
    assert all(TOKEN not in reason for reason in reasons)
    assert "<token>" in reasons[1]  # the echoing server's message was scrubbed
    assert reasons[1].startswith("the Hub refused acme/echo@main (HTTP 403)")


def test_stale_weights_of_an_older_revision_are_removed(hf, tmp_path):
    dest = tmp_path / "e"
    download_checkpoint("acme/evolving", "v1", dest)
    (dest / "manifest.json").write_text("{}")  # the caller's own file stays
    manifest = download_checkpoint("acme/evolving", "v2", dest)
    assert not (dest / "model.safetensors").exists()
    assert (dest / "manifest.json").read_text() == "{}"
    assert manifest["weights_bytes"] == 2 * len(WEIGHTS)
    assert verify_files(dest, manifest) == []


def test_verify_files_finds_truncation_and_a_new_call_repairs_it(hf, tmp_path):
    dest = tmp_path / "v"
    manifest = download_checkpoint("acme/tiny", "main", dest)
    with open(dest / "model.safetensors", "r+b") as handle:
        handle.truncate(10)  # also truncates the cache blob: same inode
    problems = verify_files(dest, manifest)
    assert problems == [f"model.safetensors: 10 bytes on disk, {len(WEIGHTS)} expected"]

    (dest / "config.json").unlink()
    assert "config.json: missing" in verify_files(dest, manifest)

    repaired = download_checkpoint("acme/tiny", "main", dest)
    assert verify_files(dest, repaired) == []
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS


def test_same_size_corruption_is_found_and_refetched(hf, tmp_path):
    dest = tmp_path / "c"
    manifest = download_checkpoint("acme/tiny", "main", dest)
    with open(dest / "model.safetensors", "r+b") as handle:
        handle.seek(len(WEIGHTS) - 1)
        handle.write(b"\xff")
    problems = verify_files(dest, manifest)
    assert len(problems) == 1 and problems[0].startswith("model.safetensors: sha256 ")
    broken = [problem.split(":", 1)[0] for problem in problems]

    repaired = download_checkpoint("acme/tiny", "main", dest, refetch=broken)
    assert verify_files(dest, repaired) == []
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS


def test_hub_reachable(hf, monkeypatch):
    ok, reason = hub_reachable()
    assert ok, reason

    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    start = time.monotonic()
    ok, reason = hub_reachable(timeout_s=2.0)
    assert not ok and dead in reason
    assert time.monotonic() - start < 2.5

    monkeypatch.setattr(constants, "ENDPOINT", hf.url)
    set_offline(monkeypatch, True)
    ok, reason = hub_reachable()
    assert not ok and "HF_HUB_OFFLINE" in reason


def test_classify_errors_without_a_hub(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    full = OSError(errno.ENOSPC, "No space left on device", "/cache/blobs/abc")
    wrapped = RuntimeError("download failed")
    wrapped.__cause__ = full
    error = classify_hub_error(wrapped, "acme/tiny", "main")
    assert (error.status, error.reason) == (
        "failed",
        "disk full while fetching acme/tiny@main (/cache/blobs/abc): No space left on device",
    )

    offline = LocalEntryNotFoundError("not cached")
    offline.__cause__ = OfflineModeIsEnabled("offline mode is enabled")
    assert "HF_HUB_OFFLINE is set" in classify_hub_error(offline, "acme/tiny", "main").reason

    refused = classify_hub_error(httpx2.ConnectError("Connection refused"), "acme/tiny", "main")
    assert refused.status == "failed" and "cannot reach the Hub" in refused.reason

    same = AcquisitionError("pending_access", "x")
    assert classify_hub_error(same, "acme/tiny", "main") is same
    with pytest.raises(ValueError):
        AcquisitionError("later", "x")


_CHILD = """
import json, sys
from pathlib import Path
from localbench.fetch.hub import AcquisitionError, download_checkpoint
try:
    manifest = download_checkpoint("acme/tiny", "main", Path(sys.argv[1]))
    print(json.dumps({"ok": manifest["resolved_commit"]}))
except AcquisitionError as error:
    print(json.dumps({"status": error.status, "reason": error.reason}))
"""


def test_environment_variables_alone_configure_a_fresh_process(fake_hub, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING")) and "proxy" not in k.lower()
    }
    env.update(
        {"HF_ENDPOINT": fake_hub.url, "HF_HOME": str(tmp_path / "home"), "NO_PROXY": "127.0.0.1"}
    )
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

    def child(dest: str, **extra: str) -> dict:
        run = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp_path / dest)],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout.strip().splitlines()[-1])

    sha, _ = fake_hub.repos["acme/tiny"].commit("main")
    empty_home = str(tmp_path / "empty")
    assert child("a", HF_HUB_OFFLINE="1", HF_HOME=empty_home)["status"] == "failed"
    assert child("b") == {"ok": sha}  # online, into $HF_HOME
    assert child("c", HF_HUB_OFFLINE="1") == {"ok": sha}  # offline, from $HF_HOME's cache
    assert (tmp_path / "home" / "hub" / "models--acme--tiny").is_dir()


def test_repo_gone_from_the_hub_is_still_served_from_the_cache(hf, tmp_path, monkeypatch):
    first = download_checkpoint("acme/flaky", "main", tmp_path / "a")
    monkeypatch.delitem(hf.repos, "acme/flaky")  # now answers 404 RepoNotFound
    again = download_checkpoint("acme/flaky", "main", tmp_path / "b")
    assert again["files"] == first["files"]
    with pytest.raises(AcquisitionError) as caught:  # not cached at that revision
        download_checkpoint("acme/flaky", "other", tmp_path / "c")
    assert caught.value.status == "failed" and "acme/flaky" in caught.value.reason
