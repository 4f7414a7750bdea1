"""Purchase and payment states, exactly as docs/spec.md §5, and which of them are terminal."""

from __future__ import annotations

from enum import StrEnum


class PaymentState(StrEnum):
    """The payment as the handbook names it. Whether the customer ends up paying is the
    purchase's outcome beside it (``FAILED_NO_CHARGE`` or active)."""

    INITIATED = "INITIATED"  # row written, authorization (or charge) not yet asked
    PENDING = "PENDING"  # asked, outcome unknown (provider timeout): retried, same key
    # card: the hold is placed, nothing captured; direct debit: the money is taken and
    # held for the activation (refunded if it fails)
    HELD_FOR_ACTIVATION = "HELD_FOR_ACTIVATION"
    CHARGED = "CHARGED"  # kept after a confirmed activation (captured, or taken at once)
    CANCELLED = "CANCELLED"  # the hold released before anything was taken: no charge
    REFUNDED = "REFUNDED"  # taken, then given back in full (failure after settlement,
    # withdrawal)
    FAILED_NO_CHARGE = "FAILED_NO_CHARGE"  # nothing was ever held (declined), or a
    # capture the provider refused (the feature stays on at CaaS's cost)


class PurchaseState(StrEnum):
    PAYMENT_PENDING = "PAYMENT_PENDING"
    ACTIVATION_QUEUED = "ACTIVATION_QUEUED"
    ACTIVATING = "ACTIVATING"
    ACTIVE = "ACTIVE"
    FAILED_NO_CHARGE = "FAILED_NO_CHARGE"
    ESCALATED = "ESCALATED"
    MANUALLY_ACTIVATED = "MANUALLY_ACTIVATED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    DEACTIVATED = "DEACTIVATED"
    BLOCKED_MAINTENANCE = "BLOCKED_MAINTENANCE"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    SCHEDULED = "SCHEDULED"


# states in which the activation phase is still running (the deadline applies)
IN_FLIGHT = frozenset(
    {
        PurchaseState.PAYMENT_PENDING,
        PurchaseState.ACTIVATION_QUEUED,
        PurchaseState.ACTIVATING,
        PurchaseState.SCHEDULED,
    }
)
# purchase states in which the feature is (or was) confirmed switched on
CONFIRMED_ACTIVE = frozenset(
    {
        PurchaseState.ACTIVE,
        PurchaseState.MANUALLY_ACTIVATED,
        PurchaseState.EXPIRED,
        PurchaseState.DEACTIVATED,
        PurchaseState.CANCELLED,
    }
)
HOLD_OPEN = frozenset({PaymentState.HELD_FOR_ACTIVATION, PaymentState.PENDING})
# why a customer ended a purchase (a cancellation that excludes the service after it)
CUSTOMER_REASONS = ("customer_withdrawal", "customer_cancel", "customer_theft_cancel")
# a deactivation on its way to the vehicle: the feature may not be bought again yet
DEACTIVATION_PENDING = ("QUEUED", "SENT")


class ActivationOutcome(StrEnum):
    """How a purchase's activation ended: the gateway's first terminal answer (or the
    deadline's verdict), recorded once for the handbook's metrics."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PaymentMethod(StrEnum):
    CARD = "card"  # a hold at purchase, captured once the feature is on
    DIRECT_DEBIT = "direct_debit"  # charged at purchase, refunded if activation fails


class OpKind(StrEnum):
    AUTHORIZE = "authorize"
    CHARGE = "charge"  # direct debit: the money is taken at once (settles later)
    CAPTURE = "capture"
    CANCEL = "cancel"
    REFUND = "refund"


class OpState(StrEnum):
    REQUESTED = "REQUESTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class Settlement(StrEnum):
    NONE = "NONE"
    PENDING = "PENDING"
    SETTLED = "SETTLED"
    FAILED = "FAILED"
