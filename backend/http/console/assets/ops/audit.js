// The audit log: every operator action (manual activation, permanent failure, catalog
// rules updated), by whom and when.

import { h, humanize, time } from "../dom.js";
import { listPage, ORDER } from "./list.js";

const ACTIONS = ["manual_activation", "permanent_failure", "catalog_rules_updated"];
const same = (wanted, actual) => wanted === "" || wanted === actual;

function target(entry) {
  const id = entry.target_id;
  if (!id) return "–";
  if (entry.target_type === "ticket") return h("a", { href: `#/tickets/${id}` }, `ticket ${id}`);
  if (entry.target_type === "service" || entry.target_type === "catalog") {
    return h("a", { href: `#/catalog?service=${encodeURIComponent(id)}` }, `catalog rules of ${id}`);
  }
  if (entry.target_type === "purchase")
    return h("a", { href: `#/tickets?purchase_id=${id}&status=` }, `purchase ${id}`);
  return `${entry.target_type} ${id}`;
}

function detail(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "object") return String(value);
  return h(
    "ul",
    { class: "lines" },
    Object.entries(value).map(([k, v]) =>
      h("li", {}, `${humanize(k)}: ${typeof v === "object" ? JSON.stringify(v) : v}`),
    ),
  );
}

const SPEC = {
  title: "Audit log",
  what: "audit entries",
  missing: "The audit log",
  intro: "Every operator action, attributed to the operator who took it.",
  path: "/v1/ops/audit",
  filters: [
    { name: "operator", label: "Operator", placeholder: "any operator" },
    {
      name: "action",
      label: "Action",
      options: [["", "Any action"], ...ACTIONS.map((a) => [a, humanize(a)])],
    },
    ORDER,
  ],
  matches: (e, f) => same(f.operator, e.operator) && same(f.action, e.action),
  columns: [
    { label: "When", cell: (e) => time(e.at) },
    { label: "Operator", cell: (e) => e.operator ?? "–" },
    { label: "Action", cell: (e) => humanize(e.action) },
    { label: "Target", cell: target },
    { label: "Detail", cell: (e) => detail(e.detail) },
  ],
};

export function auditPage(ctx) {
  return listPage(ctx, SPEC);
}
