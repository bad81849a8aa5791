"""Static group membership: an id stable per state dir and projection, held by one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from behest.config import Settings
from behest.errors import StateLockedError
from behest.fold.consumer import HEARTBEAT_MS
from behest.fold.membership import INSTANCE_ID_FILE, StaticIdentity, instance_id
from behest.fold.projector import Projector


def test_the_id_is_stable_per_state_dir_and_names_the_projection(tmp_path: Path) -> None:
    first = instance_id(tmp_path / "a", "run_state")
    assert instance_id(tmp_path / "a", "run_state") == first
    assert first.startswith("behest-") and first.endswith("-run_state")
    assert instance_id(tmp_path / "a", "tool_usage") == first.replace("run_state", "tool_usage")
    assert instance_id(tmp_path / "b", "run_state") != first
    assert instance_id(tmp_path / "a", "run_state", "w1") == f"{first}-w1"


def test_an_empty_id_file_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    tmp_path.joinpath(INSTANCE_ID_FILE).write_text("")
    made = instance_id(tmp_path, "run_state")
    assert made != "behest--run_state"
    assert instance_id(tmp_path, "run_state") == made


def test_one_identity_is_held_by_one_holder_at_a_time(tmp_path: Path) -> None:
    held = StaticIdentity(tmp_path, "run_state")
    with pytest.raises(StateLockedError, match="another projector of 'run_state'"):
        StaticIdentity(tmp_path, "run_state")
    other = StaticIdentity(tmp_path, "tool_usage")  # another projection may share the dir
    held.release()
    held.release()  # idempotent
    again = StaticIdentity(tmp_path, "run_state")
    assert again.id == held.id
    again.release()
    other.release()


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(state_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_the_projector_joins_as_a_static_member_with_the_session_timeout(tmp_path: Path) -> None:
    with Projector(settings(tmp_path, session_timeout=7.5)) as projector:
        config = projector._consumer_config()
        assert config["group.instance.id"] == projector.instance_id
        assert config["group.instance.id"] == instance_id(tmp_path, "run_state")
        assert config["session.timeout.ms"] == 7500
        assert config["heartbeat.interval.ms"] == HEARTBEAT_MS  # a rebalance is heard of soon
    with Projector(settings(tmp_path, session_timeout=0.9)) as projector:
        assert projector._consumer_config()["heartbeat.interval.ms"] == 300  # a third
        with pytest.raises(StateLockedError):
            Projector(settings(tmp_path))
    with Projector(settings(tmp_path)) as projector:  # released on close
        assert projector._consumer_config()["session.timeout.ms"] == 10_000


def test_dynamic_membership_and_kafka_config_are_honoured(tmp_path: Path) -> None:
    with Projector(settings(tmp_path, static_membership=False)) as projector:
        assert projector.instance_id is None
        assert "group.instance.id" not in projector._consumer_config()
    mine = {"group.instance.id": "mine", "session.timeout.ms": "6000"}
    with Projector(settings(tmp_path, kafka_config=mine)) as projector:
        config = projector._consumer_config()
        assert projector.instance_id == "mine"
        assert config["group.instance.id"] == "mine"
        assert config["session.timeout.ms"] == "6000"
