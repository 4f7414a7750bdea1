// A filtered, paginated list page: the filters live in the hash (so a list can be
// bookmarked and Back works), the rows come a page at a time from a list route of the
// pagination contract (limit, cursor; X-Total-Count, X-Next-Cursor / Link rel="next").
//
// A backend from before that contract ignores limit, cursor, the filters and the order
// and sends every row without X-Total-Count: the page then filters and orders what it
// got itself (`spec.matches`), so the lists read the same on both.

import { NotAvailable } from "../api.js";
import { field, h, notice, replace, select, table, unavailable } from "../dom.js";
import { hashOf } from "./route.js";

const PAGE_SIZE = 25;
export const ORDER = {
  name: "order",
  label: "Order",
  default: "desc",
  options: [
    ["desc", "Newest first"],
    ["asc", "Oldest first"],
  ],
};

/** Each filter's value: the hash's, else the filter's default. */
function filterValues(filters, params) {
  return Object.fromEntries(
    filters.map((f) => [f.name, params.has(f.name) ? params.get(f.name) : (f.default ?? "")]),
  );
}

function control(filter, value) {
  if (filter.options) return select(filter.name, filter.options, value);
  return h("input", {
    type: filter.type || "text",
    name: filter.name,
    value,
    placeholder: filter.placeholder,
    list: filter.suggest ? `${filter.name}-suggestions` : null,
    autocomplete: "off",
    spellcheck: "false",
  });
}

/** The filter form; applying it starts again from the first page. */
function filterForm(ctx, spec, values) {
  const suggestions = spec.filters
    .filter((f) => f.suggest)
    .map((f) => h("datalist", { id: `${f.name}-suggestions` }));
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": `Filter: ${spec.title}` },
    spec.filters.map((f) => field(f.label, control(f, values[f.name]))),
    suggestions,
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Apply")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const next = {};
    for (const f of spec.filters) {
      const value = String(data.get(f.name) ?? "").trim();
      if (value || f.default) next[f.name] = value; // "" kept where it differs from the default
    }
    ctx.go(hashOf(ctx.path, next));
  });
  return form;
}

/** Offer `values` as suggestions for the text filter `name` (a <datalist>). */
export function suggest(form, name, values) {
  const list = form.querySelector(`#${name}-suggestions`);
  if (list)
    replace(
      list,
      [...new Set(values)].sort().map((v) => h("option", { value: v })),
    );
}

function apiQuery(spec, values, cursor) {
  const query = { limit: PAGE_SIZE, cursor };
  for (const [name, value] of Object.entries(values)) {
    if (value === "") continue;
    if (name === "order" && value !== "desc") continue; // oldest first is the default
    query[name] = value;
  }
  return query;
}

function pager(ctx, page, at, shown) {
  const here = new URLSearchParams(ctx.params);
  here.delete("cursor");
  here.delete("at");
  const links = [];
  if (at > 0) {
    links.push(h("a", { href: hashOf(ctx.path, here) }, "First page"));
    links.push(h("button", { type: "button", on: { click: () => history.back() } }, "Previous page"));
  }
  if (page.next) {
    here.set("cursor", page.next);
    here.set("at", String(at + shown));
    links.push(h("a", { href: hashOf(ctx.path, here), rel: "next" }, "Next page"));
  }
  return links.length ? h("nav", { class: "pager", "aria-label": "Pages" }, links) : null;
}

/** Fetch the page the hash names and show it in `where`. */
async function showList(ctx, spec, values, where) {
  const cursor = ctx.params.get("cursor");
  const at = Number(ctx.params.get("at") || 0);
  let page;
  try {
    page = await ctx.api.list(spec.path, apiQuery(spec, values, cursor));
  } catch (error) {
    if (error instanceof NotAvailable) return replace(where, unavailable(spec.missing, `GET ${spec.path}`));
    throw error;
  }
  if (!ctx.alive()) return null;
  let { rows, total } = page;
  if (!page.paginated) {
    rows = rows.filter((row) => spec.matches(row, values));
    if (values.order === "desc") rows = rows.slice().reverse();
    total = rows.length;
  }
  const counted = rows.length
    ? `Showing ${at + 1}–${at + rows.length} of ${total}.`
    : `No ${spec.what} match these filters.`;
  replace(
    where,
    h("p", { class: "help", role: "status", dataset: { total: String(total) } }, counted),
    rows.length ? table({ columns: spec.columns, rows, attrs: { "aria-label": spec.title } }) : null,
    pager(ctx, page, at, rows.length),
  );
  return rows;
}

/** The usual list page: heading, intro, filters, rows. */
export async function listPage(ctx, spec) {
  const values = filterValues(spec.filters, ctx.params);
  const results = h("div", { "aria-live": "polite" }, h("p", {}, "Loading…"));
  const form = filterForm(ctx, spec, values);
  replace(
    ctx.main,
    h("h1", {}, spec.title),
    spec.intro ? h("p", { class: "help" }, spec.intro) : null,
    form,
    results,
  );
  ctx.title(spec.title);
  if (spec.suggestions) spec.suggestions(form, ctx.api).catch(() => {}); // a hint only
  try {
    await showList(ctx, spec, values, results);
  } catch (error) {
    if (!ctx.handle(error)) replace(results, notice("error", error.message));
  }
}
