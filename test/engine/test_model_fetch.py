"""`refseg-weights` fetches every model a mode needs, from servers on 127.0.0.1 standing in
for the Hugging Face hub (HF_ENDPOINT), the SAM2 release site (--base-url) and the SAMWISE
checkpoint's file server (--url): fetch, reuse, resume, refusal and corrupt files. Each
command runs as its own process with its own caches, as a user runs it; a model parameter's
hub id is then resolved from the cache alone (HF_HUB_OFFLINE=1), as the node does.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from support.hub_server import HubServer, hub_env, refseg_weights
from support.tiny_models import save_dinov2, save_owlv2, save_roberta_tokenizer


OWL = "google/owlv2-base-patch16-ensemble"
DINO_TINY = "IDEA-Research/grounding-dino-tiny"
DINOV2 = "facebook/dinov2-base"
SAM2_PATH = "/092824/sam2.1_hiera_tiny.pt"
SAMWISE_PATH = "/samwise/final_model_mevis.pth"


@pytest.fixture(scope="module")
def detector_folder(tmp_path_factory) -> Path:
    """A tiny OWLv2 folder, plus weight files in other formats that must not be fetched."""
    folder = save_owlv2(tmp_path_factory.mktemp("owl") / "owlv2")
    (folder / "pytorch_model.bin").write_bytes(b"\x00" * 4096)
    (folder / "tf_model.h5").write_bytes(b"\x01" * 4096)
    return folder


@pytest.fixture
def hub(detector_folder, tmp_path):
    server = HubServer()
    server.add_repo(OWL, detector_folder)
    server.add_repo(DINO_TINY, detector_folder)  # what is fetched does not depend on the weights
    server.add_repo("FacebookAI/roberta-base", save_roberta_tokenizer(tmp_path / "roberta"))
    server.files[SAM2_PATH] = b"sam2 checkpoint" * 100
    state = {"model": {"sam.no_mem_embed": torch.zeros(1, 1, 8)}, "epoch": 0}
    torch.save(state, tmp_path / "samwise.pth")
    server.files[SAMWISE_PATH] = (tmp_path / "samwise.pth").read_bytes()
    yield server
    server.close()


def _env(tmp_path: Path, hub: HubServer, offline: bool = False) -> dict[str, str]:
    return hub_env(hub, tmp_path / "hf", REFSEG_WEIGHTS=str(tmp_path / "weights"),
                   HF_HUB_OFFLINE="1" if offline else "0", HF_HUB_ETAG_TIMEOUT="20")


def _weights(tmp_path, hub, *args: str) -> subprocess.CompletedProcess:
    """`refseg-weights ARGS` in its own process, with this test's caches."""
    return refseg_weights(list(args), _env(tmp_path, hub))


