// The operations console's frame: sign-in, the operator's name, the navigation and the
// hash router. Each page is a function of a context (`ctx`) that renders into <main>.

import { ApiError, apiClient, NotAvailable, tokenStore, Unauthorized } from "../api.js";
import { h, notice, replace } from "../dom.js";
import { signInForm } from "../signin.js";
import { auditPage } from "./audit.js";
import { catalogPage } from "./catalog.js";
import { customerPage, customersPage } from "./customers.js";
import { metricsPage } from "./metrics.js";
import { purchasesPage } from "./purchases.js";
import { parseHash } from "./route.js";
import { ticketPage } from "./ticket.js";
import { ticketsPage } from "./tickets.js";

const ROUTES = [
  { pattern: /^\/tickets$/, nav: "tickets", page: ticketsPage },
  { pattern: /^\/tickets\/([A-Za-z0-9-]+)$/, nav: "tickets", page: ticketPage },
  { pattern: /^\/purchases$/, nav: "purchases", page: purchasesPage },
  { pattern: /^\/customers$/, nav: "customers", page: customersPage },
  { pattern: /^\/customers\/([A-Za-z0-9-]+)$/, nav: "customers", page: customerPage },
  { pattern: /^\/catalog$/, nav: "catalog", page: catalogPage },
  { pattern: /^\/audit$/, nav: "audit", page: auditPage },
  { pattern: /^\/metrics$/, nav: "metrics", page: metricsPage },
];

const tokens = tokenStore("ops");
// what the header says about the person signed in (kept with the token, for the tab)
const WHO_KEY = "caas.ops.who";
const api = apiClient(tokens);
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let generation = 0; // the render in progress; an older one stops writing to the page

/** How the header names the operator holding this token (GET /v1/ops/me); throws
 * Unauthorized / ApiError 403 when the token is not an operator's. */
async function operatorLine() {
  try {
    const me = await api.get("/v1/ops/me");
    return me.name ? `Signed in as ${me.name}` : "Signed in (an operator without a name)";
  } catch (error) {
    if (!(error instanceof NotAvailable)) throw error;
  }
  await api.get("/v1/ops/metrics/summary"); // any ops route: its 401 / 403 say the same
  return "Signed in (this backend does not name operators)";
}

function showOperator() {
  replace(document.getElementById("operator"), sessionStorage.getItem(WHO_KEY) || "Signed in");
  nav.hidden = false;
  who.hidden = false;
}

function showSignIn(message) {
  generation += 1;
  tokens.clear();
  sessionStorage.removeItem(WHO_KEY);
  nav.hidden = true;
  who.hidden = true;
  document.title = "Sign in · CaaS operations";
  replace(
    main,
    message ? notice("error", message) : null,
    signInForm({
      title: "Sign in to the operations console",
      label: "Operator token",
      help: "Your personal ops token (python -m backend operators create --name …, or the demo's). It is kept in this browser tab only, until you sign out or close the tab.",
      check: async (token) => {
        tokens.set(token);
        try {
          sessionStorage.setItem(WHO_KEY, await operatorLine());
        } catch (error) {
          tokens.clear();
          if (error instanceof Unauthorized) return "This token was not accepted.";
          if (error instanceof ApiError && error.status === 403)
            return "This is a customer's token: customers read their purchases at /me/.";
          throw error;
        }
        showOperator();
        await render();
        return null;
      },
    }),
  );
  document.getElementById("token")?.focus();
}

/** Errors every page may meet: a refused token sends back to sign-in. */
function handle(error) {
  if (error instanceof Unauthorized) {
    showSignIn("Your session ended or the token was refused: please sign in again.");
    return true;
  }
  return false;
}

function markNav(current) {
  for (const link of nav.querySelectorAll("a[data-nav]")) {
    if (link.dataset.nav === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function render() {
  if (!tokens.get()) return showSignIn(null);
  const mine = ++generation;
  const { path, params } = parseHash(location.hash);
  const route = ROUTES.find((r) => r.pattern.test(path));
  if (!route) {
    location.replace("#/tickets");
    return;
  }
  markNav(route.nav);
  const ctx = {
    api,
    main,
    path,
    params,
    match: path.match(route.pattern).slice(1).map(decodeURIComponent),
    alive: () => mine === generation,
    go: (hash) => {
      location.hash = hash;
    },
    title: (text) => {
      document.title = `${text} · CaaS operations`;
    },
    handle,
  };
  try {
    await route.page(ctx);
    if (ctx.alive()) main.focus({ preventScroll: true });
  } catch (error) {
    if (!handle(error) && ctx.alive())
      replace(main, h("h1", {}, "Something went wrong"), notice("error", error.message));
  }
}

document.getElementById("sign-out").addEventListener("click", () => showSignIn(null));
document.querySelector("[data-skip]").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", render);

if (tokens.get()) {
  showOperator();
  render();
} else {
  showSignIn(null);
}
