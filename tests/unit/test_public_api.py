"""The public surface: `behest.__all__` is sorted, complete and importable."""

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
