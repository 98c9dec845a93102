"""Scorer benchmark (SPEC §7): in-process scoring, request-to-response through Kafka, and the tutorial's style.

    python bench/scorer.py --rate 500 --seconds 30

Needs a broker at TRIPSCORE_KAFKA_BOOTSTRAP (`tripscore kafka up`). The store is a fresh SQLite file of a
generated city; the model is the ACTIVE one of TRIPSCORE_MODELS_DIR (with its `mllib/` for the tutorial
comparison), else a tiny MLlib model trained here on the city. The last line printed is one JSON object.
"""

# ruff: noqa: E402 - the path fix below must run before the project imports

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/scorer.py`, this folder comes first on sys.path and this file would shadow the `scorer`
# package; resolve imports from the repository root instead.
REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

import argparse
import asyncio
import gc
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from batch.eventlog import FOLD_COLUMNS
from batch.generate import generate_city, score_requests
from batch.metrics import score_histogram
from batch.pointintime import PIT_COLUMNS, driver_record, driver_runs, partition_examples
from bench.calibration import Calibration
from features.derive import model_features
from featurestore import OnlineStore, open_store
from modelregistry.export import ModelExport
from modelregistry.registry import active_version, load_export, promote
from runtime.config import Settings, load_settings
from runtime.topics import create_topics
from schemas.features import MODEL_FEATURES
from schemas.messages import decode_score_request, encode, score_response
from scorer.harness import Responses, WorkerProcess
from scorer.rank import Policy, rank_request
from scorer.reader import READ_BINS, read_rows

RAMP = (100, 150, 200, 250, 300, 400, 500)
TARGET_INPROC_P99_MS = 1.0
TARGET_KAFKA_P99_MS = 25.0
TINY_VERSION = "trip_decline_risk_lr_v1"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def by_driver(events: pa.Table, columns: tuple[str, ...]) -> list[pa.RecordBatch]:
    """`columns` of the log (driver_id first) sorted in fold order, as the batch jobs feed `driver_runs`."""
    keys = [("driver_id", "ascending"), ("ts_ms", "ascending"), ("event_id", "ascending")]
    return events.sort_by(keys).select(list(columns)).to_batches()


def build_store(settings: Settings, drivers: int, seed: int) -> tuple[OnlineStore, list[str], int, pa.Table]:
    """A generated city folded into the store: (store, driver ids, end of the log in ms, events)."""
    city = generate_city(seed=seed, drivers=drivers, days=2)
    records = [driver_record(d, rows) for d, rows in driver_runs(by_driver(city.events, FOLD_COLUMNS))]
    store = open_store(settings)
    store.write(records)
    return store, [d for d, _ in records], city.end_ms, city.events


def train_tiny(events: pa.Table, folder: Path, settings: Settings) -> ModelExport:
    """The training pipeline of `batch.train` fitted here on the city's offers, saved with its export."""
    from batch.materialize import LABEL
    from batch.options import TrainConfig
    from batch.train import MLLIB_DIR, build_pipeline, to_export
    from runtime.spark import spark_session

    batches = partition_examples(by_driver(events, PIT_COLUMNS), has_truth=False)
    examples = pa.Table.from_batches(list(batches)).to_pandas()
    spark = spark_session(settings, "bench-scorer-train")
    frame = spark.createDataFrame(examples[[*MODEL_FEATURES, LABEL]])
    fitted = build_pipeline(TrainConfig(max_iter=50)).fit(frame)
    fitted.write().overwrite().save(str(folder / MLLIB_DIR))
    probabilities = np.array([p[1] for p in fitted.transform(frame).select("probability").toPandas()["probability"]])
    export = to_export(fitted, folder.name, float(examples[LABEL].mean()), "bench-city", {},
                       score_histogram(probabilities))
    export.save(folder)
    return export


def in_spark_process(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a child process: a Spark JVM in this one halves the in-process scoring speed (its
    py4j threads and JVM threads compete for the GIL and the cores), so the timed process never starts one."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def install_model(source_dir: Path, models_dir: Path, events: pa.Table, settings: Settings) -> ModelExport:
    """Copy the ACTIVE model of `source_dir` into `models_dir`, or train a tiny one; promote it."""
    version = active_version(source_dir) if source_dir.is_dir() else None
    if version:
        shutil.copytree(source_dir / version, models_dir / version)
    else:
        version = TINY_VERSION
        (models_dir / version).mkdir(parents=True)
        in_spark_process(train_tiny, events, models_dir / version, settings)
    promote(models_dir, version)
    return load_export(models_dir, version)


def bench_inproc(store: OnlineStore, requests: list[dict], model: ModelExport, policy: Policy,
                 deadline_s: float) -> tuple[list[float], list[float]]:
    """Per request: (read + derive + predict + rank + encode) ms, and the ranking part alone."""
    total, core = [], []
    for raw in requests:
        request, _ = decode_score_request(encode(raw))
        started = time.perf_counter()
        rows = read_rows(store, [c["driver_id"] for c in request["candidates"]], deadline_s)
        read = time.perf_counter()
        ranking = rank_request(request, rows, model, policy)
        encode(score_response(request["request_id"], ranking.strategy, ranking.ranked, reason=ranking.reason,
                              model_version=model.version, timings_ms={}))
        done = time.perf_counter()
        total.append((done - started) * 1000)
        core.append((done - read) * 1000)
    return total, core


def bench_tutorial(requests: list[dict], mllib: Path, settings: Settings) -> list[float]:
    """The tutorial's serving: the loaded MLlib model, one single-row Spark transform per candidate."""
    from pyspark.ml import PipelineModel

    from runtime.spark import spark_session

    store = open_store(settings)
    spark = spark_session(settings, "bench-scorer-tutorial")
    model = PipelineModel.load(str(mllib))
    timings = []
    for raw in requests:
        request, _ = decode_score_request(encode(raw))
        started = time.perf_counter()
        rows = store.read([c["driver_id"] for c in request["candidates"]], READ_BINS)
        for candidate, row in zip(request["candidates"], rows, strict=True):
            features = model_features(row.bins, request["ts_ms"], candidate["pickup_eta_min"], request["rider_rating"],
                                      request["surge_multiplier"], request["est_duration_min"])
            frame = spark.createDataFrame([tuple(None if np.isnan(f) else f for f in features)],
                                          schema=", ".join(f"{name} double" for name in MODEL_FEATURES))
            model.transform(frame).select("probability").collect()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


class FloorProcess(WorkerProcess):
    """`bench/faust_echo.py` instead of the scorer: the same Faust app and agent, answering without scoring."""

    def __init__(self, settings: dict[str, Any], log_path: Path, loglevel: str = "warn") -> None:
        super().__init__(settings, log_path)
        self.command = [sys.executable, "-m", "faust", "-A", "bench.faust_echo", "worker", "--loglevel", loglevel]
        self.env["PYTHONPATH"] = str(REPO)


class KafkaRun:
    """A worker subprocess on fresh topics, a paced producer and a response listener."""

    def __init__(self, settings: dict[str, Any], bootstrap: str, root: Path, workers: int = 1,
                 floor: bool = False) -> None:
        self.bootstrap = bootstrap
        tag = uuid.uuid4().hex[:8]
        self.requests_topic, responses_topic = f"bench-score-requests-{tag}", f"bench-risk-scores-{tag}"
        create_topics(bootstrap, [self.requests_topic, responses_topic, f"bench-dlq-{tag}"], partitions=4)
        worker_settings = {**settings, "topic_score_requests": self.requests_topic,
                           "topic_risk_scores": responses_topic, "topic_score_dlq": f"bench-dlq-{tag}",
                           "scorer_app_id": f"bench-scorer-{tag}"}
        self.workers = [  # one consumer group: the request partitions are shared out
            (FloorProcess(worker_settings, root / f"floor-{tag}-{n}.log") if floor else
             WorkerProcess(worker_settings, root / f"worker-{tag}-{n}.log", loglevel="warning")).start()
            for n in range(workers)
        ]
        for worker in self.workers:
            worker.wait_ready()
        self.responses = Responses(bootstrap, responses_topic)

    async def send_paced(self, requests: list[dict], rate: float, label: str) -> tuple[dict[str, float], float]:
        """Send `requests` at `rate`/s with fresh ids: {request_id: perf_counter at send}, and the seconds taken.

        aiokafka builds records in C: the client must not take the CPU the worker under test needs.
        """
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0, acks=1)
        await producer.start()
        try:
            sent: dict[str, float] = {}
            start = time.perf_counter()
            for i, raw in enumerate(requests):
                if (delay := start + i / rate - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                request_id = f"{label}-{i}"
                value = encode({**raw, "request_id": request_id})
                sent[request_id] = time.perf_counter()
                await producer.send(self.requests_topic, value, key=request_id.encode())
            await producer.flush()
            return sent, time.perf_counter() - start
        finally:
            await producer.stop()

    def run(self, requests: list[dict], rate: float, label: str, drain_s: float = 120.0) -> dict[str, Any]:
        """Send `requests` at `rate`/s with fresh ids, then wait until all are answered (or 10 s pass without
        progress, or `drain_s`); latency = response arrival − send, per request."""
        cpu = self.cpu_seconds()
        sent, send_s = asyncio.run(self.send_paced(requests, rate, label))
        answered = self.responses.wait_for(sent, timeout=drain_s, stall=10.0)
        cpu = self.cpu_seconds() - cpu
        latencies = [(self.responses.arrived[rid] - sent[rid]) * 1000 for rid in answered]
        strategies = pd.Series([r[0]["strategy"] for r in answered.values()], dtype=object).value_counts()
        return {"rate": rate, "achieved_rate": len(sent) / send_s, "sent": len(sent), "answered": len(answered),
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "strategies": {k: int(v) for k, v in strategies.items()},
                "cpu_ms_per_request": cpu * 1000 / max(len(answered), 1)}

    def cpu_seconds(self) -> float:
        """CPU time all workers have used so far."""
        return sum(worker.cpu_seconds() for worker in self.workers)

    def warm_up(self, requests: list[dict]) -> None:
        """Until a request is answered (partitions assigned, pool warm), then a short burst."""
        for attempt in range(60):
            if self.run(requests[:1], 10, f"probe{attempt}", drain_s=1.0)["answered"]:
                break
        self.run(requests[:200], 200, "warm")

    def __enter__(self) -> KafkaRun:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        self.responses.close()


def held(step: dict[str, Any]) -> bool:
    """Whether a Kafka run met the latency target with every request answered."""
    return step["p99_ms"] <= TARGET_KAFKA_P99_MS and step["answered"] == step["sent"]


def describe(name: str, step: dict[str, Any]) -> str:
    return (f"{name}: sent {step['sent']} at {step['achieved_rate']:.0f}/s, answered {step['answered']}, "
            f"p50 {step['p50_ms']:.2f} ms, p99 {step['p99_ms']:.2f} ms, worker CPU {step['cpu_ms_per_request']:.2f} "
            f"ms/request {step['strategies']}")


def kafka_runs(settings: dict[str, Any], bootstrap: str, root: Path, pool: list[dict], args: argparse.Namespace,
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The main run per read mode, then a ramp (fresh worker and topics, first mode) up to the first missed step."""
    modes = args.read_modes.split(",")
    main_runs = {}
    for mode in modes:
        with KafkaRun({**settings, "scorer_read_mode": mode}, bootstrap, root, args.workers) as run:
            run.warm_up(pool)
            main_runs[mode] = run.run(pool[: int(args.rate * args.seconds)], args.rate, f"main-{mode}")
            say(describe(f"kafka, read {mode}, {args.rate:.0f}/s for {args.seconds:.0f} s", main_runs[mode]))
    ramp: list[dict[str, Any]] = []
    with KafkaRun({**settings, "scorer_read_mode": modes[0]}, bootstrap, root, args.workers) as run:
        run.warm_up(pool)
        for rate in RAMP:
            ramp.append(run.run(pool[: int(rate * args.ramp_seconds)], rate, f"ramp{rate}"))
            say(describe(f"  ramp, read {modes[0]}, {rate}/s for {args.ramp_seconds:.0f} s", ramp[-1]))
            if not held(ramp[-1]):
                break
    return main_runs[modes[0]], ramp


def say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s for the main Kafka run (500)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the main Kafka run (30)")
    parser.add_argument("--ramp-seconds", type=float, default=4.0, help="length of each ramp step (4)")
    parser.add_argument("--candidates", type=int, default=50, help="candidates per request (50)")
    parser.add_argument("--drivers", type=int, default=3000, help="drivers in the generated city (3000)")
    parser.add_argument("--inproc-requests", type=int, default=3000, help="requests timed in-process (3000)")
    parser.add_argument("--tutorial-requests", type=int, default=2, help="requests timed tutorial-style (2)")
    parser.add_argument("--read-modes", default="inline,executor",
                        help="worker read modes run at --rate; the first also runs the ramp (auto = inline on SQLite)")
    parser.add_argument("--concurrency", type=int, help="agent concurrency (default: settings)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the consumer group (1)")
    parser.add_argument("--floor", action="store_true",
                        help="also run a Faust agent that answers without scoring at --rate (bench/faust_echo.py)")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir, removed)")
    args = parser.parse_args(argv)

    base = load_settings()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scorer-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = base.with_overrides(home=root, sqlite_path=root / "features.db", models_dir=root / "models",
                                   scorer_concurrency=args.concurrency)
    say(f"city of {args.drivers} drivers -> {settings.sqlite_file}; {Calibration.now()}")
    store, driver_ids, end_ms, events = build_store(settings, args.drivers, seed=7)
    model = install_model(base.models_dir, settings.models_dir, events, settings)
    size = max(args.inproc_requests, int(args.rate * args.seconds), int(max(RAMP) * args.ramp_seconds))
    pool = score_requests(driver_ids, size, start_ms=end_ms + 60_000, interval_ms=1,
                          candidates=(args.candidates, args.candidates))
    gc.collect()
    gc.freeze()  # the big request pool leaves the collector: full passes over it would be the in-process p99

    total, core = bench_inproc(store, pool[: args.inproc_requests], model, Policy.from_settings(settings),
                               settings.store_deadline_ms / 1000)
    say(f"in-process, {args.candidates} candidates, model {model.version}: read+score p50 {percentile(total, 50):.3f}"
        f" ms, p99 {percentile(total, 99):.3f} ms (ranking alone p50 {percentile(core, 50):.3f}, "
        f"p99 {percentile(core, 99):.3f})")
    worker_settings = {"kafka_bootstrap": base.kafka_bootstrap, "home": root, "sqlite_path": settings.sqlite_file,
                       "models_dir": settings.models_dir, "scorer_concurrency": settings.scorer_concurrency}
    main_run, ramp = kafka_runs(worker_settings, base.kafka_bootstrap, root, pool, args)
    if args.floor:
        with KafkaRun(worker_settings, base.kafka_bootstrap, root, args.workers, floor=True) as run:
            run.warm_up(pool)
            floor = run.run(pool[: int(args.rate * args.seconds)], args.rate, "floor")
        say(describe(f"faust floor (same app and agent, no scoring), {args.rate:.0f}/s", floor))

    from batch.train import MLLIB_DIR

    mllib = settings.models_dir / model.version / MLLIB_DIR
    tutorial = []
    if mllib.is_dir() and args.tutorial_requests:
        tutorial = in_spark_process(bench_tutorial, pool[: args.tutorial_requests], mllib, settings)
    report: dict[str, Any] = {
        "bench": "scorer", "candidates": args.candidates,
        "inproc_p50_ms": round(percentile(total, 50), 4), "inproc_p99_ms": round(percentile(total, 99), 4),
        "rate": args.rate, "sent": main_run["sent"], "answered": main_run["answered"],
        "kafka_p50_ms": round(main_run["p50_ms"], 3), "kafka_p99_ms": round(main_run["p99_ms"], 3),
        "max_rps_p99_25ms": max((s["rate"] for s in ramp if held(s)), default=0),
        "tutorial_style_p50_ms": round(percentile(tutorial, 50), 2) if tutorial else None,
        "speedup_vs_tutorial": round(percentile(tutorial, 50) / percentile(total, 50), 1) if tutorial else None,
    }
    say(f"tutorial style (loaded MLlib model, one Spark transform per candidate): p50 "
        f"{report['tutorial_style_p50_ms']} ms per request = {report['speedup_vs_tutorial']}x the in-process p50")
    say(f"at the end: {Calibration.now()}")
    say(f"{'target':44s} {'measured':>12s}  met")
    for name, measured, ok in (
        (f"in-process p99 <= {TARGET_INPROC_P99_MS} ms", report["inproc_p99_ms"],
         report["inproc_p99_ms"] <= TARGET_INPROC_P99_MS),
        (f"kafka @ {args.rate:.0f}/s p99 <= {TARGET_KAFKA_P99_MS} ms", report["kafka_p99_ms"],
         report["kafka_p99_ms"] <= TARGET_KAFKA_P99_MS),
        ("kafka answered == sent", f"{report['answered']}/{report['sent']}", report["answered"] == report["sent"]),
    ):
        say(f"{name:44s} {measured!s:>12s}  {'yes' if ok else 'NO'}")
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    say(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
