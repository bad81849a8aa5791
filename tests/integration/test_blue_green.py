"""Blue/green: `behest project --rebuild` builds a new generation beside the served one while
readers (a `behest serve` process and a Python `RunStateQuery`) keep querying; they switch
with it, without one error, and a reader kept through the rebuild serves the new runs."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from live_api import behest_command, behest_serve

from behest.codec import encode
from behest.config import Settings
from behest.fold.layout import Layout
from behest.fold.projector import Projector
from behest.projections.run_state import RunStateProjection
from behest.read.query import RunStateQuery
from behest.testing import sample_run
from tests.integration.test_projector import produce

RUNS = 6


@dataclass
class Watcher:
    """Asks for an old run and a new run over and over, from HTTP and from Python."""

    url: str
    query: RunStateQuery
    old: str
    new: str
    errors: list[str] = field(default_factory=list)
    seen: list[tuple[str, bool, bool]] = field(default_factory=list)
    """(where, old run found, new run found), in the order asked."""

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    codes = [client.get(f"/runs/{r}").status_code for r in (self.old, self.new)]
                    if any(c not in (200, 404) for c in codes):
                        self.errors.append(f"HTTP {codes}")
                    self.seen.append(("http", codes[0] == 200, codes[1] == 200))
                    states = [self.query.get(r) for r in (self.old, self.new)]
                    self.seen.append(("python", *(s is not None for s in states)))  # type: ignore[arg-type]
                except Exception as error:
                    self.errors.append(repr(error))
                time.sleep(0.01)


def test_a_rebuild_switches_readers_without_an_error(
    settings: Settings, bootstrap_servers: str, tmp_path: Path
) -> None:
    first = [sample_run(seed=n, events=12) for n in range(RUNS)]
    produce(
        bootstrap_servers,
        settings.topic,
        [(str(e.run_id).encode(), encode(e)) for r in first for e in r],
    )
    with Projector(settings, group_id=f"bg-{settings.topic}") as projector:
        projector.run(until_caught_up=True)
    # Events no projector folds before the rebuild: only the new generation will hold them.
    later = [sample_run(seed=100 + n, events=12) for n in range(RUNS)]
    produce(
        bootstrap_servers,
        settings.topic,
        [(str(e.run_id).encode(), encode(e)) for r in later for e in r],
    )
    old, new = str(first[0][0].run_id), str(later[0][0].run_id)
    with behest_serve(settings) as url, RunStateQuery.open(settings) as query:
        watcher = Watcher(url, query, old, new)
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        time.sleep(1.0)
        argv = behest_command(settings, "project", "--rebuild", "--until-caught-up")
        argv += ["--group-id", f"bg-{settings.topic}"]
        rebuild = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert rebuild.returncode == 0, rebuild.stderr[-2000:]
        deadline = time.monotonic() + 10
        while not all(found_new for _, _, found_new in watcher.seen[-4:]):
            assert time.monotonic() < deadline, "readers did not switch to the new generation"
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        thread.join(10)
    layout = Layout.of(settings.state_dir, "run_state")
    assert layout.current() == 2 and layout.generations() == [1, 2]
    assert watcher.errors == []
    for where in ("http", "python"):
        answers = [(o, n) for w, o, n in watcher.seen if w == where]
        assert all(o for o, _ in answers), f"{where}: the old run was missing at some point"
        # the old generation before the switch (no new run), the new one after, never back
        flips = [i for i in range(1, len(answers)) if answers[i][1] != answers[i - 1][1]]
        assert answers[0] == (True, False) and answers[-1] == (True, True), where
        assert len(flips) == 1, f"{where}: {answers}"


class RunStateV2(RunStateProjection):
    """The run-state projection, as a new version of itself."""

    version = 2


def test_a_new_version_builds_beside_the_old_which_stops_at_the_switch(
    settings: Settings, bootstrap_servers: str
) -> None:
    runs = [sample_run(seed=200 + n, events=10) for n in range(RUNS)]
    records = [(str(e.run_id).encode(), encode(e)) for r in runs for e in r]
    ends = produce(bootstrap_servers, settings.topic, records)
    group = f"v-{settings.topic}"
    with Projector(settings, group_id=group, worker="v1", poll_timeout=0.2) as old:
        worker = threading.Thread(target=old.run, daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while not all(old.folded_position(p) > o for p, o in ends):
            assert time.monotonic() < deadline, "version 1 did not fold the log"
            time.sleep(0.1)
        with RunStateQuery.open(settings) as query:
            assert query.get(runs[0][0].run_id) is not None
            with Projector(settings, RunStateV2(), group_id=group, worker="v2") as new:
                metrics = new.run(until_caught_up=True)  # builds g2 beside g1, then switches
                assert (metrics.generation, metrics.building) == (2, False)
            query.refresh(force=True)
            assert getattr(query.reader.store, "generation", None) == 2
            assert query.get(runs[0][0].run_id) is not None
        worker.join(15)
        assert not worker.is_alive(), "version 1 kept writing after version 2 was switched to"
    layout = Layout.of(settings.state_dir, "run_state")
    assert [(m.generation, m.version, m.ready) for m in layout.manifests()] == [
        (1, 1, True),
        (2, 2, True),
    ]
    assert layout.current() == 2
