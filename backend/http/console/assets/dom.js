// Building the page: elements from plain values (text is always text: nothing the API
// or a vehicle says is ever parsed as HTML), formats for money, times and durations,
// and the few pieces every page repeats (state badges, fact lists, tables, notices).

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** `h("a", {href: "#/x", class: "y"}, "text", child)`: an HTML element. */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** The same for SVG elements. */
export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

// ------------------------------------------------------------------ formats

export function money(cents, currency = "EUR") {
  if (cents === null || cents === undefined) return "–";
  return `${(cents / 100).toFixed(2)} ${currency}`;
}

/** "2026-11-03 10:15:00 UTC" from RFC 3339: one zone for everyone reading a ticket
 * (`{ms: true}`: "10:15:00.123", for events a few milliseconds apart). */
export function when(iso, { ms = false } = {}) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${date
    .toISOString()
    .slice(0, ms ? 23 : 19)
    .replace("T", " ")} UTC`;
}

export function time(iso) {
  return iso ? h("time", { datetime: iso }, when(iso)) : "–";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(Number(seconds));
  if (s < 60) return `${s} s`;
  const [big, bigUnit, small, smallUnit] =
    s < 3600
      ? [Math.floor(s / 60), "min", s % 60, "s"]
      : s < 86400
        ? [Math.floor(s / 3600), "h", Math.floor((s % 3600) / 60), "min"]
        : [Math.floor(s / 86400), "d", Math.floor((s % 86400) / 3600), "h"];
  return small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`;
}

/** 0.05 → "5 %", 0.0333 → "3.33 %", 0.667 → "66.7 %". */
export function percent(ratio) {
  if (ratio === null || ratio === undefined) return "–";
  const value = ratio * 100;
  return `${Number(value.toFixed(Math.abs(value) < 10 ? 2 : 1))} %`;
}

/** "power_boost_50" → "Power boost 50". */
export function humanize(code) {
  if (!code) return "–";
  const words = String(code).replace(/[_.]+/g, " ").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// ------------------------------------------------------------------ pieces

const TONES = {
  good: ["ACTIVE", "MANUALLY_ACTIVATED", "CHARGED", "SUCCEEDED", "RESOLVED", "SENT", "SETTLED", "SUCCESS"],
  bad: ["FAILED_NO_CHARGE", "ESCALATED", "PAYMENT_FAILED", "FAILED", "FAILED_ESCALATE", "DEAD"],
  warn: ["OPEN", "BLOCKED_MAINTENANCE", "FAILED_RETRY", "REFUNDED", "CANCELLED"],
  wait: [
    "PAYMENT_PENDING",
    "ACTIVATION_QUEUED",
    "ACTIVATING",
    "SCHEDULED",
    "HELD_FOR_ACTIVATION",
    "PENDING",
    "INITIATED",
    "QUEUED",
    "REQUESTED",
  ],
};

function toneOf(state) {
  for (const [tone, states] of Object.entries(TONES)) if (states.includes(state)) return tone;
  return "";
}

/** A state as a badge: the code itself (what operators search for), toned by meaning. */
export function badge(state, text) {
  if (!state) return h("span", { class: "badge" }, "–");
  return h("span", { class: `badge ${toneOf(state)}`, dataset: { state } }, text || state);
}

/** A definition list from [label, value] pairs; pairs whose value is null are left out. */
export function facts(pairs, attrs = {}) {
  const list = h("dl", { class: "facts", ...attrs });
  for (const [label, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    list.append(h("dt", {}, label), h("dd", {}, value));
  }
  return list;
}

/** A table; on a phone each row becomes a card of "label value" lines (console.css). */
export function table({ caption, columns, rows, empty = "Nothing to show.", attrs = {} }) {
  if (!rows.length) return h("p", { class: "help" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs,
      caption ? h("caption", {}, caption) : null,
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          columns.map((c) => h("th", { scope: "col" }, c.label)),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            {},
            columns.map((c) => h("td", { "data-label": c.label }, c.cell(row))),
          ),
        ),
      ),
    ),
  );
}

export function notice(kind, ...children) {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : null }, children);
}

/** A part of the API this backend does not have (yet): say so instead of failing. */
export function unavailable(what, route = null) {
  return notice(
    "unavailable",
    h("strong", {}, "Not available: "),
    `${what} (`,
    route ? [h("code", {}, route), ": "] : null,
    "this backend does not offer it yet).",
  );
}

/** A labelled field: <label> + <input>/<select>, ids tied together. */
export function field(label, control) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

export function select(name, options, value) {
  return h(
    "select",
    { name },
    options.map(([optionValue, label]) =>
      h("option", { value: optionValue, selected: optionValue === (value || "") }, label),
    ),
  );
}

/** A modal question with Cancel / confirm; resolves true only on confirm. */
export function confirmDialog({ title, body, confirm, tone = "primary" }) {
  return new Promise((resolve) => {
    const heading = h("h2", { id: "confirm-title" }, title);
    const dialog = h("dialog", { "aria-labelledby": "confirm-title" });
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    dialog.append(
      heading,
      h("div", {}, body),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", on: { click: () => close(false) } }, "Cancel"),
        h("button", { type: "button", class: tone, on: { click: () => close(true) } }, confirm),
      ),
    );
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      close(false);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Tell screen readers what just happened (the page's polite live region). */
export function announce(text) {
  const region = document.getElementById("status");
  if (region) region.textContent = text;
}