def _resolve(tmp_path, hub, value: str) -> str:
    """`models.local_model(value)` in an offline process: the path, or the error's message."""
    code = ("import sys\nfrom refseg_ros.models import local_model, ModelNotCached\n"
            "try:\n    print(local_model(sys.argv[1], 'grounding_model'))\n"
            "except ModelNotCached as exc:\n    print('NOT CACHED:', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, value], env=_env(tmp_path, hub, offline=True),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _resolve_gets(hub: HubServer, repo: str, name: str) -> list:
    return hub.gets(f"/{repo}/resolve/{hub.commit(repo)}/{name}")


def _blobs(tmp_path: Path, repo: str) -> list[Path]:
    folder = tmp_path / "hf" / ("models--" + repo.replace("/", "--")) / "blobs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_captions_mode_fetches_each_model_once_and_the_node_finds_them(tmp_path, hub, detector_folder):
    proc = _weights(tmp_path, hub, "--for", "captions", "--base-url", hub.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    snapshot = Path(_resolve(tmp_path, hub, DINO_TINY))
    assert snapshot.is_dir() and snapshot.name == hub.commit(DINO_TINY), snapshot
    fetched = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert "pytorch_model.bin" not in fetched and "tf_model.h5" not in fetched  # one weight format only
    for name in fetched:
        assert (snapshot / name).read_bytes() == (detector_folder / name).read_bytes()
    # The hub cache names each blob by its digest: SHA-256 for weights, git's blob id else.
    blob = (snapshot / "model.safetensors").resolve()
    assert blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()
    sam2 = tmp_path / "weights" / "sam2.1_hiera_tiny.pt"
    assert sam2.read_bytes() == hub.files[SAM2_PATH]
    assert (tmp_path / "weights" / "sam2.1_hiera_tiny.pt.sha256").read_text().strip() == \
        hashlib.sha256(sam2.read_bytes()).hexdigest()

    # A second run finds everything in the caches: no file is fetched again.
    before = len(hub.requests)
    proc = _weights(tmp_path, hub, "--for", "captions", "--base-url", hub.url)
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in hub.requests[before:] if r[0] == "GET" and "/resolve/" in r[1]]
    assert hub.gets(SAM2_PATH) == [None]
    listed = _weights(tmp_path, hub, "--list").stdout
    assert any(line.startswith("grounding-dino-tiny") and " yes " in line for line in listed.splitlines())


def test_a_transfer_cut_half_way_is_resumed(tmp_path, hub):
    # huggingface_hub writes 10 MiB at a time: weights of 24 MB are cut after the first.
    folder = tmp_path / "dinov2"
    save_dinov2(folder)
    save_file({"embeddings.extra": torch.randn(6_000_000)}, folder / "model.safetensors")
    hub.add_repo(DINOV2, folder)
    weights = f"/{DINOV2}/resolve/{hub.commit(DINOV2)}/model.safetensors"
    hub.cut_once.add(weights)
    proc = _weights(tmp_path, hub, "dinov2-base")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranges = hub.gets(weights)
    assert ranges == [None, f"bytes={10 * 1024 * 1024}-"], ranges
    snapshot = Path(_resolve(tmp_path, hub, DINOV2))
    assert (snapshot / "model.safetensors").read_bytes() == hub.repos[DINOV2]["model.safetensors"]


def test_a_refused_file_leaves_nothing_half_written_and_a_rerun_completes(tmp_path, hub):
    weights = f"/{OWL}/resolve/{hub.commit(OWL)}/model.safetensors"
    hub.status[weights] = 403
    proc = _weights(tmp_path, hub, "owlv2")
    assert proc.returncode == 1
    assert f"refseg-weights: owlv2: {OWL}:" in proc.stderr and "403" in proc.stderr, proc.stderr
    assert not [b for b in _blobs(tmp_path, OWL) if "incomplete" in b.name]
    # The node's resolution refuses the incomplete snapshot and names the command.
    said = _resolve(tmp_path, hub, OWL)
    assert said.startswith("NOT CACHED: parameter grounding_model: " + OWL) and "`refseg-weights owlv2`" in said
    config_gets = len(_resolve_gets(hub, OWL, "config.json"))

    del hub.status[weights]
    proc = _weights(tmp_path, hub, "owlv2")
    assert proc.returncode == 0, proc.stderr
    assert len(_resolve_gets(hub, OWL, "config.json")) == config_gets  # kept from the first run
    assert Path(_resolve(tmp_path, hub, OWL)).joinpath("model.safetensors").is_file()


def test_an_unknown_repository_is_refused_with_the_reason(tmp_path, hub):
    proc = _weights(tmp_path, hub, "nobody/nothing")
    assert proc.returncode == 1
    assert "nobody/nothing: RepositoryNotFoundError" in proc.stderr, proc.stderr
    assert not (tmp_path / "hf" / "models--nobody--nothing" / "snapshots").exists()
    proc = _weights(tmp_path, hub, "no-such-model")
    assert proc.returncode == 2 and "unknown model 'no-such-model'" in proc.stderr


def test_a_corrupt_file_is_refused_and_not_used(tmp_path, hub):
    weights = f"/{OWL}/resolve/{hub.commit(OWL)}/model.safetensors"
    good = hub.repos[OWL]["model.safetensors"]
    hub.corrupt[weights] = bytes(b ^ 0xFF for b in good)  # same size, other digest
    proc = _weights(tmp_path, hub, "owlv2")
    assert proc.returncode == 1
    assert "model.safetensors did not match the hub's digest and was removed" in proc.stderr, proc.stderr
    assert _resolve(tmp_path, hub, OWL).startswith("NOT CACHED:")
    assert all(b.read_bytes() != hub.corrupt[weights] for b in _blobs(tmp_path, OWL))

    # Fewer bytes than the hub's metadata says: refused by the size check, nothing kept.
    del hub.corrupt[weights]
    hub.short[weights] = len(good) // 2
    proc = _weights(tmp_path, hub, "owlv2")
    assert proc.returncode == 1 and "size" in proc.stderr, proc.stderr
    assert _resolve(tmp_path, hub, OWL).startswith("NOT CACHED:")

    del hub.short[weights]
    assert _weights(tmp_path, hub, "owlv2").returncode == 0
    assert (Path(_resolve(tmp_path, hub, OWL)) / "model.safetensors").read_bytes() == good


def test_samwise_checkpoint_from_its_file_server(tmp_path, hub):
    url = hub.url + SAMWISE_PATH
    payload = hub.files[SAMWISE_PATH]
    dest = tmp_path / "weights" / "samwise_final_model_mevis.pth"
    part = dest.with_name(dest.name + ".part")

    hub.status[SAMWISE_PATH] = 404  # refused: a clear message, nothing written
    proc = _weights(tmp_path, hub, "samwise", "--url", url)
    assert proc.returncode == 1 and "server answered 404" in proc.stderr, proc.stderr
    assert not dest.exists() and not part.exists()
    del hub.status[SAMWISE_PATH]

    proc = _weights(tmp_path, hub, "samwise", "--url", url, "--sha256", "0" * 64)  # another digest: refused
    assert proc.returncode == 1 and "does not match the expected" in proc.stderr, proc.stderr
    assert not dest.exists() and not part.exists()

    hub.cut_once.add(SAMWISE_PATH)  # cut half-way: the part is kept, the next run resumes it
    proc = _weights(tmp_path, hub, "samwise", "--url", url)
    assert proc.returncode == 1 and "run again to resume" in proc.stderr, proc.stderr
    assert 0 < part.stat().st_size < len(payload) and not dest.exists()
    digest = hashlib.sha256(payload).hexdigest()
    proc = _weights(tmp_path, hub, "samwise", "--url", url, "--sha256", digest)
    assert proc.returncode == 0, proc.stderr
    assert hub.gets(SAMWISE_PATH)[-1] == f"bytes={len(payload) // 2}-"
    assert dest.read_bytes() == payload and dest.with_name(dest.name + ".sha256").read_text().strip() == digest

    dest.write_bytes(b"z" * len(payload))  # changed since it was fetched: reported, not used
    proc = _weights(tmp_path, hub, "samwise", "--url", url)
    assert proc.returncode == 1 and "CORRUPT" in proc.stderr


def test_every_mode_names_models_of_the_table():
    from refseg_ros import models

    assert set(models.MODES) >= {"captions", "reference", "samwise", "transitions", "all"}
    assert set(models.MODES["all"]) == {n for names in models.MODES.values() for n in names}
    assert all(n in models.MODELS for n in models.MODES["all"])
    assert {models.MODELS[n].kind for n in models.MODES["captions"]} == {"sam2", "hub"}
    assert json.dumps([models.MODELS[n].source for n in models.AUTO_DETECTORS])  # all hub ids


def test_dino_model_takes_a_hub_id_from_the_cache(tmp_path, hub, monkeypatch):
    from huggingface_hub import constants

    from refseg_ros.runtime.acquisition import AcquisitionSettings, open_acquisition
    from refseg_ros.runtime.captions import samwise_checkpoint_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    settings = AcquisitionSettings(dino_model=DINOV2)
    service, note = open_acquisition(settings, torch.device("cpu"))
    assert service is None and "`refseg-weights dinov2-base (or refseg-weights --for reference)`" in note, note

    hub.add_repo(DINOV2, save_dinov2(tmp_path / "dinov2"))
    assert _weights(tmp_path, hub, "--for", "reference", "--base-url", hub.url).returncode == 0
    service, note = open_acquisition(settings, torch.device("cpu"), synchronous=True)
    assert service is not None and f"looked for by DINOv2 from {DINOV2}" in note, note
    service.close()

    monkeypatch.setenv("REFSEG_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no SAMWISE checkpoint; fetch it with `refseg-weights samwise`"):
        samwise_checkpoint_file("auto")
