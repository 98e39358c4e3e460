"""`refseg-weights`: fetch the models a mode needs (SAM2 checkpoints, hub models, SAMWISE) into their caches, resumably.

Robots are often offline: the cache is a plain directory, so a checkpoint copied there by
hand is found exactly like a downloaded one.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    model: str  # engine model name
    filename: str
    release: str  # path segment of the official release
    sha256: Optional[str] = None  # pinned digest when known


CHECKPOINTS: dict[str, Checkpoint] = {c.model: c for c in [
    Checkpoint("sam2_hiera_t", "sam2_hiera_tiny.pt", "072824"),
    Checkpoint("sam2_hiera_s", "sam2_hiera_small.pt", "072824"),
    Checkpoint("sam2_hiera_b+", "sam2_hiera_base_plus.pt", "072824"),
    Checkpoint("sam2_hiera_l", "sam2_hiera_large.pt", "072824"),
    Checkpoint("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt", "092824"),
    Checkpoint("sam2.1_hiera_s", "sam2.1_hiera_small.pt", "092824"),
    Checkpoint("sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt", "092824"),
    Checkpoint("sam2.1_hiera_l", "sam2.1_hiera_large.pt", "092824"),
]}


class DownloadError(RuntimeError):
    """A download that could not complete; the cache holds no partial file under the final name."""


def base_url() -> str:
    """Where the releases are fetched from: `$REFSEG_WEIGHTS_URL` (a mirror), else the official site."""
    return os.environ.get("REFSEG_WEIGHTS_URL") or OFFICIAL_BASE_URL


def checkpoint_url(model: str, base: Optional[str] = None) -> str:
    """The URL of `model`'s checkpoint under `base` (default `base_url()`).

    Raises KeyError for a model without an official checkpoint.
    """
    entry = CHECKPOINTS[model]
    return f"{(base or base_url()).rstrip('/')}/{entry.release}/{entry.filename}"


def probe(url: str, timeout: float = 3.0) -> None:
    """Return once a TCP connection to `url`'s server (or its proxy) opened within `timeout` s.

    A quick answer to "is this machine online?" before a download whose read timeout is
    long: name resolution and the connection together get at most `timeout` seconds (an
    offline machine whose resolver never answers costs no more). A proxy from the usual
    environment variables (`https_proxy`, ...) is probed instead of the server. The
    connection is closed again at once; nothing is sent.

    Raises DownloadError (saying why) when the server cannot be reached in time.
    """
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname
    if not host:
        raise DownloadError(f"cannot reach {url}: no host in the URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + timeout
    found: list = []

    def resolve() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    # getaddrinfo has no timeout of its own: resolve in a thread and stop waiting for it.
    resolver = threading.Thread(target=resolve, daemon=True)
    resolver.start()
    resolver.join(timeout)
    if not found:
        raise DownloadError(f"cannot reach {url}: no answer for the name {host} within {timeout:g} s (offline?)")
    if isinstance(found[0], OSError):
        raise DownloadError(f"cannot reach {url}: {host}: {found[0]} (offline?)")
    last: Optional[OSError] = None
    for family, kind, proto, _, address in found[0]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(address)
            return
        except OSError as exc:
            last = exc
    reason = last if last is not None else f"no connection within {timeout:g} s"
    raise DownloadError(f"cannot reach {url}: {host}:{port}: {reason} (offline?)")


def cache_dir() -> Path:
    """`$REFSEG_WEIGHTS`, else ~/.cache/refseg_ros/weights."""
    env = os.environ.get("REFSEG_WEIGHTS")
    return Path(env) if env else Path.home() / ".cache" / "refseg_ros" / "weights"


def cached_checkpoint(model: str, directory: Optional[Path] = None) -> Optional[Path]:
    """The cached checkpoint of `model`, if one is there."""
    entry = CHECKPOINTS.get(model)
    if entry is None:
        return None
    path = (directory or cache_dir()) / entry.filename
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: Optional[str] = None,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
    timeout: float = 30.0,
) -> Path:
    """Download `url` to `dest`, resuming a `.part` file left by an interrupted run.

    The size is checked against the server's, the digest against `sha256` when given, and
    the digest is recorded beside the file (`.sha256`) so later runs can re-check it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file is complete
            return _finish(part, dest, sha256, expected_size=have)
        raise DownloadError(f"{url}: server answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"cannot reach {url} ({getattr(exc, 'reason', exc)}). This machine looks offline: "
            f"copy the checkpoint file to {dest} by hand, or pass its path with --checkpoint"
        ) from exc
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as handle:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    have += len(block)
                    if progress:
                        progress(have, total)
            except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"{url}: connection lost after {have} bytes; run again to resume") from exc
    return _finish(part, dest, sha256, expected_size=total)


