// Failed and escalated activations: purchases by state (ESCALATED, FAILED_NO_CHARGE, …),
// service, vehicle model and failure category.

import { orNotAvailable } from "../api.js";
import { badge, h, humanize, money, time } from "../dom.js";
import { listPage, ORDER, suggest } from "./list.js";

const FAILURE_CATEGORIES = [
  "transient_connectivity",
  "vehicle_state",
  "configuration_conflict",
  "persistent_iot_failure",
  "timeout",
  "deadline_exceeded",
  "dispatch_rejected",
];

const STATES = [
  "ESCALATED",
  "FAILED_NO_CHARGE",
  "MANUALLY_ACTIVATED",
  "ACTIVE",
  "ACTIVATING",
  "ACTIVATION_QUEUED",
  "SCHEDULED",
  "PAYMENT_PENDING",
  "PAYMENT_FAILED",
  "BLOCKED_MAINTENANCE",
  "EXPIRED",
  "DEACTIVATED",
  "CANCELLED",
];

const same = (wanted, actual) => wanted === "" || wanted === actual;

const SPEC = {
  title: "Failed and escalated activations",
  what: "purchases",
  missing: "Listing purchases by state, service and model",
  intro:
    "Purchases whose activation failed (no charge) or ran out of time (escalated to support), by service and vehicle model.",
  path: "/v1/ops/purchases",
  filters: [
    {
      name: "state",
      label: "State",
      default: "ESCALATED",
      options: [...STATES.map((s) => [s, s]), ["", "Any state"]],
    },
    { name: "service_id", label: "Service", placeholder: "any service", suggest: true },
    { name: "model", label: "Vehicle model", placeholder: "any model", suggest: true },
    {
      name: "failure_category",
      label: "Failure category",
      options: [["", "Any category"], ...FAILURE_CATEGORIES.map((c) => [c, humanize(c)])],
    },
    ORDER,
  ],
  matches: (p, f) =>
    same(f.state, p.state) &&
    same(f.service_id, p.service_id) &&
    same(f.model, p.vehicle_model) &&
    same(f.failure_category, p.failure_category ?? ""),
  columns: [
    { label: "Bought", cell: (p) => time(p.created_at) },
    { label: "Customer", cell: (p) => h("a", { href: `#/customers/${p.customer_id}` }, "purchase file") },
    { label: "Model", cell: (p) => p.vehicle_model ?? "–" },
    { label: "Service", cell: (p) => p.service_id },
    { label: "State", cell: (p) => badge(p.state) },
    { label: "Failure", cell: (p) => p.failure_category ?? "–" },
    {
      label: "Payment",
      cell: (p) =>
        p.payment ? h("span", {}, badge(p.payment.state), ` ${money(p.payment.amount_cents)}`) : "–",
    },
    {
      label: "Tickets",
      cell: (p) => h("a", { href: `#/tickets?purchase_id=${p.id}&status=` }, "tickets"),
    },
  ],
  suggestions: async (form, api) => {
    const [rules, models] = await Promise.all([
      orNotAvailable(api.get("/v1/ops/catalog/rules"), []),
      orNotAvailable(api.get("/v1/ops/fleet/models"), []),
    ]);
    suggest(
      form,
      "service_id",
      rules.map((r) => r.service_id),
    );
    suggest(
      form,
      "model",
      models.map((m) => m.model),
    );
  },
};

export function purchasesPage(ctx) {
  return listPage(ctx, SPEC);
}
