"""The OpenAPI documents every answer: a schema for every 2xx body, and the shared
``ErrorBody`` (with its ``error`` codes) for every 4xx/5xx, on the backend and the gateway.
The backend's HTTP layer has no import cycle: routers never import the app."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import backend.http
from backend.http.app import create_app
from gateway.api import create_app as gateway_app
from gateway.config import GatewaySettings
from gateway.service import Gateway
from protocol.signing import write_keypair
from tests.backend.conftest import World
from tests.helpers import openapi_problems

pytestmark = pytest.mark.timeout(30)

ROUTES = {
    ("get", "/v1/catalog"): "200",
    ("get", "/v1/vehicles"): "200",
    ("post", "/v1/purchases"): "202",
    ("get", "/v1/purchases/{purchase_id}"): "200",
    ("post", "/v1/purchases/{purchase_id}/cancel"): "200",
    ("get", "/v1/customers/me/expediente"): "200",
    ("get", "/v1/customers/me/notifications"): "200",
    ("post", "/v1/vehicles/{vehicle_id}/theft-report"): "200",
    ("post", "/v1/ops/vehicles/{vehicle_id}/maintenance-check"): "200",
    ("get", "/v1/ops/tickets"): "200",
    ("get", "/v1/ops/tickets/{ticket_id}"): "200",
    ("post", "/v1/ops/tickets/{ticket_id}/manual-activation"): "202",
    ("post", "/v1/ops/tickets/{ticket_id}/permanent-failure"): "200",
    ("post", "/v1/ops/billing/runs"): "200",
    ("get", "/v1/ops/metrics/summary"): "200",
    ("get", "/v1/ops/purchases"): "200",
    ("get", "/v1/ops/customers"): "200",
    ("get", "/v1/ops/customers/{customer_id}/expediente"): "200",
    ("get", "/v1/ops/me"): "200",
    ("get", "/v1/ops/audit"): "200",
    ("get", "/v1/ops/catalog/rules"): "200",
    ("put", "/v1/ops/catalog/{service_id}/rules"): "200",
    ("get", "/v1/ops/fleet/models"): "200",
    ("post", "/v1/payments/webhooks"): "200",
    ("get", "/healthz"): "200",
}
CUSTOMER_ROUTES = [
    ("get", "/v1/catalog"),
    ("get", "/v1/vehicles"),
    ("post", "/v1/purchases"),
    ("get", "/v1/purchases/{purchase_id}"),
    ("post", "/v1/purchases/{purchase_id}/cancel"),
    ("get", "/v1/customers/me/expediente"),
    ("get", "/v1/customers/me/notifications"),
    ("post", "/v1/vehicles/{vehicle_id}/theft-report"),
]


@pytest.fixture
def spec(world: World) -> dict[str, Any]:
    return create_app(world.backend, manage_lifespan=False).openapi()


def answers(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = spec["paths"][path][method]["responses"]
    return found


def test_backend_documents_every_answer(spec: dict[str, Any]) -> None:
    """Every route: its 2xx body has a schema, every error is the ErrorBody with codes."""
    assert openapi_problems(spec) == []
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # our 422 instead


def test_backend_routes_are_the_same(spec: dict[str, Any]) -> None:
    """Paths, methods and success statuses are the API's (docs/spec.md §5, issue 5 and issue 12
    routes)."""
    found = {
        (method, path): next(s for s in op["responses"] if s.startswith("2"))
        for path, operations in spec["paths"].items()
        for method, op in operations.items()
    }
    assert found == ROUTES


def test_documented_error_codes(spec: dict[str, Any]) -> None:
    """401 on every customer route, 401 and 403 on every ops route, and the conflicts and
    refusals of a purchase, each with its codes."""
    for method, path in CUSTOMER_ROUTES:
        assert answers(spec, method, path)["401"]["x-error-codes"] == ["unauthorized"], path
        assert "404" in answers(spec, method, path), path
    ops = [(m, p) for p, operations in spec["paths"].items() for m in operations if "/ops/" in p]
    assert len(ops) == 15
    for method, path in ops:
        documented = answers(spec, method, path)
        assert (documented["401"]["x-error-codes"], documented["403"]["x-error-codes"]) == (
            ["unauthorized"],
            ["forbidden"],
        ), path
    purchase = answers(spec, "post", "/v1/purchases")
    assert {
        "idempotency_key_reused",
        "already_purchased",
        "maintenance_overdue",
        "not_compatible",
    } <= set(purchase["409"]["x-error-codes"])
    assert {"invalid_request", "bad_start_at", "unknown_service"} <= set(
        purchase["422"]["x-error-codes"]
    )
    assert purchase["503"]["x-error-codes"] == ["vss_unavailable"]
    for path in ("/v1/ops/tickets", "/v1/ops/purchases", "/v1/ops/customers", "/v1/ops/audit"):
        listed = answers(spec, "get", path)
        assert {"invalid_request", "bad_cursor"} <= set(listed["422"]["x-error-codes"]), path
        assert set(listed["200"]["headers"]) == {"Link", "X-Next-Cursor", "X-Total-Count"}, path
    rules = answers(spec, "put", "/v1/ops/catalog/{service_id}/rules")
    assert "bad_rules" in rules["422"]["x-error-codes"]
    webhook = answers(spec, "post", "/v1/payments/webhooks")
    assert webhook["400"]["x-error-codes"] == ["bad_signature", "bad_webhook"]
    assert "401" not in webhook  # signed, not authenticated


def test_error_body_schema(spec: dict[str, Any]) -> None:
    """ErrorBody: a code and a detail (a sentence, or the list of problems of a 422)."""
    body = spec["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error", "detail"]
    assert {"type": "string"} in body["properties"]["detail"]["anyOf"]
    assert {"purchase_id", "workshop_url"} <= set(body["properties"])


def test_answer_schemas_name_their_fields(spec: dict[str, Any]) -> None:
    """The purchase answer documents its payment (with room for its method), the
    expediente all of its parts."""
    schemas = spec["components"]["schemas"]
    purchase = schemas["Purchase"]["properties"]
    assert {"id", "state", "duration", "payment", "activation_deadline_at"} <= set(purchase)
    assert "method" in schemas["Payment"]["properties"]
    assert set(schemas["Expediente"]["properties"]) == {
        "customer_id", "purchases", "charges", "refunds", "subscription_charges",
        "notifications", "tickets", "timeline",
    }  # fmt: skip
    assert set(schemas["CancelAnswer"]["properties"]) == {
        "decision", "rule", "refund_cents", "effective_at", "purchase_id", "state",
    }  # fmt: skip


def test_gateway_documents_every_answer(tmp_path: Path) -> None:
    """The gateway too; its /readyz answers {"ready": false} with its 503."""
    key = tmp_path / "signing.pem"
    write_keypair(key, tmp_path / "signing.pub.pem")
    settings = GatewaySettings(
        mqtt_url="mqtt://127.0.0.1:1883",
        redis_url="redis://127.0.0.1:6379/0",
        gateway_token="token",
        gateway_share_group="openapi-test",
        signing_key=key,
    )
    spec = gateway_app(Gateway(settings.require()), manage_lifespan=False).openapi()
    readiness = frozenset({("get", "/readyz", "503")})
    assert openapi_problems(spec, exempt=readiness) == []
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for op in operations.values():
            if path.startswith("/v1/"):
                assert op["responses"]["401"]["x-error-codes"] == ["unauthorized"], path
    get = answers(spec, "get", "/v1/activations/{activation_id}")
    assert get["404"]["x-error-codes"] == ["not_found"]
    assert answers(spec, "post", "/v1/activations")["409"]["x-error-codes"] == [
        "activation_id_reused"
    ]


def test_routers_never_import_the_app() -> None:
    """No import cycle in backend/http: routers import deps, errors and schemas only."""
    root = Path(backend.http.__file__).parent
    for module in (root / "routers").glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
        }
        assert "backend.http.app" not in imported, module.name
        assert not any(m.startswith("backend.http.routers") for m in imported), module.name
    for name in ("deps.py", "errors.py", "schemas.py"):
        tree = ast.parse((root / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(str(m).startswith("backend.http") for m in imported), name
