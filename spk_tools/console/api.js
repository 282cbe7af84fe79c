// The management API as the console uses it: JSON requests with the token, and the
// server-sent event stream read with fetch() so that the token travels in a header
// (EventSource cannot send one) and never in a URL.

export class ApiError extends Error {
  /**
   * An answer of the API that is not 2xx, or no answer at all (status 0).
   * @param {number} status HTTP status, 0 when the server could not be reached
   * @param {string} code the error code of the JSON error body, or a generic one
   * @param {string|null} field the request field at fault, when the server names one
   * @param {string} message what the server said
   */
  constructor(status, code, field, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** Turn an error answer into an ApiError; the API's errors are {"error": {code, field, message}}. */
async function errorOf(response) {
  let code = `http_${response.status}`;
  let field = null;
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    const err = body && typeof body === "object" ? (body.error ?? body) : null;
    if (err && typeof err === "object") {
      code = err.code ?? code;
      field = err.field ?? null;
      if (typeof err.message === "string") message = err.message;
      else if (typeof err.detail === "string") message = err.detail;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, field, message);
}

export class Api {
  /**
   * @param {string} token the bearer token
   * @param {string} base where the API lives, relative to the page
   */
  constructor(token, base = "api/v1") {
    this.token = token;
    this.base = new URL(base.endsWith("/") ? base : `${base}/`, document.baseURI);
  }

  url(path) {
    return new URL(path.replace(/^\//, ""), this.base);
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.token}`, Accept: "application/json", ...extra };
  }

  /**
   * One JSON request. Throws ApiError for any answer but 2xx, and for a network failure.
   * @returns {Promise<any>} the parsed body, or null for an empty one
   */
  async request(method, path, body = undefined, signal = undefined) {
    const init = { method, headers: this.headers(), signal, cache: "no-store" };
    if (body !== undefined) {
      init.headers = this.headers({ "Content-Type": "application/json" });
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(this.url(path), init);
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, "unreachable", null, "the server cannot be reached");
    }
    if (!response.ok) throw await errorOf(response);
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  get(path, signal) {
    return this.request("GET", path, undefined, signal);
  }

  post(path, body = {}) {
    return this.request("POST", path, body);
  }

  /**
   * Read a server-sent event stream until it ends or ``signal`` aborts it.
   * Calls ``onEvent({event, data, id})`` for each event, ``data`` parsed as JSON when it is JSON.
   * Resolves when the stream ends; rejects with ApiError when it cannot be opened.
   */
  async stream(path, onEvent, signal) {
    let response;
    try {
      response = await fetch(this.url(path), {
        headers: this.headers({ Accept: "text/event-stream" }),
        signal,
        cache: "no-store",
      });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, "unreachable", null, "the server cannot be reached");
    }
    if (!response.ok) throw await errorOf(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // Events end with a blank line; a partial one stays in the buffer.
      const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
      buffer = blocks.pop();
      for (const block of blocks) {
        const parsed = parseEvent(block);
        if (parsed) onEvent(parsed);
      }
    }
  }
}

/** One event block of the text/event-stream format; null for a comment-only block (keep-alive). */
export function parseEvent(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const key = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (key === "event") event = value;
    else if (key === "data") data.push(value);
    else if (key === "id") id = value;
  }
  if (!data.length) return null;
  const text = data.join("\n");
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // plain text data
  }
  return { event, data: parsed, id };
}
