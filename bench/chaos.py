"""Chaos benchmark: a real `stad serve` on loopback under fuzzing, memory attacks, kill -9,
a soak and overload. `python -m bench.chaos` (or `make bench-chaos`) prints the figures and
writes bench/results/chaos.json, ending with a `summary`:

    fuzz_calls, fuzz_unknown_or_internal      fuzzed calls, and how many got UNKNOWN/INTERNAL
    attack_peak_rss_ratio                     worst peak server RSS over idle RSS, any attack
    kill9_trials, kill9_corrupt_versions,     kill -9 trials (mid-training, mid-save, mid-
    kill9_leftover_staging                    registration), versions on disk that are not listed
                                              or not loadable after the restarts, and staging
                                              or job dirs left behind after them
    overload_deadline_met_ratio               share of admitted calls meeting their deadline
                                              under about 8x the measured capacity
    soak_rss_growth                           RSS growth from the first sixth of the soak to its end

Every server is a child process (`python -m stad.server`) on 127.0.0.1; nothing else is
contacted. Every loop is bounded in count and in time. The figures come from one run on
whatever machine runs it; the shared development CPU makes them noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from grpc import aio

from bench.chaos_fuzz import PROTECTED_MODEL, Method, fuzz_requests, methods, safe_for_the_bench
from bench.report import write_json
from stad.core.series import make_series, series_to_proto
from stad.server.detector import Detector, DetectorConfig
from stad.server.durable import STAGING_PREFIX
from stad.server.registry import Registry
from stad.v1 import (
    models_pb2,
    models_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

RESULTS = Path(__file__).resolve().parent / "results" / "chaos.json"
MODEL = PROTECTED_MODEL
CHANNELS = ("a", "b", "c")
TOKEN = "chaos-token"
TINY = {"window": 16, "patch": 4, "d_model": 16, "n_heads": 2, "n_layers": 1, "batch_size": 32}
TINY_JOB = {**TINY, "epochs": 2}
CALL_TIMEOUT_S = 20.0
START_TIMEOUT_S = 180.0
MIB = 1024 * 1024
SUMMARY_KEYS = (
    "fuzz_calls",
    "fuzz_unknown_or_internal",
    "attack_peak_rss_ratio",
    "kill9_trials",
    "kill9_corrupt_versions",
    "kill9_leftover_staging",
    "overload_deadline_met_ratio",
    "soak_rss_growth",
)


def values(steps: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    return np.sin(t / 7 + np.arange(len(CHANNELS))) + 0.05 * rng.normal(size=(steps, len(CHANNELS)))


def series(steps: int, seed: int) -> Any:
    return series_to_proto(make_series(values(steps, seed), channels=CHANNELS))


def make_model_dir(root: Path) -> Path:
    """A registry holding MODEL version 1, active (a tiny detector, briefly trained)."""
    config = DetectorConfig.from_flat({**TINY, "epochs": 1, "max_windows_per_epoch": 128})
    detector = Detector(config).fit(values(600, 0), channels=list(CHANNELS))
    saved = root / "saved"
    detector.save(saved)
    model_dir = root / "models"
    Registry(model_dir, Detector.load).register(MODEL, saved, activate=True)
    return model_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`python -m stad.server` on a free loopback port, in a process group of its own (so that
    kill -9 takes its training children too, as a container's death would)."""

    def __init__(self, model_dir: Path, log: Path, *flags: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._log = open(log, "a")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "stad.server", "--address", self.target, "--model-dir"]
        command += [str(model_dir), "--device", "cpu", "--torch-threads", "1", *flags]
        self.process = subprocess.Popen(command, stderr=self._log, start_new_session=True)
        began = time.monotonic()
        while time.monotonic() - began < START_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {log}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not start within {START_TIMEOUT_S} s")

    def rss_bytes(self) -> int:
        try:
            text = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        self._log.close()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        finally:
            self.kill()


@contextmanager
def rss_peak(server: Server) -> Iterator[list[int]]:
    """Samples the server's RSS every 10 ms while the block runs; yields [peak]."""
    peak = [server.rss_bytes()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], server.rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def channel_to(server: Server, token: str | None = None) -> aio.Channel:
    options = [("grpc.max_send_message_length", 256 * MIB), ("grpc.max_receive_message_length", 256 * MIB)]
    return aio.insecure_channel(server.target, options=options)


