"""The batch engine alone, on a fixed log in memory: per-stage µs and instruction counts
without a broker, so a change to the fold can be measured on a shared, noisy machine.

    python -m benchmarks.fold_offline [--events N] [--repeats R]      # stage µs/event
    valgrind --tool=callgrind --toggle-collect=accumulate_next \\
        python -m benchmarks.fold_offline --plain                       # instructions
    (the same with --decode-only: the codec's share of them; with --codec-free instead of
    --plain: the fold without the codec, its records decoded beforehand)

The log is the profile's traffic (runs of 100 events, 200 at a time, 4 partitions), as
real `confluent_kafka.Message` objects, cut into the projector's batches and split per
partition as `GenerationWriter.process` does; each partition folds into its own fresh
`StateStore`. `--plain` folds once inside `itertools.accumulate`, so callgrind's
`--toggle-collect=accumulate_next` counts the fold and writes only (not the set-up). For
counts that repeat to 0.1%, run with `PYTHONHASHSEED=0` (set and dict orders, hence
RocksDB's multi-gets, follow the hash seed); the set-up is kept out of the collector's way
(`gc.freeze`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import random
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from behest.codec import decode_checked, decode_record
from behest.fold import engine
from behest.fold.engine import BatchFolder
from behest.fold.projector import DEFAULT_BATCH_SIZE
from behest.fold.store import StateStore
from behest.projections.run_state import RunStateProjection
from benchmarks.bench_profile import STAGES, StageClock, instrumented
from benchmarks.common import RunBatch, iter_encoded, median

PARTITIONS = 4
_CODEC_CALLS = ("decode_record", "check_record", "decode_checked")
TOPIC = "bench-fold-offline"


def make_log(events: int, batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[list[Any]]]:
    """The log's batches, each split per partition in log order (records as Kafka's)."""
    offsets = [0] * PARTITIONS
    records = []
    for key, value in iter_encoded([RunBatch(events // 100, 100)], random.Random(8)):
        partition = zlib.crc32(key) % PARTITIONS
        records.append(
            Message(
                topic=TOPIC, partition=partition, offset=offsets[partition], key=key, value=value
            )
        )
        offsets[partition] += 1
    batches = []
    for start in range(0, len(records), batch_size):
        split: dict[int, list[Any]] = {}
        for record in records[start : start + batch_size]:
            split.setdefault(record.partition(), []).append(record)
        batches.append(list(split.values()))
    return batches


def fold_log(batches: list[list[list[Any]]], state_dir: Path) -> tuple[int, float]:
    """Fold every batch into one fresh store per partition: the events folded, and the
    seconds it took (opening and closing the stores left out)."""
    stores = [StateStore(state_dir / str(p)) for p in range(PARTITIONS)]
    folders = [BatchFolder(s, RunStateProjection(), topic=TOPIC) for s in stores]

    def step(folded: int, batch: list[list[Any]]) -> int:
        for chunk in batch:
            folded += folders[chunk[0].partition()].process(chunk).folded
        return folded

    gc.collect()
    gc.freeze()  # the log and set-up stay out of every collection: counts repeat exactly
    try:
        start = time.perf_counter()
        *_, folded = itertools.accumulate(batches, step, initial=0)
        return folded, time.perf_counter() - start
    finally:
        for store in stores:
            store.close()


def decode_log(batches: list[list[list[Any]]]) -> int:
    """Decode and check every record as the engine does (the codec's share of a fold)."""

    def step(decoded: int, batch: list[list[Any]]) -> int:
        for chunk in batch:
            for record in chunk:
                decode_checked(record.value())
            decoded += len(chunk)
        return decoded

    *_, decoded = itertools.accumulate(batches, step, initial=0)
    return decoded


@contextlib.contextmanager
def codec_free(batches: list[list[list[Any]]]) -> Iterator[None]:
    """The engine's codec calls replaced by look-ups of records decoded beforehand: what is
    left of a fold is the engine's own cost (the part `--codec-free` counts)."""
    decoded = {r.value(): decode_record(r.value()) for b in batches for c in b for r in c}
    saved = {name: getattr(engine, name) for name in _CODEC_CALLS if hasattr(engine, name)}
    for name in saved:
        setattr(engine, name, decoded.__getitem__ if name.startswith("decode") else len)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(engine, name, function)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plain", action="store_true", help="fold once, uninstrumented")
    parser.add_argument("--decode-only", action="store_true", help="decode + check once")
    parser.add_argument("--codec-free", action="store_true", help="--plain, decoded beforehand")
    args = parser.parse_args()
    batches = make_log(args.events)
    if args.decode_only:
        decode_log(batches)
        return
    if args.codec_free:
        with codec_free(batches), tempfile.TemporaryDirectory(prefix="behest-fold-") as state:
            fold_log(batches, Path(state))
        return
    runs = 1 if args.plain else args.repeats
    plain: list[float] = []
    stages: dict[str, list[float]] = {}
    for _ in range(runs):
        state_dir = Path(tempfile.mkdtemp(prefix="behest-fold-offline-"))
        try:
            if not args.plain:
                clock = StageClock()
                with instrumented(clock):
                    folded, _ = fold_log(batches, state_dir / "timed")
                for stage, ns in clock.ns.items():
                    stages.setdefault(stage, []).append(ns / 1000 / folded)
            folded, seconds = fold_log(batches, state_dir / "plain")
            plain.append(seconds)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
        if folded != args.events:
            raise RuntimeError(f"folded {folded:,} of {args.events:,} events")
    print(
        f"plain fold + write: {median(plain) * 1e6 / args.events:.2f} µs/event (median of {runs})"
    )
    for stage in (*STAGES, *sorted(set(stages) - set(STAGES))):
        if stage in stages:
            print(f"  {stage}: {median(stages[stage]):.2f}")


if __name__ == "__main__":
    main()
