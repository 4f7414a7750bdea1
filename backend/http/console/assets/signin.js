// The sign-in form both pages show: one field for the bearer token. `check(token)` asks
// the backend whether the token is good for this page and answers null (signed in) or
// the message to show.

import { field, h, notice, replace } from "./dom.js";

export function signInForm({ title, label, help, check }) {
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    id: "token",
  });
  const problem = h("div", { id: "signin-problem" });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { "aria-describedby": "signin-help" },
    field(label, input),
    h("p", { class: "help", id: "signin-help" }, help),
    problem,
    h("div", {}, button),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    replace(problem);
    try {
      const message = await check(token);
      if (message) {
        replace(problem, notice("error", message));
        input.focus();
      }
    } catch (error) {
      replace(problem, notice("error", `The backend could not be reached: ${error.message}`));
    } finally {
      button.disabled = false;
    }
  });
  return h(
    "section",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, title),
    form,
  );
}
