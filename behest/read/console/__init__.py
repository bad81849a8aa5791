"""The web console at `/`, and API docs at `/docs` and `/redoc` that work offline.

Everything the browser loads ships in this package: the console is one page and one plain
ES module (`console.js`, no dependency, no build step); Swagger UI and Redoc are the
vendored bundles in `vendor/` (swagger-ui-dist 5.35.0, Apache-2.0; redoc 2.5.4, MIT; their
licence files sit beside them), fetched from npm once and committed, so neither installing
nor running behest needs Node or a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS", "add_console", "name_operations"]

ASSETS: Final = Path(__file__).resolve().parent
_PREFIX: Final = "/console"


def add_console(app: FastAPI) -> None:
    """Serve the console at `/` (its files under /console) and the docs from those files;
    the app must be made with `docs_url=None, redoc_url=None`."""
    app.mount(_PREFIX, StaticFiles(directory=ASSETS, packages=None), name="console")
    title = f"{app.title} API"

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(ASSETS / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{_PREFIX}/vendor/swagger-ui-bundle.js",
            swagger_css_url=f"{_PREFIX}/vendor/swagger-ui.css",
            swagger_favicon_url=f"{_PREFIX}/favicon.svg",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            redoc_js_url=f"{_PREFIX}/vendor/redoc.standalone.js",
            redoc_favicon_url=f"{_PREFIX}/favicon.svg",
            with_google_fonts=False,
        )


def name_operations(app: FastAPI) -> None:
    """Readable OpenAPI operation ids (the endpoint's name, e.g. `get_run`, `watch_run`)
    and tags by area (runs, watch, projections, operations), for generated clients."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        route.operation_id = route.operation_id or route.name
        if not route.tags:
            route.tags = [_tag(route.path)]
    app.openapi_schema = None


def _tag(path: str) -> str:
    if path.endswith("/watch"):
        return "watch"
    for area in ("runs", "projections"):
        if path == f"/{area}" or path.startswith(f"/{area}/"):
            return area
    return "operations"
