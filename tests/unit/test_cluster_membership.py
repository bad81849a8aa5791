"""Membership's pure parts: URLs in client ids, owners from assignments, stable standbys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from behest.cluster.membership import client_id_for, standbys_for, url_of, view_of

NODES = ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"]


def test_a_node_url_travels_in_the_client_id() -> None:
    assert url_of(client_id_for("http://node-a:8000/")) == "http://node-a:8000"
    assert url_of("rdkafka") is None
    assert url_of("behest-node ") is None


def test_the_view_maps_each_partition_to_its_owner_url() -> None:
    members = [
        (client_id_for(NODES[0]), [0, 1]),
        (client_id_for(NODES[0]), [2]),  # a second worker of the same node
        (client_id_for(NODES[1]), [3, 4, 5]),
        ("some-other-consumer", [6]),
    ]
    view = view_of(members, 6, standby_replicas=1)
    assert view.owned_by(NODES[0]) == {0, 1, 2}
    assert view.owner(4) == NODES[1]
    assert view.nodes == (NODES[0], NODES[1])
    for partition in range(6):
        (standby,) = view.standbys[partition]
        assert standby != view.owner(partition)
    assert view.standbys_of(NODES[0]) | view.standbys_of(NODES[1]) == set(range(6))


@settings(max_examples=100)
@given(
    partition=st.integers(0, 63),
    count=st.integers(2, 6),
    replicas=st.integers(0, 3),
    leaving=st.integers(0, 5),
)
def test_standbys_move_only_when_one_of_them_leaves(
    partition: int, count: int, replicas: int, leaving: int
) -> None:
    nodes = [f"http://n{i}:8000" for i in range(count)]
    owner = nodes[0]
    before = standbys_for(partition, nodes, owner, replicas)
    assert owner not in before
    assert len(before) == min(replicas, count - 1)
    gone = nodes[1 + leaving % (count - 1)]
    after = standbys_for(partition, [n for n in nodes if n != gone], owner, replicas)
    if gone not in before:
        assert after == before
    else:
        assert set(before) - {gone} <= set(after)
