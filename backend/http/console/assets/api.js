// The backend's JSON API as both pages use it: the bearer token of the person signed in
// (sessionStorage: gone when the tab closes), the error body every service answers
// ({"error": code, "detail": ...}) and the list headers of the pagination contract
// (X-Total-Count, X-Next-Cursor, Link rel="next").

// The API lives at the root of the origin the page came from: these modules are served
// from <root>/console/, so the root is one folder up from here (also behind a prefix).
const API_ROOT = new URL("../", import.meta.url);

/** The token was missing, expired or refused (401): the person signs in again. */
export class Unauthorized extends Error {
  constructor() {
    super("unauthorized");
    this.name = "Unauthorized";
  }
}

/** The route does not exist on this backend (yet): the page says "not available". */
export class NotAvailable extends Error {
  constructor(path) {
    super(`${path} is not available on this backend`);
    this.name = "NotAvailable";
    this.path = path;
  }
}

/** Any other error answer, with the body's stable code. */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(describeDetail(code, detail));
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

function describeDetail(code, detail) {
  if (Array.isArray(detail)) {
    // a 422's list of problems, FastAPI's shape
    return detail.map((p) => `${(p.loc || []).join(".")}: ${p.msg}`).join("; ") || code;
  }
  return typeof detail === "string" && detail ? `${code}: ${detail}` : String(code);
}

/** Where one kind of person keeps their token: "ops" and "me" never share one. */
export function tokenStore(scope) {
  const key = `caas.${scope}.token`;
  return {
    get: () => sessionStorage.getItem(key),
    set: (token) => sessionStorage.setItem(key, token),
    clear: () => sessionStorage.removeItem(key),
  };
}

function urlOf(path, query) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

async function bodyOf(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: `http_${response.status}`, detail: text.slice(0, 200) };
  }
}

function errorOf(path, status, body) {
  const code = (body && body.error) || `http_${status}`;
  const detail = body ? body.detail : null;
  // An unknown route answers the framework's own "Not Found" (a missing resource of ours
  // names it: "ticket not found"); 405: the path exists for another method only.
  if ((status === 404 && detail === "Not Found") || status === 405) return new NotAvailable(path);
  return new ApiError(status, code, detail);
}

/** The id of the next page, from X-Next-Cursor or else the Link header's rel="next". */
function nextCursor(headers) {
  const cursor = headers.get("X-Next-Cursor");
  if (cursor) return cursor;
  const link = headers.get("Link");
  if (!link) return null;
  for (const part of link.split(",")) {
    const found = part.match(/<([^>]*)>\s*;\s*rel="?next"?/);
    if (found) return new URL(found[1], API_ROOT).searchParams.get("cursor");
  }
  return null;
}

/** A page of a list route. `paginated` is false on a backend that sends no
 * X-Total-Count: it ignored limit, cursor and the filters, and sent every row. */
function pageOf(rows, headers) {
  const total = headers.get("X-Total-Count");
  return {
    rows: Array.isArray(rows) ? rows : [],
    paginated: total !== null,
    total: total === null ? null : Number(total),
    next: nextCursor(headers),
  };
}

/** The API with one person's token. Every call throws Unauthorized on a 401. */
export function apiClient(tokens) {
  async function call(method, path, { query, body } = {}) {
    const headers = { Accept: "application/json" };
    const token = tokens.get();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(urlOf(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) throw new Unauthorized();
    const data = await bodyOf(response);
    if (!response.ok) throw errorOf(path, response.status, data);
    return { data, headers: response.headers };
  }
  return {
    get: async (path, query) => (await call("GET", path, { query })).data,
    list: async (path, query) => {
      const { data, headers } = await call("GET", path, { query });
      return pageOf(data, headers);
    },
    post: async (path, body) => (await call("POST", path, { body })).data,
    put: async (path, body) => (await call("PUT", path, { body })).data,
  };
}

/** `await api.get(...)`, or `fallback` when the route is not on this backend. */
export async function orNotAvailable(promise, fallback = null) {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof NotAvailable) return fallback;
    throw error;
  }
}
