"""The handbook's metrics as pure definitions (``backend/domain/handbook.py``), the
outcome the purchase machine records for them, and the bounded labels of the backend's
Prometheus counters (``backend/metrics.py``)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.adapters.gateway_client import HttpGatewayClient
from backend.domain import handbook, machine
from backend.domain.events import (
    ActivationCancelled,
    ActivationFailed,
    ActivationSucceeded,
    DeadlinePassed,
    DispatchRejected,
    PaymentView,
    PurchaseView,
)
from backend.domain.handbook import Tally
from backend.domain.states import PaymentState, PurchaseState
from backend.errors import GatewayError, InvalidRequest
from backend.metrics import ActivationFinished, BackendMetrics, StoreSnapshot, TicketResolved

PS = PurchaseState
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOLD = PaymentView(PaymentState.HELD_FOR_ACTIVATION, "card", 4900, authorization_ref="auth_1")


# ---------------------------------------------------------------- the window
@pytest.mark.parametrize(
    ("text", "seconds"),
    [(None, None), ("1m", 60), ("24h", 86_400), ("7d", 604_800), ("90m", 5_400),
     ("3660d", 3_660 * 86_400)],
)  # fmt: skip
def test_window_is_a_count_and_a_unit(text: str | None, seconds: int | None) -> None:
    """``<n>m|h|d`` is that many seconds; no window is all time."""
    assert handbook.parse_window(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "0h", "24", "h", "1w", "24H", "-1d", "1.5h", " 24h", "24h ", "3661d", "9999999d"]
)
def test_a_bad_window_is_refused(text: str) -> None:
    """Anything but a positive count and m, h or d (up to ten years) is a 422 code."""
    with pytest.raises(InvalidRequest) as refused:
        handbook.parse_window(text)
    assert refused.value.code == "bad_window"


# ---------------------------------------------------------------- the six metrics
SOME = Tally(
    finished=200, failed=12, first_attempt_successes=180, successes_with_attempts=188,
    attempts_of_successes=220, timed_successes=188, payment_to_activation_s=188 * 300.0,
    permanent_failures=1, customer_impact=2,
)  # fmt: skip


def test_the_six_metrics_in_the_handbooks_order_and_shape() -> None:
    """Keys, units, thresholds and directions as the contract lists them."""
    found = handbook.handbook(SOME)
    assert [(m["key"], m["unit"], m["threshold"], m["alert_when"]) for m in found] == [
        ("activation_failure_rate", "ratio", 0.05, "above"),
        ("first_attempt_success_rate", "ratio", 0.95, "below"),
        ("average_attempts_to_success", "attempts", 2.0, "above"),
        ("payment_to_activation_seconds", "seconds", 900.0, "above"),
        ("permanent_failure_rate", "ratio", 0.01, "above"),
        ("customer_impact_rate", "ratio", 0.005, "above"),
    ]
    assert all(set(m) == {"key", "name", "unit", "value", "threshold", "alert_when",
                          "alerting", "samples"} for m in found)  # fmt: skip


def test_each_definition_divides_what_it_says() -> None:
    """failed/finished, first-try successes/finished, attempts/successes, wait/successes,
    permanent/finished, impact/finished; each with its own sample count."""
    found = {m["key"]: (m["value"], m["samples"], m["alerting"]) for m in handbook.handbook(SOME)}
    assert found == {
        "activation_failure_rate": (0.06, 200, True),
        "first_attempt_success_rate": (0.9, 200, True),
        "average_attempts_to_success": (1.1702, 188, False),
        "payment_to_activation_seconds": (300.0, 188, False),
        "permanent_failure_rate": (0.005, 200, False),
        "customer_impact_rate": (0.01, 200, True),
    }


def test_at_the_threshold_nothing_alerts() -> None:
    """Above means strictly above, below strictly below."""
    exact = Tally(
        finished=100, failed=5, first_attempt_successes=95, successes_with_attempts=10,
        attempts_of_successes=20, timed_successes=1, payment_to_activation_s=900.0,
        permanent_failures=1,
    )  # fmt: skip
    assert [m["alerting"] for m in handbook.handbook(exact)] == [False] * 6
    assert handbook.handbook(replace(exact, failed=6))[0]["alerting"] is True


def test_no_sample_is_no_value_and_no_alert() -> None:
    """An empty window: every value null, nothing alerting (not 0 % failures)."""
    found = handbook.handbook(Tally())
    assert [(m["value"], m["samples"], m["alerting"]) for m in found] == [(None, 0, False)] * 6


# ---------------------------------------------------------------- breakdowns and labels
def test_rows_merge_keys_and_divide() -> None:
    """The same key twice is one row; largest count first; a zero total has no rate."""
    got = handbook.rows([("b", 1, 4), ("a", 3, 4), ("b", 1, 4), ("c", 0, 0)])
    assert got == [
        {"key": "a", "count": 3, "total": 4, "rate": 0.75},
        {"key": "b", "count": 2, "total": 8, "rate": 0.25},
        {"key": "c", "count": 0, "total": 0, "rate": None},
    ]


def test_rows_in_a_fixed_order_keep_every_key() -> None:
    """The hours: all 24, in order, zeros where nothing finished."""
    got = handbook.rows([("07", 2, 5)], handbook.HOURS)
    assert [r["key"] for r in got] == [f"{h:02d}" for h in range(24)]
    assert got[7] == {"key": "07", "count": 2, "total": 5, "rate": 0.4}
    assert got[0] == {"key": "00", "count": 0, "total": 0, "rate": None}


def test_successes_by_attempt_group_ten_and_more() -> None:
    """Attempts 1..9 by number, 10 and more together, in order; no attempt (a refused
    request) is no row."""
    got = handbook.by_attempt([(12, 1, 2), (1, 5, 6), (10, 0, 1), (0, 0, 3), (3, 1, 1)])
    assert got == [
        {"key": "1", "count": 5, "total": 6, "rate": 0.8333},
        {"key": "3", "count": 1, "total": 1, "rate": 1.0},
        {"key": "10+", "count": 1, "total": 3, "rate": 0.3333},
    ]
    assert handbook.by_attempt([]) == []


def test_labels_are_bounded() -> None:
    """Reasons from a fixed set (else other), attempts 1..9 and 10+, hours 00..23 UTC."""
    assert handbook.reason_label("transient_connectivity") == "transient_connectivity"
    assert handbook.reason_label("deadline_exceeded") == "deadline_exceeded"
    assert handbook.reason_label("WVWZZZ1JZ3W386752") == "other"
    assert handbook.reason_label(None) == "other"
    assert [handbook.attempt_label(n) for n in (1, 9, 10, 57)] == ["1", "9", "10+", "10+"]
    assert handbook.hour_label(NOW) == "08"
    assert handbook.hour_label(NOW + 16 * 3600 - 0.001) == "23"
    assert handbook.hour_label(NOW + 16 * 3600) == "00"


@pytest.mark.parametrize(
    ("n", "percent", "at"), [(1, 50, 0), (1, 95, 0), (2, 50, 0), (4, 50, 1), (20, 95, 18),
                             (21, 95, 19), (100, 95, 94)],
)  # fmt: skip
def test_nearest_rank(n: int, percent: float, at: int) -> None:
    assert handbook.nearest_rank(n, percent) == at


# ---------------------------------------------------------------- what the machine records
def bought(state: PurchaseState = PS.ACTIVATING, **kw: object) -> PurchaseView:
    view = PurchaseView(
        id="p1", state=state, service_id="climate_plus", duration_model="permanent",
        duration_days=None, price_cents=4900, activation_id="a1", start_at=NOW - 60,
        payment=HOLD,
    )  # fmt: skip
    return replace(view, **kw)  # type: ignore[arg-type]


def recorded(view: PurchaseView, event: object) -> dict[str, object]:
    decided = machine.step(view, event, NOW)  # type: ignore[arg-type]
    return {k: v for k, v in decided.purchase.items() if k.startswith("activation_")}


def test_success_records_the_outcome_and_its_attempts() -> None:
    assert recorded(bought(), ActivationSucceeded(3)) == {
        "activation_outcome": "succeeded",
        "activation_attempts": 3,
        "activation_finished_at": NOW,
    }


def test_failure_records_the_outcome_and_its_attempts() -> None:
    got = recorded(bought(PS.ACTIVATION_QUEUED), ActivationFailed("timeout", None, 5))
    assert got == {
        "activation_outcome": "failed",
        "activation_attempts": 5,
        "activation_finished_at": NOW,
    }


def test_a_refused_request_is_a_failure_without_attempts() -> None:
    got = recorded(bought(), DispatchRejected("activation.request", 422, "bad vin"))
    assert (got["activation_outcome"], got["activation_attempts"]) == ("failed", 0)


@pytest.mark.parametrize(
    ("remote", "outcome", "attempts"),
    [(None, "failed", None),
     ({"state": "IN_PROGRESS", "attempts": [{"n": 1}, {"n": 2}]}, "failed", 2),
     ({"state": "SUCCEEDED", "attempts": [{"n": 1}]}, "succeeded", 1),
     ({"state": "FAILED", "failure_category": "vehicle_state", "attempts": []}, "failed", 0)],
)  # fmt: skip
def test_the_deadline_decides_the_outcome(
    remote: dict[str, object] | None, outcome: str, attempts: int | None
) -> None:
    """Escalated (the gateway knew nothing final) is a failure; the gateway's final word
    is taken as its answer; the attempts come from its Activation's list."""
    got = recorded(bought(), DeadlinePassed(remote))
    assert (got["activation_outcome"], got["activation_attempts"]) == (outcome, attempts)


