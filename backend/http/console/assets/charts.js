// Bar charts drawn as inline SVG (no chart library): horizontal bars for categories, columns
// for the hours of the day. Every chart has a text title for screen readers and its numbers
// in a table under "Data".

import { h, svg, table } from "./dom.js";

let charts = 0;

function figure(title, ...content) {
  return h("figure", { class: "chart" }, h("figcaption", {}, title), content);
}

function dataTable(rows) {
  return h(
    "details",
    {},
    h("summary", {}, "Data"),
    table({
      rows,
      columns: [
        { label: "Group", cell: (r) => r.label },
        { label: "Value", cell: (r) => r.text },
      ],
    }),
  );
}

function clip(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

function scaleOf(rows, max) {
  return max ?? (Math.max(0, ...rows.map((r) => r.value ?? 0)) || 1);
}

/** Horizontal bars. rows: [{label, value, text, tone}]; `max`: the full-width value. */
export function barChart({ title, rows, max = null, empty = "No data in this window." }) {
  if (!rows.length) return figure(title, h("p", { class: "help" }, empty));
  const id = `chart-${++charts}`;
  const rowHeight = 26;
  const labelWidth = 160;
  const barWidth = 220;
  const height = rows.length * rowHeight + 6;
  const top = scaleOf(rows, max);
  const bars = rows.map((row, i) => {
    const y = 3 + i * rowHeight;
    const width = row.value ? Math.max(2, (row.value / top) * barWidth) : 0;
    return svg(
      "g",
      {},
      svg(
        "text",
        { class: "label", x: labelWidth - 8, y: y + rowHeight / 2 + 4, "text-anchor": "end" },
        clip(row.label, 22),
      ),
      svg(
        "rect",
        { class: `bar ${row.tone || ""}`, x: labelWidth, y: y + 4, width, height: rowHeight - 8, rx: 2 },
        svg("title", {}, `${row.label}: ${row.text}`),
      ),
      svg("text", { class: "num", x: labelWidth + width + 6, y: y + rowHeight / 2 + 4 }, row.text),
    );
  });
  const description = `${title}: ${rows.map((r) => `${r.label} ${r.text}`).join("; ")}`;
  const chart = svg(
    "svg",
    { class: "chart", viewBox: `0 0 520 ${height}`, role: "img", "aria-labelledby": `${id}-title` },
    svg("title", { id: `${id}-title` }, description),
    bars,
  );
  return figure(title, chart, dataTable(rows));
}

/** Columns in order (the 24 hours of a day): rows [{label, value, text, tone}]. */
export function columnChart({ title, rows, every = 3 }) {
  if (!rows.length) return figure(title, h("p", { class: "help" }, "No data in this window."));
  const id = `chart-${++charts}`;
  const left = 8;
  const plotWidth = 504;
  const base = 150;
  const plotHeight = 120;
  const step = plotWidth / rows.length;
  const top = scaleOf(rows, null);
  const columns = rows.map((row, i) => {
    const x = left + i * step;
    const height = row.value ? Math.max(2, (row.value / top) * plotHeight) : 0;
    return svg(
      "g",
      {},
      svg(
        "rect",
        { class: `bar ${row.tone || ""}`, x: x + 2, y: base - height, width: step - 4, height, rx: 1 },
        svg("title", {}, `${row.label}: ${row.text}`),
      ),
      row.value
        ? svg(
            "text",
            { class: "tick", x: x + step / 2, y: base - height - 4, "text-anchor": "middle" },
            String(row.value),
          )
        : null,
      i % every === 0
        ? svg("text", { class: "tick", x: x + step / 2, y: base + 16, "text-anchor": "middle" }, row.label)
        : null,
    );
  });
  const description = `${title}: ${
    rows
      .filter((r) => r.value)
      .map((r) => `${r.label} ${r.text}`)
      .join("; ") || "none"
  }`;
  const chart = svg(
    "svg",
    { class: "chart", viewBox: `0 0 520 ${base + 24}`, role: "img", "aria-labelledby": `${id}-title` },
    svg("title", { id: `${id}-title` }, description),
    svg("line", { class: "axis", x1: left, x2: left + plotWidth, y1: base, y2: base }),
    columns,
  );
  return figure(title, chart, dataTable(rows));
}
