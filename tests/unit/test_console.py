"""The console and the API docs are served from the package itself: every asset a page
names is local and answers 200, and no page names another host (so they work offline)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from behest.projections.run_state import RunStateProjection
from behest.read.console import ASSETS
from behest.read.http import create_app
from behest.read.query import RunStateQuery
from behest.testing import ProjectionDriver

ASSET = re.compile(r"""(?:src|href)=["']([^"'#]+)["']|url: ?'([^']+)'|spec-url=["']([^"']+)""")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with (
        ProjectionDriver(RunStateProjection(), tmp_path) as driver,
        TestClient(create_app(RunStateQuery(driver.store))) as test_client,
    ):
        yield test_client


@pytest.mark.parametrize("page", ["/", "/docs", "/redoc"])
def test_every_asset_of_a_page_is_served_by_behest_itself(client: TestClient, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assets = [next(g for g in m if g) for m in ASSET.findall(answer.text)]
    assert assets, f"{page} names no asset"
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), f"{page} loads {asset}"
        assert client.get(asset).status_code == 200, asset


def test_the_console_script_and_styles_name_no_other_host() -> None:
    for name in ("index.html", "console.js", "console.css"):
        text = (ASSETS / name).read_text()
        hosts = re.findall(r"https?://[^\s\"')]+", text)
        assert hosts == [] or all("www.w3.org" in h for h in hosts), (name, hosts)


def test_vendored_bundles_ship_with_their_licences() -> None:
    vendor = ASSETS / "vendor"
    for bundle, licence in [
        ("swagger-ui-bundle.js", "LICENSE.swagger-ui"),
        ("swagger-ui.css", "LICENSE.swagger-ui"),
        ("redoc.standalone.js", "LICENSE.redoc"),
    ]:
        assert (vendor / bundle).stat().st_size > 100_000
        assert (vendor / licence).is_file()


def test_operations_have_readable_ids_and_tags(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z][a-z_]*", i) for i in ids), ids
    assert {"get_run", "list_runs", "watch_run", "watch_runs"} <= set(ids)
    assert all(len(op["tags"]) == 1 for op in operations)
    assert spec["paths"]["/runs/{run_id}/watch"]["get"]["tags"] == ["watch"]
