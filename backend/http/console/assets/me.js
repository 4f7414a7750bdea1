// /me/: the signed-in customer's purchase file (GET /v1/customers/me/expediente):
// purchases with their state and payment, charges, refunds, messages, tickets, timeline.

import { ApiError, apiClient, orNotAvailable, tokenStore, Unauthorized } from "./api.js";
import { announce, h, notice, replace } from "./dom.js";
import { renderExpediente } from "./expediente.js";
import { signInForm } from "./signin.js";

const tokens = tokenStore("me");
const api = apiClient(tokens);
const main = document.getElementById("main");
const who = document.getElementById("who");

async function load() {
  const [file, vehicles] = await Promise.all([
    api.get("/v1/customers/me/expediente"),
    orNotAvailable(api.get("/v1/vehicles"), []),
  ]);
  return { file, vehicles: Object.fromEntries(vehicles.map((v) => [v.id, v])) };
}

function showSignIn(message) {
  tokens.clear();
  who.hidden = true;
  replace(
    main,
    message ? notice("error", message) : null,
    signInForm({
      title: "Sign in to your purchase file",
      label: "Your access token",
      help: "The token you received with your account. It is kept in this browser tab only, until you sign out or close the tab.",
      check: async (token) => {
        tokens.set(token);
        try {
          await api.get("/v1/customers/me/expediente");
        } catch (error) {
          tokens.clear();
          if (error instanceof Unauthorized) return "This token was not accepted.";
          if (error instanceof ApiError && error.status === 404) {
            return "This is not a customer's token (operators sign in at /ops/).";
          }
          throw error;
        }
        await show();
        return null;
      },
    }),
  );
  document.getElementById("token")?.focus();
}

async function show() {
  replace(main, h("p", {}, "Loading your purchase file…"));
  try {
    const { file, vehicles } = await load();
    who.hidden = false;
    replace(
      main,
      h("h1", {}, "Your purchase file"),
      renderExpediente(file, { audience: "customer", vehicles }),
    );
    announce("Purchase file loaded");
    main.focus();
  } catch (error) {
    if (error instanceof Unauthorized) return showSignIn("Your session ended: please sign in again.");
    replace(main, notice("error", `Your purchase file could not be loaded: ${error.message}`));
  }
}

document.getElementById("sign-out").addEventListener("click", () => showSignIn(null));
document.querySelector("[data-skip]").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

if (tokens.get()) show();
else showSignIn(null);
