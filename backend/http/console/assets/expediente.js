// A customer's purchase file (expediente), as the customer reads it on /me/ and as an
// operator reads any customer's on /ops/ (same model, same sections; operators also see
// the codes and ids they search by).

import { badge, facts, h, humanize, money, table, time, when } from "./dom.js";

// What a purchase's state means for the person who paid for it.
const PURCHASE_WORDS = {
  PAYMENT_PENDING: "Waiting for the payment",
  ACTIVATION_QUEUED: "Payment held; activation queued",
  SCHEDULED: "Scheduled",
  ACTIVATING: "Activating on your vehicle",
  ACTIVE: "Active",
  MANUALLY_ACTIVATED: "Active (switched on by our support team)",
  FAILED_NO_CHARGE: "Could not be activated: you are not charged",
  ESCALATED: "Not activated in time: you are not charged; our support team is on it",
  PAYMENT_FAILED: "Payment declined",
  BLOCKED_MAINTENANCE: "Blocked: the vehicle's maintenance is overdue",
  EXPIRED: "Expired",
  DEACTIVATED: "Ended and switched off",
  CANCELLED: "Cancelled",
};

const PAYMENT_WORDS = {
  INITIATED: "Payment started",
  PENDING: "Waiting for the bank",
  HELD_FOR_ACTIVATION: "Held until the feature is on (not charged yet)",
  CHARGED: "Charged",
  CANCELLED: "Hold released: not charged",
  REFUNDED: "Refunded",
  FAILED_NO_CHARGE: "Not charged",
};

const METHOD_WORDS = { card: "Card", direct_debit: "Direct debit" };

function stateBadge(state, words, audience) {
  return audience === "ops" ? badge(state) : badge(state, words[state] || humanize(state));
}

function durationText(duration) {
  if (!duration) return "–";
  if (duration.model === "temporary") return duration.days === 1 ? "1 day" : `${duration.days} days`;
  if (duration.model === "subscription") return "Monthly subscription (billed in arrears)";
  return humanize(duration.model);
}

function paymentText(payment, audience) {
  if (!payment) return "–";
  const amounts = [`${money(payment.amount_cents)}`];
  if (payment.captured_cents) amounts.push(`taken ${money(payment.captured_cents)}`);
  if (payment.refunded_cents) amounts.push(`refunded ${money(payment.refunded_cents)}`);
  return h(
    "span",
    {},
    stateBadge(payment.state, PAYMENT_WORDS, audience),
    ` ${METHOD_WORDS[payment.method] || payment.method} · ${amounts.join(" · ")}`,
    audience === "ops" && payment.settlement !== "NONE" ? ` · settlement ${payment.settlement}` : null,
  );
}

function vehicleText(vehicles, vehicleId) {
  const vehicle = vehicles[vehicleId];
  return vehicle ? `${vehicle.model} · ${vehicle.vin}` : vehicleId;
}

function purchaseCard(purchase, ctx) {
  const ops = ctx.audience === "ops";
  return h(
    "article",
    { class: "card", dataset: { purchase: purchase.id, state: purchase.state } },
    h("h3", {}, humanize(purchase.service_id)),
    facts([
      ["State", stateBadge(purchase.state, PURCHASE_WORDS, ctx.audience)],
      ["Payment", paymentText(purchase.payment, ctx.audience)],
      ["Vehicle", vehicleText(ctx.vehicles, purchase.vehicle_id)],
      ["Duration", durationText(purchase.duration)],
      ["Price", money(purchase.price_cents, purchase.currency)],
      ["Bought", time(purchase.created_at)],
      ["Starts", purchase.start_at !== purchase.created_at ? time(purchase.start_at) : null],
      ["Activated", purchase.activated_at ? time(purchase.activated_at) : null],
      ["Expires", purchase.expires_at ? time(purchase.expires_at) : null],
      ["Ends", purchase.ends_at ? time(purchase.ends_at) : null],
      ["Cancelled because", purchase.cancel_reason ? humanize(purchase.cancel_reason) : null],
      ["Failure", ops ? purchase.failure_category : null],
      ["Service", ops ? h("code", {}, purchase.service_id) : null],
      ["Purchase id", ops ? h("code", {}, purchase.id) : null],
      ["Activation id", ops ? h("code", {}, purchase.activation_id) : null],
      [
        "Tickets",
        ops
          ? h("a", { href: `#/tickets?purchase_id=${purchase.id}&status=` }, "tickets of this purchase")
          : null,
      ],
    ]),
  );
}

function serviceOf(purchases, purchaseId) {
  const purchase = purchases.find((p) => p.id === purchaseId);
  return purchase ? humanize(purchase.service_id) : "–";
}

function moneyTable(rows, purchases, caption, empty) {
  return table({
    caption,
    rows,
    empty,
    columns: [
      { label: "Service", cell: (m) => serviceOf(purchases, m.purchase_id) },
      { label: "Amount", cell: (m) => money(m.amount_cents) },
      { label: "When", cell: (m) => time(m.at) },
      { label: "Reference", cell: (m) => (m.provider_ref ? h("code", {}, m.provider_ref) : "–") },
    ],
  });
}

