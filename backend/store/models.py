"""The system of record (SQLAlchemy 2 typed ORM). Money in integer cents (EUR).

Times are float epoch seconds (the injected clock's unit); they become RFC 3339 only at
the API edge. The money rules are structural where SQL can hold them:
one money operation of each kind per payment (so one capture), unique provider
idempotency keys, unique purchase idempotency keys per customer, unique inbox
``event_id``, unique ``activation_id`` per purchase.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, str: String(255)}


ID = String(36)


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (Index("ix_customers_created_at_id", "created_at", "id"),)  # pages
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str]
    email: Mapped[str]
    phone: Mapped[str | None]
    has_app: Mapped[bool] = mapped_column(Boolean, default=False)
    # card: a hold, captured once the feature is on | direct_debit: charged at once,
    # refunded if the activation fails (domain/states.py PaymentMethod)
    payment_method: Mapped[str] = mapped_column(String(16), default="card")
    created_at: Mapped[float] = mapped_column(Float)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))  # customer | ops
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"))
    name: Mapped[str | None] = mapped_column(String(64))  # the operator's; customers: NULL
    created_at: Mapped[float] = mapped_column(Float)


class Vehicle(Base):
    __tablename__ = "vehicles"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    model: Mapped[str]
    firmware: Mapped[str | None] = mapped_column(String(32))  # from the fleet manifest
    created_at: Mapped[float] = mapped_column(Float)
    stolen_at: Mapped[float | None] = mapped_column(Float)  # theft report (issue 5)
    warranty_notified_at: Mapped[float | None] = mapped_column(Float)  # maintenance overdue


class Service(Base):
    __tablename__ = "services"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str]
    description: Mapped[str] = mapped_column(Text)
    base_platform: Mapped[bool] = mapped_column(Boolean, default=False)
    maintenance_linked: Mapped[bool] = mapped_column(Boolean, default=False)
    # post-cancellation policy (issue 5): a customer who cancelled it may not buy it again
    exclude_after_cancel: Mapped[bool] = mapped_column(Boolean, default=False)
    # {"applies_to": [{"model", "firmware": [...] | null}], "seeded": [...]}: who may buy
    # it (empty: nobody), and the catalog file's rules as last seeded (store/catalog.py)
    models: Mapped[dict[str, Any]]


class CatalogState(Base):
    """One row: the catalog's version, bumped by every change to the services, their
    prices or rules, so that every process sees a change at its next read."""

    __tablename__ = "catalog_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[float] = mapped_column(Float)


class ServicePrice(Base):
    __tablename__ = "service_prices"
    __table_args__ = (UniqueConstraint("service_id", "model", "days"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"))
    model: Mapped[str] = mapped_column(String(16))  # temporary | permanent | subscription
    days: Mapped[int | None]
    price_cents: Mapped[int]


class Purchase(Base):
    __tablename__ = "purchases"
    __table_args__ = (Index("ix_purchases_created_at_id", "created_at", "id"),)  # pages
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"))
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"))
    duration_model: Mapped[str] = mapped_column(String(16))
    duration_days: Mapped[int | None]
    price_cents: Mapped[int]
    state: Mapped[str] = mapped_column(String(32), index=True)
    activation_id: Mapped[str] = mapped_column(ID, unique=True)
    activation_state: Mapped[str | None] = mapped_column(String(32))
    failure_category: Mapped[str | None] = mapped_column(String(64))
    start_at: Mapped[float] = mapped_column(Float)
    deadline_at: Mapped[float] = mapped_column(Float)
    activated_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # lifecycle after activation (issue 5)
    expires_at: Mapped[float | None] = mapped_column(Float)  # temporary: activated + days
    billable_from: Mapped[float | None] = mapped_column(Float)  # subscription billing start
    ends_at: Mapped[float | None] = mapped_column(Float)  # subscription: service end
    cancel_reason: Mapped[str | None] = mapped_column(String(32))
    cancelled_at: Mapped[float | None] = mapped_column(Float)
    deactivation_id: Mapped[str | None] = mapped_column(ID, unique=True)
    deactivation_state: Mapped[str | None] = mapped_column(String(16))
    support_activation_id: Mapped[str | None] = mapped_column(ID, unique=True)
    # the activation's outcome, set by the first terminal answer (the handbook's metrics)
    activation_outcome: Mapped[str | None] = mapped_column(String(16))  # succeeded | failed
    activation_attempts: Mapped[int | None]  # the gateway's attempts (None: unknown)
    activation_finished_at: Mapped[float | None] = mapped_column(Float, index=True)


class Payment(Base):
    __tablename__ = "payments"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    purchase_id: Mapped[str] = mapped_column(ForeignKey("purchases.id"), unique=True)
    amount_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    method: Mapped[str] = mapped_column(String(16), default="card")  # the customer's, then
    state: Mapped[str] = mapped_column(String(32), index=True)
    authorization_ref: Mapped[str | None] = mapped_column(String(64))
    captured_cents: Mapped[int] = mapped_column(Integer, default=0)
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0)
    settlement: Mapped[str] = mapped_column(String(16), default="NONE")
    settlement_seq: Mapped[int] = mapped_column(BigInteger, default=0)  # webhooks: < 2^53
    reconciled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class MoneyOp(Base):
    """A durable intent: written (REQUESTED) before the provider is called."""

    __tablename__ = "money_ops"
    __table_args__ = (UniqueConstraint("payment_id", "kind"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    amount_cents: Mapped[int]
    target_state: Mapped[str | None] = mapped_column(String(32))  # payment state on success
    state: Mapped[str] = mapped_column(String(16), index=True)
    provider_ref: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("customer_id", "key"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    purchase_id: Mapped[str | None] = mapped_column(ForeignKey("purchases.id"))
    created_at: Mapped[float] = mapped_column(Float)


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("activation_id", "kind"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    purchase_id: Mapped[str] = mapped_column(ForeignKey("purchases.id"))
    activation_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(32))  # activation.request
    payload: Mapped[dict[str, Any]]
    available_at: Mapped[float] = mapped_column(Float, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    dead: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class InboxEvent(Base):
    __tablename__ = "inbox"
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # gateway | provider
    type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))  # applied | ignored | stale
    received_at: Mapped[float] = mapped_column(Float)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_created_at_id", "created_at", "id"),)  # pages
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    purchase_id: Mapped[str | None] = mapped_column(ForeignKey("purchases.id"))
    kind: Mapped[str] = mapped_column(String(32))  # activation_failed | settlement_failed
    status: Mapped[str] = mapped_column(String(16))  # OPEN | RESOLVED
    details: Mapped[dict[str, Any]]  # diagnostics package + customer details
    created_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float)
    # manual_activation | permanent_failure: how it was resolved (also in details)
    resolution: Mapped[str | None] = mapped_column(String(32))
    resolved_by: Mapped[str | None] = mapped_column(String(64))  # the operator who acted


class OpsAction(Base):
    """The audit log: what a named operator did, written in the action's transaction."""

    __tablename__ = "ops_actions"
    __table_args__ = (Index("ix_ops_actions_at_id", "at", "id"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    operator: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))  # manual_activation | permanent_failure…
    target_type: Mapped[str] = mapped_column(String(16))  # ticket | service
    target_id: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]]


