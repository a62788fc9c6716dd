// The console's only backend is /api/v1. The token lives in sessionStorage (this tab, until it
// closes or the moderator signs out) and travels only in the Authorization header, never in a
// URL.

const KEY = "chatguard.token";
const ROLE_KEY = "chatguard.role";
/** The token's name, learnt from the first claim (the API has no "who am I"). */
const NAME_KEY = "chatguard.name";
const ROLES = ["viewer", "moderator", "admin"];

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  get role() { return sessionStorage.getItem(ROLE_KEY) || "viewer"; },
  /** Whether the signed-in role is at least `role`. */
  can(role) { return ROLES.indexOf(this.role) >= ROLES.indexOf(role); },
  set(token, role) {
    sessionStorage.setItem(KEY, token);
    sessionStorage.setItem(ROLE_KEY, role);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ROLE_KEY);
    sessionStorage.removeItem(NAME_KEY);
  },
};

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function call(method, path, body, token = session.token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch("/api/v1" + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch (e) {
    throw new ApiError(0, "network", "chatguard is unreachable: " + e.message);
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: "http_" + res.status, message: res.statusText };
    if (res.status === 401 && token === session.token) onUnauthorized();
    throw new ApiError(res.status, err.code, err.message);
  }
  return data;
}

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body) => call("POST", path, body === undefined ? {} : body),
  del: (path) => call("DELETE", path),
  item: (id) => call("GET", "/review-items/" + encodeURIComponent(id)),
  user: (id) => call("GET", "/users/" + encodeURIComponent(id)),
};

/** Checks a token and learns its role (`GET /me`). */
export async function signIn(token) {
  const me = await call("GET", "/me", undefined, token);
  const role = ["viewer", "moderator", "admin"].includes(me.role) ? me.role : "viewer";
  session.set(token, role);
  return role;
}