def test_no_outcome_without_an_activation() -> None:
    """A payment that never held (deadline while pending), a cancellation, a late or
    duplicate answer: nothing recorded."""
    pending = bought(PS.PAYMENT_PENDING, payment=PaymentView(PaymentState.PENDING, "card", 4900))
    assert recorded(pending, DeadlinePassed(None)) == {}
    assert recorded(bought(), ActivationCancelled()) == {}
    assert recorded(bought(PS.FAILED_NO_CHARGE), ActivationSucceeded(1)) == {}


def test_only_the_first_answer_decides() -> None:
    """A purchase whose outcome is known keeps it whatever comes next."""
    decided = bought(activation_outcome="failed")
    assert recorded(decided, ActivationSucceeded(2)) == {}


@pytest.mark.parametrize(("given", "count"), [(4, 4), ([1, 2], 2), ("3", None), (-1, None),
                                               (True, None), (None, None)])  # fmt: skip
def test_attempts_are_read_from_events_and_activations(given: object, count: int | None) -> None:
    assert machine.attempts_of({"attempts": given}) == count


# ---------------------------------------------------------------- the counters' labels
def scrape(m: BackendMetrics, snapshot: StoreSnapshot | None = None) -> dict[str, float]:
    text = m.render(snapshot).decode()
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_model_and_service_labels_are_bounded() -> None:
    """The first distinct models keep their name, later ones are counted as other; a
    reason outside the set is other."""
    m = BackendMetrics()
    m.model_label.limit = 2
    for n, model in enumerate(["Aurora", "Borealis", "Tourer", "Zephyr"]):
        m.observe([ActivationFinished("failed", f"weird-{n}", model, "climate_plus", 1, NOW)])
    got = scrape(m)
    key = "caas_backend_activation_outcomes_total[('model', '{}'), ('outcome', 'failed'), "
    key += "('reason', 'other'), ('service', 'climate_plus')]"
    assert got[key.format("Aurora")] == 1 and got[key.format("Borealis")] == 1
    assert got[key.format("other")] == 2
    assert got["caas_backend_activation_failures_by_hour_total[('hour', '08')]"] == 4


