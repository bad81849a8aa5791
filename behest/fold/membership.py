"""A projector's static identity in its consumer group, kept in its state dir.

With a `group.instance.id` the broker knows a restarted projector as the member it
replaces: it hands back the same partitions at once, instead of waiting out the killed
process's session and rebalancing the group. The id must be stable across restarts and
unique among the group's live members, so it is derived from a random id stored in the
state dir on first use (`<state_dir>/instance-id`) plus the projection's name.

Two processes sharing that id would fence each other off (the broker drops the older
one), so the identity is held under an exclusive lock for as long as its projector lives:
a second projector of the same projection on the same state dir fails at once, before it
ever reaches the broker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path
from typing import Final

from behest.errors import StateLockedError

__all__ = ["INSTANCE_ID_FILE", "StaticIdentity", "instance_id"]

INSTANCE_ID_FILE: Final = "instance-id"


def _stored_id(state_dir: Path) -> str:
    """The state dir's random id, written on first use (whoever writes first wins)."""
    path = state_dir / INSTANCE_ID_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(8) + "\n")
    text = path.read_text().strip()
    if not text:  # the writer died between create and write: take its place
        text = secrets.token_hex(8)
        path.write_text(text + "\n")
    return text


def instance_id(state_dir: Path, projection: str, worker: str | None = None) -> str:
    """`behest-<random id of the state dir>-<projection>[-<worker>]`, stable across restarts."""
    parts = ["behest", _stored_id(state_dir), projection]
    if worker is not None:
        parts.append(worker)
    return "-".join(parts)


class StaticIdentity:
    """A `group.instance.id`, held exclusively until `release()` (or the process dies)."""

    def __init__(self, state_dir: Path, projection: str, worker: str | None = None) -> None:
        self.id = instance_id(state_dir, projection, worker)
        self._path = state_dir / f".{self.id}.lock"
        self._fd: int | None = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise StateLockedError(
                f"another projector of {projection!r} runs on the state dir {state_dir} "
                f"(it holds the group member id {self.id}): stop it, or give this one its "
                "own --state-dir"
            ) from None

    def release(self) -> None:
        """Let another projector take this identity (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
