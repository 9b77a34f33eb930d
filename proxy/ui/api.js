// The admin API client. The UI is served at <admin>/ui/, so the API is one level up from the page.
// When the admin API answers 401 the user is asked once for its bearer token, which is kept in
// sessionStorage (this tab only) and sent as `Authorization: Bearer <token>` from then on.

export const API_ROOT = new URL("../", document.baseURI);
const TOKEN_KEY = "durable-proxy.admin-token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  document.dispatchEvent(new CustomEvent("token-changed"));
}

let asking = null; // the one open token prompt, shared by every request that got a 401
let declined = false; // the user closed the prompt: do not open it again by itself

/** Ask for the token (unless already asking); resolves true once one was entered. */
export function askToken(reason) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  const why = document.getElementById("token-error");
  why.textContent = reason ?? "";
  why.hidden = !reason;
  input.value = "";
  asking = new Promise((resolve) => {
    const cancel = document.getElementById("token-cancel");
    const done = (ok) => {
      dialog.removeEventListener("close", onClose);
      cancel.removeEventListener("click", onCancel);
      asking = null;
      resolve(ok);
    };
    const onClose = () => {
      const value = input.value.trim();
      if (dialog.returnValue === "ok" && value) {
        sessionStorage.setItem(TOKEN_KEY, value);
        declined = false;
        document.dispatchEvent(new CustomEvent("token-changed"));
        done(true);
      } else {
        declined = true;
        done(false);
      }
    };
    const onCancel = () => dialog.close("cancel");
    dialog.addEventListener("close", onClose);
    cancel.addEventListener("click", onCancel);
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/** Re-open the prompt after the user declined it (the banner's "Enter token" button). */
export function retryToken() {
  declined = false;
  return askToken(null);
}

/**
 * `api("/invocations", {params: {status: "running"}})` → parsed JSON; throws ApiError with the
 * admin API's {code, message} (or code "unreachable" when the request did not get through).
 */
export async function api(path, { method = "GET", params = {}, body } = {}) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  for (let tries = 0; ; tries++) {
    const sent = token();
    const headers = { Accept: "application/json" };
    if (sent) headers.Authorization = `Bearer ${sent}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(0, "unreachable", `cannot reach the admin API at ${API_ROOT.host} (${error.message})`);
    }
    if (response.status === 401 && tries < 5) {
      // A token entered meanwhile (by another request's prompt) is tried before asking.
      if (token() && token() !== sent) continue;
      if (!declined) {
        const entered = await askToken(sent ? "That token was not accepted. Enter the admin token again." : null);
        if (entered) continue;
      }
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const code = data && typeof data.code === "string" ? data.code : `http_${response.status}`;
      const message = data && typeof data.message === "string" ? data.message : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, code, message);
    }
    return data;
  }
}
