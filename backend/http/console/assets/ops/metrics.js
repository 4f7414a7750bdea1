// Metrics: the handbook's six metrics against their alert thresholds over a chosen window
// (GET /v1/ops/metrics/summary?window=…), the counts by state, and the failure
// breakdowns as charts.

import { barChart, columnChart } from "../charts.js";
import { duration, facts, h, percent, replace, unavailable, when } from "../dom.js";
import { hashOf } from "./route.js";

const WINDOWS = [
  ["1h", "Last hour"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
  ["", "All time"],
];
const DEFAULT_WINDOW = "24h";

function formatValue(unit, value) {
  if (value === null || value === undefined) return "no data";
  if (unit === "ratio") return percent(value);
  if (unit === "seconds") return duration(value);
  if (unit === "attempts") return Number(value).toFixed(2);
  return String(value);
}

function statusOf(metric) {
  if (metric.value === null || metric.value === undefined) return ["", "No data"];
  return metric.alerting ? ["bad", "Alert"] : ["good", "OK"];
}

function metricCard(metric) {
  const [tone, word] = statusOf(metric);
  const samples =
    metric.samples === null || metric.samples === undefined ? "" : ` · ${metric.samples} samples`;
  return h(
    "article",
    { class: `metric ${tone}`, dataset: { key: metric.key, alerting: String(Boolean(metric.alerting)) } },
    h("h3", {}, metric.name),
    h("p", { class: "value" }, formatValue(metric.unit, metric.value)),
    h("p", {}, h("span", { class: `badge ${tone}` }, word)),
    h(
      "p",
      { class: "help" },
      `Alert ${metric.alert_when} ${formatValue(metric.unit, metric.threshold)}${samples}`,
    ),
  );
}

/** The six metrics; a backend from before them has the failure rate alone. */
function handbookOf(summary) {
  if (Array.isArray(summary.handbook)) return summary.handbook;
  const rate = summary.activation_failure_rate;
  if (!rate) return [];
  return [
    {
      key: "activation_failure_rate",
      name: "Activation failure rate",
      unit: "ratio",
      value: rate.value,
      threshold: rate.alert_above,
      alert_when: "above",
      alerting: rate.alerting,
      samples: null,
    },
  ];
}

function windowNav(current) {
  return h(
    "nav",
    { "aria-label": "Time window" },
    h(
      "ul",
      { class: "windows" },
      WINDOWS.map(([value, label]) =>
        h(
          "li",
          {},
          h(
            "a",
            {
              href: hashOf("/metrics", { window: value }),
              "aria-current": value === current ? "page" : null,
            },
            label,
          ),
        ),
      ),
    ),
  );
}

function windowText(summary, current) {
  const w = summary.window;
  if (!w) return current ? "This backend reports all time only." : "All time.";
  return w.from ? `From ${when(w.from)} to ${when(w.to)}.` : `All time, up to ${when(w.to)}.`;
}

function countRows(byState) {
  return Object.entries(byState || {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([state, count]) => ({ label: state, value: count, text: String(count) }));
}

function rateRows(groups) {
  return groups.map((g) => ({
    label: g.key,
    value: g.rate ?? 0,
    text:
      g.rate === null || g.rate === undefined
        ? `no finished activations`
        : `${percent(g.rate)} (${g.count} of ${g.total})`,
    tone: "bad",
  }));
}

function breakdownSection(breakdowns) {
  if (!breakdowns)
    return unavailable(
      "The failure breakdowns (by reason, model, service, hour; success by attempt)",
      "breakdowns",
    );
  const support = breakdowns.support_resolution || {};
  return [
    barChart({
      title: "Failures by reason",
      rows: (breakdowns.failures_by_reason || []).map((g) => ({
        label: g.key,
        value: g.count,
        text: String(g.count),
        tone: "bad",
      })),
      empty: "No failures in this window.",
    }),
    barChart({ title: "Failure rate by vehicle model", rows: rateRows(breakdowns.failures_by_model || []) }),
    barChart({ title: "Failure rate by service", rows: rateRows(breakdowns.failures_by_service || []) }),
    columnChart({
      title: "Failures by hour of day (UTC)",
      rows: (breakdowns.failures_by_hour || []).map((g) => ({
        label: g.key,
        value: g.count,
        text: `${g.count} of ${g.total}`,
        tone: "bad",
      })),
    }),
    barChart({
      title: "Successes by attempt number",
      rows: (breakdowns.successes_by_attempt || []).map((g) => ({
        label: `attempt ${g.key}`,
        value: g.count,
        text: `${g.count} (${percent(g.rate)})`,
      })),
      empty: "No successes in this window.",
    }),
    h("h3", {}, "Support resolution"),
    facts([
      ["Open", String(support.open ?? "–")],
      ["Resolved", String(support.resolved ?? "–")],
      ["Mean time to resolve", duration(support.mean_s)],
      ["Median (p50)", duration(support.p50_s)],
      ["p95", duration(support.p95_s)],
    ]),
  ];
}

export async function metricsPage(ctx) {
  const current = ctx.params.has("window") ? ctx.params.get("window") : DEFAULT_WINDOW;
  ctx.title("Metrics");
  replace(ctx.main, h("h1", {}, "Metrics"), windowNav(current), h("p", {}, "Loading…"));
  const summary = await ctx.api.get("/v1/ops/metrics/summary", { window: current });
  if (!ctx.alive()) return;
  const handbook = handbookOf(summary);
  const alerting = handbook.filter((m) => m.alerting).length;
  replace(
    ctx.main,
    h("h1", {}, "Metrics"),
    windowNav(current),
    h("p", { class: "help", id: "window-text" }, windowText(summary, current)),
    h(
      "section",
      { "aria-labelledby": "m-handbook" },
      h("h2", { id: "m-handbook" }, `Handbook metrics (${alerting} alerting)`),
      h("div", { class: "cards", id: "handbook" }, handbook.map(metricCard)),
      Array.isArray(summary.handbook)
        ? null
        : unavailable(
            "Five of the six handbook metrics (first-attempt success, attempts to success, payment to activation, permanent failures, customer impact)",
            "handbook",
          ),
    ),
    h(
      "section",
      { "aria-labelledby": "m-support" },
      h("h2", { id: "m-support" }, "Tickets and states"),
      facts([
        ["Open tickets", h("span", { dataset: { metric: "open_tickets" } }, String(summary.open_tickets))],
        [
          "Resolved tickets",
          h("span", { dataset: { metric: "tickets_resolved" } }, String(summary.tickets_resolved)),
        ],
        ["Mean time to resolve", duration(summary.ticket_mean_resolution_s)],
      ]),
      barChart({ title: "Purchases by state", rows: countRows(summary.purchases_by_state) }),
      barChart({ title: "Payments by state", rows: countRows(summary.payments_by_state) }),
    ),
    h(
      "section",
      { "aria-labelledby": "m-breakdowns" },
      h("h2", { id: "m-breakdowns" }, "Failure analysis"),
      breakdownSection(summary.breakdowns),
    ),
  );
}
