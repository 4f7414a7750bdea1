// Tickets: open or resolved, by kind, customer or purchase; each row opens the ticket.

import { badge, h, humanize, time } from "../dom.js";
import { listPage, ORDER } from "./list.js";

const TICKET_KINDS = [
  "activation_failed",
  "activation_deadline",
  "dispatch_rejected",
  "capture_failed",
  "release_failed",
  "settlement_failed",
  "subscription_charge_failed",
  "deactivation_failed",
];

const same = (wanted, actual) => wanted === "" || wanted === actual;

const SPEC = {
  title: "Tickets",
  what: "tickets",
  missing: "Listing tickets",
  intro: "Support tickets: a failed activation carries the gateway's diagnostics package.",
  path: "/v1/ops/tickets",
  filters: [
    {
      name: "status",
      label: "Status",
      default: "OPEN",
      options: [
        ["OPEN", "Open"],
        ["RESOLVED", "Resolved"],
        ["", "Any status"],
      ],
    },
    {
      name: "kind",
      label: "Kind",
      options: [["", "Any kind"], ...TICKET_KINDS.map((k) => [k, humanize(k)])],
    },
    { name: "customer_id", label: "Customer id", placeholder: "any customer" },
    { name: "purchase_id", label: "Purchase id", placeholder: "any purchase" },
    ORDER,
  ],
  matches: (t, f) =>
    same(f.status, t.status) &&
    same(f.kind, t.kind) &&
    same(f.customer_id, t.customer_id) &&
    same(f.purchase_id, t.purchase_id ?? ""),
  columns: [
    {
      label: "Ticket",
      cell: (t) => h("a", { href: `#/tickets/${t.id}`, dataset: { ticket: t.id } }, t.number),
    },
    { label: "Opened", cell: (t) => time(t.created_at) },
    { label: "Kind", cell: (t) => humanize(t.kind) },
    {
      label: "Customer",
      cell: (t) => {
        const customer = t.details?.customer;
        return h("a", { href: `#/customers/${t.customer_id}` }, customer?.name || t.customer_id);
      },
    },
    {
      label: "Vehicle",
      cell: (t) => (t.details?.vehicle ? `${t.details.vehicle.model} · ${t.details.vehicle.vin}` : "–"),
    },
    { label: "Service", cell: (t) => t.details?.purchase?.service_id ?? "–" },
    { label: "Failure", cell: (t) => t.details?.purchase?.failure_category ?? "–" },
    {
      label: "Status",
      cell: (t) => {
        const resolution = t.resolution ?? t.details?.resolution;
        return h("span", {}, badge(t.status), resolution ? ` ${humanize(resolution)}` : null);
      },
    },
  ],
};

export function ticketsPage(ctx) {
  return listPage(ctx, SPEC);
}
