"""What the customer is told: the handbook's templates, and the channels each message
goes out on (e-mail always; app push when the customer has the app; SMS when critical).
Pure: the rows are written by ``store.records.queue_notice``, sent by the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

TEMPLATES: dict[str, tuple[str, str]] = {
    "activation_failed_initial": (
        "We could not activate {service}",
        "We could not activate {service} on your vehicle {vin}. You will NOT be charged: "
        "whatever was held or taken for it is given back. Our technical team is on it.",
    ),
    "ticket_created": (
        "Support ticket {ticket} opened",
        "We opened support ticket {ticket} for {service} on {vin}. Quote it in any "
        "contact with us; we will keep you informed.",
    ),
    "manual_resolution_success": (
        "{service} is now active",
        "Our technicians activated {service} on {vin} (ticket {ticket}). As promised, "
        "you will not be charged for it.",
    ),
    "permanent_failure": (
        "{service} cannot be activated",
        "We could not activate {service} on {vin} (ticket {ticket}). Any amount taken "
        "is given back in full. As an apology: {offer}.",
    ),
    "activation_success": (
        "{service} is active",
        "{service} is now active on your vehicle {vin}. {price}",
    ),
    "activation_success_not_charged": (
        "{service} is active",
        "{service} is now active on your vehicle {vin}. We could not collect the payment "
        "for it, and you will not be charged for it.",
    ),
    "maintenance_required": (
        "Complete your maintenance to buy {service}",
        "Your vehicle {vin} is overdue for maintenance, so {service} cannot be bought now. "
        "Your active services are untouched. Book a workshop: {workshop}",
    ),
    "expiry_notice": (
        "{service} ends on {date}",
        "{service} on your vehicle {vin} ends on {date}; it will be switched off then. "
        "You can buy it again at any time.",
    ),
    "service_deactivated": (
        "{service} has ended",
        "{service} on your vehicle {vin} has ended ({reason}) and is being switched off. "
        "You are not billed for anything after {date}.",
    ),
    "cancellation_confirmed": (
        "Cancellation of {service}",
        "We received your cancellation of {service} on {vin}: {outcome}",
    ),
    "subscription_payment_failed": (
        "Payment failed: {service} subscription cancelled",
        "We could not charge {amount} EUR for {service} ({month}) on {vin}. The "
        "subscription is cancelled and the service is being switched off.",
    ),
    "theft_report_received": (
        "Theft report for {vin} received",
        "We recorded the theft of {vin}. No refund is made automatically; you may cancel "
        "scheduled services and subscriptions ({cancellable}). Active services follow the "
        "normal withdrawal rules.",
    ),
    "warranty_loss": (
        "Maintenance overdue on {vin}: warranty and services",
        "Your vehicle {vin} is overdue for maintenance. The warranty is lost until it is "
        "done, and services that need current maintenance cannot be bought. Your active "
        "services and the base platform stay on. Book a workshop: {workshop}",
    ),
    "payment_declined": (
        "Payment declined for {service}",
        "Your payment for {service} on {vin} was declined; nothing was charged.",
    ),
}


@dataclass(frozen=True)
class Message:
    template: str
    subject: str
    body: str


def render(template: str, **ctx: object) -> Message:
    subject, body = TEMPLATES[template]
    values = {k: str(v) for k, v in ctx.items()}
    return Message(template, subject.format_map(values), body.format_map(values))


class Contact(Protocol):
    id: str
    email: str
    phone: str | None
    has_app: bool


def channels_for(customer: Contact, critical: bool) -> list[tuple[str, str]]:
    out = [("email", customer.email)]
    if customer.has_app:
        out.append(("push", f"app:{customer.id}"))
    if critical and customer.phone:
        out.append(("sms", customer.phone))
    return out
