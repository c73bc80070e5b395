// Talking to the daemon: every call goes to the daemon that served this page (URLs relative to
// it), carries the bearer token in the Authorization header (never in a URL) and times out.

const TOKEN_KEY = "pipelined.api.token";
const DAEMON_ROOT = new URL("../", window.location.href); // the page is served at <root>/ui/
let token = null;

try {
  token = window.sessionStorage.getItem(TOKEN_KEY);
} catch {
  token = null; // storage switched off: keep the token in memory only
}

export function hasToken() {
  return Boolean(token);
}

export function setToken(value) {
  token = value || null;
  try {
    if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
    else window.sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // memory only
  }
}

/** A request that did not give an answer the page can use. */
export class ApiError extends Error {
  /** kind: "unreachable" (no HTTP answer), "auth" (401) or "http" (any other error status). */
  constructor(kind, message, response = null) {
    super(message);
    this.kind = kind;
    this.response = response;
  }
}

export function pipelinePath(name, ...rest) {
  return ["pipelines", encodeURIComponent(name), ...rest.map(encodeURIComponent)].join("/");
}

/**
 * One API call. Resolves to {method, path, status, ok, body} for any HTTP answer except 401;
 * rejects with ApiError("unreachable") when there is none and ApiError("auth") on 401.
 */
export async function call(method, path, body = undefined, timeoutMs = 5000) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store", redirect: "error", signal: AbortSignal.timeout(timeoutMs) };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(new URL(path, DAEMON_ROOT), init);
  } catch (error) {
    const why = error && error.name === "TimeoutError" ? `no answer within ${timeoutMs / 1000} s` : "connection failed";
    throw new ApiError("unreachable", `${method} /${path}: ${why}`);
  }
  const text = await response.text().catch(() => "");
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  const answer = { method, path: "/" + path, status: response.status, ok: response.ok, body: parsed };
  if (response.status === 401) throw new ApiError("auth", detailOf(answer), answer);
  return answer;
}

/** GET that must succeed (2xx): the JSON body, else ApiError("http"). */
export async function getJson(path) {
  const answer = await call("GET", path);
  if (!answer.ok) throw new ApiError("http", `GET /${path} → ${answer.status}: ${detailOf(answer)}`, answer);
  return answer.body;
}

/** The human sentence of an answer: the API's `detail`, or the body itself, shortened. */
export function detailOf(answer) {
  const body = answer.body;
  if (body && typeof body === "object" && !Array.isArray(body) && typeof body.detail === "string") {
    return body.detail;
  }
  const text = typeof body === "string" ? body : JSON.stringify(body);
  return text && text.length > 400 ? text.slice(0, 399) + "…" : text || "";
}
