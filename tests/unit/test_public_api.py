"""The public surface: `behest.__all__` is sorted, complete and importable."""

import subprocess
import sys

import behest
import behest.events


def test_all_is_sorted_and_unique() -> None:
    assert behest.__all__ == sorted(set(behest.__all__))


def test_every_name_in_all_is_importable() -> None:
    missing = [name for name in behest.__all__ if not hasattr(behest, name)]
    assert missing == []


def test_every_event_variant_is_public() -> None:
    variants = {cls.__name__ for cls in behest.events.PAYLOAD_TYPES}
    assert variants <= set(behest.__all__)


def test_public_names_are_not_private_modules() -> None:
    for name in behest.__all__:
        assert not getattr(behest, name).__module__.startswith("behest._"), name


def test_importing_the_domain_loads_no_kafka_rocksdb_or_web_framework() -> None:
    """A service that only builds events must not pay for clients it never uses (PEP 562)."""
    heavy = ("confluent_kafka", "aiokafka", "rocksdict", "fastapi", "uvicorn")
    probe = (
        "import sys, behest, behest.events, behest.codec\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_ready_made_projections_live_inside_behest() -> None:
    """`projections/` installs as `behest.projections`: no top-level name to collide with."""
    probe = "import importlib.util; print(importlib.util.find_spec('projections') is None)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    )
    assert result.stdout.strip() == "True"
    import behest.projections

    assert behest.projections.RunStateProjection.__module__ == "behest.projections.run_state"
