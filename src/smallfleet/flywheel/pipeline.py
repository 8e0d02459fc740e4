"""``smallfleet flywheel run``: from recorded traffic to promoted specialists.

The stages, each shown with a progress bar and each decision written to the store:

1. curate (S2): keep clean, deduplicated calls, split by time (test = newest);
2. cluster (S3): find the recurring task types and their share of calls, cost, latency;
3. select (S4): per task type with enough examples, the catalog's candidates, cheapest first;
4. train (S5): fit each candidate on the large model's answers (in-process, or Ray tasks);
5. evaluate (S6): score on the test split with the metric that fits the output; pick the
   confidence threshold on the validation split so the kept answers reach the target;
6. promote: the cheapest candidate whose kept answers meet the target on the test split,
   with coverage worth it, becomes the task type's route (versioned; ``shadow`` by default);
7. iterate: a later run reuses what has not changed and replaces a route only with a
   candidate at least as good on the same test set.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from smallfleet.routing.routes import Route, RouteStore
from smallfleet.specialists.base import Example, data_hash
from smallfleet.store.fleet_tables import candidates as candidates_table
from smallfleet.store.fleet_tables import clusters as clusters_table
from smallfleet.store.fleet_tables import flywheel_runs
from smallfleet.store.records import TraceRecord

if TYPE_CHECKING:
    from smallfleet.config import Settings
    from smallfleet.store.trace_store import TraceStore

__all__ = [
    "CandidateResult",
    "ClusterResult",
    "FlywheelOptions",
    "FlywheelRun",
    "default_workers",
    "run_flywheel",
    "train_and_evaluate",
    "train_candidate",
]

log = logging.getLogger("smallfleet.flywheel")


#: The lowest threshold a route gets: an answer with confidence 0 is never served.
MIN_THRESHOLD = 1e-6
#: A label task keeps up to this many training examples per label (above ``max_train``), at
#: most ``LABEL_TRAIN_MAX`` in all: 77 intents want more than 2,000 examples.
LABEL_EXAMPLES = 100
LABEL_TRAIN_MAX = 20_000
#: Training examples (over the task types to train) from which worker processes pay for
#: their start-up, unless ``workers`` is set.
PARALLEL_MIN_EXAMPLES = 1500


@dataclass
class FlywheelOptions:
    workload: str | None = None
    since: float | None = None
    target_accuracy: float = 0.95
    #: How sure a route's promise is: its kept answers reach ``target_accuracy`` on the test
    #: split with this confidence (a one-sided Clopper–Pearson lower bound), not as a point estimate.
    confidence: float = 0.95
    min_examples: int = 100
    min_coverage: float = 0.2
    promote_mode: str = "shadow"
    executor: str = "local"
    #: Processes that train task types at once with the local executor (None: one per CPU, at
    #: most four, when there are at least PARALLEL_MIN_EXAMPLES training examples to
    #: learn from and the workers fit in ``memory_gb``; 1: all in this process).
    workers: int | None = None
    #: Memory (GiB) the run may use in all, its workers included: when ``workers`` is not set,
    #: fewer workers where they would not fit (never more than the machine has available).
    memory_gb: float = 4.0
    specialists_dir: str = "./smallfleet-specialists"
    cpu_only: bool = True
    gpu_memory_gb: float = 0.0
    encoder: str | None = None
    #: What embeddings are computed in, here and in the workers (``smallfleet.encoders.set_dtype``).
    encoder_dtype: str = "auto"
    max_train: int = 2000
    #: At most this many validation and this many test examples per task type (the newest):
    #: evaluation then costs the same at 100k traces as at 10k.
    max_eval: int = 1000
    kinds: list[str] | None = None
    retrain_growth: float = 0.2
    usd_per_hour: float = 0.0
    progress: bool = True
    #: Extra constructor arguments per specialist kind, e.g. ``{"classifier": {"epochs": 2}}``;
    #: ``max_train`` there caps that kind's training examples below ``max_train`` (the newest kept).
    specialist_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> FlywheelOptions:
        fw = settings.flywheel
        base = cls(
            target_accuracy=fw.target_accuracy,
            confidence=fw.confidence,
            min_examples=fw.min_examples,
            min_coverage=fw.min_coverage,
            executor=fw.executor,
            workers=fw.workers,
            memory_gb=fw.memory_gb,
            specialists_dir=fw.specialists_dir,
            cpu_only=fw.cpu_only,
            gpu_memory_gb=fw.gpu_memory_gb,
            encoder=fw.encoder,
            encoder_dtype=fw.encoder_dtype,
            usd_per_hour=settings.pricing.local_usd_per_hour,
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(base, k, v)
        return base


@dataclass
class CandidateResult:
    kind: str
    base_model: str | None
    path: str | None = None
    data_hash: str | None = None
    train_seconds: float = 0.0
    threshold: float | None = None
    latency_p50_ms: float | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)
    promoted: bool = False
    reason: str | None = None


@dataclass
class ClusterResult:
    key: str
    name: str
    size: int
    shape: str
    status: str
    share_calls: float = 0.0
    share_cost: float = 0.0
    cost_usd: float = 0.0
    tokens: int = 0
    latency_p50_ms: float | None = None
    n_train: int = 0
    n_validation: int = 0
    n_test: int = 0
    profile: dict[str, Any] = field(default_factory=dict)
    candidates: list[CandidateResult] = field(default_factory=list)
    route: dict[str, Any] | None = None
    large_cost_per_call: float | None = None


@dataclass
class FlywheelRun:
    run_id: str
    started_at: float
    workload: str | None
    params: dict[str, Any]
    finished_at: float | None = None
    traffic: dict[str, Any] = field(default_factory=dict)
    curation: dict[str, Any] = field(default_factory=dict)
    clusters: list[ClusterResult] = field(default_factory=list)
    noise: dict[str, Any] = field(default_factory=dict)
    projection: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    #: stage → {"seconds", "peak_rss_mb"} (the process's peak resident memory after the stage)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    #: processes that trained task types at once (1: this one)
    workers: int = 1
    #: the largest worker process's peak resident memory (MB), when workers trained
    worker_peak_rss_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def promoted(self) -> list[ClusterResult]:
        return [c for c in self.clusters if c.status == "promoted"]


# ---------------------------------------------------------------- helpers


class _StageClock:
    """Times each stage and notes the process's peak memory after it."""

    def __init__(self, into: dict[str, dict[str, float]]) -> None:
        self.into = into

    def __call__(self, name: str) -> Any:
        import contextlib
        import resource

        @contextlib.contextmanager
        def timed() -> Any:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
                self.into[name] = {
                    "seconds": round(time.perf_counter() - t0, 3),
                    "peak_rss_mb": round(peak, 1),
                }

        return timed()


