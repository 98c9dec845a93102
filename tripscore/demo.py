"""`tripscore demo`: the whole pipeline on SQLite or Aerospike, a summary, and every started process stopped."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from batch.consistency import check_consistency, sample_driver_ids
from clients import BlockingRiskScoreClient, collect
from featurestore import close_stores, open_store
from featurestore.factory import BACKENDS
from modelregistry.registry import active_version, load_export
from runtime import kafka_local
from runtime.config import Settings, load_settings
from runtime.kafka_clients import check_access
from runtime.processes import ServiceProcess, free_port, http_get, settings_env
from runtime.topics import broker_ready, count_topic, create_topics, delete_topics

TOPIC_SETTINGS = ("topic_trip_events", "topic_trip_events_dlq", "topic_score_requests", "topic_risk_scores")
ANSWER_TIMEOUT_S = 600.0  # per request: answers are collected after the features caught up
PATIENT_TIMEOUT_MS = 2_000
DEMO_SET_PREFIX = "demo-"  # Aerospike sets of the demo: `<TRIPSCORE_AEROSPIKE_SET_PREFIX>demo-driver-features`, …


def demo_topics(settings: Settings, run_id: str) -> dict[str, str]:
    """Topic settings of one demo run: the topic names of docs/spec.md under a run prefix, so runs never see
    each other's data."""
    return {name: f"demo-{run_id}.{getattr(settings, name)}" for name in TOPIC_SETTINGS}


@dataclass(frozen=True)
class DemoPlan:
    """How big the simulated city is and how fast the live part is replayed."""

    drivers: int
    days: int
    event_rate: float
    requests: int
    request_rate: float
    bad_events: int = 3


FULL = DemoPlan(drivers=1000, days=8, event_rate=2500, requests=1200, request_rate=20)
QUICK = DemoPlan(drivers=150, days=4, event_rate=2000, requests=150, request_rate=25)
WARMUP_EVENTS = 20_000
"""History events replayed before the live part: the query's first micro-batches (workers, JIT, state store) are
slow, and the summary's lag is the steady state's."""