function ticketNumber(ticket, ctx) {
  return ctx.audience === "ops" ? h("a", { href: `#/tickets/${ticket.id}` }, ticket.number) : ticket.number;
}

function ticketsTable(tickets, ctx) {
  return table({
    rows: tickets,
    empty: "No support tickets.",
    columns: [
      { label: "Ticket", cell: (t) => ticketNumber(t, ctx) },
      { label: "About", cell: (t) => `${humanize(t.kind)} · ${serviceOf(ctx.purchases, t.purchase_id)}` },
      { label: "Status", cell: (t) => badge(t.status) },
      { label: "Opened", cell: (t) => time(t.created_at) },
      { label: "Resolved", cell: (t) => (t.resolved_at ? time(t.resolved_at) : "–") },
    ],
  });
}

function notificationsTable(notifications, purchases) {
  return table({
    rows: notifications,
    empty: "No messages.",
    columns: [
      { label: "When", cell: (n) => time(n.created_at) },
      { label: "Channel", cell: (n) => humanize(n.channel) },
      {
        label: "Message",
        cell: (n) =>
          h(
            "details",
            {},
            h("summary", {}, n.subject, n.critical ? " (important)" : null),
            h("p", {}, n.body),
          ),
      },
      { label: "About", cell: (n) => (n.purchase_id ? serviceOf(purchases, n.purchase_id) : "–") },
      { label: "Status", cell: (n) => badge(n.status) },
    ],
  });
}

function detailValue(key, value) {
  if (key.endsWith("_cents") && typeof value === "number") return [humanize(key.slice(0, -6)), money(value)];
  return [humanize(key), typeof value === "object" ? JSON.stringify(value) : value];
}

function detailText(detail) {
  return Object.entries(detail || {})
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([key, value]) => detailValue(key, value).join(": "))
    .join(" · ");
}

function timelineList(entries, purchases) {
  if (!entries.length) return h("p", { class: "help" }, "Nothing has happened yet.");
  return h(
    "ol",
    { class: "timeline" },
    entries.map((e) =>
      h(
        "li",
        {},
        h("span", { class: "when" }, when(e.at)),
        h("span", { class: "what" }, humanize(e.kind)),
        e.purchase_id ? ` · ${serviceOf(purchases, e.purchase_id)}` : null,
        detailText(e.detail) ? h("div", { class: "help" }, detailText(e.detail)) : null,
      ),
    ),
  );
}

/** The file's sections under `level` headings. `vehicles`: id → {vin, model}, when known. */
export function renderExpediente(file, { audience = "customer", vehicles = {}, level = 2 } = {}) {
  const ctx = { audience, vehicles, purchases: file.purchases };
  const heading = (text, id) => h(`h${level}`, { id }, text);
  const subheading = (text) => h(`h${level + 1}`, {}, text);
  const purchases = file.purchases.length
    ? h(
        "div",
        { class: "cards" },
        file.purchases.map((p) => purchaseCard(p, ctx)),
      )
    : h("p", { class: "help" }, "No purchases yet.");
  return h(
    "div",
    { class: "expediente" },
    h(
      "section",
      { "aria-labelledby": "x-purchases" },
      heading(`Purchases (${file.purchases.length})`, "x-purchases"),
      purchases,
    ),
    h(
      "section",
      { "aria-labelledby": "x-money" },
      heading("Money", "x-money"),
      subheading("Charges"),
      moneyTable(file.charges, file.purchases, null, "Nothing charged."),
      subheading("Refunds"),
      moneyTable(file.refunds, file.purchases, null, "No refunds."),
      file.subscription_charges.length ? subheading("Subscription months") : null,
      file.subscription_charges.length
        ? table({
            rows: file.subscription_charges,
            columns: [
              { label: "Service", cell: (c) => serviceOf(file.purchases, c.purchase_id) },
              { label: "Month", cell: (c) => c.month },
              { label: "Days billed", cell: (c) => String(c.days_billed) },
              { label: "Amount", cell: (c) => money(c.amount_cents) },
              { label: "State", cell: (c) => badge(c.state) },
            ],
          })
        : null,
    ),
    h(
      "section",
      { "aria-labelledby": "x-tickets" },
      heading(`Support tickets (${file.tickets.length})`, "x-tickets"),
      ticketsTable(file.tickets, ctx),
    ),
    h(
      "section",
      { "aria-labelledby": "x-notifications" },
      heading(`Messages (${file.notifications.length})`, "x-notifications"),
      notificationsTable(file.notifications, file.purchases),
    ),
    h(
      "section",
      { "aria-labelledby": "x-timeline" },
      heading("Timeline", "x-timeline"),
      timelineList(file.timeline, file.purchases),
    ),
  );
}
