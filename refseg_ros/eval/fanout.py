"""Evaluate every sequence of a benchmark index: in this process, or fanned out on Ray.

``refseg-eval run INDEX --out DIR [--workers N] [--address ADDR]`` evaluates each bag
of an importer's ``index.json`` (``importers.index``) with the protocol's options
(``run_options``), each into a run directory of its own with ``outdir``'s layout, then
combines their reports into the benchmark's numbers (``summarize``)::

    run.json                 what was run: the index, the protocol's options, topics, model
    sequences/<name>/        one bag's run (run.json ... .complete, see ``outdir``)
    report.json, report.md   a row per sequence, the benchmark's numbers, timing
    plots/                   jf_per_sequence.png, latency_per_sequence.png, latency.png
    .complete                written last, once every sequence is finished

Where the sequences run:

- ``--workers 1`` (the default without ``--address``): one after the other in this
  process, one model for all of them (``SequenceWorker`` called directly);
- ``--workers N`` > 1, or ``--address``: N Ray actors, each a worker process holding
  one model, loaded once and reused for every sequence given to it. Without
  ``--address`` a local Ray runtime is started for the run and stopped after it,
  bound to the loopback interface, without dashboard and usage reporting, so that no
  traffic leaves the machine; with ``--address`` the run joins that cluster (every node
  must have this package and see the bags and DIR at the same paths). Each worker asks
  Ray for what it uses: its compute threads' CPUs, or a GPU fraction (and one CPU)
  when the model runs on CUDA.

Results do not depend on the worker count: every worker sets torch's threads as the
single-process path does (``runtime.threads``), to the count this process resolves
(``--compute-threads``, or the cores less one), and a sequence's engine stream starts
empty whichever model instance runs it.

Resuming: a sequence whose directory is finished (``.complete``, same bag and settings)
is not run again; an unfinished one resumes as a single-bag run does (``runner``). A
worker process that dies is restarted by Ray and its sequence retried
(``max_restarts``/``max_task_retries``); the retry resumes the sequence's directory, so
no frame is counted twice, and the merged report takes one row per index entry. Running
the same command after completion does nothing and says so.

Test hook: ``REFSEG_EVAL_KILL_WORKER=NAME[:FRAMES]`` makes the Ray worker that runs
sequence NAME exit abruptly (``os._exit``) after FRAMES frames (default 1) have been
recorded, once: the marker ``sequences/NAME.killed`` (holding the killed process's id)
is written first, and a worker finding it carries on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional

from refseg_ros.eval import bags
from refseg_ros.eval.importers.index import INDEX_FILE, read_index, run_options, summarize
from refseg_ros.eval.outdir import (COMPLETE, RUN_FILE, RunDirectory, atomic_write_bytes,
                                    atomic_write_json, atomic_write_text)
from refseg_ros.eval.runner import RunConfig, evaluate, run_info
from refseg_ros.eval.sources import EngineReplaySource, EngineSettings

log = logging.getLogger("refseg_ros.eval")

SEQUENCES_DIR = "sequences"
KILL_ENV = "REFSEG_EVAL_KILL_WORKER"
KILL_EXIT_CODE = 86
# Shared memory of a local runtime: results travel as small dicts, masks stay on disk.
LOCAL_OBJECT_STORE_BYTES = 200 * 2**20
INSTALL_HINT = "pip install .[cluster]"


class ClusterUnavailableError(ValueError):
    """Ray was asked for (``--workers`` > 1, ``--address``) but is not installed."""


class SequenceError(RuntimeError):
    """One sequence of the index failed; ``cause`` is the error it raised (or a
    description of why its worker could not finish it)."""

    def __init__(self, sequence: str, cause: BaseException) -> None:
        super().__init__(f"sequence {sequence!r}: {cause}")
        self.sequence = sequence
        self.cause = cause


def ray_available() -> bool:
    """Whether Ray can be imported (the ``cluster`` extra), without importing it."""
    return importlib.util.find_spec("ray") is not None


def is_index(path: str | Path) -> bool:
    """True for an importer's index: ``index.json`` itself, or a folder holding one that
    is not a bag (a bag folder holds ``metadata.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".json"
    return (p / INDEX_FILE).is_file() and not (p / "metadata.yaml").exists()


# --- configuration ------------------------------------------------------------------------


@dataclass
class IndexRunConfig:
    """An index run: what ``refseg-eval run INDEX`` takes.

    ``workers``: worker processes; None means 1 without ``address`` and, with it, as
    many as the cluster's resources fit. ``gpus_per_worker``: the GPU fraction each
    worker asks for when the model runs on CUDA (None: the GPUs shared evenly, at most
    one each). ``max_retries``: restarts of a dead worker, and retries of its sequence.
    ``mode``: ``offline``, or ``live`` (each sequence through its own node, one node at
    a time per worker; ``live`` holds ``LiveSettings`` fields but ``log_path``).
    """

    index: Path
    out: Path
    engine: EngineSettings = field(default_factory=EngineSettings)
    workers: Optional[int] = None
    address: Optional[str] = None
    gpus_per_worker: Optional[float] = None
    max_retries: int = 3
    prompt: str = "auto"  # "auto": the protocol's; anything else must equal it
    overlaps: Optional[str] = None  # None: the protocol's; anything else must equal it
    camera_topic: str = bags.CAMERA_TOPIC
    gt_topic: str = bags.GROUND_TRUTH_TOPIC
    reference_topic: str = bags.REFERENCE_TOPIC
    caption_topic: str = bags.CAPTION_TOPIC
    max_frames: Optional[int] = None
    worst_frames: int = 4
    overwrite: bool = False
    progress: Optional[bool] = None  # None: progress lines unless --no-progress
    mode: str = "offline"
    live: dict[str, Any] = field(default_factory=dict)
    use_ray: Optional[bool] = None  # None: Ray when workers > 1 or an address is given


@dataclass
class IndexOutcome:
    """What an index run did. ``summary`` is None when the run was finished already
    and nothing was done."""

    report_path: Path
    summary: Optional[dict[str, Any]]
    ran: list[str]  # sequences evaluated (or resumed) now
    reused: list[str]  # sequences found finished
    workers: int  # worker processes used (0: nothing to run)
    runtime: str  # "in-process", "ray (local)", "ray (ADDRESS)", or "none"
    seconds: float  # wall time of the whole call, s
    worker_info: list[dict[str, Any]] = field(default_factory=list)
    startup_seconds: float = 0.0  # Ray workers: starting them and loading their models, s


@dataclass
class SequenceJob:
    """One bag of the index: its name, its folder name under sequences/, its run."""

    name: str
    config: RunConfig


@dataclass(frozen=True)
class KillHook:
    """Test hook: exit the worker process running ``sequence`` after ``after_frames``
    recorded frames, once (``marker`` records that it happened)."""

    sequence: str
    after_frames: int
    marker: Path

    def fire(self) -> None:
        """Write the marker and exit the process at once; do nothing if it exists."""
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        os.close(fd)
        os._exit(KILL_EXIT_CODE)


def kill_hook_from_env(out: Path, names: dict[str, str]) -> Optional[KillHook]:
    """The ``REFSEG_EVAL_KILL_WORKER`` hook for this run, if set (see the module
    docstring); ValueError for a sequence the index does not hold."""
    raw = os.environ.get(KILL_ENV, "").strip()
    if not raw:
        return None
    name, frames = raw, 1
    head, sep, tail = raw.rpartition(":")
    if sep and tail.isdigit():
        name, frames = head, int(tail)
    if name not in names:
        raise ValueError(f"{KILL_ENV}={raw!r}: the index has no sequence {name!r}")
    return KillHook(name, frames, out / SEQUENCES_DIR / f"{names[name]}.killed")


# --- the worker ---------------------------------------------------------------------------


class _KillingSource:
    """A result source that fires a kill hook before its ``after_frames``-th result."""

    def __init__(self, inner: Any, hook: KillHook) -> None:
        self.inner = inner
        self.hook = hook

    def fingerprint(self) -> dict[str, Any]:
        return self.inner.fingerprint()

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def timing_label(self) -> str:
        return self.inner.timing_label()

    def results(self, plan: Any, reader: Any, camera_topic: str, skip: set[int]) -> Iterator[Any]:
        for n, res in enumerate(self.inner.results(plan, reader, camera_topic, skip)):
            if n == self.hook.after_frames:
                self.hook.fire()
            yield res


def source_fingerprint(settings: EngineSettings, mode: str) -> dict[str, Any]:
    """run.json's ``source`` for these settings (what the runner stores)."""
    if mode == "live":
        from refseg_ros.eval.live import LiveNodeSource

        return LiveNodeSource(settings).fingerprint()
    return EngineReplaySource(settings).fingerprint()


class SequenceWorker:
    """Runs sequences one after the other with one model (offline) or one node at a
    time (live). Used directly for ``--workers 1`` and as the Ray actor class.

    ``settings.compute_threads`` is applied when the model is loaded, exactly as the
    single-process path does (``EngineReplaySource.engine``).
    """

    def __init__(self, settings: EngineSettings, mode: str = "offline",
                 live: Optional[dict[str, Any]] = None, kill: Optional[KillHook] = None) -> None:
        self.settings = settings
        self.mode = mode
        self.live = dict(live or {})
        self.kill = kill
        self._offline: Optional[EngineReplaySource] = None

    def _source(self, cfg: RunConfig) -> Any:
        if self.mode == "live":
            from refseg_ros.eval.live import LiveNodeSource, LiveSettings
            from refseg_ros.eval.outdir import NODE_LOG

            return LiveNodeSource(self.settings, LiveSettings(**self.live,
                                                              log_path=cfg.out / NODE_LOG))
        if self._offline is None:
            self._offline = EngineReplaySource(self.settings)
        return self._offline

    def ready(self) -> dict[str, Any]:
        """Load the model (offline) and say who this worker is: process id, host, torch's
        thread count and the model's device. Raises what loading raises."""
        info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
        if self.mode == "offline":
            engine = self._source(RunConfig(bag=Path("."), out=Path("."))).engine
            import torch

            info["threads"] = torch.get_num_threads()
            info["device"] = str(getattr(engine, "device", self.settings.device))
        return info

    def run(self, job: SequenceJob) -> dict[str, Any]:
        """Evaluate one sequence into its directory (resuming what is there); returns
        ``name``, ``ran`` (False: it was finished already), ``resumed``, ``seconds``
        (wall time, s) and ``pid``. Raises what the runner raises."""
        start = time.perf_counter()
        source = self._source(job.config)
        if self.kill is not None and self.kill.sequence == job.name:
            source = _KillingSource(source, self.kill)
        outcome = evaluate(job.config, source=source)
        return {"name": job.name, "ran": outcome.report is not None,
                "resumed": outcome.resumed, "seconds": time.perf_counter() - start,
                "pid": os.getpid()}


# --- Ray ----------------------------------------------------------------------------------


def _import_ray(why: str) -> Any:
    if not ray_available():
        raise ClusterUnavailableError(f"{why} needs Ray, which is not installed here: "
                                      f"{INSTALL_HINT} (the 'cluster' extra)")
    import ray

    return ray


def _import_ray_on_loopback(why: str) -> Any:
    """Import Ray so that this process's node address is the loopback one.

    Ray picks a routable node address on Linux (also for "127.0.0.1" given to it),
    unless its "single machine" switch is off when it is imported (the rule it follows
    on macOS and Windows): then the node address, and every server's bind address, is
    127.0.0.1.
    """
    switch = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    first_import = "ray" not in sys.modules
    saved = os.environ.get(switch)
    if first_import:
        os.environ[switch] = "0"
    try:
        ray = _import_ray(why)
    finally:
        if first_import:
            if saved is None:
                os.environ.pop(switch, None)
            else:
                os.environ[switch] = saved
    if not first_import:
        from ray._private import ray_constants  # imported earlier: turn the switch off here

        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def start_local_runtime(num_cpus: int, num_gpus: int = 0) -> Any:
    """Start a Ray runtime on this machine only and return the ``ray`` module.

    Everything binds to the loopback interface (node address 127.0.0.1), without the
    dashboard and with usage reporting off, so no traffic leaves the machine.
    ``num_cpus`` and ``num_gpus`` are the resources Ray may hand out (logical: they set
    how many workers fit). Raises ClusterUnavailableError without Ray, and RuntimeError
    if the runtime came up bound to another address (it is stopped first).
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = _import_ray_on_loopback("a local Ray runtime")
    ray.init(num_cpus=int(num_cpus), num_gpus=int(num_gpus), include_dashboard=False,
             _node_ip_address="127.0.0.1", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             logging_level=logging.WARNING, log_to_driver=True)
    address = ray.util.get_node_ip_address()
    if address != "127.0.0.1":
        ray.shutdown()
        raise RuntimeError(f"the local Ray runtime bound to {address}, not 127.0.0.1; stopped")
    return ray


def _is_cuda(device: str, gpus_available: Callable[[], float]) -> bool:
    d = device.lower()
    if d.startswith("cuda"):
        return True
    return d == "auto" and gpus_available() > 0


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _error_of(ray: Any, exc: BaseException) -> BaseException:
    """The sequence's own error inside a Ray error, or a description of a worker death."""
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        return exc.cause
    if isinstance(exc, ray.exceptions.RayActorError):
        return RuntimeError(f"its worker process died and was not brought back ({exc})")
    return exc


# --- the run ------------------------------------------------------------------------------


def _dir_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "_" + safe if safe.startswith(".") or not safe else safe


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def sequence_finished(cfg: RunConfig, source: dict[str, Any]) -> bool:
    """Whether ``cfg.out`` holds this sequence's finished run, checked without reading
    the bag: ``.complete``, the report, and run.json equal to what this run would
    write (bag fingerprint, topics, options, model settings; the protocol and a
    resolved ``auto`` prompt are the bag's, taken as stored)."""
    run = RunDirectory(cfg.out)
    if not (run.has_marker(COMPLETE) and (run.path / "report.json").exists()):
        return False
    previous = _read_json(run.path / RUN_FILE)
    if not previous or not Path(cfg.bag).exists():
        return False
    prompt = previous.get("prompt") if cfg.prompt == "auto" else cfg.prompt
    plan = SimpleNamespace(protocol=previous.get("protocol"), prompt_mode=prompt)
    want = json.loads(json.dumps(run_info(cfg, plan, source), default=str))
    return previous == want


def _index_identity(index_path: Path, index: dict[str, Any], cfg: IndexRunConfig,
                    options: dict[str, str], source: dict[str, Any]) -> dict[str, Any]:
    raw = index_path.read_bytes()
    return {"kind": "benchmark index",
            "index": {"path": str(index_path.resolve()),
                      "sha256": hashlib.sha256(raw).hexdigest()},
            "benchmark": index.get("benchmark"), "split": index.get("split"),
            "prompt": options["prompt"], "overlaps": options["overlaps"],
            "topics": {"camera": cfg.camera_topic, "ground_truth": cfg.gt_topic,
                       "reference": cfg.reference_topic},
            "max_frames": cfg.max_frames, "source": source}


def _options(index: dict[str, Any], cfg: IndexRunConfig) -> dict[str, str]:
    options = run_options(index)
    if cfg.prompt not in ("auto", options["prompt"]):
        raise ValueError(f"the index's protocol teaches with --prompt {options['prompt']}, "
                         f"not {cfg.prompt}")
    if cfg.overlaps not in (None, options["overlaps"]):
        raise ValueError(f"the index's protocol scores with --overlaps {options['overlaps']}, "
                         f"not {cfg.overlaps}")
    return options


def _jobs(index: dict[str, Any], cfg: IndexRunConfig, options: dict[str, str],
          settings: EngineSettings, progress: Optional[bool]) -> list[SequenceJob]:
    jobs: list[SequenceJob] = []
    seen: dict[str, str] = {}
    for entry in index["bags"]:
        name = str(entry["name"])
        folder = _dir_name(name)
        if folder in seen:
            raise ValueError(f"index sequences {seen[folder]!r} and {name!r} share the output "
                             f"folder {folder!r}")
        seen[folder] = name
        jobs.append(SequenceJob(name, RunConfig(
            bag=Path(entry["bag"]), out=cfg.out / SEQUENCES_DIR / folder,
            prompt=options["prompt"], overlaps=options["overlaps"],
            camera_topic=cfg.camera_topic, gt_topic=cfg.gt_topic,
            reference_topic=cfg.reference_topic, caption_topic=cfg.caption_topic,
            max_frames=cfg.max_frames, overwrite=False, progress=progress,
            worst_frames=cfg.worst_frames, engine=settings)))
    return jobs


def _say(cfg: IndexRunConfig, text: str) -> None:
    if cfg.progress is not False:
        print(text, file=sys.stderr, flush=True)


def _done_line(k: int, n: int, res: dict[str, Any]) -> str:
    what = "finished" if res["ran"] else "was finished already"
    resumed = res.get("resumed") or {}
    extra = ""
    if resumed.get("frames_verified"):
        extra = f", resumed: {resumed['frames_verified']} stored frames reproduced"
    return f"[{k}/{n}] {res['name']} {what} in {res['seconds']:.1f} s (pid {res['pid']}{extra})"


def run_index(cfg: IndexRunConfig) -> IndexOutcome:
    """Evaluate every sequence of the index (see the module docstring) and write the
    merged report.

    Raises: FileNotFoundError / ValueError for a missing or foreign index, options the
    protocol does not allow, or bad worker settings; ClusterUnavailableError when Ray is
    needed and missing; OutputDirError when ``cfg.out`` holds another run;
    SequenceError naming the sequence that failed (its ``cause`` is the runner's error).
    """
    start = time.perf_counter()
    index_path = Path(cfg.index)
    if index_path.is_dir():
        index_path = index_path / INDEX_FILE
    index = read_index(index_path)
    if not index["bags"]:
        raise ValueError(f"index {index_path} lists no bags")
    if cfg.mode not in ("offline", "live"):
        raise ValueError(f"mode must be offline or live, got {cfg.mode!r}")
    if cfg.workers is not None and cfg.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {cfg.workers}")
    use_ray = cfg.use_ray
    if use_ray is None:
        use_ray = cfg.address is not None or (cfg.workers or 1) > 1

    options = _options(index, cfg)
    source = source_fingerprint(cfg.engine, cfg.mode)
    identity = _index_identity(index_path, index, cfg, options, source)
    jobs = _jobs(index, cfg, options, cfg.engine, False if use_ray else cfg.progress)
    top = RunDirectory(cfg.out)
    report_path = top.path / "report.md"
    previous = _read_json(top.path / RUN_FILE)
    same = previous == json.loads(json.dumps(identity, default=str))
    if (not cfg.overwrite and same and top.has_marker(COMPLETE) and report_path.exists()
            and all(sequence_finished(j.config, source) for j in jobs)):
        return IndexOutcome(report_path, None, [], [j.name for j in jobs], 0, "none",
                            time.perf_counter() - start)
    if use_ray and not ray_available():
        why = f"--workers {cfg.workers}" if cfg.address is None else f"--address {cfg.address}"
        raise ClusterUnavailableError(f"{why} runs sequences on Ray, which is not installed "
                                      f"here: {INSTALL_HINT} (the 'cluster' extra), or use "
                                      "--workers 1")
    top.claim(identity, overwrite=cfg.overwrite)
    if cfg.overwrite:
        shutil.rmtree(top.path / SEQUENCES_DIR, ignore_errors=True)
    (top.path / SEQUENCES_DIR).mkdir(parents=True, exist_ok=True)

    pending = [j for j in jobs if not sequence_finished(j.config, source)]
    reused = [j.name for j in jobs if j not in pending]
    if reused:
        _say(cfg, f"{len(reused)} of {len(jobs)} sequences are finished already; "
                  f"{len(pending)} to run")
    workers_used, runtime, worker_info, startup = 0, "none", [], 0.0
    if pending and use_ray:
        workers_used, runtime, worker_info, startup = _run_on_ray(cfg, jobs, pending)
    elif pending:
        workers_used, runtime = 1, "in-process"
        worker = SequenceWorker(cfg.engine, cfg.mode, cfg.live)
        for k, job in enumerate(pending, 1):
            try:
                res = worker.run(job)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                raise SequenceError(job.name, exc) from exc
            _say(cfg, _done_line(k, len(pending), res))
    summary = merge_reports(cfg.out, index, jobs, identity,
                            {"runtime": runtime, "workers": workers_used,
                             "sequences_run": len(pending), "sequences_reused": len(reused),
                             "workers_info": worker_info})
    return IndexOutcome(report_path, summary, [j.name for j in pending], reused, workers_used,
                        runtime, time.perf_counter() - start, worker_info, startup)


def _run_on_ray(cfg: IndexRunConfig, jobs: list[SequenceJob], pending: list[SequenceJob]
                ) -> tuple[int, str, list[dict[str, Any]], float]:
    """Run ``pending`` on Ray actors; returns (workers, runtime description, worker info,
    seconds to start the workers and load their models)."""
    from refseg_ros.runtime.threads import plan_threads

    threads = plan_threads(cfg.engine.compute_threads).intra_op
    settings = replace(cfg.engine, compute_threads=threads)
    wanted = cfg.workers
    local = cfg.address is None
    started = False
    if local:
        cuda = cfg.mode == "offline" and _is_cuda(cfg.engine.device, _local_gpus)
        n = min(wanted or 1, len(pending))
        ray = _import_ray("--workers") if "ray" in sys.modules else None
        if ray is None or not ray.is_initialized():
            gpus = _local_gpus() if cuda else 0
            if cuda and gpus == 0:
                raise ValueError(f"--device {cfg.engine.device}: no CUDA device here")
            ray = start_local_runtime(num_cpus=n * (1 if cuda else threads), num_gpus=gpus)
            started = True
        runtime = "ray (local)"
    else:
        why = f"--address {cfg.address}"
        # A cluster bound to the loopback interface is reached from the loopback address.
        ray = _import_ray_on_loopback(why) if _is_loopback(cfg.address) else _import_ray(why)
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address=cfg.address, logging_level=logging.WARNING)
            started = True
        runtime = f"ray ({cfg.address})"
    actors: list[Any] = []
    try:
        resources = ray.cluster_resources()
        cuda = cfg.mode == "offline" and _is_cuda(cfg.engine.device,
                                                   lambda: resources.get("GPU", 0))
        total_cpu = float(resources.get("CPU", 0))
        total_gpu = float(resources.get("GPU", 0))
        if cuda:
            if total_gpu <= 0:
                raise ValueError(f"--device {cfg.engine.device}: the Ray runtime has no GPU")
            count = wanted or max(1, int(total_gpu))
            frac = cfg.gpus_per_worker or min(1.0, total_gpu / count)
            ask = {"num_cpus": 1, "num_gpus": frac}
            fit = min(int(total_cpu), int(total_gpu / frac + 1e-9))
        else:
            ask = {"num_cpus": threads}
            fit = int(total_cpu // threads)
        if fit < 1:
            raise ValueError(f"no worker fits the Ray runtime ({resources}); each asks for "
                             f"{ask}")
        n = min(wanted or fit, fit, len(pending))
        if wanted and wanted > fit:
            log.warning("the Ray runtime fits %d workers asking %s each, not %d", fit, ask, wanted)
        cores = os.cpu_count() or 1
        if local and not cuda and n * threads > cores:
            log.warning("%d workers x %d compute threads exceed the %d cores: expect no speed-up "
                        "beyond %d workers (--compute-threads sets the threads; another count "
                        "changes float rounding, so compare runs made with one count)",
                        n, threads, cores, max(1, cores // threads))
        names = {j.name: j.config.out.name for j in jobs}
        kill = kill_hook_from_env(cfg.out, names)
        worker_cls = ray.remote(SequenceWorker).options(
            **ask, max_restarts=cfg.max_retries, max_task_retries=cfg.max_retries)
        started_at = time.perf_counter()
        actors = [worker_cls.remote(settings, cfg.mode, cfg.live, kill) for _ in range(n)]
        try:
            worker_info = ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayError as exc:  # the model does not load: say why
            raise _error_of(ray, exc) from exc
        startup = time.perf_counter() - started_at
        _say(cfg, f"{len(pending)} sequences on {n} Ray workers ({runtime}; each {ask}, "
                  f"{threads} compute threads)")
        queue = list(pending)
        inflight: dict[Any, tuple[Any, SequenceJob]] = {}

        def submit(actor: Any) -> None:
            if queue:
                job = queue.pop(0)
                inflight[actor.run.remote(job)] = (actor, job)

        for actor in actors:
            submit(actor)
        k = 0
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            actor, job = inflight.pop(ready[0])
            try:
                res = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                raise SequenceError(job.name, _error_of(ray, exc)) from exc
            k += 1
            _say(cfg, _done_line(k, len(pending), res))
            submit(actor)
        return n, runtime, worker_info, startup
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
        if started:
            ray.shutdown()


# --- the merged report --------------------------------------------------------------------


def _num(v: Any) -> Optional[float]:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def merge_reports(out: Path, index: dict[str, Any], jobs: list[SequenceJob],
                  identity: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """Combine the sequences' report.json files into ``out``'s report.json, report.md
    and plots (atomic writes, ``.complete`` last); returns the benchmark's numbers.

    Rows come one per index entry, in the index's order. KeyError if a sequence has no
    report (the runs are not all finished).
    """
    from refseg_ros.eval.metrics import latency_summary
    from refseg_ros.eval.report import finite, plot_latency, plot_per_sequence

    reports: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    random_weights = False
    for job in jobs:
        path = job.config.out / "report.json"
        rep = _read_json(path)
        if rep is None or not (job.config.out / COMPLETE).exists():
            raise KeyError(f"sequence {job.name!r} has no finished report ({path})")
        reports[job.name] = rep
        s, lat = rep.get("summary", {}), rep.get("latency", {})
        random_weights |= bool(rep.get("info", {}).get("source", {}).get("random_weights"))
        row: dict[str, Any] = {"name": job.name, "report": f"{SEQUENCES_DIR}/{job.config.out.name}/report.md",
                               "frames": lat.get("count")}
        for key in ("targets", "episodes", "scored_pairs", "jf_mean", "j_mean", "f_mean", "miou"):
            if key in s:
                row[key] = s[key]
        row["step_p50_s"], row["step_mean_s"] = lat.get("p50"), lat.get("mean")
        rows.append(row)
        base = len(series)
        series += [{"frame": base + k, "seconds": r["seconds"]}
                   for k, r in enumerate(rep.get("latency_series", []))]
    summary = summarize(index, reports)
    what = next((r.get("latency", {}).get("what") for r in reports.values()), None) or "latency"
    latency = dict(latency_summary([r["seconds"] for r in series]), what=what)
    notes = []
    if random_weights:
        notes.append("The model has random weights (no checkpoint was given): these numbers "
                     "exercise the pipeline and say nothing about segmentation quality.")
    title = f"{index.get('protocol', {}).get('name') or index.get('benchmark')}: {len(rows)} sequences"
    doc = finite({"title": title, "info": dict(identity, run=runtime), "summary": summary,
                  "sequences": rows, "latency": latency, "notes": notes})

    root = Path(out)
    (root / COMPLETE).unlink(missing_ok=True)
    names = [r["name"] for r in rows]
    plots = {
        "J&F per sequence": ("jf_per_sequence.png", plot_per_sequence(
            names, {"J&F": [_num(r.get("jf_mean")) for r in rows]}, "J&F",
            "J&F per sequence", (0.0, 1.0))),
        "Time per frame by sequence": ("latency_per_sequence.png", plot_per_sequence(
            names, {"p50": [None if _num(r["step_p50_s"]) is None else 1000 * r["step_p50_s"]
                            for r in rows],
                    "mean": [None if _num(r["step_mean_s"]) is None else 1000 * r["step_mean_s"]
                             for r in rows]},
            "ms", "Time per frame by sequence")),
        "Time per frame, all sequences in index order": ("latency.png", plot_latency(
            series, latency, what)),
    }
    rel: dict[str, str] = {}
    for caption, (name, png) in plots.items():
        atomic_write_bytes(root / "plots" / name, png)
        rel[caption] = f"plots/{name}"
    atomic_write_json(root / "report.json", doc)
    atomic_write_text(root / "report.md", _markdown(doc, rel))
    atomic_write_json(root / COMPLETE, {"report": "report.md"})
    return summary


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def _ms(v: Any) -> str:
    f = _num(v)
    return "n/a" if f is None else f"{1000 * f:.1f}"


def _markdown(doc: dict[str, Any], plots: dict[str, str]) -> str:
    lines = [f"# {doc['title']}", ""]
    for note in doc["notes"]:
        lines += [f"> **Note:** {note}", ""]
    summary = doc["summary"]
    lines += ["## Summary", "", f"Rule: `{doc['info'].get('benchmark')}`, "
              f"prompt `{doc['info']['prompt']}`, overlaps `{doc['info']['overlaps']}`.", "",
              "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v, 4)} |" for k, v in summary.items() if not isinstance(v, dict)]
    lines.append("")
    for key, heading in (("per_object", "Per object"), ("class_iou", "Per class IoU")):
        table = summary.get(key)
        if not table:
            continue
        lines += [f"## {heading}", ""]
        if key == "per_object":
            lines += ["| object | J | F |", "|---|---|---|"]
            lines += [f"| {k} | {_fmt(v.get('j_mean'))} | {_fmt(v.get('f_mean'))} |"
                      for k, v in table.items()]
        else:
            lines += ["| class | IoU |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in table.items()]
        lines.append("")
    lines += ["## Sequences", "",
              "| sequence | frames | scored pairs | J&F | J | F | p50 ms | mean ms |",
              "|---|---|---|---|---|---|---|---|"]
    for r in doc["sequences"]:
        lines.append(f"| [{r['name']}]({r['report']}) | {_fmt(r.get('frames'))} | "
                     f"{_fmt(r.get('scored_pairs'))} | {_fmt(r.get('jf_mean'))} | "
                     f"{_fmt(r.get('j_mean'))} | {_fmt(r.get('f_mean'))} | "
                     f"{_ms(r.get('step_p50_s'))} | {_ms(r.get('step_mean_s'))} |")
    lat = doc["latency"]
    lines += ["", "## Timing", "", f"Measured: {lat.get('what')} ({lat.get('count')} frames, "
              "every sequence).", "", "| p50 ms | p90 ms | p99 ms | max ms | mean ms |",
              "|---|---|---|---|---|",
              f"| {_ms(lat.get('p50'))} | {_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | "
              f"{_ms(lat.get('max'))} | {_ms(lat.get('mean'))} |", "", "## Plots", ""]
    for caption, rel in plots.items():
        lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    lines += ["## Run", "", "```json", json.dumps(doc["info"], indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)
