// One ticket: who and what it is about (customer, vehicle, purchase and payment as they
// are now), the actions support may take on a failed activation, and the diagnostics
// package as a timeline.

import { ApiError, NotAvailable } from "../api.js";
import {
  announce,
  badge,
  confirmDialog,
  duration,
  facts,
  h,
  humanize,
  money,
  notice,
  replace,
  time,
} from "../dom.js";
import { categoryText, packageOf, renderDiagnostics } from "./diagnostics.js";

// the tickets support may resolve by activating by hand (backend/services/support.py)
const ACTIVATION_TICKETS = ["activation_failed", "activation_deadline", "dispatch_rejected"];
const NOT_ACTIVATED = ["FAILED_NO_CHARGE", "ESCALATED"];
const POLL_EVERY_MS = 1000;
const POLL_FOR_MS = 60000;
const KNOWN_DETAILS = ["customer", "vehicle", "purchase", "diagnostics", "resolution", "resolution_s"];

async function loadTicket(api, id) {
  try {
    return await api.get(`/v1/ops/tickets/${encodeURIComponent(id)}`);
  } catch (error) {
    if (!(error instanceof NotAvailable)) throw error;
    // a backend without the detail route lists every ticket at once
    const page = await api.list("/v1/ops/tickets", { limit: 500 });
    const found = page.rows.find((t) => t.id === id);
    if (!found) throw new ApiError(404, "not_found", "ticket not found");
    return found;
  }
}

function failureOf(ticket, purchase) {
  return (
    purchase?.failure_category ||
    ticket.details?.purchase?.failure_category ||
    packageOf(ticket.details)?.failure_category ||
    null
  );
}

function paymentFacts(payment) {
  if (!payment) return "no payment";
  return h(
    "span",
    { id: "payment-state" },
    badge(payment.state),
    ` ${humanize(payment.method)} · ${money(payment.amount_cents)} · taken ${money(payment.captured_cents)} · refunded ${money(payment.refunded_cents)}`,
  );
}

function whoSection(ticket, purchase) {
  const d = ticket.details || {};
  const pkg = packageOf(d) || {};
  const customer = d.customer || {};
  const vehicle = d.vehicle || {};
  return h(
    "section",
    { "aria-labelledby": "t-who" },
    h("h2", { id: "t-who" }, "Customer and purchase"),
    h(
      "div",
      { class: "columns" },
      h(
        "div",
        {},
        h("h3", {}, "Customer"),
        facts([
          [
            "Name",
            h("a", { href: `#/customers/${ticket.customer_id}` }, customer.name || ticket.customer_id),
          ],
          ["E-mail", customer.email],
          ["Phone", customer.phone],
        ]),
        h("h3", {}, "Vehicle"),
        facts([
          ["Model", vehicle.model],
          ["VIN", vehicle.vin ? h("code", {}, vehicle.vin) : null],
          ["Firmware", pkg.firmware],
        ]),
      ),
      h(
        "div",
        {},
        h("h3", {}, "Purchase"),
        purchase
          ? facts([
              ["Service", h("code", {}, purchase.service_id)],
              ["State", h("span", { id: "purchase-state" }, badge(purchase.state))],
              ["Payment", paymentFacts(purchase.payment)],
              ["Price", money(purchase.price_cents, purchase.currency)],
              ["Failure", failureOf(ticket, purchase)],
              ["Bought", time(purchase.created_at)],
              ["Activated", purchase.activated_at ? time(purchase.activated_at) : null],
              ["Activation id", h("code", {}, purchase.activation_id)],
            ])
          : h("p", { class: "help" }, "This ticket is not about a purchase."),
      ),
    ),
  );
}

function ticketFacts(ticket) {
  const resolution = ticket.resolution ?? ticket.details?.resolution;
  return facts([
    ["Kind", humanize(ticket.kind)],
    ["Opened", time(ticket.created_at)],
    [
      "Resolved",
      ticket.resolved_at
        ? h("span", {}, time(ticket.resolved_at), ` (after ${duration(ticket.resolution_s)})`)
        : null,
    ],
    ["Resolution", resolution ? humanize(resolution) : null],
    ["Resolved by", ticket.resolved_by],
  ]);
}

