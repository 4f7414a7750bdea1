// Catalog rules: which vehicle models and firmware versions a service is sold to. One
// row per model of the fleet (GET /v1/ops/fleet/models), a checkbox per firmware version
// seen, and "every firmware" (firmware: null, also versions not seen yet). Saved with
// PUT /v1/ops/catalog/{service_id}/rules; an unticked model is not sold the service.

import { NotAvailable, orNotAvailable } from "../api.js";
import { announce, h, notice, replace, table, unavailable } from "../dom.js";

/** "Tourer: every firmware; Roadster: 4.3.0, 5.0.2", or that it is sold to no vehicle. */
function ruleSummary(rule) {
  if (!rule.applies_to.length) return "Sold to no vehicle.";
  return `Sold to ${rule.applies_to
    .map((a) => `${a.model}: ${a.firmware === null ? "every firmware" : a.firmware.join(", ")}`)
    .join("; ")}.`;
}

/** Model → {firmware: [...], vehicles}: the fleet's, plus what the rule names that the
 * fleet does not have (so that saving never drops it silently). */
function modelsOf(rule, fleet) {
  const models = new Map(
    (fleet || []).map((m) => [m.model, { firmware: [...m.firmware], vehicles: m.vehicles }]),
  );
  for (const applies of rule.applies_to) {
    if (!models.has(applies.model)) models.set(applies.model, { firmware: [], vehicles: 0 });
    for (const version of applies.firmware || []) {
      const known = models.get(applies.model).firmware;
      if (!known.includes(version)) known.push(version);
    }
  }
  return [...models.entries()].sort(([a], [b]) => a.localeCompare(b));
}

function hidden(text) {
  return h("span", { class: "visually-hidden" }, text);
}

function modelRow(model, info, applies) {
  const every = Boolean(applies) && applies.firmware === null;
  const versions = info.firmware.slice().sort();
  const boxes = versions.map((version) =>
    h(
      "label",
      {},
      h("input", {
        type: "checkbox",
        name: "firmware",
        value: version,
        dataset: { model },
        checked: every || Boolean(applies?.firmware?.includes(version)),
        disabled: every,
      }),
      " ",
      hidden(`${model} firmware `),
      version,
    ),
  );
  const everyBox = h("input", { type: "checkbox", name: "every", dataset: { model }, checked: every });
  everyBox.addEventListener("change", () => {
    for (const box of boxes.map((label) => label.querySelector("input"))) {
      box.disabled = everyBox.checked;
      if (everyBox.checked) box.checked = true;
    }
  });
  return {
    model,
    vehicles: info.vehicles,
    every: h("label", {}, everyBox, " ", hidden(`${model}: `), "every firmware"),
    firmware: versions.length
      ? h("div", { class: "firmware" }, boxes)
      : h("span", { class: "help" }, "no firmware seen"),
  };
}

/** The applies_to a form describes. */
function appliesOf(form) {
  const out = [];
  for (const every of form.querySelectorAll('input[name="every"]')) {
    const model = every.dataset.model;
    if (every.checked) {
      out.push({ model, firmware: null });
      continue;
    }
    const versions = [...form.querySelectorAll('input[name="firmware"]')]
      .filter((box) => box.dataset.model === model && box.checked)
      .map((box) => box.value);
    if (versions.length) out.push({ model, firmware: versions });
  }
  return out;
}

function editor(ctx, rule, fleet, flash) {
  const rows = modelsOf(rule, fleet).map(([model, info]) =>
    modelRow(
      model,
      info,
      rule.applies_to.find((a) => a.model === model),
    ),
  );
  const result = h("div", { id: "rules-result", "aria-live": "polite" }, flash);
  const save = h("button", { type: "submit", class: "primary" }, "Save rules");
  const form = h(
    "form",
    { class: "rules", "aria-labelledby": "rules-title" },
    table({
      rows,
      empty: "No vehicle model known: the fleet is empty.",
      columns: [
        { label: "Model", cell: (r) => h("span", {}, h("strong", {}, r.model), ` (${r.vehicles} vehicles)`) },
        { label: "Every firmware", cell: (r) => r.every },
        { label: "Only these firmware versions", cell: (r) => r.firmware },
      ],
    }),
    h(
      "div",
      { class: "actions" },
      save,
      h(
        "a",
        { class: "button", href: `#/catalog?service=${encodeURIComponent(rule.service_id)}` },
        "Discard changes",
      ),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    try {
      const saved = await ctx.api.put(`/v1/ops/catalog/${encodeURIComponent(rule.service_id)}/rules`, {
        applies_to: appliesOf(form),
      });
      announce("Catalog rules saved");
      replace(
        ctx.main.querySelector("#rules-editor"),
        editor(ctx, saved, fleet, notice("ok", `Saved. ${ruleSummary(saved)}`)),
      );
    } catch (error) {
      if (!ctx.handle(error)) replace(result, notice("error", `Not saved: ${error.message}`));
    } finally {
      save.disabled = false;
    }
  });
  return h(
    "div",
    {},
    h("h2", { id: "rules-title" }, `${rule.name} `, h("code", {}, rule.service_id)),
    h("p", { id: "rules-summary" }, ruleSummary(rule)),
    fleet
      ? null
      : notice(
          "unavailable",
          "The fleet's models are not available: only the models the rule names are shown.",
        ),
    result,
    form,
  );
}

export async function catalogPage(ctx) {
  ctx.title("Catalog rules");
  replace(ctx.main, h("h1", {}, "Catalog rules"), h("p", {}, "Loading…"));
  let rules;
  let fleet;
  try {
    [rules, fleet] = await Promise.all([
      ctx.api.get("/v1/ops/catalog/rules"),
      orNotAvailable(ctx.api.get("/v1/ops/fleet/models"), null),
    ]);
  } catch (error) {
    if (!(error instanceof NotAvailable)) throw error;
    replace(
      ctx.main,
      h("h1", {}, "Catalog rules"),
      unavailable("Which models and firmware each service is sold to", "GET /v1/ops/catalog/rules"),
    );
    return;
  }
  if (!ctx.alive()) return;
  const wanted = ctx.params.get("service") || rules[0]?.service_id;
  const rule = rules.find((r) => r.service_id === wanted);
  replace(
    ctx.main,
    h("h1", {}, "Catalog rules"),
    h(
      "p",
      { class: "help" },
      "A customer is offered a service only for a vehicle whose model and firmware its rules name; a purchase for any other is refused before any payment.",
    ),
    h(
      "nav",
      { "aria-label": "Services" },
      h(
        "ul",
        { class: "services" },
        rules.map((r) =>
          h(
            "li",
            {},
            h(
              "a",
              {
                href: `#/catalog?service=${encodeURIComponent(r.service_id)}`,
                "aria-current": r.service_id === wanted ? "page" : null,
              },
              r.name,
            ),
          ),
        ),
      ),
    ),
    h(
      "div",
      { id: "rules-editor" },
      rule ? editor(ctx, rule, fleet, null) : notice("error", `There is no service ${wanted}.`),
    ),
  );
}
