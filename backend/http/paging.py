"""The list routes' pagination at the HTTP edge: ``limit`` / ``cursor`` / ``order`` in,
``Link`` / ``X-Next-Cursor`` / ``X-Total-Count`` out (docs/protocol.md, pagination).
The body stays a JSON list; the rows come from ``store/pages.py``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request, Response

from backend.store.pages import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest

CURSOR = r"^[A-Za-z0-9_-]{1,256}$"  # base64url, as store/pages.py writes it


def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(pattern=CURSOR, description="X-Next-Cursor of the previous page")
    ] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="asc: oldest first")] = "asc",
) -> PageRequest:
    return PageRequest(limit, cursor, order == "desc")


Paging = Annotated[PageRequest, Depends(page_request)]

_HEADERS = {
    "X-Total-Count": ("rows the filters match, on every page", "integer"),
    "X-Next-Cursor": ("the next page's cursor; absent on the last page", "string"),
    "Link": ('<same path and filters with cursor=…>; rel="next" (absent on the last)', "string"),
}
PAGED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "one page, oldest first (order=desc: newest first)",
        "headers": {
            name: {"description": text, "schema": {"type": kind}}
            for name, (text, kind) in _HEADERS.items()
        },
    }
}


def send_page(request: Request, response: Response, page: Page) -> None:
    """The page's headers; the next page's URL is this one's with ``cursor`` replaced
    (a relative reference: same path, same filters)."""
    response.headers["X-Total-Count"] = str(page.total)
    if page.next_cursor is None:
        return
    nxt = request.url.include_query_params(cursor=page.next_cursor)
    response.headers["X-Next-Cursor"] = page.next_cursor
    response.headers["Link"] = f'<{nxt.path}?{nxt.query}>; rel="next"'