class Notification(Base):
    """The communication log: one row per message per channel. A dispatcher claims a
    QUEUED row before sending it by pushing ``next_attempt_at`` a lease ahead."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    purchase_id: Mapped[str | None] = mapped_column(ForeignKey("purchases.id"))
    template: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))  # email | push | sms
    address: Mapped[str]
    subject: Mapped[str]
    body: Mapped[str] = mapped_column(Text)
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # QUEUED | SENT | FAILED
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)  # due; claim lease end
    created_at: Mapped[float] = mapped_column(Float)
    sent_at: Mapped[float | None] = mapped_column(Float)


class TimelineEntry(Base):
    __tablename__ = "timeline"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    purchase_id: Mapped[str | None] = mapped_column(ForeignKey("purchases.id"))
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]]


class ScheduledJob(Base):
    """A durable timer: claimed and run in one transaction, so it runs once."""

    __tablename__ = "scheduled_jobs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)  # e.g. expire:<purchase>
    kind: Mapped[str] = mapped_column(String(32))
    purchase_id: Mapped[str | None] = mapped_column(ForeignKey("purchases.id"))
    due_at: Mapped[float] = mapped_column(Float, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # PENDING | DONE
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class SubscriptionCharge(Base):
    """One charge record per (subscription, month): unique in SQL, so a billing run
    that runs twice charges once. Its provider keys are fixed by its id."""

    __tablename__ = "subscription_charges"
    __table_args__ = (UniqueConstraint("purchase_id", "month"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    purchase_id: Mapped[str] = mapped_column(ForeignKey("purchases.id"), index=True)
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    days_billed: Mapped[int]
    days_in_month: Mapped[int]
    amount_cents: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), index=True)  # REQUESTED|CHARGED|FAILED
    authorization_ref: Mapped[str | None] = mapped_column(String(64))
    provider_ref: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)


class Lease(Base):
    """A named job only one backend process does at a time (``metrics``: exporting the
    gauges read from the database). Taken by a guarded UPDATE (``store/gauges.py``)."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