def _p50(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def to_example(rec: TraceRecord) -> Example | None:
    """A training example from a trace (None when the trace cannot be one).

    A request only the upstream may answer (custom tools, an ``allowed_tools`` tool choice:
    :meth:`ChatRequest.passthrough_reason`) is never served small, so it teaches nothing.
    """
    from pydantic import ValidationError

    from smallfleet.types import ChatRequest, ChatResponse

    if not rec.request or not rec.response:
        return None
    try:
        request = ChatRequest.model_validate(rec.request)
        response = ChatResponse.model_validate(rec.response)
    except ValidationError:
        return None
    if request.passthrough_reason() is not None:
        return None
    return Example(request=request, response=response, trace_id=rec.id)


def _progress(enabled: bool) -> Any:
    """One row per stage and per task type being trained: rich bars on a terminal, a log line
    every 15 s otherwise (:mod:`smallfleet._progress`)."""
    from smallfleet._progress import Progress

    return Progress(enabled)


def _stage_reporter(progress: Any, task: int, stage: str) -> Any:
    """An ``on_progress(step, done, total)`` callback that shows ``step`` on ``stage``'s row."""
    names = {"filter": "filter failures and duplicates", "near_duplicates": "find near-duplicates"}

    def report(step: str, done: int, total: int) -> None:
        what = names.get(step, step.replace("_", " "))
        progress.update(task, description=f"{stage}: {what}", completed=done, total=max(total, 1))

    return report


# ---------------------------------------------------------------- training (one candidate)


def train_candidate(
    kind: str,
    base_model: str | None,
    train: list[dict[str, Any]],
    validation: list[dict[str, Any]],
    out_dir: str,
    params: dict[str, Any] | None = None,
    encoder_dtype: str = "auto",
) -> dict[str, Any]:
    """Fit one candidate and save it; a top-level function so a Ray task can run it."""
    from smallfleet.encoders import set_dtype
    from smallfleet.specialists.base import specialist_class

    set_dtype(encoder_dtype)
    cls = specialist_class(kind)
    args = (base_model,) if base_model else ()
    spec = cls(*args, **(params or {}))  # type: ignore[call-arg]
    t0 = time.perf_counter()
    # the candidate is scored on validation after training (_evaluate_candidate); fit sees it
    # only when it learns from it (a classifier's calibration)
    val = [Example.from_dict(d) for d in validation] if cls.learns_from_validation else None
    spec.fit([Example.from_dict(d) for d in train], val)
    seconds = time.perf_counter() - t0
    spec.save(out_dir)
    return {"path": out_dir, "train_seconds": seconds}


def _run_training(jobs: list[dict[str, Any]], executor: str) -> list[dict[str, Any] | Exception]:
    """Run training jobs in-process or as Ray tasks; an exception per failed job, not a crash."""
    if executor == "ray":
        from smallfleet._extras import require

        ray = require("ray", "ray")
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(train_candidate)
        refs = [remote.remote(**job) for job in jobs]
        out: list[dict[str, Any] | Exception] = []
        for ref in refs:
            try:
                out.append(ray.get(ref))
            except Exception as e:
                out.append(e)
        return out
    results: list[dict[str, Any] | Exception] = []
    for job in jobs:
        try:
            results.append(train_candidate(**job))
        except Exception as e:
            log.exception("training %s failed", job.get("kind"))
            results.append(e)
    return results


# ---------------------------------------------------------------- evaluating


def _judge(spec: Any, examples: Sequence[Example], shape: str) -> tuple[list[float], list[bool], list[Any]]:
    """Confidences and correctness of ``spec`` on ``examples`` (batched)."""
    from smallfleet.evals.evaluate import score

    if not examples:
        return [], [], []
    preds = spec.predict([ex.request for ex in examples])
    conf = [float(p.confidence) for p in preds]
    correct = [
        bool(score(p.response, ex.response, ex.request, shape).correct)
        for p, ex in zip(preds, examples, strict=True)
    ]
    return conf, correct, preds


def _latency_p50_ms(spec: Any, examples: Sequence[Example], n: int = 20) -> float | None:
    """Single-request latency, as for requests never seen (curation embedded their messages)."""
    from smallfleet.encoders import unseen

    if not examples:
        return None
    times = []
    sample = list(examples)[:n]
    with unseen(ex.request.last_user_text() for ex in sample):
        for ex in sample:
            t0 = time.perf_counter()
            spec.predict([ex.request])
            times.append((time.perf_counter() - t0) * 1000)
    return _p50(times)


def _kept(
    conf: Sequence[float], correct: Sequence[bool], threshold: float, confidence: float | None = None
) -> dict[str, Any]:
    """Scores of the answers kept at ``threshold``; with ``confidence``, the lower bound on their
    accuracy too (``kept_accuracy_lower``: at least that, with that confidence)."""
    from smallfleet.evals.coverage import clopper_pearson_lower

    kept = [c for x, c in zip(conf, correct, strict=True) if x >= threshold]
    n, right = len(conf), sum(kept)
    out = {
        "n": n,
        "accuracy": (sum(correct) / n) if n else None,
        "kept": len(kept),
        "kept_correct": right,
        "coverage": (len(kept) / n) if n else 0.0,
        "kept_accuracy": (right / len(kept)) if kept else None,
    }
    if confidence is not None:
        out["confidence"] = confidence
        out["kept_accuracy_lower"] = clopper_pearson_lower(right, len(kept), confidence)
    return out


def _evaluate_candidate(
    cand: CandidateResult, val: Sequence[Example], test: Sequence[Example], shape: str, opts: FlywheelOptions
) -> Any:
    """Fill in ``cand``'s threshold and scores; return the loaded specialist.

    The validation and test answers together (none of them trained on) choose and certify
    the threshold (:func:`~smallfleet.evals.coverage.certified_threshold`): the lowest of 20
    thresholds fixed by coverage whose kept answers reach the target with
    ``opts.confidence``, each tested by a one-sided Clopper–Pearson lower bound at a
    confidence raised for their number (the union bound), so the promise holds with the
    scan accounted for. ``cand.test`` holds the kept answers' figures on both splits
    (``split: "validation+test"``) and the bound (the promise); ``cand.validation`` the
    validation split's point estimates. Where the answers are too few for any bound to
    reach the target, ``cand.reason`` says so.
    """
    from smallfleet.evals.coverage import (
        certified_confidence,
        certified_threshold,
        coverage_curve,
        min_answers,
    )
    from smallfleet.specialists.base import load_specialist

    assert cand.path is not None
    spec = load_specialist(cand.path)
    target, confidence = opts.target_accuracy, opts.confidence
    v_conf, v_ok, _ = _judge(spec, val, shape)
    t_conf, t_ok, _ = _judge(spec, test, shape)
    conf, ok = [*v_conf, *t_conf], [*v_ok, *t_ok]
    thr = certified_threshold(conf, ok, target, confidence) if conf else None
    if thr is not None:
        thr = max(thr, MIN_THRESHOLD)  # confidence 0 means "known wrong" (e.g. fails the schema): never kept
    cand.validation = {"n": len(val), "accuracy": (sum(v_ok) / len(v_ok)) if v_ok else None}
    cand.curve = [
        {"threshold": p.threshold, "coverage": p.coverage, "accuracy": p.accuracy}
        for p in coverage_curve(conf, ok)
    ]
    cand.latency_p50_ms = _latency_p50_ms(spec, test)
    each = certified_confidence(confidence)
    need = min_answers(target, each)
    if thr is None:
        cand.test = {**_kept(conf, ok, float("inf")), "split": "validation+test"}
        if need is None or len(conf) < need:
            takes = "no number of answers can promise 100%" if need is None else f"it takes {need}, all right"
            cand.reason = (
                f"too few answers: with {len(conf)} validation and test answers the {confidence:.0%} "
                f"lower bound cannot reach {target:.0%} ({takes})"
            )
        else:
            cand.reason = (
                f"no threshold reaches {target:.0%} with {confidence:.0%} confidence "
                f"on {len(conf)} validation and test answers"
            )
        return spec
    cand.threshold = thr
    cand.validation.update(_kept(v_conf, v_ok, thr))
    # the promise: the bound at the level each threshold was tested at (it holds at `confidence`)
    cand.test = {**_kept(conf, ok, thr, each), "confidence": confidence, "split": "validation+test"}
    if cand.test["coverage"] < opts.min_coverage:
        cand.reason = f"coverage {cand.test['coverage']:.0%} < minimum {opts.min_coverage:.0%}"
    return spec


def train_and_evaluate(
    job: dict[str, Any], report: Callable[[str, int], None] | None = None
) -> list[CandidateResult]:
    """Train a task type's candidates, cheapest first, and score each; stop at the first that
    passes (with Ray: train them all at once and score them all). A top-level function, so a
    worker process can run it: ``job`` is what :meth:`Flywheel._cluster_job` built.
    ``report(what, candidates_done)`` is told what runs (for the task type's progress row)."""
    from smallfleet.encoders import remember_embeddings, set_dtype

    say = report or (lambda what, done: None)

    opts: FlywheelOptions = job["options"]
    set_dtype(opts.encoder_dtype)
    if job.get("embeddings"):
        remember_embeddings(job["embeddings"])
    val = [Example.from_dict(d) for d in job["validation"]]
    test = [Example.from_dict(d) for d in job["test"]]
    jobs, cands = job["jobs"], job["candidates"]
    batches = [list(range(len(jobs)))] if opts.executor == "ray" else [[i] for i in range(len(jobs))]
    done: list[CandidateResult] = []
    for batch in batches:
        kinds = ", ".join(jobs[i]["kind"] for i in batch)
        say(f"training {kinds} on {len(jobs[batch[0]]['train']):,} examples", len(done))
        outcomes = _run_training([jobs[i] for i in batch], opts.executor)
        passed = False
        for i, outcome in zip(batch, outcomes, strict=True):
            cand = cands[i]
            done.append(cand)
            if isinstance(outcome, Exception):
                cand.reason = f"training failed: {outcome}"
                continue
            cand.path, cand.train_seconds = outcome["path"], outcome["train_seconds"]
            say(f"evaluating {cand.kind} on {len(val) + len(test):,} held-out answers", len(done) - 1)
            try:
                _evaluate_candidate(cand, val, test, job["shape"], opts)
            except Exception as e:
                log.exception("evaluating %s failed", cand.kind)
                cand.reason = f"evaluation failed: {e}"
                continue
            passed = passed or cand.reason is None
        if passed:
            break
    return done


#: In a worker process: the queue its progress goes to (set by :func:`_init_worker`).
_PROGRESS_QUEUE: Any = None


def _worker_job(job: dict[str, Any], index: int = 0) -> tuple[list[CandidateResult], float | None]:
    """:func:`train_and_evaluate` in a worker process, with the worker's peak memory (MB):
    ``VmHWM``, its peak since it was exec'd (``ru_maxrss`` would count the parent's pages the
    spawning fork shared before its exec). What runs goes to the parent's progress queue."""
    queue = _PROGRESS_QUEUE

    def report(what: str, done: int) -> None:
        if queue is not None:
            queue.put((index, what, done))

    return train_and_evaluate(job, report), _status_mb("VmHWM")


def _status_mb(field: str, path: str = "/proc/self/status") -> float | None:
    """A ``kB`` field of ``/proc/self/status`` or ``/proc/meminfo`` in MB (None off Linux)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _available_mb(memory_gb: float) -> float:
    """The memory the run may use in all: ``memory_gb``, or less where the machine has less
    available (beside what this process holds already)."""
    free, own = _status_mb("MemAvailable", "/proc/meminfo"), _status_mb("VmRSS")
    budget = memory_gb * 1024
    return budget if free is None else min(budget, free + (own or 0.0))


#: What a training worker adds to the memory of all processes together: measured on the
#: demo's task types, two workers added 1.74 GB at 10k traces and 1.67 GB at 100k in float32
#: (PSS: the shared libraries counted once; each worker's own resident peak was 1.5-1.7 GB),
#: and about 2.4 GB at 10k where training computes in bfloat16 (each worker's peak 1.6 GB).
WORKER_MB = 1200.0


def workers_for_memory(workers: int, own_mb: float | None, budget_mb: float | None) -> int:
    """At most ``workers``, fewer where this process (``own_mb``) and the workers (``WORKER_MB``
    each) would not fit in ``budget_mb``; 1 means in-process (a single worker gains nothing)."""
    if own_mb is None or budget_mb is None or workers <= 1:
        return max(1, workers)
    fit = int((budget_mb - own_mb) // WORKER_MB)
    return max(1, min(workers, fit))


def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so that what this
    process dropped (the examples beyond the training caps) is free for worker processes."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Worker processes for training when not configured: one per CPU, at most four.

    On a CPU, a 22M-parameter encoder's matrices are too small for threads to pay: one
    training job runs 1.16x faster on two threads than on one (measured on 2 cores), while
    two jobs on one thread each run side by side almost as fast as one alone.
    """
    return max(1, min(4, _cpu_count()))


def _init_worker(threads: int, progress_queue: Any = None) -> None:
    from smallfleet._runtime import configure_process

    configure_process()  # a worker is smallfleet's own process; before torch builds a kernel
    import torch

    from smallfleet._progress import quiet_third_party

    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = progress_queue
    torch.set_num_threads(threads)
    quiet_third_party()  # the parent's progress bars own the terminal


def _old_route_on(route: Route, test: Sequence[Example], shape: str) -> dict[str, Any] | None:
    """The serving route's figures on the new test set (None if it cannot be loaded)."""
    from smallfleet.specialists.base import load_specialist

    try:
        spec = load_specialist(route.specialist_path)
    except Exception:
        return None
    conf, ok, _ = _judge(spec, test, shape)
    return _kept(conf, ok, route.threshold)


# ---------------------------------------------------------------- the run


class _TaskRows:
    """The progress rows of the task types being trained, one each, under the stage's row."""

    def __init__(self, progress: Any, clusters: Sequence[ClusterResult], stage: int) -> None:
        self.progress, self.stage = progress, stage
        self.names = [c.key for c in clusters]
        self.ids = [
            progress.add_task(f"  {c.key} ({c.n_train:,} examples): waiting", total=1, start=False)
            for c in clusters
        ]
        self._started: set[int] = set()

    def reporter(self, i: int) -> Callable[[str, int], None]:
        def report(what: str, done: int) -> None:
            self.progress.update(self.ids[i], description=f"  {self.names[i]}: {what}")
            if i not in self._started:
                self._started.add(i)
                self.progress.start_task(self.ids[i])

        return report

    def done(self, i: int, candidates: Sequence[CandidateResult]) -> None:
        passed = next((c for c in candidates if c.reason is None and c.path), None)
        if passed is not None:
            cov = (passed.test or {}).get("coverage") or 0.0
            outcome = f"{passed.kind} passed, keeps {cov:.0%} of its answers"
        else:
            outcome = f"no candidate passed ({len(candidates)} tried)"
        if i not in self._started:  # trained where it reported nothing (a worker that died)
            self.reporter(i)("trained", 0)
        self.progress.update(self.ids[i], description=f"  {self.names[i]}: {outcome}", completed=1)
        self.progress.advance(self.stage)


class Flywheel:
    """One run of the flywheel over a store's traces."""

    def __init__(self, store: TraceStore, options: FlywheelOptions) -> None:
        self.store = store
        self.opts = options
        self.routes = RouteStore(store.engine)
        self._results: list[ClusterResult] = []
        self._matchers: dict[int, dict[str, Any]] = {}
        self._active_matcher: Any = None

    def run(self) -> FlywheelRun:
        from smallfleet._progress import quiet_third_party
        from smallfleet.encoders import set_dtype

        opts = self.opts
        set_dtype(opts.encoder_dtype)
        if opts.progress:
            quiet_third_party()  # model-loading bars would tear through ours
        run = FlywheelRun(
            run_id=uuid.uuid4().hex[:12],
            started_at=time.time(),
            workload=opts.workload,
            params={k: v for k, v in asdict(opts).items() if k != "progress"},
        )
        self._record_run(run, status="running")
        clock = _StageClock(run.stages)
        with _progress(opts.progress) as progress:
            with clock("load"):
                records = self._load(progress)
                run.traffic = self._traffic(records)
            with clock("curate"):
                curated = self._curate(records, progress)
            run.curation = {
                "total": len(records),
                "kept": len(curated.train) + len(curated.validation) + len(curated.test),
                "dropped": dict(curated.dropped),
                "splits": {
                    "train": len(curated.train),
                    "validation": len(curated.validation),
                    "test": len(curated.test),
                },
            }
            kept = [*curated.train, *curated.validation, *curated.test]
            with clock("cluster"):
                clustering = self._cluster(kept, progress)
            with clock("select, train, evaluate, promote"):
                self._per_cluster(run, kept, clustering, progress)
        run.projection = self._projection(run)
        run.finished_at = time.time()
        self._record_run(run, status="done")
        return run

    # -- stages

    def _load(self, progress: Any) -> list[TraceRecord]:
        total = self.store.count_traces(workload=self.opts.workload, since=self.opts.since)
        task = progress.add_task("load traces", total=total)
        out = []
        for rec in self.store.iter_traces(workload=self.opts.workload, since=self.opts.since):
            if rec.route.startswith("specialist:"):
                continue  # answers of our own specialists are not teacher labels
            out.append(rec)
            progress.advance(task)
        progress.update(task, completed=total)
        return out

    @staticmethod
    def _traffic(records: Sequence[TraceRecord]) -> dict[str, Any]:
        if not records:
            return {"calls": 0, "cost_usd": 0.0, "days": 0.0}
        first = min(r.created_at for r in records)
        last = max(r.created_at for r in records)
        return {
            "calls": len(records),
            "cost_usd": sum(r.cost_usd or 0.0 for r in records),
            "input_tokens": sum(r.input_tokens for r in records),
            "output_tokens": sum(r.output_tokens for r in records),
            "latency_p50_ms": _p50([r.latency_ms for r in records]),
            "first": first,
            "last": last,
            "days": max((last - first) / 86400.0, 1 / 24),
        }

    def _curate(self, records: list[TraceRecord], progress: Any) -> Any:
        from smallfleet.flywheel.curate import curate

        task = progress.add_task("curate", total=max(len(records), 1))
        feedback = self._feedback_scores()
        report = _stage_reporter(progress, task, "curate")
        curated = curate(records, feedback=feedback, encoder=self.opts.encoder, on_progress=report)
        progress.update(task, description="curate", completed=1, total=1)
        return curated

    def _feedback_scores(self) -> dict[str, float]:
        from smallfleet.store.tables import feedback

        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(feedback.c.trace_id, sa.func.min(feedback.c.score)).group_by(feedback.c.trace_id)
            )
            return {r[0]: float(r[1]) for r in rows}

    def _cluster(self, kept: list[TraceRecord], progress: Any) -> Any:
        from smallfleet.flywheel.cluster import cluster_records

        task = progress.add_task("cluster", total=max(len(kept), 1))
        report = _stage_reporter(progress, task, "cluster")
        clustering = cluster_records(kept, encoder=self.opts.encoder, on_progress=report)
        progress.update(task, description="cluster", completed=1, total=1)
        return clustering

    def _per_cluster(
        self,
        run: FlywheelRun,
        kept: list[TraceRecord],
        clustering: Any,
        progress: Any,
    ) -> None:
        from smallfleet.routing.matcher import RouteMatcher, build_matchers
        from smallfleet.specialists.catalog import Budget, profile_task, select

        total_calls = max(len(kept), 1)
        total_cost = sum(r.cost_usd or 0.0 for r in kept) or 1.0
        by_cluster: dict[int, list[TraceRecord]] = {}
        for rec, label in zip(kept, clustering.labels, strict=True):
            by_cluster.setdefault(int(label), []).append(rec)
        noise = by_cluster.pop(-1, [])
        run.noise = {
            "calls": len(noise),
            "share_calls": len(noise) / total_calls,
            "cost_usd": sum(r.cost_usd or 0.0 for r in noise),
            "latency_p50_ms": _p50([r.latency_ms for r in noise]),
        }
        active = {r.name: r for r in self.routes.active()}
        # one matcher over every active route, built once for the whole run
        with_matchers = [(name, r.matcher) for name, r in active.items() if r.matcher]
        self._active_matcher = (
            RouteMatcher(with_matchers, encoder=self.opts.encoder) if with_matchers else None
        )
        self._results = run.clusters
        self._matchers = build_matchers([r.request or {} for r in kept], clustering)
        task = progress.add_task(
            f"select, train, evaluate {len(by_cluster)} task types", total=len(by_cluster)
        )
        budget = Budget(cpu_only=self.opts.cpu_only, gpu_memory_gb=self.opts.gpu_memory_gb)
        pending: list[tuple[dict[str, Any], ClusterResult, Any, dict[str, list[Example]], Route | None]] = []
        for label, recs in sorted(by_cluster.items(), key=lambda kv: -len(kv[1])):
            info = clustering.clusters[label]
            examples = _split_by_time(recs)
            for split in ("validation", "test"):  # the newest ones: enough to judge, bounded in cost
                examples[split] = examples[split][-self.opts.max_eval :]
            profile = (
                profile_task([*examples["train"], *examples["validation"]]) if examples["train"] else None
            )
            # what is kept is bounded; a label task gets up to LABEL_EXAMPLES examples a label
            cap = self.opts.max_train
            if profile is not None and profile.labels:
                cap = max(cap, min(LABEL_EXAMPLES * len(profile.labels), LABEL_TRAIN_MAX))
            train = examples["train"] = examples["train"][-cap:]
            shape = getattr(profile, "shape", "text") if profile else "text"
            cost = sum(r.cost_usd or 0.0 for r in recs)
            key = self._route_name(info, recs, active, getattr(profile, "labels", None) or [])
            cres = ClusterResult(
                key=key,
                name=info.name,
                size=len(recs),
                shape=shape,
                status="too_small",
                share_calls=len(recs) / total_calls,
                share_cost=cost / total_cost,
                cost_usd=cost,
                tokens=sum(r.input_tokens + r.output_tokens for r in recs),
                latency_p50_ms=_p50([r.latency_ms for r in recs]),
                n_train=len(train),
                n_validation=len(examples["validation"]),
                n_test=len(examples["test"]),
                profile=_jsonable(profile),
                large_cost_per_call=cost / len(recs) if recs else None,
            )
            run.clusters.append(cres)
            if len(recs) >= self.opts.min_examples and train and examples["validation"] and examples["test"]:
                candidates = select(profile, budget)
                if self.opts.kinds:
                    candidates = [c for c in candidates if c.kind in self.opts.kinds]
                job = self._cluster_job(cres, examples, candidates, active.get(key))
                if job is not None:
                    pending.append((job, cres, info, examples, active.get(key)))
                    continue
            progress.advance(task)
        jobs = [p[0] for p in pending]
        if len(jobs) > 1:
            _release_memory()  # what this process dropped is free for the workers (and measured)
        run.workers = self._workers(jobs)
        # one row per task type to train: waiting, then what runs (training, evaluating), then its outcome
        rows = _TaskRows(progress, [p[1] for p in pending], task)
        outcomes = self._execute(run, jobs, rows)
        promoting = progress.add_task("promote", total=max(len(pending), 1))
        for (_, cres, info, examples, serving), cands in zip(pending, outcomes, strict=True):
            cres.candidates.extend(cands)
            progress.update(promoting, description=f"promote: {cres.key}")
            self._promote(run, cres, info, examples, serving)
            progress.advance(promoting)
        progress.update(promoting, description="promote", completed=max(len(pending), 1))

    def _route_name(
        self, info: Any, recs: list[TraceRecord], active: dict[str, Route], labels: Sequence[str] = ()
    ) -> str:
        """A stable name: the active route whose matcher claims most of this cluster, else a name
        that says what the task type does (:func:`~smallfleet.flywheel.naming.route_name`)."""
        from smallfleet.flywheel.naming import route_name, workload_of

        sample = [r.request for r in recs[:50] if r.request]
        if sample and self._active_matcher is not None:
            votes = Counter(self._active_matcher.match_dict(r) for r in sample)
            votes.pop(None, None)
            if votes:
                name, hits = votes.most_common(1)[0]
                if hits / len(sample) >= 0.6:
                    return name
        taken = {c.key for c in self._results}
        base = route_name(
            info.shape,
            sample,
            formats=info.formats,
            labels=labels,
            keywords=info.keywords,
            workload=self.opts.workload or workload_of([r.workload for r in recs]),
        )
        name, i = base, 2
        while name in taken or (name in active and active[name].matcher):
            name, i = f"{base}-{i}", i + 1
        return name

    def _cluster_job(
        self,
        cres: ClusterResult,
        examples: dict[str, list[Example]],
        candidates: list[Any],
        serving: Route | None,
    ) -> dict[str, Any] | None:
        """What training this task type takes (for :func:`train_and_evaluate`), or None when
        there is nothing to train: no candidate, or the serving route still fits its data."""
        opts = self.opts
        train = examples["train"]
        if not candidates:
            cres.status = "no_candidate"
            return None
        dhash = data_hash(train)
        if serving is not None:
            grown = len(train) >= (serving.metrics or {}).get("n_train", 0) * (1 + opts.retrain_growth)
            agreement = (serving.metrics or {}).get("shadow_agreement")
            drifted = agreement is not None and agreement < opts.target_accuracy
            if serving.data_hash == dhash or not (grown or drifted):
                cres.status = "promoted"
                cres.route = _route_info(serving, unchanged=True)
                cres.candidates.append(
                    CandidateResult(
                        kind=serving.kind,
                        base_model=serving.base_model,
                        path=serving.specialist_path,
                        data_hash=serving.data_hash,
                        threshold=serving.threshold,
                        promoted=True,
                        test={
                            k: (serving.metrics or {}).get(k)
                            for k in ("accuracy", "kept_accuracy", "coverage", "n")
                        },
                        curve=(serving.metrics or {}).get("curve", []),
                        reason="unchanged: serving route kept",
                        latency_p50_ms=(serving.metrics or {}).get("latency_p50_ms"),
                    )
                )
                return None
        root = Path(opts.specialists_dir) / cres.key
        jobs, results = [], []
        train_d = [ex.to_dict() for ex in train]
        val_d = [ex.to_dict() for ex in examples["validation"]]
        for cand in candidates:
            out = root / f"{cand.kind}-{dhash}"
            base = _base_model(cand, opts.encoder)
            params = {"progress": False, **opts.specialist_params.get(cand.kind, {})}
            cap = params.pop("max_train", None)  # a kind's own cap on its training examples (the newest)
            jobs.append(
                {
                    "kind": cand.kind,
                    "base_model": base,
                    "train": train_d[-int(cap) :] if cap else train_d,
                    "validation": val_d,
                    "out_dir": str(out),
                    "params": params,
                    "encoder_dtype": opts.encoder_dtype,
                }
            )
            results.append(CandidateResult(kind=cand.kind, base_model=base, data_hash=dhash))
        return {
            "jobs": jobs,
            "candidates": results,
            "validation": val_d,
            "test": [ex.to_dict() for ex in examples["test"]],
            "shape": cres.shape,
            "options": opts,
            # the messages a tool caller's selector embeds (what a worker is handed embeddings of)
            "messages": [ex.request.last_user_text() for split in examples.values() for ex in split],
        }

    def _workers(self, jobs: list[dict[str, Any]]) -> int:
        """How many processes train task types at once (1: in this process).

        Unless configured, small runs stay in this process: a worker spends about 5 s
        importing torch and transformers before it trains, more than it saves on a few
        hundred examples.
        """
        if self.opts.executor == "ray" or len(jobs) < 2:
            return 1
        if self.opts.workers is not None:
            return max(1, min(self.opts.workers, len(jobs)))
        examples = sum(len(j["jobs"][0]["train"]) for j in jobs)
        if examples < PARALLEL_MIN_EXAMPLES:
            return 1
        return workers_for_memory(
            min(default_workers(), len(jobs)), _status_mb("VmRSS"), _available_mb(self.opts.memory_gb)
        )

    def _execute(
        self, run: FlywheelRun, jobs: list[dict[str, Any]], rows: _TaskRows
    ) -> list[list[CandidateResult]]:
        """Run the task types' training jobs, in ``run.workers`` processes when more than one
        (each with its share of the CPU threads); each job's progress row says what runs."""
        workers = run.workers
        if workers == 1:
            out = []
            for i, job in enumerate(jobs):
                out.append(train_and_evaluate(job, rows.reporter(i)))
                rows.done(i, out[-1])
            return out
        import concurrent.futures as cf
        import multiprocessing as mp
        import queue as queue_mod

        from smallfleet.encoders import cached_embeddings

        threads = max(1, _cpu_count() // workers)
        results: list[list[CandidateResult] | None] = [None] * len(jobs)
        # a worker reads the message embeddings this process computed in curation (the tool
        # callers' selector uses them) instead of computing them again
        for job in jobs:
            job["embeddings"] = cached_embeddings(job.pop("messages"))
        ctx = mp.get_context(
            "spawn"
        )  # spawned, not forked: a fork of a process whose OpenMP threads have run can hang
        said = ctx.Queue()  # what each worker's job is doing, for its progress row

        def drain() -> None:
            while True:
                try:
                    i, what, n = said.get_nowait()
                except (queue_mod.Empty, OSError, ValueError):
                    return
                rows.reporter(i)(what, n)

        with cf.ProcessPoolExecutor(workers, ctx, _init_worker, (threads, said)) as pool:
            futures = {pool.submit(_worker_job, job, i): i for i, job in enumerate(jobs)}
            waiting = set(futures)
            while waiting:
                finished, waiting = cf.wait(waiting, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                drain()
                for fut in finished:
                    i = futures[fut]
                    try:
                        results[i], peak = fut.result()
                        if peak is not None:
                            run.worker_peak_rss_mb = max(run.worker_peak_rss_mb or 0.0, peak)
                    except Exception as e:  # a worker that died (out of memory, say): train here instead
                        log.warning("a training worker failed (%s); training %s in-process", e, i)
                        results[i] = train_and_evaluate(jobs[i], rows.reporter(i))
                    rows.done(i, results[i] or [])
        said.close()
        return [r or [] for r in results]

    def _promote(
        self,
        run: FlywheelRun,
        cres: ClusterResult,
        info: Any,
        examples: dict[str, list[Example]],
        serving: Route | None,
    ) -> None:
        """Promote the chosen candidate of a trained task type, unless the serving route is better.

        The route stores its promise: ``kept_accuracy_lower``, the accuracy its kept test
        answers reach with ``confidence`` (the bound), beside ``kept_accuracy`` (the point
        estimate) and ``target_accuracy``; ``smallfleet routes show`` sets what the gateway's
        checks measure since against it.
        """
        from smallfleet.evals.coverage import clopper_pearson_lower

        opts = self.opts
        chosen = next((c for c in cres.candidates if c.reason is None and c.path), None)
        if chosen is None:
            cres.status = "not_promoted"
            return
        if serving is not None:
            old = _old_route_on(serving, examples["test"], cres.shape)
            # the serving route holds its place where it still keeps its promise on the new test set
            if (
                old is not None
                and old["kept"]
                and clopper_pearson_lower(old["kept_correct"], old["kept"], opts.confidence)
                >= opts.target_accuracy
            ):
                new_cov = chosen.test.get("coverage") or 0.0
                if new_cov < old["coverage"]:
                    chosen.reason = f"serving v{serving.version} is better on the same test set"
                    cres.status = "promoted"
                    cres.route = _route_info(serving, unchanged=True)
                    return
        chosen.promoted = True
        cres.status = "promoted"
        matcher = self._matchers.get(info.label)
        labels = (cres.profile or {}).get("labels")
        route = Route(
            name=cres.key,
            kind=chosen.kind,
            specialist_path=str(chosen.path),
            threshold=float(chosen.threshold or 0.0),
            mode=opts.promote_mode,
            workload=opts.workload,
            base_model=chosen.base_model,
            labels=labels if cres.shape == "label" else None,
            matcher=matcher,
            run_id=run.run_id,
            data_hash=chosen.data_hash,
            metrics={
                **{k: chosen.test.get(k) for k in ("accuracy", "kept_accuracy", "coverage", "n")},
                # the promise: at least kept_accuracy_lower, with `confidence`, on kept_correct of kept
                **{k: chosen.test.get(k) for k in ("kept", "kept_correct", "kept_accuracy_lower")},
                "confidence": opts.confidence,
                "target_accuracy": opts.target_accuracy,
                "n_train": len(examples["train"]),
                "curve": chosen.curve,
                "latency_p50_ms": chosen.latency_p50_ms,
                "large_latency_p50_ms": cres.latency_p50_ms,
                "large_cost_per_call": cres.large_cost_per_call,
                "cluster": cres.name,
            },
        )
        from smallfleet.routing.novelty import fit_route_gate

        # the novelty gate: requests unlike this training traffic escalate (routing/novelty.py)
        novelty = fit_route_gate(
            route.specialist_path, examples["train"], examples["validation"], cres.shape, opts.encoder
        )
        if novelty is not None:
            route.metrics["novelty"] = novelty
        self.routes.promote(route, actor="flywheel")
        run.changes.append(f"promoted {route.name} v{route.version} ({route.kind}, {route.mode})")
        cres.route = _route_info(route)

    # -- results

    def _projection(self, run: FlywheelRun) -> dict[str, Any]:
        traffic = run.traffic
        calls = traffic.get("calls") or 0
        if not calls:
            return {}
        per_month = 30.0 / max(traffic.get("days") or 1.0, 1e-9)
        cost_before = (traffic.get("cost_usd") or 0.0) * per_month
        share_small = 0.0
        saved = 0.0
        small_latencies: list[tuple[float, float]] = []  # (share, latency)
        for c in run.promoted:
            cand = next((x for x in c.candidates if x.promoted), None)
            if cand is None:
                continue
            cov = (cand.test or {}).get("coverage") or 0.0
            share = (c.size / calls) * cov
            share_small += share
            small_cost = (cand.latency_p50_ms or 0.0) / 3_600_000 * self.opts.usd_per_hour
            saved += c.size * cov * max((c.large_cost_per_call or 0.0) - small_cost, 0.0) * per_month
            small_latencies.append((share, cand.latency_p50_ms or 0.0))
        before = traffic.get("latency_p50_ms")
        # Median after: the median of the mixed distribution, approximated by weighting each
        # small share at its p50 and the rest at the large model's p50.
        after = before
        if before is not None and share_small >= 0.5:
            after = max(lat for _, lat in small_latencies) if small_latencies else before
        return {
            "share_small": share_small,
            "monthly_calls": calls * per_month,
            "monthly_cost_before": cost_before,
            "monthly_cost_after": max(cost_before - saved, 0.0),
            "monthly_saved_usd": saved,
            "latency_p50_before_ms": before,
            "latency_p50_after_ms": after,
        }

    def _record_run(self, run: FlywheelRun, status: str) -> None:
        summary = run.to_dict()
        with self.store.engine.begin() as conn:
            if status == "running":
                conn.execute(
                    sa.insert(flywheel_runs).values(
                        id=run.run_id,
                        started_at=run.started_at,
                        workload=run.workload,
                        status=status,
                        params=_jsonable(run.params),
                        summary=None,
                    )
                )
                return
            conn.execute(
                sa.update(flywheel_runs)
                .where(flywheel_runs.c.id == run.run_id)
                .values(finished_at=run.finished_at, status=status, summary=_jsonable(summary))
            )
            for i, c in enumerate(run.clusters):
                cid = f"{run.run_id}-{i}"
                conn.execute(
                    sa.insert(clusters_table).values(
                        id=cid,
                        run_id=run.run_id,
                        key=c.key,
                        name=c.name,
                        workload=run.workload,
                        size=c.size,
                        shape=c.shape,
                        status=c.status,
                        stats=_jsonable(
                            {
                                k: getattr(c, k)
                                for k in (
                                    "share_calls",
                                    "share_cost",
                                    "cost_usd",
                                    "tokens",
                                    "latency_p50_ms",
                                    "n_train",
                                    "n_validation",
                                    "n_test",
                                )
                            }
                        ),
                        profile=_jsonable(c.profile),
                    )
                )
                for j, cand in enumerate(c.candidates):
                    conn.execute(
                        sa.insert(candidates_table).values(
                            id=f"{cid}-{j}",
                            run_id=run.run_id,
                            cluster_id=cid,
                            kind=cand.kind,
                            base_model=cand.base_model,
                            path=cand.path,
                            data_hash=cand.data_hash,
                            threshold=cand.threshold,
                            promoted=cand.promoted,
                            metrics=_jsonable(
                                {
                                    "test": cand.test,
                                    "validation": cand.validation,
                                    "train_seconds": cand.train_seconds,
                                    "reason": cand.reason,
                                    "latency_p50_ms": cand.latency_p50_ms,
                                }
                            ),
                        )
                    )


def _route_info(route: Route, unchanged: bool = False) -> dict[str, Any]:
    """What a cluster's result says about its route."""
    info = {k: getattr(route, k) for k in ("name", "version", "mode", "kind", "threshold")}
    return {**info, "unchanged": True} if unchanged else info


def _split_by_time(
    recs: Sequence[TraceRecord], parts: tuple[float, float] = (0.15, 0.15)
) -> dict[str, list[Example]]:
    """A cluster's examples split by time: the newest ``parts[1]`` test, the ``parts[0]`` before validation.

    Each cluster is split on its own timeline, so a task type that appeared recently still
    gets training data (a global split would put all of it in the test set). Curation has
    dropped near-duplicates, so no near-duplicate pair straddles the splits.
    """
    exs = [ex for ex in (to_example(r) for r in sorted(recs, key=lambda r: (r.created_at, r.id))) if ex]
    n = len(exs)
    n_test = max(1, round(parts[1] * n)) if n >= 3 else 0
    n_val = max(1, round(parts[0] * n)) if n >= 3 else 0
    cut = n - n_test - n_val
    return {"train": exs[:cut], "validation": exs[cut : n - n_test], "test": exs[n - n_test :]}


def _base_model(candidate: Any, encoder: str | None) -> str | None:
    """The base model to train on (None: the specialist's default, the bundled encoder)."""
    from smallfleet.encoders import DEFAULT_ENCODER_ID

    hf_id = candidate.base.hf_id
    if candidate.kind != "generator" and hf_id == DEFAULT_ENCODER_ID:
        return encoder
    return hf_id


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    elif hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    return json.loads(json.dumps(obj, default=str))


def run_flywheel(store: TraceStore, options: FlywheelOptions) -> FlywheelRun:
    """Run the flywheel once over ``store``'s traces; returns what it found and decided."""
    return Flywheel(store, options).run()


def latest_summary(store: TraceStore) -> dict[str, Any] | None:
    """The summary of the newest finished flywheel run, or None."""
    q = (
        sa.select(flywheel_runs.c.summary)
        .where(flywheel_runs.c.status == "done")
        .order_by(flywheel_runs.c.finished_at.desc())
        .limit(1)
    )
    with store.engine.connect() as conn:
        row = conn.execute(q).first()
    return None if row is None else row[0]