function whyNoAction(ticket, purchase) {
  if (ticket.status !== "OPEN") return `This ticket is ${ticket.status.toLowerCase()}.`;
  if (!ACTIVATION_TICKETS.includes(ticket.kind))
    return `A ${humanize(ticket.kind).toLowerCase()} ticket has no activation to act on.`;
  if (!purchase || !NOT_ACTIVATED.includes(purchase.state))
    return `The purchase is ${purchase?.state ?? "gone"}: there is nothing to activate.`;
  return null;
}

function catalogLink(ticket, purchase) {
  if (failureOf(ticket, purchase) !== "configuration_conflict") return null;
  const service = purchase?.service_id || ticket.details?.purchase?.service_id;
  return notice(
    "unavailable",
    "A configuration conflict: this vehicle's model or firmware cannot run ",
    h("code", {}, service),
    ". ",
    h(
      "a",
      { href: `#/catalog?service=${encodeURIComponent(service)}`, id: "update-catalog-rules" },
      `Update catalog rules for ${service}`,
    ),
    " so that it is no longer sold to such vehicles.",
  );
}

/** Ask the purchase again until `done(purchase)` or the time is up; the last answer. */
async function waitForPurchase(ctx, purchaseId, done, onProgress) {
  const started = Date.now();
  let purchase = await ctx.api.get(`/v1/purchases/${purchaseId}`);
  while (!done(purchase) && Date.now() - started < POLL_FOR_MS && ctx.alive()) {
    onProgress(purchase, Math.round((Date.now() - started) / 1000));
    await new Promise((resolve) => setTimeout(resolve, POLL_EVERY_MS));
    purchase = await ctx.api.get(`/v1/purchases/${purchaseId}`);
  }
  return purchase;
}

function resultLine(prefix, purchase) {
  return [
    prefix,
    " The purchase is now ",
    badge(purchase.state),
    purchase.payment ? [" and its payment ", badge(purchase.payment.state)] : null,
    ".",
  ];
}

async function activateManually(ctx, ticket, result) {
  const confirmed = await confirmDialog({
    title: "Activate manually?",
    body: h(
      "p",
      {},
      `The gateway is asked once more to activate ${ticket.details?.purchase?.service_id ?? "the feature"} on ${ticket.details?.vehicle?.vin ?? "the vehicle"}, under a new activation id. The customer is not charged for it.`,
    ),
    confirm: "Activate manually",
  });
  if (!confirmed) return;
  replace(result, notice("wait", "Asking the gateway to activate again…"));
  const answer = await ctx.api.post(`/v1/ops/tickets/${ticket.id}/manual-activation`);
  const asked = `Manual activation requested (activation ${answer.support_activation_id}).`;
  const purchase = await waitForPurchase(
    ctx,
    answer.purchase_id,
    (p) => !NOT_ACTIVATED.includes(p.state) && !["ACTIVATION_QUEUED", "ACTIVATING"].includes(p.state),
    (p, seconds) =>
      replace(
        result,
        notice(
          "wait",
          `${asked} Waiting for the vehicle to confirm… (${seconds} s; the purchase is ${p.state})`,
        ),
      ),
  );
  if (!ctx.alive()) return;
  let flash;
  if (purchase.state === "MANUALLY_ACTIVATED") {
    flash = notice("ok", ...resultLine(`${asked} The vehicle confirmed it.`, purchase));
  } else if (NOT_ACTIVATED.includes(purchase.state)) {
    const late = `${asked} Not confirmed within ${POLL_FOR_MS / 1000} s: the activation may still be running at the gateway (reload this ticket later).`;
    flash = notice("wait", ...resultLine(late, purchase));
  } else {
    flash = notice("error", ...resultLine(`${asked} The purchase moved on without it.`, purchase));
  }
  announce(`Purchase ${purchase.state}`);
  await ticketPage(ctx, flash);
}