def _finish(part: Path, dest: Path, sha256: Optional[str], expected_size: Optional[int]) -> Path:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(f"{dest.name}: got {size} bytes, expected {expected_size}; run again to resume")
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise DownloadError(f"{dest.name}: sha256 {digest} does not match the expected {sha256}")
    os.replace(part, dest)
    dest.with_name(dest.name + ".sha256").write_text(digest + "\n")
    return dest


def verify_cached(path: Path) -> bool:
    """Whether a cached file still has the digest recorded when it was downloaded."""
    record = path.with_name(path.name + ".sha256")
    return not record.exists() or record.read_text().strip() == sha256_of(path)


def main(argv: Optional[list[str]] = None) -> int:
    """`refseg-weights`: fetch models into their caches; 0 when all are there, 1 when one
    could not be fetched or is corrupt, 2 for an unknown name."""
    from .. import models

    parser = argparse.ArgumentParser(
        prog="refseg-weights", description=__doc__.splitlines()[0],
        epilog="modes: " + "; ".join(f"{mode}: {' '.join(names)}" for mode, names in models.MODES.items()))
    parser.add_argument("models", nargs="*",
                        help="models to fetch: names of `--list`, or any hub id (org/name) (default: "
                             "sam2.1_hiera_t when no --for is given)")
    parser.add_argument("--for", dest="modes", action="append", default=[], choices=sorted(models.MODES),
                        help="fetch every model a mode needs (repeatable)")
    parser.add_argument("--dir", type=Path, default=None, help="weights cache directory (default $REFSEG_WEIGHTS "
                        "or ~/.cache/refseg_ros/weights); hub models go to the Hugging Face cache ($HF_HUB_CACHE)")
    parser.add_argument("--base-url", default=None,
                        help="where the SAM2 releases live, a mirror "
                             f"(default $REFSEG_WEIGHTS_URL or {OFFICIAL_BASE_URL})")
    parser.add_argument("--url", default=None, help="where to fetch a single file model from (a mirror)")
    parser.add_argument("--sha256", default=None, help="expected digest (with a single model)")
    parser.add_argument("--list", action="store_true", help="list known models and what is cached")
    build = parser.add_argument_group(
        "encoder builds", "--build-engine exports the image encoder of each SAM2 model named (default "
        "sam2.1_hiera_t) for a backend into the cache's encoders/ folder and checks its parity with torch, as the "
        "node does at configure (docs/ENGINE.md, \"Encoder backends\"); nothing is downloaded")
    build.add_argument("--build-engine", metavar="BACKEND", default=None,
                       help="onnxruntime, openvino or tensorrt (the node's encoder_backend)")
    build.add_argument("--image-size", type=int, default=1024, help="the node's image_size (default 1024)")
    build.add_argument("--encoder-precision", default="fp32", help="the node's encoder_precision (default fp32)")
    build.add_argument("--checkpoint", default="auto",
                       help="the SAM2 weights: a file, auto (the cache's file for the model, else random weights), "
                            "or none (random weights of --seed)")
    build.add_argument("--seed", type=int, default=0, help="seed of random weights (the node's seed)")
    build.add_argument("--device", default="auto", help="the node's device: auto, cpu, cuda or cuda:N")
    build.add_argument("--prune-engines", action="store_true",
                       help="remove the encoder builds this install cannot use (other library versions, an older "
                            "export format, unaccepted or cut-short builds); with --dry-run only list them")
    build.add_argument("--dry-run", action="store_true", help="with --prune-engines: list, remove nothing")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(models.describe(args.dir)))
        return 0
    if args.prune_engines:
        return _prune_engines(args.dir, args.dry_run)
    if args.build_engine is not None:
        return _build_engines(args, list(args.models) or ["sam2.1_hiera_t"])
    names = list(args.models) or ([] if args.modes else ["sam2.1_hiera_t"])
    for mode in args.modes:
        names += models.MODES[mode]
    names = list(dict.fromkeys(names))
    if (args.url or args.sha256) and len(names) != 1:
        print("refseg-weights: --url and --sha256 go with a single model", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        entry = models.MODELS.get(name)
        if entry is None and models.HUB_ID.fullmatch(name):
            entry = models.by_hub_id(name) or models.ModelEntry(name, "hub", name, 0, (), "")
        if entry is None:
            print(f"refseg-weights: unknown model {name!r}; known: {', '.join(models.MODELS)}, or a hub id "
                  "(org/name)", file=sys.stderr)
            status = 2
            continue
        print(f"{name}: fetching from {args.url or entry.source} ...", file=sys.stderr, flush=True)
        try:
            where = models.fetch(entry, args.dir, url=args.url, sha256=args.sha256, base_url=args.base_url)
        except DownloadError as exc:
            print(f"\nrefseg-weights: {name}: {exc}", file=sys.stderr)
            status = max(status, 1)
            continue
        print(f"\n{name}: {where}")
    return status


def _build_engines(args: argparse.Namespace, names: list[str]) -> int:
    """`refseg-weights --build-engine BACKEND MODEL...`: build (or find) each model's
    encoder entry as an engine of those options would; 0 when all are ready, 1 when one
    was refused (the reason on stderr)."""
    from .config import EngineConfig
    from .engine import SegmentationEngine
    from .errors import CheckpointError, EncoderBackendError

    if args.dir is not None:
        os.environ["REFSEG_WEIGHTS"] = str(args.dir)  # the engine finds its cache there
    status = 0
    for name in names:
        checkpoint = None if args.checkpoint == "none" else args.checkpoint
        config = EngineConfig(model=name, checkpoint=checkpoint, image_size=args.image_size, device=args.device,
                              seed=args.seed, encoder_backend=args.build_engine,
                              encoder_precision=args.encoder_precision)
        try:
            engine = SegmentationEngine.from_config(config)
        except (EncoderBackendError, CheckpointError, ValueError) as exc:
            print(f"refseg-weights: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 1
            continue
        weights = engine.checkpoint or f"random weights (seed {args.seed})"
        print(f"{name}: {engine.encoder.description}, image_size {engine.image_size}, {weights}: ready")
    return status


def _prune_engines(directory: Optional[Path], dry_run: bool) -> int:
    """`refseg-weights --prune-engines [--dry-run]`: one line per stale encoder build and
    the space freed; always 0."""
    from .encoders import encoder_cache_dir, prune_encoder_cache

    stale, freed = prune_encoder_cache(directory, dry_run=dry_run)
    for folder, why in stale:
        print(f"{'would remove' if dry_run else 'removed'} {folder.name}: {why}")
    print(f"{encoder_cache_dir(directory)}: {len(stale)} stale build(s), {freed / 1e6:.0f} MB "
          f"{'to free' if dry_run else 'freed'}")
    return 0


def _print_progress(name: str) -> Callable[[int, Optional[int]], None]:
    def show(done: int, total: Optional[int]) -> None:
        share = f" {100 * done / total:5.1f}%" if total else ""
        print(f"\r{name}: {done / 1e6:8.1f} MB{share}", end="", file=sys.stderr, flush=True)
    return show


if __name__ == "__main__":
    sys.exit(main())