class Demo:
    """Runs the demo steps in order; `close()` stops whatever it started, also after Ctrl-C."""

    def __init__(self, plan: DemoPlan, home: Path, settings: Settings, store: str) -> None:
        self.plan = plan
        self.home = home
        self.settings = settings
        self.children: list[ServiceProcess] = []
        self.stream_port = 0
        self.stream_started = 0.0
        self.started_broker = False
        self.topics = demo_topics(settings, time.strftime("%Y%m%d-%H%M%S"))
        self.overrides: dict[str, Any] = {
            "home": home,
            "models_dir": home / "models",
            "datasets_dir": home / "datasets",
            "store": store,
            "sqlite_path": home / "features.db",
            "aerospike_set_prefix": settings.aerospike_set_prefix + DEMO_SET_PREFIX,
            **self.topics,
            "topic_score_dlq": self.topics["topic_trip_events_dlq"],
        }
        # The demo's own reads (waiting for features, the summary) are not on the request path: they get a
        # patient Aerospike timeout, so a busy machine slows the summary instead of failing it.
        self.demo_settings = settings.with_overrides(**self.overrides, aerospike_timeout_ms=max(
            settings.aerospike_timeout_ms, PATIENT_TIMEOUT_MS))

    def step(self, title: str, *command: str) -> None:
        """Run one tripscore command to completion with the demo's settings; its output shows as it goes."""
        print(f"\n== {title}: tripscore {' '.join(command)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "tripscore.cli", *command], env=settings_env(self.overrides),
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"tripscore {' '.join(command)} failed with exit code {done.returncode}")

    def prepare(self) -> None:
        """A clean demo folder and store, the broker up and fresh demo topics."""
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        if self.demo_settings.store == "aerospike":
            store = open_store(self.demo_settings)
            print(f"== emptying the demo's Aerospike sets at {store.location}", flush=True)
            store.truncate()
        check_access(self.settings)
        if not broker_ready(self.settings):
            print(f"== starting the local Kafka broker on {self.settings.kafka_bootstrap}", flush=True)
            kafka_local.up(self.settings)
            self.started_broker = True
        create_topics(self.settings, self.topics.values(), self.settings.kafka_partitions)

    def batch(self) -> None:
        """History into the store and a promoted model."""
        plan = self.plan
        self.step("generate the city", "generate", "--drivers", str(plan.drivers), "--days", str(plan.days),
                  "--live-days", "1", "--out", str(self.home / "events"), "--live-out", str(self.home / "live"),
                  "--requests", str(plan.requests), "--requests-out", str(self.home / "requests.jsonl"))
        self.step("backfill history", "backfill", "--events", str(self.home / "events"))
        self.step("materialize, train and promote (the cron job)", "retrain", "--events", str(self.home / "events"))

    def start_services(self) -> int:
        """Start the streaming job and the scorer and wait until both are ready; returns the scorer's web port."""
        self.stream_port, score_port = free_port(), free_port()
        stream = ServiceProcess(["stream", "--starting-offsets", "earliest", "--trigger-ms", "500",
                                 "--metrics-port", str(self.stream_port)], self.overrides,
                                self.home / "logs/stream.log")
        score = ServiceProcess(["score", "--web-port", str(score_port)], self.overrides, self.home / "logs/score.log")
        self.stream_started = time.monotonic()
        for name, child in (("streaming job", stream), ("scorer", score)):
            print(f"== starting the {name} (log {child.log_path})", flush=True)
            self.children.append(child.start())
        stream.wait_until(lambda: self._stream_events_in() is not None, "its metrics port")
        score.wait_until(lambda: score.json_at(f"http://127.0.0.1:{score_port}/health") is not None, "/health")
        return score_port

    def _stream_events_in(self) -> float | None:
        """The streaming job's count of events read so far, None while its metrics port does not answer."""
        body = http_get(f"http://127.0.0.1:{self.stream_port}/metrics")
        if body is None:
            return None
        return sum(sample.value for family in text_string_to_metric_families(body)
                   for sample in family.samples
                   if sample.name == "tripscore_stream_events_total" and sample.labels.get("outcome") == "in")

    def warm_up(self) -> dict[str, Any]:
        """Replay the latest history events, which the store already holds (the stream drops them as duplicates:
        no write, no dead letter), until the query has read them; returns how long the stream took to warm up."""
        from batch.eventlog import read_events, to_messages  # pyarrow.dataset: not at start-up of every command
        from batch.replay import replay

        history = read_events(self.home / "events")
        latest = history.sort_by("ts_ms").slice(max(0, history.num_rows - WARMUP_EVENTS))
        print(f"\n== warming up the streaming job with the latest {latest.num_rows:,} history events", flush=True)
        replay(to_messages(latest), latest.num_rows, self.settings,
               self.demo_settings.topic_trip_events, rate=0, progress=False)
        stream = next(child for child in self.children if child.command[3] == "stream")
        stream.wait_until(lambda: (self._stream_events_in() or 0) >= latest.num_rows, "the warm-up events",
                          timeout=300)
        return {"warmup_events": latest.num_rows, "stream_warmup_s": time.monotonic() - self.stream_started}

    def live(self, score_port: int) -> dict[str, Any]:
        """Replay the live day and the score requests at once; wait for features and answers."""
        from batch.eventlog import read_events, to_messages
        from batch.replay import replay

        settings = self.demo_settings
        live = read_events(self.home / "live")
        requests = [json.loads(line) for line in (self.home / "requests.jsonl").read_text().splitlines() if line]
        print(f"\n== live: {live.num_rows:,} trip events at {self.plan.event_rate:,.0f}/s and {len(requests)} score "
              f"requests at {self.plan.request_rate:.0f}/s", flush=True)
        with BlockingRiskScoreClient(settings) as client:
            sent_at: dict[str, float] = {}
            pending: dict[str, concurrent.futures.Future] = {}
            replay_started = time.time()
            sender = threading.Thread(target=self._send_requests, args=(client, requests, sent_at, pending),
                                      daemon=True)
            sender.start()
            result = replay(to_messages(live), live.num_rows, settings, settings.topic_trip_events,
                            self.plan.event_rate, bad=self.plan.bad_events)
            print(result.line(settings.topic_trip_events), flush=True)
            sender.join()
            lags, caught_up_s = self._wait_for_features(live, replay_started)
            answers = collect(pending, timeout=60)
            arrived = {request_id: client.received_at(request_id) for request_id in answers}
            duplicates = client.duplicates
        return {"replay": result, "requests": requests, "sent_at": sent_at, "answers": answers, "arrived": arrived,
                "duplicates": duplicates, "lags": lags, "caught_up_s": caught_up_s, "live_events": live.num_rows,
                "scorer_metrics": http_get(f"http://127.0.0.1:{score_port}/metrics") or ""}

    def _send_requests(self, client: BlockingRiskScoreClient, requests: list[dict[str, Any]],
                       sent_at: dict[str, float], pending: dict[str, concurrent.futures.Future]) -> None:
        """Send the requests at the plan's rate: the send time and the future of each."""
        started = time.perf_counter()
        for i, request in enumerate(requests):
            if (ahead := i / self.plan.request_rate - (time.perf_counter() - started)) > 0:
                time.sleep(ahead)
            sent_at[request["request_id"]] = time.perf_counter()
            pending[request["request_id"]] = client.submit(request, timeout=ANSWER_TIMEOUT_S)

    def _wait_for_features(self, live: Any, replay_started: float, timeout: float = 300.0) -> tuple[list[float], float]:
        """Seconds from each driver's last live event being produced to its record showing it, once all show."""
        last = live.group_by("driver_id").aggregate([("ts_ms", "max")])
        drivers = last.column("driver_id").to_pylist()
        wanted = dict(zip(drivers, last.column("ts_ms_max").to_pylist(), strict=True))
        order = live.column("ts_ms").to_numpy()
        rate = self.plan.event_rate
        produced_ms = {d: 1000 * (replay_started + np.searchsorted(order, ts, side="right") / rate)
                       for d, ts in wanted.items()}
        store = open_store(self.demo_settings)
        deadline = time.monotonic() + timeout
        while True:
            rows = store.read(drivers, ["_event_ms", "_updated_ms"])
            done = [r for r in rows if r.found and r.bins["_event_ms"] >= wanted[r.entity_id]]
            if len(done) == len(drivers) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        lags = [(r.bins["_updated_ms"] - produced_ms[r.entity_id]) / 1000 for r in done]
        if len(done) < len(drivers):
            print(f"!! only {len(done)} of {len(drivers)} drivers show their last live event after {timeout:.0f} s")
        caught_up = max((r.bins["_updated_ms"] for r in done), default=None)
        return lags, (caught_up / 1000 - replay_started) if caught_up else None

    def summarize(self, live: dict[str, Any], warmup: dict[str, Any]) -> dict[str, Any]:
        """The structured summary (also written as `summary.json`)."""
        answers, sent_at, arrived = live["answers"], live["sent_at"], live["arrived"]
        latencies = [1000 * (arrived[k] - sent_at[k]) for k in sent_at if k in arrived]
        firsts = list(answers.values())
        known = {r.entity_id for r in open_store(self.demo_settings).read(
            sorted({c["driver_id"] for q in live["requests"] for c in q["candidates"]}), ["_event_ms"]) if r.found}
        expected_model = {q["request_id"] for q in live["requests"] if any(c["driver_id"] in known
                                                                             for c in q["candidates"])}
        model = load_export(self.home / "models", active_version(self.home / "models"))
        consistency = check_consistency(open_store(self.demo_settings), [self.home / "events", self.home / "live"],
                                        sample_driver_ids([self.home / "live"], 300, seed=1))
        lags = live["lags"]
        store = open_store(self.demo_settings).info()
        return {
            "store": f"{store.backend} {store.location}",
            "store_records": store.records,
            "live_events": live["live_events"],
            "planted_bad_events": live["replay"].bad,
            "events_per_s": live["live_events"] / live["caught_up_s"] if live["caught_up_s"] else None,
            "replay_rate": self.plan.event_rate,
            **warmup,
            "feature_lag_p50_s": float(np.percentile(lags, 50)) if lags else None,
            "feature_lag_p99_s": float(np.percentile(lags, 99)) if lags else None,
            "drivers_caught_up": len(lags),
            "dead_letters": count_topic(self.settings, self.demo_settings.topic_trip_events_dlq),
            "requests_sent": len(sent_at),
            "requests_answered": len(answers),
            "duplicate_answers": live["duplicates"],
            "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
            "strategies": dict(Counter(m["strategy"] for m in firsts)),
            "fallback_reasons": dict(Counter(m["reason"] for m in firsts if m["reason"])),
            "model_expected_but_not_used": sum(1 for m in firsts if m["request_id"] in expected_model
                                               and m["strategy"] != "model"),
            "model_version": model.version,
            "auc": model.metrics.get("auc"),
            "oracle_auc": model.metrics.get("oracle_auc"),
            "consistency_drivers": consistency.drivers,
            "consistency_worst_mismatch_rate": consistency.worst_rate(),
            "consistency_incomplete_rate": consistency.incomplete_rate(),
            "reports": str(self.home / "models" / model.version),
        }

    def close(self) -> None:
        """Stop the services, then the broker if the demo started it."""
        for child in reversed(self.children):
            child.stop(timeout=30)
        close_stores()
        if broker_ready(self.settings):
            delete_topics(self.settings, self.topics.values())
        if self.started_broker:
            kafka_local.stop(self.settings)