def test_success_counts_attempts_and_wait_and_a_taken_failure_impacts() -> None:
    m = BackendMetrics()
    m.observe([
        ActivationFinished("succeeded", None, "Aurora", "climate_plus", 12, NOW, waited_s=40.0),
        ActivationFinished("failed", "timeout", "Aurora", "climate_plus", 5, NOW,
                           money_taken=True),
        TicketResolved("permanent_failure", 600.0),
    ])  # fmt: skip
    got = scrape(m)
    assert got["caas_backend_activation_successes_by_attempt_total[('attempt', '10+')]"] == 1
    assert got["caas_backend_attempts_to_success_sum[]"] == 12
    assert got["caas_backend_payment_to_activation_seconds_sum[]"] == 40
    assert got["caas_backend_customer_impact_total[]"] == 1
    assert got["caas_backend_permanent_failures_total[]"] == 1
    assert got["caas_backend_ticket_resolution_seconds_count[]"] == 1


def test_store_gauges_only_with_a_snapshot() -> None:
    """Without the lease (no snapshot) no store gauge is exported; with it, every state
    is, zero when empty; process and platform metrics always."""
    m = BackendMetrics()
    without = scrape(m)
    assert not any(k.startswith(("caas_backend_purchases", "caas_backend_outbox")) for k in without)
    assert "process_cpu_seconds_total[]" in without
    assert any(k.startswith("python_info") for k in without)
    got = scrape(m, StoreSnapshot(purchases={"ACTIVE": 3}, payments={("CHARGED", "card"): 3}))
    assert got["caas_backend_purchases[('state', 'ACTIVE')]"] == 3
    assert got["caas_backend_purchases[('state', 'ESCALATED')]"] == 0
    assert got["caas_backend_payments[('method', 'card'), ('state', 'CHARGED')]"] == 3
    assert got["caas_backend_tickets[('status', 'OPEN')]"] == 0
    assert "caas_backend_event_consumer_lag[]" not in got  # no Redis: not known


async def test_gateway_client_reports_whether_the_gateway_answers() -> None:
    """Up after an answer (a 4xx too), down after a connection error or a 5xx."""
    answers = iter([httpx.Response(404), httpx.Response(503), None])

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if answer is None:
            raise httpx.ConnectError("refused", request=request)
        return answer

    seen: list[bool] = []
    client = HttpGatewayClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://gw"),
        on_health=seen.append,
    )
    assert await client.get_activation("a1") is None
    for _ in range(2):
        with pytest.raises(GatewayError):
            await client.get_activation("a1")
    await client.aclose()
    assert seen == [True, False, False]
