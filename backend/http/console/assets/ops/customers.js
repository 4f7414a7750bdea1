// Customers: search by name or e-mail; open anyone's purchase file, rendered as the
// customer reads it on /me/ (with the codes and ids operators work with).

import { NotAvailable } from "../api.js";
import { h, humanize, notice, replace, unavailable } from "../dom.js";
import { renderExpediente } from "../expediente.js";
import { listPage } from "./list.js";

const contains = (wanted, ...texts) =>
  wanted === "" ||
  texts.some((t) =>
    String(t ?? "")
      .toLowerCase()
      .includes(wanted.toLowerCase()),
  );

const SPEC = {
  title: "Customers",
  what: "customers",
  missing: "Customer search",
  intro: "Search by name or e-mail, then open the customer's purchase file.",
  path: "/v1/ops/customers",
  filters: [{ name: "q", label: "Name or e-mail", type: "search", placeholder: "e.g. alice" }],
  matches: (c, f) => contains(f.q, c.name, c.email),
  columns: [
    { label: "Name", cell: (c) => h("a", { href: `#/customers/${c.id}` }, c.name) },
    { label: "E-mail", cell: (c) => c.email },
    { label: "Pays by", cell: (c) => humanize(c.payment_method) },
    { label: "Vehicles", cell: (c) => String(c.vehicles) },
  ],
};

export function customersPage(ctx) {
  return listPage(ctx, SPEC);
}

/** Who the file belongs to: a ticket of theirs names them (the file itself does not). */
function ownerOf(file) {
  const named = file.tickets.find((t) => t.details?.customer?.name);
  return named ? named.details.customer : null;
}

export async function customerPage(ctx) {
  const [customerId] = ctx.match;
  ctx.title("Customer file");
  replace(ctx.main, h("h1", {}, "Customer file"), h("p", {}, "Loading…"));
  let file;
  try {
    file = await ctx.api.get(`/v1/ops/customers/${encodeURIComponent(customerId)}/expediente`);
  } catch (error) {
    if (!(error instanceof NotAvailable)) throw error;
    replace(
      ctx.main,
      h("h1", {}, "Customer file"),
      unavailable("Any customer's purchase file", "GET /v1/ops/customers/{id}/expediente"),
      h("p", {}, h("a", { href: `#/tickets?customer_id=${customerId}&status=` }, "This customer's tickets")),
    );
    return;
  }
  if (!ctx.alive()) return;
  const owner = ownerOf(file);
  replace(
    ctx.main,
    h("h1", {}, owner ? `Customer file: ${owner.name}` : "Customer file"),
    h(
      "p",
      { class: "help" },
      owner ? `${owner.email}${owner.phone ? ` · ${owner.phone}` : ""} · ` : null,
      "customer id ",
      h("code", {}, file.customer_id),
    ),
    file.purchases.length || file.tickets.length
      ? null
      : notice("unavailable", "This customer has bought nothing yet."),
    renderExpediente(file, { audience: "ops" }),
  );
}
