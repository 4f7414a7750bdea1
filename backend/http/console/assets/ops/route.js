// Hash routes of the console: "#/tickets?status=OPEN" → path "/tickets" and its query.

export function parseHash(hash) {
  const raw = (hash || "").replace(/^#/, "") || "/tickets";
  const at = raw.indexOf("?");
  const path = at === -1 ? raw : raw.slice(0, at);
  const params = new URLSearchParams(at === -1 ? "" : raw.slice(at + 1));
  return { path: path.startsWith("/") ? path : `/${path}`, params };
}

/** "#/path?a=1" with the values given. null and undefined are left out; an empty string
 * stays ("status=": any status, where leaving it out means the page's default). */
export function hashOf(path, values = {}) {
  const query = new URLSearchParams();
  const entries = values instanceof URLSearchParams ? values.entries() : Object.entries(values);
  for (const [name, value] of entries) {
    if (value !== undefined && value !== null) query.set(name, value);
  }
  const text = query.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}
