"""The group describer never leaves a node with a view that stopped changing."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from behest.cluster.describer import describe
from behest.cluster.membership import Membership, client_id_for
from behest.config import Settings


class _LostRequests:
    """An admin client whose group descriptions never come back (a lost request)."""

    def list_topics(self, topic: str, timeout: float) -> Any:
        return type("Metadata", (), {"topics": {}})()

    def describe_consumer_groups(
        self, groups: list[str], request_timeout: float
    ) -> dict[str, concurrent.futures.Future[Any]]:
        return {group: concurrent.futures.Future() for group in groups}


def test_a_description_that_never_comes_back_times_out() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        describe(_LostRequests(), "events", "g", timeout=0.05)
    assert time.monotonic() - started < 2


HUNG_ONCE = """
import json, sys, time
from pathlib import Path
starts = Path(sys.argv[1])
starts.write_text(starts.read_text() + "x")
sys.stdin.readline()
if len(starts.read_text()) == 1:
    time.sleep(60)  # the first child hangs, as a describer with a lost request would
view = {"partitions": 1, "state": "stable", "members": [[sys.argv[2], [0]]]}
sys.stdout.write(json.dumps(view) + "\\n")
sys.stdout.flush()
sys.stdin.readline()
"""


def test_a_silent_describer_is_restarted_and_the_view_moves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = tmp_path / "starts"
    starts.write_text("")
    node = "http://127.0.0.1:9001"
    command = [sys.executable, "-c", HUNG_ONCE, str(starts), client_id_for(node)]
    caplog.set_level(logging.WARNING, logger="behest.cluster.membership")
    with Membership(Settings(), "g", describer=command, silent_after=0.5) as membership:
        deadline = time.monotonic() + 10
        while membership.view.owner(0) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert membership.view.owner(0) == node
    assert starts.read_text() == "xx"
    assert "said nothing" in caplog.text
    assert json.loads(json.dumps(membership.view.to_json_dict()))["owners"] == {"0": node}
