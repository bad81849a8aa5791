"""The consumer group's description, asked for in a process of its own.

librdkafka can abort the whole process when a DescribeConsumerGroups request loses its
group coordinator mid-flight (`rd_kafka_enq_once_del_source_return: Assertion ...`,
librdkafka#4605, still open): exactly what a broker failure does. A node must outlive
that, so `Membership` runs this module as a child process and restarts it if it dies.

Protocol: the parent writes one JSON line (`config`, `topic`, `group`, `interval`), then
a newline whenever it wants a description at once; the child writes one JSON line per
description: `{"partitions": n, "state": s, "members": [[client_id, [partition, ...]], ...]}`
or `{"error": "..."}`. End of input (the parent is gone) ends the child. A description
that never comes back (a request librdkafka lost with its coordinator) ends the child with
status 3, after an error line: a fresh child, with a fresh client, describes again.
"""

from __future__ import annotations

import json
import select
import sys
from typing import Any

__all__ = ["describe", "main"]

_TIMEOUT = 5.0
_LOST = 3
"""Exit status of a child whose description never came back."""


def describe(admin: Any, topic: str, group_id: str, timeout: float = _TIMEOUT) -> dict[str, Any]:
    """Partition count of `topic`, and `group_id`'s state and members with their partitions
    (TimeoutError: the description did not come back within twice `timeout`)."""
    metadata = admin.list_topics(topic=topic, timeout=timeout)
    found = metadata.topics.get(topic)
    partitions = 0 if found is None or found.error is not None else len(found.partitions)
    future = admin.describe_consumer_groups([group_id], request_timeout=timeout)[group_id]
    group = future.result(timeout=2 * timeout)  # librdkafka's request timeout ends it first
    members = [
        [
            member.client_id,
            [
                tp.partition
                for tp in (member.assignment.topic_partitions if member.assignment else [])
                if tp.topic == topic
            ],
        ]
        for member in group.members
    ]
    state = str(getattr(group.state, "name", group.state)).lower()
    return {"partitions": partitions, "state": state, "members": members}


def main() -> None:
    """Describe on request (a line on stdin) or every `interval` seconds, until stdin ends."""
    from confluent_kafka.admin import AdminClient

    request = json.loads(sys.stdin.readline())
    admin = AdminClient({**request["config"], "log_level": 0})
    while True:
        try:
            answer = describe(admin, request["topic"], request["group"])
        except TimeoutError:  # lost, not refused: this client may never answer again
            _say({"error": f"no description within {2 * _TIMEOUT:g} s: starting afresh"})
            sys.exit(_LOST)
        except Exception as error:  # no broker, no coordinator: say so, try again later
            answer = {"error": str(error) or type(error).__name__}
        _say(answer)
        ready, _, _ = select.select([sys.stdin], [], [], request["interval"])
        if ready and not sys.stdin.readline():
            return


def _say(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