def run_demo(plan: DemoPlan, home: Path, settings: Settings, store: str) -> dict[str, Any]:
    """Every demo step on `store`; whatever happens (Ctrl-C and SIGTERM included), every process it started is
    stopped."""
    demo = Demo(plan, home, settings, store)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        demo.prepare()
        demo.batch()
        score_port = demo.start_services()
        warmup = demo.warm_up()
        summary = demo.summarize(demo.live(score_port), warmup)
        summary["pids"] = [child.proc.pid for child in demo.children if child.proc]
    finally:
        demo.close()
        signal.signal(signal.SIGTERM, previous)
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a readable two-column table."""
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} ms"

    def sec(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} s"

    rows = {
        "online store": f"{summary['store']} ({summary['store_records']:,} driver records)",
        "live trip events": f"{summary['live_events']:,} (+{summary['planted_bad_events']} planted invalid)",
        "streaming throughput": f"{summary['events_per_s'] or 0:,.0f} events/s end to end "
                                f"(replayed at {summary['replay_rate']:,.0f}/s)",
        "stream warm-up": f"{sec(summary['stream_warmup_s'])} from the job's start to "
                          f"{summary['warmup_events']:,} history events read (before the live part)",
        "feature lag p50 / p99": f"{sec(summary['feature_lag_p50_s'])} / {sec(summary['feature_lag_p99_s'])} "
                                 f"over {summary['drivers_caught_up']} drivers (steady state)",
        "dead letters": str(summary["dead_letters"]),
        "requests sent / answered": f"{summary['requests_sent']} / {summary['requests_answered']} "
                                    f"(duplicates {summary['duplicate_answers']})",
        "request latency p50 / p99": f"{ms(summary['latency_p50_ms'])} / {ms(summary['latency_p99_ms'])}",
        "strategies": ", ".join(f"{k}={v}" for k, v in sorted(summary["strategies"].items())),
        "fallback reasons": ", ".join(f"{k}={v}" for k, v in sorted(summary["fallback_reasons"].items())) or "none",
        "model": f"{summary['model_version']}: AUC {summary['auc'] or float('nan'):.4f} "
                 f"vs oracle {summary['oracle_auc'] or float('nan'):.4f}",
        "online/offline mismatches": f"{summary['consistency_worst_mismatch_rate']:.4f} (worst bin), "
                                     f"{summary['consistency_incomplete_rate']:.4f} missing/behind/ahead, "
                                     f"over {summary['consistency_drivers']} drivers",
        "plots and reports": summary["reports"],
    }
    width = max(len(k) for k in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows.items())


def run(args: argparse.Namespace) -> int:
    """`tripscore demo`: run, print the summary table, write `summary.json`."""
    home = Path(args.home)
    settings = load_settings()
    summary = run_demo(QUICK if args.quick else FULL, home, settings, args.store or settings.store)
    print("\n== summary\n" + summary_table(summary))
    (home / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nsummary: {home / 'summary.json'}; logs: {home / 'logs'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `tripscore demo`."""
    parser = sub.add_parser("demo", help="run the whole pipeline end to end")
    parser.add_argument("--quick", action="store_true", help="a small city, about a minute (for tests)")
    parser.add_argument("--store", choices=BACKENDS,
                        help="online store (default TRIPSCORE_STORE, else sqlite); Aerospike data goes to the "
                             f"sets prefixed TRIPSCORE_AEROSPIKE_SET_PREFIX + {DEMO_SET_PREFIX!r}, emptied first")
    parser.add_argument("--home", default=".local/demo", help="working folder, wiped first (default .local/demo)")
    parser.set_defaults(func=run)

