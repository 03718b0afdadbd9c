"""A small Hugging Face Hub-compatible HTTP server for tests.

The real `huggingface_hub` client talks to it over loopback HTTP (pass `endpoint=server.endpoint`, or call
`point_hf_client_at`). It implements the subset of the Hub API used for pushing and pulling model checkpoints:
repo creation, preupload + NDJSON commits (every file is "regular", so nothing goes through LFS/Xet), refs,
branches, tags, commit history, model info, tree listing and `/resolve` downloads (HEAD + GET, with Range).

Storage: blobs are content-addressed files on disk (named by their git blob sha1, which is also the ETag the
client caches under); each commit is an immutable snapshot `{path: blob}` kept in memory.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

import pytest
import uvicorn
import yaml
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

# Mirrors what the real Hub puts in the "initial commit" of a new repo (trimmed).
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_SHORT_SHA = re.compile(r"[0-9a-f]{7,40}")
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"  # revisions are quoted with safe="" by the client, so they never contain a raw "/"
# (methods, pattern on the *raw* (still percent-encoded) path, handler name)
_ROUTES: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    (("POST",), re.compile(r"/api/repos/create"), "create_repo"),
    (("GET",), re.compile(r"/api/whoami-v2"), "whoami"),
    (("POST",), re.compile(r"/api/validate-yaml"), "validate_yaml"),
    (("GET",), re.compile(rf"/api/models/{_REPO}(?:/revision/{_REV})?"), "info"),
    (("GET",), re.compile(rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?"), "tree"),
    (("GET",), re.compile(rf"/api/models/{_REPO}/refs"), "refs"),
    (("GET",), re.compile(rf"/api/models/{_REPO}/commits/{_REV}"), "commits"),
    (("POST",), re.compile(rf"/api/models/{_REPO}/preupload/{_REV}"), "preupload"),
    (("POST",), re.compile(rf"/api/models/{_REPO}/commit/{_REV}"), "commit"),
    (("POST",), re.compile(rf"/api/models/{_REPO}/branch/{_REV}"), "branch"),
    (("POST",), re.compile(rf"/api/models/{_REPO}/tag/{_REV}"), "tag"),
    (("DELETE",), re.compile(rf"/api/models/{_REPO}/tag/(?P<tag>[^/]+)"), "untag"),
    (("GET", "HEAD"), re.compile(rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)"), "resolve"),
]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _refs(kind: str, items: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha} for n, sha in sorted(items.items())]


def git_blob_sha1(data: bytes) -> str:
    """The git blob id: what the client compares (as `oid`) to skip unchanged regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """Raised by handlers; rendered with the `X-Error-Code` header that `hf_raise_for_status` maps to errors."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


@dataclass(frozen=True)
class Blob:
    oid: str  # git blob sha1 of the content
    size: int


@dataclass(frozen=True)
class Commit:
    id: str
    parent: str | None
    title: str  # = `commit_message` on the client side
    message: str  # = `commit_description` on the client side
    date: str
    authors: tuple[str, ...]
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """Branch, then tag, then full sha, then unambiguous sha prefix (>= 7 hex chars), like `git rev-parse`."""
        rev = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = self.branches.get(rev) or self.tags.get(rev)
        if sha is None and _SHORT_SHA.fullmatch(rev):
            matches = [c for c in self.commits if c.startswith(rev)]
            sha = matches[0] if len(matches) == 1 else None
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[sha]

    def history(self, head: Commit) -> Iterator[Commit]:
        commit: Commit | None = head
        while commit is not None:
            yield commit
            commit = self.commits[commit.parent] if commit.parent else None


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    authorization: str | None


class HubServer:
    """In-process Hub on 127.0.0.1. `token=None` disables auth; otherwise writes and private reads need it."""

    def __init__(self, root: str | Path, *, token: str | None = None, username: str = "test-user") -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"  # content-addressed, shared by all repos
        self.token = token
        self.username = username
        self.repos: dict[str, Repo] = {}
        self.requests: list[RequestRecord] = []  # every request seen, for assertions (e.g. HF_TOKEN was sent)
        self.endpoint = ""
        self._lock = threading.Lock()  # guards repos/requests: handlers may run concurrently with test code
        self._counter = itertools.count()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self.blobs.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))  # free port chosen by the OS, no race with other test workers
        port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(self, interface="asgi3", log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)  # no proxy env, unlike urllib
                conn.request("GET", "/api/whoami-v2")
                conn.getresponse().read()
                conn.close()
                with self._lock:
                    self.requests.clear()  # forget the probe: tests assert on what the client sent
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("hub test server did not start")

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def authorization_headers(self) -> list[str | None]:
        with self._lock:
            return [r.authorization for r in self.requests]

    def branch_head(self, repo_id: str, branch: str = "main") -> str:
        with self._lock:
            return self.repos[repo_id].branches[branch]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except HubError as err:
            response = err.response()
        await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response:
        # Route on the raw path so that quoted revisions like "refs%2Fpr%2F1" stay a single segment.
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode().split("?", 1)[0]
        # dataset repos share the model repos' storage and routes (tests keep their names apart)
        raw_path = re.sub(r"^/api/datasets/", "/api/models/", re.sub(r"^/datasets/", "/", raw_path))
        auth = request.headers.get("authorization")
        with self._lock:
            self.requests.append(RequestRecord(request.method, raw_path, auth))
        if self.token is not None and auth is not None and auth != f"Bearer {self.token}":
            # This exact message makes the client raise a plain 401 HfHubHTTPError, as the real Hub does.
            raise HubError(401, "Invalid credentials in Authorization header")
        authed = self.token is None or auth is not None
        for methods, pattern, name in _ROUTES:
            match = pattern.fullmatch(raw_path)
            if match is None or request.method not in methods:
                continue
            args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            if request.method in ("POST", "DELETE") and not authed:
                raise HubError(401, "Unauthorized: a token is required")
            if "repo" in args:
                with self._lock:
                    repo = self.repos.get(args["repo"])
                if repo is None or (repo.private and not authed):
                    # The real Hub answers 401 for private repos without a token; both map to RepositoryNotFoundError.
                    raise HubError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
                args["repo"] = repo
            return await getattr(self, f"_h_{name}")(request, **args)
        raise HubError(404, f"Not found: {request.method} {raw_path}")

    def _store_blob(self, data: bytes) -> Blob:
        blob = Blob(git_blob_sha1(data), len(data))
        path = self.blobs / blob.oid
        if not path.exists():  # content-addressed: concurrent writers write identical bytes
            tmp = path.with_name(f"{blob.oid}.{threading.get_ident()}.{next(self._counter)}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return blob

    def _new_commit(
        self, repo: Repo, parent: Commit | None, title: str, message: str, files: dict[str, Blob], author: str
    ) -> Commit:
        """Create and register a commit (caller holds the lock). Sha is unique per commit, like git's."""
        tree = sorted((p, b.oid) for p, b in files.items())
        seed = json.dumps([parent and parent.id, title, message, tree, next(self._counter), time.time_ns()])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent and parent.id, title, message, _now(), (author,), files)
        repo.commits[commit.id] = commit
        return commit

    async def _h_whoami(self, request: Request) -> Response:
        return JSONResponse({"type": "user", "name": self.username, "fullname": self.username, "orgs": []})

    async def _h_validate_yaml(self, request: Request) -> Response:
        """A README's metadata must be a YAML mapping (the client asks before it uploads a README.md)."""
        content = (await request.json()).get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            return JSONResponse({"errors": [{"message": f"invalid YAML: {exc}"}]}, status_code=400)
        if not isinstance(metadata, dict | None):
            return JSONResponse({"errors": [{"message": "the metadata is not a mapping"}]}, status_code=400)
        return JSONResponse({"warnings": []})

    async def _h_create_repo(self, request: Request) -> Response:
        body = await request.json()
        if body.get("type") not in (None, "model", "dataset"):
            raise HubError(400, "This test server hosts model and dataset repos")
        repo_id = f"{body.get('organization') or self.username}/{body['name']}"
        url = f"{str(request.base_url).rstrip('/')}/{repo_id}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        with self._lock:
            if repo_id in self.repos:
                return JSONResponse({"error": "You already created this model repo", "url": url}, status_code=409)
            repo = self.repos[repo_id] = Repo(repo_id, private, _now())
            initial = self._new_commit(
                repo, None, "initial commit", "", {".gitattributes": self._store_blob(GITATTRIBUTES)}, "system"
            )
            repo.branches["main"] = initial.id
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def _h_info(self, request: Request, repo: Repo, rev: str = "main") -> Response:
        with self._lock:
            commit = repo.resolve(rev)
        siblings = [{"rfilename": p, "size": b.size, "blobId": b.oid} for p, b in sorted(commit.files.items())]
        info = {"id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.id, "private": repo.private}
        return JSONResponse({**info, "lastModified": commit.date, "createdAt": repo.created_at, "siblings": siblings})

    async def _h_tree(self, request: Request, repo: Repo, rev: str, path: str = "") -> Response:
        with self._lock:
            commit = repo.resolve(rev)
        recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for file_path, blob in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):  # folders along the way
                folder = prefix + "/".join(parts[:i])
                oid = hashlib.sha1(f"{commit.id}:{folder}".encode()).hexdigest()
                entries[folder] = {"type": "directory", "path": folder, "size": 0, "oid": oid}
            if recursive or len(parts) == 1:
                entries[file_path] = {"type": "file", "path": file_path, "size": blob.size, "oid": blob.oid}
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        return JSONResponse(list(entries.values()))

    async def _h_refs(self, request: Request, repo: Repo) -> Response:
        with self._lock:
            branches, tags = _refs("heads", repo.branches), _refs("tags", repo.tags)
        return JSONResponse({"branches": branches, "tags": tags, "converts": [], "pullRequests": []})

    async def _h_commits(self, request: Request, repo: Repo, rev: str) -> Response:
        with self._lock:
            history = list(repo.history(repo.resolve(rev)))  # newest first, first-parent chain
        return JSONResponse(
            [
                {"id": c.id, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": a} for a in c.authors]}
                for c in history
            ]
        )

    async def _h_preupload(self, request: Request, repo: Repo, rev: str) -> Response:
        files = (await request.json())["files"]
        with self._lock:
            current = repo.resolve(rev).files
        # "regular" for every file: content comes base64-inline in the commit, so no LFS/Xet round-trip.
        # "oid" lets the client drop unchanged files (and skip empty commits), as against the real Hub.
        answers = []
        for f in files:
            oid = current[f["path"]].oid if f["path"] in current else None
            answers.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return JSONResponse({"files": answers})

    async def _h_commit(self, request: Request, repo: Repo, rev: str) -> Response:
        if request.query_params.get("create_pr") in ("1", "true"):
            raise HubError(400, "Pull requests are not supported by the test server")
        header: dict[str, Any] = {}
        additions: dict[str, Blob] = {}
        deletions: list[tuple[str, bool]] = []
        for line in (await request.body()).splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                raw = value["content"].encode()
                data = base64.b64decode(raw) if value.get("encoding") == "base64" else raw
                additions[value["path"]] = self._store_blob(data)  # before taking the lock: may be MBs
            elif key in ("deletedFile", "deletedFolder"):
                deletions.append((value["path"], key == "deletedFolder"))
            else:
                raise HubError(400, f"Unsupported commit operation {key!r} (the test server never asks for LFS)")
        with self._lock:
            if rev not in repo.branches:
                raise HubError(404, f"Invalid rev id: {rev} (commits must target a branch)", "RevisionNotFound")
            parent = repo.commits[repo.branches[rev]]
            if header.get("parentCommit") not in (None, parent.id):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(parent.files)
            for path, is_folder in deletions:
                doomed = [p for p in files if p.startswith(path.rstrip("/") + "/")] if is_folder else [path]
                if not doomed or any(p not in files for p in doomed):
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            files.update(additions)
            commit = self._new_commit(
                repo, parent, header.get("summary", ""), header.get("description", ""), files, self.username
            )
            repo.branches[rev] = commit.id
        url = f"{str(request.base_url).rstrip('/')}/{repo.repo_id}/commit/{commit.id}"
        return JSONResponse({"success": True, "commitOid": commit.id, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None})

    async def _h_branch(self, request: Request, repo: Repo, rev: str) -> Response:
        body = json.loads(await request.body() or b"{}")
        with self._lock:
            if rev in repo.branches:
                raise HubError(409, f"Branch {rev} already exists")
            repo.branches[rev] = repo.resolve(body.get("startingPoint") or "main").id
        return JSONResponse({})

    async def _h_tag(self, request: Request, repo: Repo, rev: str) -> Response:
        body = await request.json()
        with self._lock:
            if body["tag"] in repo.tags:
                raise HubError(409, f"Tag {body['tag']} already exists")
            repo.tags[body["tag"]] = repo.resolve(rev).id
        return JSONResponse({})

    async def _h_untag(self, request: Request, repo: Repo, tag: str) -> Response:
        with self._lock:
            if repo.tags.pop(tag, None) is None:
                raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
        return JSONResponse({})

    async def _h_resolve(self, request: Request, repo: Repo, rev: str, path: str) -> Response:
        with self._lock:
            commit = repo.resolve(rev)
        blob = commit.files.get(path)
        if blob is None:  # X-Repo-Commit lets the client cache the non-existence (.no_exist)
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.id})
        # No redirect and no X-Xet-* headers: the client then downloads with a plain GET on this same URL.
        # ETag (the git blob sha1) names the blob in the client cache; FileResponse adds Content-Length/Range.
        headers = {"X-Repo-Commit": commit.id, "ETag": f'"{blob.oid}"'}
        return FileResponse(self.blobs / blob.oid, headers=headers, media_type="application/octet-stream")


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json")


def push_checkpoints(api, repo_id: str, run: Path, steps=(10, 20, 30)) -> list[str]:
    """A local run's checkpoint-N folders pushed to `repo_id` as the Trainer's every_save does: one commit per
    checkpoint, its adapter and trainer state at the top, "Training in progress, step N". Returns the commits."""
    return [
        api.upload_folder(
            repo_id=repo_id, folder_path=run / f"checkpoint-{step}", allow_patterns=list(ADAPTER_FILES),
            commit_message=f"Training in progress, step {step}",
        ).oid
        for step in steps
    ]


def point_hf_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Make clients that don't pass `endpoint=` use the test server.

    `HF_ENDPOINT` is read once, when `huggingface_hub` is imported, into `constants.ENDPOINT` and the
    `/resolve` URL template, so setting the env var inside a test is not enough: patch both.
    """
    from huggingface_hub import constants, hf_api

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)  # the module's own client (`file_exists`, ...), made at import
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A started, auth-less HubServer shared by the session (use unique repo ids per test)."""
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server
