"""The unmodified huggingface_hub client against the test Hub server (tests/hubserver.py), over loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import save_file

from tests.hubserver import HubServer, point_hf_client_at  # the `hub_server` fixture comes from conftest.py

REPO = "test-user/pricer-lora"
FILES = ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json")
MESSAGES = ("Training in progress, step 10", "Training in progress, step 20", "Training in progress, epoch 1")


@dataclass
class Pushed:
    api: HfApi
    shas: list[str]  # oldest first, one per entry of MESSAGES
    contents: dict[str, dict[str, bytes]]  # sha -> filename -> bytes
    initial_sha: str


def write_checkpoint(folder: Path, step: int) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(step)
    # 2 x 512 KiB fp32 tensors: a ~1 MiB file, different for every step
    save_file({"lora_A": torch.randn(512, 256), "lora_B": torch.randn(256, 512)}, folder / FILES[1])
    (folder / FILES[0]).write_text(json.dumps({"r": 8, "lora_alpha": 16, "peft_type": "LORA"}))
    (folder / FILES[2]).write_text(json.dumps({"global_step": step, "log_history": [{"loss": 1.0 / step}]}))
    return {name: (folder / name).read_bytes() for name in FILES}


@pytest.fixture(autouse=True)
def _client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # No implicit token from the developer's machine; no telemetry (huggingface.co is unreachable anyway).
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture(scope="module")
def pushed(hub_server: HubServer, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    api = HfApi(endpoint=hub_server.endpoint, token=False)
    api.create_repo(REPO, exist_ok=True)
    initial_sha = api.model_info(REPO).sha
    assert initial_sha is not None
    work = tmp_path_factory.mktemp("run")
    shas, contents = [], {}
    for step, message in zip((10, 20, 30), MESSAGES, strict=True):
        content = write_checkpoint(work / "out", step)
        # Default client config: hf_xet is installed, so this goes through the pipelined uploader.
        info = api.upload_folder(repo_id=REPO, folder_path=work / "out", commit_message=message)
        shas.append(info.oid)
        contents[info.oid] = content
    api.create_tag(REPO, tag="v-step20", revision=shas[1])
    api.create_branch(REPO, branch="exp", revision=shas[0])
    return Pushed(api, shas, contents, initial_sha)


def test_create_repo_is_idempotent_and_starts_with_initial_commit(pushed: Pushed) -> None:
    url = pushed.api.create_repo(REPO, exist_ok=True)
    assert url.repo_id == REPO
    with pytest.raises(HfHubHTTPError) as err:
        pushed.api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert pushed.api.list_repo_files(REPO, revision=pushed.initial_sha) == [".gitattributes"]


def test_list_repo_commits_newest_first(pushed: Pushed) -> None:
    commits = pushed.api.list_repo_commits(REPO)
    assert [c.title for c in commits] == [*reversed(MESSAGES), "initial commit"]
    assert [c.commit_id for c in commits] == [*reversed(pushed.shas), pushed.initial_sha]
    assert all(len(c.commit_id) == 40 and c.message == "" for c in commits)  # description, empty by default
    assert commits[0].authors == ["test-user"] and commits[-1].authors == ["system"]
    assert commits[0].created_at >= commits[-1].created_at
    older = pushed.api.list_repo_commits(REPO, revision=pushed.shas[1])
    assert [c.commit_id for c in older] == [pushed.shas[1], pushed.shas[0], pushed.initial_sha]


def test_refs_branches_and_tags(pushed: Pushed) -> None:
    refs = pushed.api.list_repo_refs(REPO)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": pushed.shas[2], "exp": pushed.shas[0]}
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v-step20", "refs/tags/v-step20", pushed.shas[1])]
    with pytest.raises(HfHubHTTPError):
        pushed.api.create_tag(REPO, tag="v-step20", revision=pushed.shas[0])
    pushed.api.create_branch(REPO, branch="exp", exist_ok=True)


def test_model_info_and_files_at_each_revision(pushed: Pushed) -> None:
    for sha in pushed.shas:
        info = pushed.api.model_info(REPO, revision=sha)
        assert info.sha == sha
        assert info.siblings is not None
        assert sorted(s.rfilename for s in info.siblings) == sorted([".gitattributes", *FILES])
        assert pushed.api.list_repo_files(REPO, revision=sha) == sorted([".gitattributes", *FILES])
    assert pushed.api.model_info(REPO).sha == pushed.shas[2]
    assert pushed.api.model_info(REPO, revision=pushed.shas[0][:7]).sha == pushed.shas[0]


def test_download_every_file_at_every_sha(pushed: Pushed, hub_server: HubServer, tmp_path: Path) -> None:
    for sha in pushed.shas:
        for name in FILES:
            path = hf_hub_download(REPO, name, revision=sha, endpoint=hub_server.endpoint, cache_dir=tmp_path)
            assert Path(path).read_bytes() == pushed.contents[sha][name]
            assert f"/snapshots/{sha}/" in path
    # Cached + full sha: served from disk without asking the server.
    before = len(hub_server.requests)
    hf_hub_download(REPO, FILES[1], revision=pushed.shas[0], endpoint=hub_server.endpoint, cache_dir=tmp_path)
    assert len(hub_server.requests) == before


@pytest.mark.parametrize(("revision", "index"), [("main", 2), ("v-step20", 1), ("exp", 0), ("short", 0), ("short", 2)])
def test_download_by_branch_tag_and_short_sha(
    pushed: Pushed, hub_server: HubServer, tmp_path: Path, revision: str, index: int
) -> None:
    sha = pushed.shas[index]
    rev = sha[:7] if revision == "short" else revision
    path = hf_hub_download(REPO, FILES[1], revision=rev, endpoint=hub_server.endpoint, cache_dir=tmp_path)
    assert Path(path).read_bytes() == pushed.contents[sha][FILES[1]]
    assert f"/snapshots/{sha}/" in path  # the client keys its cache on the X-Repo-Commit the server returned


def test_snapshot_download_old_sha(pushed: Pushed, hub_server: HubServer, tmp_path: Path) -> None:
    old = pushed.shas[0]
    folder = Path(snapshot_download(REPO, revision=old, endpoint=hub_server.endpoint, cache_dir=tmp_path))
    assert {p.name for p in folder.iterdir()} == {".gitattributes", *FILES}
    for name in FILES:
        assert (folder / name).read_bytes() == pushed.contents[old][name]
    only = Path(
        snapshot_download(
            REPO, revision=pushed.shas[1][:7], allow_patterns=["*.json"], endpoint=hub_server.endpoint, cache_dir=tmp_path / "b"
        )
    )
    assert {p.name for p in only.iterdir()} == {FILES[0], FILES[2]}
    assert (only / FILES[2]).read_bytes() == pushed.contents[pushed.shas[1]][FILES[2]]


def test_not_found_errors(pushed: Pushed, hub_server: HubServer, tmp_path: Path) -> None:
    ep, api = hub_server.endpoint, pushed.api
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/nope", FILES[0], endpoint=ep, cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("test-user/nope")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("test-user/nope", endpoint=ep, cache_dir=tmp_path)
    for bad_rev in ("no-such-branch", "0" * 40, "abcdef0"):
        with pytest.raises(RevisionNotFoundError):
            hf_hub_download(REPO, FILES[0], revision=bad_rev, endpoint=ep, cache_dir=tmp_path)
        with pytest.raises(RevisionNotFoundError):
            api.model_info(REPO, revision=bad_rev)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="no-such-branch", endpoint=ep, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_commits(REPO, revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.bin", revision=pushed.shas[0], endpoint=ep, cache_dir=tmp_path)
    assert issubclass(RemoteEntryNotFoundError, EntryNotFoundError)


def test_unchanged_upload_makes_no_commit(pushed: Pushed, hub_server: HubServer, tmp_path: Path) -> None:
    repo = "test-user/unchanged"
    pushed.api.create_repo(repo)
    write_checkpoint(tmp_path / "ck", 5)
    first = pushed.api.upload_folder(repo_id=repo, folder_path=tmp_path / "ck", commit_message="one")
    again = pushed.api.upload_folder(repo_id=repo, folder_path=tmp_path / "ck", commit_message="two")
    assert again.oid == first.oid  # the client skips files whose preupload "oid" matches, then the whole commit
    assert [c.title for c in pushed.api.list_repo_commits(repo)] == ["one", "initial commit"]


def test_upload_file_and_legacy_commit_path(
    pushed: Pushed, hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without hf_xet, upload_folder falls back to create_commit: both paths must work against the server.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    repo = "test-user/legacy"
    pushed.api.create_repo(repo)
    content = write_checkpoint(tmp_path / "ck", 7)
    a = pushed.api.upload_folder(repo_id=repo, folder_path=tmp_path / "ck", commit_message="folder")
    b = pushed.api.upload_file(path_or_fileobj=b"hello", path_in_repo="sub/dir/note.txt", repo_id=repo, commit_message="file")
    assert [c.commit_id for c in pushed.api.list_repo_commits(repo)][:2] == [b.oid, a.oid]
    assert "sub/dir/note.txt" in pushed.api.list_repo_files(repo)
    with pytest.raises(HfHubHTTPError) as err:  # stale parent_commit is refused, like on the Hub
        pushed.api.upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, commit_message="late", parent_commit=a.oid
        )
    assert err.value.response.status_code == 412
    with ThreadPoolExecutor(4) as pool:  # concurrent downloads
        paths = list(
            pool.map(
                lambda n: hf_hub_download(repo, n, revision=a.oid, endpoint=hub_server.endpoint, cache_dir=tmp_path / "cache"),
                FILES,
            )
        )
    assert [Path(p).read_bytes() for p in paths] == [content[n] for n in FILES]


def test_point_hf_client_at_env(pushed: Pushed, hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_hf_client_at(monkeypatch, hub_server.endpoint)
    assert HfApi().model_info(REPO).sha == pushed.shas[2]
    path = hf_hub_download(REPO, FILES[0], cache_dir=tmp_path)
    assert Path(path).read_bytes() == pushed.contents[pushed.shas[2]][FILES[0]]


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub", token="hf_secret") as server:
        yield server


def test_auth(private_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ep, repo = private_server.endpoint, "test-user/private"
    monkeypatch.setenv("HF_TOKEN", "hf_secret")  # picked up implicitly by the client
    api = HfApi(endpoint=ep)
    api.create_repo(repo, private=True)
    write_checkpoint(tmp_path / "ck", 1)
    sha = api.upload_folder(repo_id=repo, folder_path=tmp_path / "ck", commit_message="private").oid
    assert Path(hf_hub_download(repo, FILES[0], revision=sha, endpoint=ep, cache_dir=tmp_path / "c1")).exists()
    assert set(private_server.authorization_headers) == {"Bearer hf_secret"}

    monkeypatch.delenv("HF_TOKEN")
    anonymous = HfApi(endpoint=ep, token=False)
    with pytest.raises(RepositoryNotFoundError):  # 401 without a token, as the Hub does for private repos
        anonymous.model_info(repo)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo, FILES[0], revision=sha, endpoint=ep, cache_dir=tmp_path / "c2", token=False)
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_repo("test-user/other")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=ep, token="hf_wrong").model_info(repo)
    assert err.value.response.status_code == 401 and not isinstance(err.value, RepositoryNotFoundError)
