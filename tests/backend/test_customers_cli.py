"""``python -m backend customers create`` gives a customer their token once (it signs in
to the customer API and owns the vehicles given); ``customers list`` shows customers and
their VINs, never a token; a VIN owned twice, a bad vehicle or e-mail is one line."""

from __future__ import annotations

import pytest

from tests.backend.conftest import VINS, WorldFactory
from tests.backend.test_operators import backend_cli, bearer

pytestmark = pytest.mark.timeout(90)

NEW_VINS = ("WVWZZZ1JZ3W386761", "WVWZZZ1JZ3W386762")


async def test_customer_created_by_the_cli_signs_in_and_owns_the_vehicles(
    make_world: WorldFactory, db_url: str
) -> None:
    """The token is printed once on stdout and reads the customer's own vehicles (model,
    firmware as given); list shows name, e-mail, payment method and VINs, no token."""
    async with make_world(db_url) as w:
        made = await backend_cli(
            db_url, "customers", "create", "--name", " Marta Gil ", "--email", "marta@example.com",
            "--vehicle", f"{NEW_VINS[0]}:Tourer:4.3.0", "--vehicle", f"{NEW_VINS[1]}:Urbano",
            "--payment-method", "direct_debit",
        )  # fmt: skip
        assert made.code == 0, made.err
        token = made.out.strip()
        assert token.startswith("caas_") and "\n" not in token
        assert "shown once" in made.err and token not in made.err
        mine = await w.api.get("/v1/vehicles", headers=bearer(token))
        assert mine.status_code == 200, mine.text
        assert {(v["vin"], v["model"], v["firmware"]) for v in mine.json()} == {
            (NEW_VINS[0], "Tourer", "4.3.0"),
            (NEW_VINS[1], "Urbano", None),
        }
        listed = await backend_cli(db_url, "customers", "list")
        assert listed.code == 0, listed.err
        assert token not in listed.out and token[:12] not in listed.out
        rows = [line.split("\t") for line in listed.out.splitlines()]
        marta = [r for r in rows if r[1] == "Marta Gil"]
        assert len(marta) == 1
        assert marta[0][2:5] == ["marta@example.com", "direct_debit", ",".join(NEW_VINS)]


async def test_customers_create_refuses_in_one_line(make_world: WorldFactory, db_url: str) -> None:
    """A VIN someone owns (exit 1) and a malformed vehicle or e-mail (exit 2, usage) are
    refused with one line naming the problem, nothing created."""
    async with make_world(db_url):
        owned = await backend_cli(
            db_url, "customers", "create", "--name", "X", "--email", "x@example.com",
            "--vehicle", f"{VINS[0][0]}:Tourer",
        )  # fmt: skip
        assert (owned.code, owned.out) == (1, "")
        assert (
            owned.err.strip().splitlines()[-1]  # after the migration's log lines
            == f"backend: VIN {VINS[0][0]} is listed twice or has an owner already"
        )
        for bad, problem in (
            (["--vehicle", "NOTAVIN:Tourer"], "is not a VIN"),
            (["--vehicle", f"{NEW_VINS[0]}"], "the model is missing"),
            (["--email", "nobody"], "is not an e-mail address"),
        ):
            args = ["--name", "X", "--email", "x@example.com", *bad]
            refused = await backend_cli(db_url, "customers", "create", *args)
            assert refused.code == 2 and problem in refused.err, refused.err
            assert "Traceback" not in refused.err
        listed = await backend_cli(db_url, "customers", "list")
        assert "x@example.com" not in listed.out