def auth(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def code_of(exc: BaseException) -> str:
    return exc.code().name if isinstance(exc, aio.AioRpcError) else type(exc).__name__


# -- fuzz ----------------------------------------------------------------------------


def valid_requests(method: Method, rng: random.Random) -> list[Any]:
    """A valid request (or request stream) for the method, as a base to corrupt."""
    steps = rng.randrange(16, 300)
    by_name: dict[str, Callable[[], list[Any]]] = {
        "Score": lambda: [scoring_pb2.ScoreRequest(model=MODEL, series=[series(steps, rng.randrange(99))])],
        "StreamScore": lambda: [scoring_pb2.ScoreRequest(model=MODEL, series=[series(steps, 1)])],
        "StartTraining": lambda: [
            training_pb2.StartTrainingRequest(
                spec=training_pb2.TrainingSpec(model="fuzzed", **TINY_JOB),  # type: ignore[arg-type]
                data=series(200, 2),
            ),
            training_pb2.StartTrainingRequest(data=series(100, 3)),
        ],
        "GetModel": lambda: [models_pb2.GetModelRequest(name=MODEL, version="1")],
        "SetActiveVersion": lambda: [models_pb2.SetActiveVersionRequest(name=MODEL, version="1")],
        "DeleteModel": lambda: [models_pb2.DeleteModelRequest(name="fuzzed", version="1")],
    }
    make = by_name.get(method.name, lambda: [method.request_class()])
    return make()


async def fuzz(server: Server, calls: int, concurrency: int, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    targets = methods()
    codes: Counter[str] = Counter()
    by_method: dict[str, Counter[str]] = {m.name: Counter() for m in targets}
    failures: Counter[tuple[str, str, str]] = Counter()  # (method, code, the message's start)
    began = time.monotonic()
    sent = 0
    async with channel_to(server) as channel:

        async def one(method: Method) -> None:
            payloads = fuzz_requests(method, lambda: valid_requests(method, rng), rng)
            if not all(safe_for_the_bench(method, p) for p in payloads):
                payloads = [b""]
            code = "OK"
            try:
                if method.client_streaming:
                    call = channel.stream_unary(method.path, None, None)(
                        iter(payloads), timeout=CALL_TIMEOUT_S
                    )
                    await call
                elif method.server_streaming:
                    async for _ in channel.unary_stream(method.path, None, None)(
                        payloads[0], timeout=CALL_TIMEOUT_S
                    ):
                        pass
                else:
                    await channel.unary_unary(method.path, None, None)(payloads[0], timeout=CALL_TIMEOUT_S)
            except aio.AioRpcError as exc:
                code = exc.code().name
                if code in ("UNKNOWN", "INTERNAL"):
                    failures[(method.name, code, str(exc.details())[:120])] += 1
            codes[code] += 1
            by_method[method.name][code] += 1

        async def worker() -> None:
            nonlocal sent
            while sent < calls and time.monotonic() - began < seconds:
                sent += 1
                await one(rng.choice(targets))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await cancel_all_jobs(channel)
    total = sum(codes.values())
    return {
        "calls": total,
        "seconds": round(time.monotonic() - began, 1),
        "unknown_or_internal": codes["UNKNOWN"] + codes["INTERNAL"],
        "codes": dict(codes.most_common()),
        "by_method": {name: dict(c.most_common()) for name, c in by_method.items()},
        "unknown_or_internal_kinds": [
            {"method": m, "code": c, "details": d, "calls": n} for (m, c, d), n in failures.most_common(30)
        ],
    }


async def cancel_all_jobs(channel: aio.Channel, token: str | None = None) -> None:
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    listed = await stub.ListTrainings(training_pb2.ListTrainingsRequest(page_size=1000), metadata=auth(token))
    for job in listed.jobs:
        if job.state in (training_pb2.JOB_STATE_QUEUED, training_pb2.JOB_STATE_RUNNING):
            await stub.CancelTraining(
                training_pb2.CancelTrainingRequest(job_id=job.job_id), metadata=auth(token)
            )


# -- memory attacks ------------------------------------------------------------------


async def big_calls(server: Server, token: str | None, clients: int, mib: int) -> dict[str, Any]:
    """`clients` concurrent Score calls of about `mib` MiB each, with or without the token."""
    steps = mib * MIB // (8 * len(CHANNELS))
    payload = scoring_pb2.ScoreRequest(model=MODEL, series=[series(steps, 5)]).SerializeToString()
    codes: Counter[str] = Counter()
    async with channel_to(server) as channel:
        call = channel.unary_unary("/stad.v1.ScoringService/Score", None, None)

        async def one() -> None:
            try:
                await call(payload, timeout=120, metadata=auth(token))
                codes["OK"] += 1
            except aio.AioRpcError as exc:
                codes[exc.code().name] += 1

        with rss_peak(server) as peak:
            await asyncio.gather(*(one() for _ in range(clients)))
    return {
        "clients": clients,
        "mib_per_call": mib,
        "token": token is not None,
        "codes": dict(codes),
        "peak_rss": peak[0],
    }


async def queued_jobs(server: Server, jobs: int, mib: int) -> dict[str, Any]:
    """One long job holds the training slot while `jobs` jobs of about `mib` MiB each queue."""
    codes: Counter[str] = Counter()
    chunk_steps = 4 * MIB // (8 * len(CHANNELS))
    chunks = max(1, mib // 4)
    async with channel_to(server) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)

        async def stream(spec: Any, count: int, steps: int) -> AsyncIterator[Any]:
            for index in range(count):
                message = training_pb2.StartTrainingRequest(data=series(steps, index))
                if index == 0:
                    message.spec.CopyFrom(spec)
                yield message

        long_spec = training_pb2.TrainingSpec(model="holder", **{**TINY_JOB, "epochs": 10_000})  # type: ignore[arg-type]
        await stub.StartTraining(stream(long_spec, 1, 400), metadata=auth(TOKEN))
        with rss_peak(server) as peak:
            for _ in range(jobs):
                spec = training_pb2.TrainingSpec(model="queued", **TINY_JOB)  # type: ignore[arg-type]
                try:
                    await stub.StartTraining(
                        stream(spec, chunks, chunk_steps), metadata=auth(TOKEN), timeout=300
                    )
                    codes["OK"] += 1
                except aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
        await cancel_all_jobs(channel, TOKEN)
    return {"jobs": jobs, "mib_per_job": chunks * 4, "codes": dict(codes), "peak_rss": peak[0]}


async def attacks(
    model_dir: Path, log: Path, clients: int, mib: int, jobs: int, job_mib: int
) -> dict[str, Any]:
    """Each attack on a fresh server (freed memory stays in a process's RSS), against its
    idle RSS with the model loaded."""
    plans: list[tuple[str, Callable[[Server], Awaitable[dict[str, Any]]]]] = [
        ("big concurrent calls, no token", lambda server: big_calls(server, None, clients, mib)),
        ("big concurrent calls, with token", lambda server: big_calls(server, TOKEN, clients, mib)),
        ("many queued training jobs", lambda server: queued_jobs(server, jobs, job_mib)),
    ]
    runs = []
    for name, attack in plans:
        server = Server(model_dir, log, "--token", TOKEN, "--max-message-mb", str(max(64, mib + 8)))
        try:
            async with channel_to(server) as channel:  # load the model, so idle RSS includes it
                await scoring_pb2_grpc.ScoringServiceStub(channel).Score(
                    scoring_pb2.ScoreRequest(model=MODEL, series=[series(100, 0)]), metadata=auth(TOKEN)
                )
            await asyncio.sleep(1.0)
            idle = server.rss_bytes()
            run = {"attack": name, "idle_rss": idle, **await attack(server)}
            run["rss_after"] = server.rss_bytes()
        finally:
            server.stop()
        run["peak_rss_ratio"] = round(run["peak_rss"] / idle, 3)
        runs.append(run)
    return {"runs": runs, "peak_rss_ratio": max(run["peak_rss_ratio"] for run in runs)}


# -- kill -9 -------------------------------------------------------------------------


async def one_message(message: Any) -> AsyncIterator[Any]:
    yield message


def leftovers(model_dir: Path) -> list[str]:
    """Staging, half-deleted and job directories left in the model dir."""
    found = [p for p in model_dir.rglob("*") if p.name.startswith((STAGING_PREFIX, ".deleted-"))]
    jobs = model_dir / ".jobs"
    if jobs.is_dir():
        found += [p for p in jobs.iterdir() if p.is_dir()]
    return sorted(str(p.relative_to(model_dir)) for p in found)


async def store_state(server: Server, model_dir: Path) -> dict[str, Any]:
    """Versions on disk, listed, and loadable (scored) after a restart."""
    on_disk = {
        f"{m.name}/{v.name}"
        for m in model_dir.iterdir()
        if not m.name.startswith(".") and m.is_dir()
        for v in m.iterdir()
        if v.is_dir() and v.name.isdigit()
    }
    listed: set[str] = set()
    loadable: set[str] = set()
    async with channel_to(server) as channel:
        models = await models_pb2_grpc.ModelServiceStub(channel).ListModels(models_pb2.ListModelsRequest())
        scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
        for model in models.models:
            for version in model.versions:
                key = f"{model.name}/{version.version}"
                listed.add(key)
                try:
                    await scoring.Score(
                        scoring_pb2.ScoreRequest(
                            model=model.name, version=version.version, series=[series(64, 0)]
                        ),
                        timeout=CALL_TIMEOUT_S,
                    )
                    loadable.add(key)
                except aio.AioRpcError:
                    pass
    return {
        "on_disk": len(on_disk),
        "listed": len(listed),
        "loadable": len(loadable),
        "corrupt": len(on_disk - loadable),
        "leftover_staging": leftovers(model_dir),
    }


async def kill9_lane(
    model_dir: Path, log: Path, trials: int, deadline: float, seed: int
) -> list[dict[str, Any]]:
    """Start, check, submit a tiny job, kill -9 at a random moment of its life; repeat.

    The moment is drawn over the job's whole life (its process starting, training, saving,
    the server registering the version), from the lane's first job's measured duration."""
    rng = random.Random(seed)
    results: list[dict[str, Any]] = []
    job_s = 0.0
    trial = 0
    while trial < trials + 1 and time.monotonic() < deadline:
        server = Server(model_dir, log)
        try:
            state = await store_state(server, model_dir)
            if results:
                results[-1].update(after_restart=state)
            if trial == trials:
                break
            async with channel_to(server) as channel:
                stub = training_pb2_grpc.TrainingServiceStub(channel)
                spec = training_pb2.TrainingSpec(model="k9", activate=rng.random() < 0.5, **TINY_JOB)  # type: ignore[arg-type]

                first = training_pb2.StartTrainingRequest(spec=spec, data=series(400, trial))

                began = time.monotonic()
                job = (await stub.StartTraining(one_message(first))).job
                if not job_s:  # the first trial measures a job's life, and kills after it
                    async for seen in stub.WatchTraining(
                        training_pb2.WatchTrainingRequest(job_id=job.job_id), timeout=300
                    ):
                        if seen.state >= training_pb2.JOB_STATE_SUCCEEDED:
                            break
                    job_s = time.monotonic() - began
                    delay = 0.0
                else:
                    delay = rng.uniform(0.3, 1.05) * job_s
                    await asyncio.sleep(max(0.0, delay - (time.monotonic() - began)))
                seen = await stub.GetTraining(training_pb2.GetTrainingRequest(job_id=job.job_id))
                phase = {
                    training_pb2.JOB_STATE_QUEUED: "starting",
                    training_pb2.JOB_STATE_RUNNING: "training or saving",
                    training_pb2.JOB_STATE_SUCCEEDED: "registered",
                }.get(seen.state, training_pb2.JobState.Name(seen.state))
        finally:
            server.kill()
        results.append({"trial": trial, "kill_after_s": round(delay, 2), "phase_seen": phase})
        trial += 1
    return [r for r in results if "after_restart" in r]


async def kill9(
    root: Path, model_dir: Path, log: Path, trials: int, lanes: int, seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    lane_dirs = []
    for lane in range(lanes):
        lane_dir = root / f"kill9-{lane}"
        subprocess.run(["cp", "-a", str(model_dir), str(lane_dir)], check=True)
        lane_dirs.append(lane_dir)
    per_lane = [trials // lanes + (1 if lane < trials % lanes else 0) for lane in range(lanes)]
    lanes_out = await asyncio.gather(
        *(
            asyncio.to_thread(_run_lane, d, log, n, deadline, lane)
            for lane, (d, n) in enumerate(zip(lane_dirs, per_lane, strict=True))
        )
    )
    results = [r for lane in lanes_out for r in lane]
    corrupt = sum(r["after_restart"]["corrupt"] for r in results)
    staging = sum(len(r["after_restart"]["leftover_staging"]) for r in results)
    return {
        "trials": len(results),
        "lanes": lanes,
        "phases_seen": dict(Counter(r["phase_seen"] for r in results)),
        "corrupt_versions": corrupt,
        "leftover_staging": staging,
        "versions_at_end": sum(
            r["after_restart"]["on_disk"] for r in [lane[-1] for lane in lanes_out if lane]
        ),
        "results": results,
    }


def _run_lane(model_dir: Path, log: Path, trials: int, deadline: float, seed: int) -> list[dict[str, Any]]:
    return asyncio.run(kill9_lane(model_dir, log, trials, deadline, seed))


# -- soak and overload ---------------------------------------------------------------


async def soak(server: Server, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    rss: dict[str, int] = {}
    began = time.monotonic()
    stop_at = began + seconds
    async with channel_to(server) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        requests = [scoring_pb2.ScoreRequest(model=MODEL, series=[series(s, s)]) for s in (64, 200, 500)]

        async def client(index: int) -> None:
            count = 0
            while time.monotonic() < stop_at:
                count += 1
                started = time.monotonic()
                try:
                    await stub.Score(requests[(index + count) % len(requests)], timeout=CALL_TIMEOUT_S)
                    latencies.append(time.monotonic() - started)
                except aio.AioRpcError as exc:
                    errors[exc.code().name] += 1

        async def sampler() -> None:
            for name, at in (("start", seconds / 6), ("middle", seconds / 2), ("end", seconds * 0.98)):
                await asyncio.sleep(max(0.0, began + at - time.monotonic()))
                rss[name] = server.rss_bytes()

        await asyncio.gather(sampler(), *(client(i) for i in range(clients)))
    return {
        "clients": clients,
        "seconds": round(time.monotonic() - began, 1),
        "calls": len(latencies) + sum(errors.values()),
        "errors": dict(errors),
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1) if latencies else None,
        "rss": rss,
        "rss_growth": round(rss["end"] / rss["start"] - 1, 4),
    }


async def overload(
    server: Server, factor: float, seconds: float, deadline_s: float, steps: int, max_calls: int
) -> dict[str, Any]:
    """Measure capacity with closed-loop clients, then offer `factor` times it, each call
    with a deadline; goodput = calls that succeeded over calls admitted (not refused at once)."""
    request = scoring_pb2.ScoreRequest(model=MODEL, series=[series(steps, 7)])
    async with channel_to(server) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        done = 0
        began = time.monotonic()

        async def closed() -> None:
            nonlocal done
            while time.monotonic() - began < seconds / 2:
                await stub.Score(request, timeout=CALL_TIMEOUT_S)
                done += 1

        await asyncio.gather(*(closed() for _ in range(8)))
        capacity = done / (time.monotonic() - began)
        rate = factor * capacity
        outcomes: Counter[str] = Counter()

        async def one() -> None:
            try:
                await stub.Score(request, timeout=deadline_s)
                outcomes["OK"] += 1
            except aio.AioRpcError as exc:
                outcomes[exc.code().name] += 1

        calls = []
        began = time.monotonic()
        count = min(max_calls, int(rate * seconds))
        for index in range(count):
            await asyncio.sleep(max(0.0, began + index / rate - time.monotonic()))
            calls.append(asyncio.ensure_future(one()))
        await asyncio.gather(*calls)
    admitted = count - outcomes["RESOURCE_EXHAUSTED"]
    return {
        "capacity_calls_per_s": round(capacity, 1),
        "offered_calls_per_s": round(rate, 1),
        "calls": count,
        "deadline_s": deadline_s,
        "outcomes": dict(outcomes),
        "admitted": admitted,
        "ok_calls_per_s": round(outcomes["OK"] / seconds, 1),
        "deadline_met_ratio": round(outcomes["OK"] / admitted, 4) if admitted else None,
    }


# -- main ----------------------------------------------------------------------------


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    model_dir = make_model_dir(root)
    log = root / "servers.log"
    report: dict[str, Any] = {"settings": vars(args)}
    began = time.monotonic()
    server = Server(model_dir, log, "--max-queued-jobs", "4")
    try:
        report["fuzz"] = await fuzz(
            server, args.fuzz_calls, args.fuzz_concurrency, args.fuzz_seconds, args.seed
        )
        print("fuzz", json.dumps({k: v for k, v in report["fuzz"].items() if k != "by_method"}), flush=True)
        report["soak"] = await soak(server, args.soak_clients, args.soak_seconds)
        print("soak", json.dumps(report["soak"]), flush=True)
        report["overload"] = await overload(
            server,
            args.overload_factor,
            args.overload_seconds,
            args.overload_deadline_s,
            args.overload_steps,
            20_000,
        )
        print("overload", json.dumps(report["overload"]), flush=True)
    finally:
        server.stop()
    report["attacks"] = await attacks(
        model_dir, log, args.attack_clients, args.attack_mib, args.attack_jobs, args.attack_job_mib
    )
    print("attacks", json.dumps(report["attacks"]), flush=True)
    report["kill9"] = await kill9(
        root, model_dir, log, args.kill9_trials, args.kill9_lanes, args.kill9_seconds
    )
    print("kill9", json.dumps({k: v for k, v in report["kill9"].items() if k != "results"}), flush=True)
    report["seconds"] = round(time.monotonic() - began, 1)
    report["summary"] = {
        "fuzz_calls": report["fuzz"]["calls"],
        "fuzz_unknown_or_internal": report["fuzz"]["unknown_or_internal"],
        "attack_peak_rss_ratio": report["attacks"]["peak_rss_ratio"],
        "kill9_trials": report["kill9"]["trials"],
        "kill9_corrupt_versions": report["kill9"]["corrupt_versions"],
        "kill9_leftover_staging": report["kill9"]["leftover_staging"],
        "overload_deadline_met_ratio": report["overload"]["deadline_met_ratio"],
        "soak_rss_growth": report["soak"]["rss_growth"],
    }
    assert tuple(report["summary"]) == SUMMARY_KEYS
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--fuzz-calls", type=int, default=10_000)
    parser.add_argument("--fuzz-concurrency", type=int, default=32)
    parser.add_argument("--fuzz-seconds", type=float, default=240.0, help="time bound of the fuzz")
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--soak-clients", type=int, default=32)
    parser.add_argument("--overload-factor", type=float, default=8.0)
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    parser.add_argument("--overload-deadline-s", type=float, default=2.0)
    parser.add_argument(
        "--overload-steps",
        type=int,
        default=4000,
        help="steps per overload call: large enough that the client keeps up with 8x the server",
    )
    parser.add_argument("--attack-clients", type=int, default=24)
    parser.add_argument("--attack-mib", type=int, default=32)
    parser.add_argument("--attack-jobs", type=int, default=6)
    parser.add_argument("--attack-job-mib", type=int, default=96)
    parser.add_argument("--kill9-trials", type=int, default=50)
    parser.add_argument("--kill9-lanes", type=int, default=3, help="model dirs killed in parallel")
    parser.add_argument("--kill9-seconds", type=float, default=420.0, help="time bound of the kill -9 trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stad-chaos-") as root:
        report = asyncio.run(run(args, Path(root)))
    report["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in report["settings"].items()}
    write_json(args.out, report, indent=1)
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
