// A ticket's diagnostics package (gateway/diagnostics.py) as support reads it: a summary,
// the network figures, and one timeline of what happened (attempts with their answers,
// the vehicle's refusals, the vehicle states it reported, its own error log, the moment
// the package was collected), oldest first.

import { facts, h, when } from "../dom.js";

const CATEGORY_WORDS = {
  transient_connectivity: "the vehicle could not be reached (offline, or not answering status queries)",
  vehicle_state: "the vehicle was not in a state to activate (driving, busy) for as long as we tried",
  configuration_conflict:
    "the vehicle refused: the feature conflicts with its configuration (its model or firmware cannot run it)",
  persistent_iot_failure: "the vehicle kept failing the command with an internal error",
  timeout: "the vehicle did not answer the command in time",
  deadline_exceeded: "the activation ran past its deadline and was escalated to support",
  dispatch_rejected: "the gateway refused the activation request",
};

const RESULTS = {
  SUCCESS: ["succeeded", "good"],
  FAILED_RETRY: ["failed, retried", "warn"],
  FAILED_ESCALATE: ["failed, gave up", "bad"],
};

export function categoryText(category) {
  if (!category) return null;
  const words = CATEGORY_WORDS[category];
  return words ? `${category}: ${words}` : category;
}

/** The package a ticket carries: the gateway's own (a failed activation), or the
 * activation the deadline watchdog found at the gateway (`{"gateway": …}`). */
export function packageOf(details) {
  const diagnostics = details?.diagnostics;
  if (!diagnostics || typeof diagnostics !== "object") return null;
  if ("gateway" in diagnostics && !("attempts" in diagnostics)) {
    const remote = diagnostics.gateway;
    if (!remote) return null;
    const inner = remote.diagnostics || {};
    return {
      ...inner,
      attempts: inner.attempts || remote.attempts || [],
      failure_category: inner.failure_category || remote.failure_category,
      note: inner.note || `gateway state ${remote.state}`,
    };
  }
  return diagnostics;
}

/** One line for a vehicle state report (protocol's VehicleState). */
function stateSummary(state) {
  if (!state) return "no state reported";
  const parts = [];
  if (state.online !== undefined) parts.push(state.online ? "online" : "offline");
  if (state.power) parts.push(`power ${state.power}`);
  if (state.moving !== undefined) parts.push(state.moving ? `moving at ${state.speed_kmh} km/h` : "standing");
  if (state.gear) parts.push(`gear ${state.gear}`);
  if (state.busy !== undefined) parts.push(state.busy ? "busy" : "not busy");
  if (state.active_features) {
    parts.push(`active: ${state.active_features.length ? state.active_features.join(", ") : "none"}`);
  }
  return parts.join(" · ") || "state reported";
}

function attemptEvent(attempt) {
  const [word, tone] = RESULTS[attempt.result] || ["no answer yet", "wait"];
  const answer = attempt.response_code
    ? `Answer: ${attempt.response_code}${attempt.response_message ? ` (${attempt.response_message})` : ""}`
    : null;
  return {
    at: attempt.at,
    tone,
    kind: "attempt",
    title: `Attempt ${attempt.n}: ${word}`,
    lines: [
      attempt.command_sent
        ? `Command sent${attempt.command_id ? ` (${attempt.command_id})` : ""}`
        : "No command sent",
      answer,
      attempt.vehicle_state ? `Vehicle then: ${stateSummary(attempt.vehicle_state)}` : null,
    ],
  };
}

function refusalEvent(error) {
  return {
    at: error.at,
    tone: "bad",
    kind: "iot_error",
    title: `Vehicle refused the command: ${error.reason}`,
    lines: [
      error.retry_after_s !== null && error.retry_after_s !== undefined
        ? `It asked to retry after ${error.retry_after_s} s`
        : null,
      error.command_id ? `Command ${error.command_id}` : null,
    ],
  };
}

function snapshotEvents(snapshots) {
  const events = [];
  let previous = null;
  for (const state of snapshots || []) {
    const summary = stateSummary(state);
    if (summary === previous) continue; // the same state reported again
    previous = summary;
    const version = state.firmware ? ` · firmware ${state.firmware}` : "";
    events.push({
      at: state.at,
      tone: "",
      kind: "snapshot",
      title: "Vehicle state",
      lines: [summary + version],
    });
  }
  return events;
}

function vehicleLogEvents(lines) {
  // the vehicle's own log: "<RFC 3339 time> <what>"
  return (lines || []).map((line) => {
    const [first, ...rest] = String(line).split(" ");
    const stamped = !Number.isNaN(Date.parse(first)) && rest.length > 0;
    return {
      at: stamped ? first : null,
      tone: "warn",
      kind: "vehicle_error",
      title: `Vehicle error log: ${stamped ? rest.join(" ") : line}`,
      lines: [],
    };
  });
}