async function closeAsPermanentFailure(ctx, ticket, result) {
  const confirmed = await confirmDialog({
    title: "Close as a permanent failure?",
    body: [
      h(
        "p",
        {},
        "The ticket is closed for good: whatever is still held or kept for this purchase goes back to the customer, who is told so and offered an alternative (the apology offer).",
      ),
      h("p", {}, "This cannot be undone."),
    ],
    confirm: "Close as permanent failure",
    tone: "danger",
  });
  if (!confirmed) return;
  replace(result, notice("wait", "Closing the ticket…"));
  const answer = await ctx.api.post(`/v1/ops/tickets/${ticket.id}/permanent-failure`);
  const purchase = await ctx.api.get(`/v1/purchases/${answer.purchase_id}`);
  if (!ctx.alive()) return;
  const flash = notice(
    "ok",
    ...resultLine(
      `Closed as a permanent failure after ${duration(answer.resolution_s)}. Offered to the customer: ${answer.offer}.`,
      purchase,
    ),
  );
  announce("Ticket closed as a permanent failure");
  await ticketPage(ctx, flash);
}

function actionsSection(ctx, ticket, purchase, flash) {
  const result = h("div", { id: "action-result", "aria-live": "polite" }, flash);
  const why = whyNoAction(ticket, purchase);
  let buttons = null;
  if (!why) {
    const run = (action) => async () => {
      for (const b of buttons.querySelectorAll("button")) b.disabled = true;
      try {
        await action(ctx, ticket, result);
      } catch (error) {
        if (!ctx.handle(error)) replace(result, notice("error", `The action failed: ${error.message}`));
      } finally {
        for (const b of buttons.querySelectorAll("button")) b.disabled = false;
      }
    };
    buttons = h(
      "div",
      { class: "actions" },
      h(
        "button",
        { type: "button", class: "primary", id: "activate-manually", on: { click: run(activateManually) } },
        "Activate manually",
      ),
      h(
        "button",
        {
          type: "button",
          class: "danger",
          id: "permanent-failure",
          on: { click: run(closeAsPermanentFailure) },
        },
        "Close as permanent failure (offer alternative)",
      ),
    );
  }
  return h(
    "section",
    { "aria-labelledby": "t-actions" },
    h("h2", { id: "t-actions" }, "Actions"),
    result,
    why ? h("p", { class: "help" }, why) : buttons,
    catalogLink(ticket, purchase),
  );
}

function otherDetails(details) {
  const extra = Object.entries(details || {}).filter(([key]) => !KNOWN_DETAILS.includes(key));
  if (!extra.length) return null;
  return h(
    "section",
    { "aria-labelledby": "t-other" },
    h("h2", { id: "t-other" }, "Other details"),
    facts(
      extra.map(([k, v]) => [
        humanize(k),
        typeof v === "object" ? h("code", {}, JSON.stringify(v)) : String(v),
      ]),
    ),
  );
}

export async function ticketPage(ctx, flash = null) {
  const [id] = ctx.match;
  if (!flash) {
    ctx.title("Ticket");
    replace(ctx.main, h("h1", {}, "Ticket"), h("p", {}, "Loading…"));
  }
  let ticket;
  try {
    ticket = await loadTicket(ctx.api, id);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
    replace(ctx.main, h("h1", {}, "Ticket"), notice("error", "There is no such ticket."));
    return;
  }
  const purchase = ticket.purchase_id ? await ctx.api.get(`/v1/purchases/${ticket.purchase_id}`) : null;
  if (!ctx.alive()) return;
  ctx.title(`Ticket ${ticket.number}`);
  replace(
    ctx.main,
    h("p", {}, h("a", { href: "#/tickets" }, "All tickets")),
    h("h1", {}, `Ticket ${ticket.number} `, h("span", { id: "ticket-status" }, badge(ticket.status))),
    ticketFacts(ticket),
    failureOf(ticket, purchase) ? h("p", {}, categoryText(failureOf(ticket, purchase))) : null,
    actionsSection(ctx, ticket, purchase, flash),
    whoSection(ticket, purchase),
    h(
      "section",
      { "aria-labelledby": "t-diagnostics" },
      h("h2", { id: "t-diagnostics" }, "Diagnostics"),
      renderDiagnostics(ticket.details),
    ),
    otherDetails(ticket.details),
  );
}
