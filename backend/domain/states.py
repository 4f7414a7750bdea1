"""Purchase and payment states, exactly as SPEC §5, and which of them are terminal."""

from __future__ import annotations

from enum import StrEnum


class PaymentState(StrEnum):
    INITIATED = "INITIATED"  # row written, authorization not yet asked
    PENDING = "PENDING"  # authorization asked, outcome unknown (provider timeout)
    HELD_FOR_ACTIVATION = "HELD_FOR_ACTIVATION"  # hold placed, nothing captured
    CHARGED = "CHARGED"  # captured after a confirmed activation
    CANCELLED = "CANCELLED"  # hold released at the customer's request (no charge)
    REFUNDED = "REFUNDED"  # captured, then refunded in full (withdrawal)
    FAILED_NO_CHARGE = "FAILED_NO_CHARGE"  # declined or activation failed: nothing kept


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


class OpKind(StrEnum):
    AUTHORIZE = "authorize"
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
