"""The on-disk cache of exported encoders, beside the weights cache.

One entry (a folder under `<weights cache>/encoders/`) per (model, image size,
precision, backend, device kind, weights digest, library versions); its name is readable
and ends in a digest of that key, so another key never finds it. An entry is accepted
only once its build passed the parity check: `manifest.json`, written last and
atomically (`refseg_ros.atomicfile`), records the key, the sha256 of every file of the
build and the parity figures. An entry whose manifest is missing, unreadable or names
another key, or whose files are missing or have other digests, is stale or corrupt: it is
emptied and built again, never used.

Entries that no build can use any more are pruned (`stale_entries`, `remove_entries`):
a build removes the entry it supersedes (the same model, size, precision, backend,
device and weights, built by other library versions or an older export format), and
`refseg-weights --prune-engines` removes every entry this install cannot use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from ...atomicfile import atomic_write
from ..weights import cache_dir, sha256_of

FORMAT = 1  # what an entry holds and how it is exported; a change makes every older entry stale
MANIFEST = "manifest.json"
UNFINISHED_AFTER_S = 3600.0  # a folder without a manifest this long after its last change is a build cut short
# the key fields that name what an entry is a build of; the others (versions, format) say how it was built
IDENTITY = ("model", "image_size", "precision", "backend", "device", "weights")


def encoder_cache_dir(directory: Optional[Path] = None) -> Path:
    """`<directory or the weights cache ($REFSEG_WEIGHTS)>/encoders`."""
    return (directory or cache_dir()) / "encoders"


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the weights the plain pass uses (the image encoder's, conv_s0's and
    conv_s1's parameters and buffers, by name, with dtype and shape): a checkpoint's,
    an adapter file's or a seed's random weights alike. About 0.1 s per 100 MB on a CPU."""
    digest = hashlib.sha256()
    parts = {"image_encoder": model.image_encoder}
    if model.use_high_res_features_in_sam:
        parts.update(conv_s0=model.sam_mask_decoder.conv_s0, conv_s1=model.sam_mask_decoder.conv_s1)
    for prefix, module in parts.items():
        for name, tensor in sorted(module.state_dict().items()):
            data = tensor.detach().to("cpu").contiguous()
            digest.update(f"{prefix}.{name}:{data.dtype}:{tuple(data.shape)};".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class EntryKey:
    """Everything an export depends on. versions: (library, version) pairs of the
    libraries that export and run it; device: "cpu" or "cuda" (providers differ)."""

    model: str
    image_size: int
    precision: str
    backend: str
    device: str
    weights: str
    versions: tuple[tuple[str, str], ...]
    format: int = FORMAT

    def as_dict(self) -> dict[str, Any]:
        """The key as JSON values (what the manifest records)."""
        out = dataclasses.asdict(self)
        out["versions"] = dict(self.versions)
        return out

    def dirname(self) -> str:
        """`<model>-<size>-<precision>-<backend>-<device>-<12 hex of the key's digest>`."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        tag = hashlib.sha256(text.encode()).hexdigest()[:12]
        model = re.sub(r"[^A-Za-z0-9._+-]", "_", self.model)  # a config path's slashes
        return f"{model}-{self.image_size}-{self.precision}-{self.backend}-{self.device}-{tag}"


class CacheEntry:
    """One entry's folder: its files, its manifest, and whether it may be used."""

    def __init__(self, root: Path, key: EntryKey):
        self.key = key
        self.dir = Path(root) / key.dirname()

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def problem(self) -> Optional[str]:
        """None when the entry is accepted and intact; else why it cannot be used
        ("not built", "manifest unreadable: ...", "built for another key: ...",
        "file X changed or missing")."""
        path = self.manifest_path
        if not path.exists():
            return "not built yet"
        try:
            manifest = json.loads(path.read_text())
            files, key = manifest["files"], manifest["key"]
            accepted = manifest["parity"]["accepted"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"manifest unreadable ({type(exc).__name__}: {exc})"
        if key != self.key.as_dict():
            changed = sorted(k for k in set(key) | set(self.key.as_dict()) if key.get(k) != self.key.as_dict().get(k))
            return f"stale: built for another {', '.join(changed)}"
        if accepted is not True:
            return "its build was not accepted"
        for name, digest in files.items():
            file = self.dir / name
            if not file.is_file() or sha256_of(file) != digest:
                return f"corrupt: {name} missing or changed since it was built"
        return None

    def manifest(self) -> dict[str, Any]:
        """The accepted entry's manifest (call after `problem()` returned None)."""
        return json.loads(self.manifest_path.read_text())

    def reset(self) -> None:
        """Empty the folder for a new build: the manifest goes first, so that a build
        interrupted from here on leaves an entry that is never used."""
        self.manifest_path.unlink(missing_ok=True)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def accept(self, files: list[str], parity: dict[str, Any], extra: Optional[dict[str, Any]] = None) -> None:
        """Record the build as accepted: the key, each of `files`' sha256 (names relative
        to the folder) and the parity figures, in a manifest written atomically."""
        manifest = {"key": self.key.as_dict(), "files": {name: sha256_of(self.dir / name) for name in files},
                    "parity": {**parity, "accepted": True}, **(extra or {})}
        atomic_write(self.manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


def _entries(root: Path) -> Iterator[tuple[Path, Optional[dict[str, Any]]]]:
    """Each entry folder under `root` with its manifest (None when missing or unreadable)."""
    if not root.is_dir():
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            yield folder, manifest if isinstance(manifest, dict) else None
        except (OSError, ValueError):
            yield folder, None


def stale_entries(root: Path, installed: Callable[[str], Optional[dict[str, str]]],
                  like: Optional[EntryKey] = None, now: Optional[float] = None) -> list[tuple[Path, str]]:
    """The entry folders under `root` that no build of this install can use, each with why.

    installed(backend): the library versions an entry of `backend` would be keyed by now
    (`EntryKey.versions` as a dict), None when that runtime is not installed: its entries
    are kept, since the same versions may be installed again. An entry is stale when its
    manifest is unreadable or not accepted, when it was made by an older export format or
    other library versions, or when it has no manifest UNFINISHED_AFTER_S seconds after
    its folder last changed (a build cut short; a younger one may be a build under way).
    `like`: only entries of that key's identity (IDENTITY: the same model, size, precision,
    backend, device and weights) other than its own folder, i.e. what a new build supersedes.
    `now`: the time (seconds since the epoch) folder ages are measured at; default now.
    Integrity (file digests) is not checked here: `CacheEntry.problem` does on use.
    """
    now = time.time() if now is None else now
    stale = []
    for folder, manifest in _entries(root):
        if like is not None and (folder.name == like.dirname() or (
                manifest is None and folder.name.rpartition("-")[0] != like.dirname().rpartition("-")[0])):
            continue
        if manifest is None:
            if not (folder / MANIFEST).exists():
                if now - folder.stat().st_mtime >= UNFINISHED_AFTER_S:
                    stale.append((folder, "a build cut short (no manifest)"))
            else:
                stale.append((folder, "manifest unreadable"))
            continue
        key = manifest.get("key") if isinstance(manifest.get("key"), dict) else {}
        if like is not None and any(key.get(field) != getattr(like, field) for field in IDENTITY):
            continue
        parity = manifest.get("parity")
        if not isinstance(parity, dict) or parity.get("accepted") is not True:
            stale.append((folder, "its build was not accepted"))
        elif key.get("format") != FORMAT:
            stale.append((folder, f"export format {key.get('format')} (now {FORMAT})"))
        else:
            current = installed(str(key.get("backend")))
            if current is not None and key.get("versions") != current:
                built = ", ".join(f"{k} {v}" for k, v in sorted((key.get("versions") or {}).items()))
                now_have = ", ".join(f"{k} {v}" for k, v in sorted(current.items()))
                stale.append((folder, f"built with {built}; installed: {now_have}"))
    return stale


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def remove_entries(stale: list[tuple[Path, str]]) -> int:
    """Delete the folders of `stale` (as `stale_entries` gives them), manifest first (a
    removal cut short leaves an entry that is never used). Returns the bytes freed."""
    freed = 0
    for folder, _ in stale:
        freed += folder_bytes(folder)
        (folder / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    return freed