/** Everything in time order; entries without a time keep their place at the end. */
function timelineEvents(pkg) {
  const events = [
    ...(pkg.attempts || []).map(attemptEvent),
    ...(pkg.iot_errors || []).map(refusalEvent),
    ...snapshotEvents(pkg.state_snapshots),
    ...vehicleLogEvents(pkg.vehicle_diagnostics?.recent_errors),
  ];
  if (pkg.collected_at) {
    events.push({
      at: pkg.collected_at,
      tone: "",
      kind: "collected",
      title: "Diagnostics collected",
      lines: [pkg.note],
    });
  }
  const instant = (e) => (e.at ? Date.parse(e.at) : Number.POSITIVE_INFINITY);
  return events
    .map((event, index) => ({ event, index }))
    .sort((a, b) => instant(a.event) - instant(b.event) || a.index - b.index)
    .map(({ event }) => event);
}

function signalWord(rssi) {
  if (rssi >= -70) return "good";
  if (rssi >= -85) return "fair";
  if (rssi >= -100) return "poor";
  return "very poor";
}

function networkFacts(pkg) {
  const rtt = pkg.rtt || {};
  const rssi = pkg.vehicle_diagnostics?.modem?.rssi_dbm;
  return [
    [
      "Command round trips",
      rtt.count
        ? `${rtt.count}: min ${rtt.min_ms} ms · mean ${rtt.mean_ms} ms · max ${rtt.max_ms} ms`
        : "none measured (no answer)",
    ],
    [
      "Signal (RSSI)",
      rssi !== undefined && rssi !== null ? `${rssi} dBm (${signalWord(rssi)})` : "not reported",
    ],
  ];
}

function summaryFacts(pkg) {
  const vehicle = pkg.vehicle_diagnostics || {};
  const dtcs = vehicle.dtcs;
  return [
    ["Failure", categoryText(pkg.failure_category)],
    ["Feature", pkg.feature ? `${pkg.feature} (${pkg.action || "activate"})` : null],
    [
      "Model and firmware",
      pkg.model || pkg.firmware ? `${pkg.model ?? "?"} · firmware ${pkg.firmware ?? "?"}` : null,
    ],
    ["Attempts", String((pkg.attempts || []).length)],
    [
      "Vehicle at the end",
      pkg.final_status ? stateSummary(pkg.final_status) : "no final state (the vehicle did not answer)",
    ],
    ["Fault codes", dtcs ? (dtcs.length ? dtcs.join(", ") : "none") : null],
    ["Battery", vehicle.battery_v !== undefined ? `${vehicle.battery_v} V` : null],
    ["Telematics uptime", vehicle.uptime_s !== undefined ? `${vehicle.uptime_s} s` : null],
    ["Activation id", pkg.activation_id ? h("code", {}, pkg.activation_id) : null],
    ["Note", pkg.note],
  ];
}

function timelineItem(event) {
  const lines = event.lines.filter(Boolean);
  return h(
    "li",
    { class: event.tone, dataset: { kind: event.kind } },
    h("span", { class: "when" }, event.at ? when(event.at, { ms: true }) : "time not recorded"),
    h("span", { class: "what" }, event.title),
    lines.length
      ? h(
          "ul",
          { class: "lines" },
          lines.map((l) => h("li", {}, l)),
        )
      : null,
  );
}

function rawPackage(diagnostics) {
  return h(
    "details",
    {},
    h("summary", {}, "The package as the gateway sent it (JSON)"),
    h("pre", {}, JSON.stringify(diagnostics, null, 2)),
  );
}

/** The diagnostics section's content, under `level` headings. */
export function renderDiagnostics(details, level = 3) {
  const pkg = packageOf(details);
  if (!pkg) {
    return [
      h("p", { class: "help" }, "This ticket carries no diagnostics package."),
      details?.diagnostics ? rawPackage(details.diagnostics) : null,
    ];
  }
  const heading = (text) => h(`h${level}`, {}, text);
  const events = timelineEvents(pkg);
  return [
    heading("Summary"),
    facts(summaryFacts(pkg)),
    heading("Network"),
    facts(networkFacts(pkg)),
    heading(`Timeline (${events.length} events)`),
    events.length
      ? h(
          "ol",
          { class: "timeline", id: "diagnostics-timeline", "aria-label": "Diagnostics timeline" },
          events.map(timelineItem),
        )
      : h("p", { class: "help" }, "Nothing was recorded."),
    rawPackage(details.diagnostics),
  ];
}
