// The server's public API as any client uses it: the API key, errors in OpenAI's shape, and
// server-sent events read from a fetch body (EventSource can neither POST nor send a key).

const KEY_ITEM = "titans-serve.api-key"; // sessionStorage: this tab only, never localStorage

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_ITEM) || "",
  set: (value) => (value ? sessionStorage.setItem(KEY_ITEM, value) : sessionStorage.removeItem(KEY_ITEM)),
};

export class ApiError extends Error {
  /** status 0: no answer from the server at all. */
  constructor(message, status = 0, code = null) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const UNREACHABLE = "The server is not answering: is it running? Nothing was changed on this page.";

/** fetch with the key; a failed request throws ApiError with the server's own message. */
export async function request(path, { method = "GET", body, type, auth = true } = {}) {
  const headers = {};
  if (type) headers["Content-Type"] = type;
  if (auth && apiKey.get()) headers.Authorization = `Bearer ${apiKey.get()}`;
  let response;
  try {
    response = await fetch(path, { method, body, headers, cache: "no-store" });
  } catch {
    throw new ApiError(UNREACHABLE);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** A JSON request (``body`` an object, or none) answered with JSON. */
export async function json(path, { body, ...options } = {}) {
  const sent = body === undefined ? options : { ...options, body: JSON.stringify(body), type: "application/json" };
  const response = await request(path, sent);
  return response.json();
}

async function errorOf(response) {
  let message = `The server answered ${response.status} ${response.statusText}`.trim();
  let code = null;
  try {
    const body = await response.json();
    if (body?.error?.message) ({ message, code } = body.error);
  } catch {
    // not an error body (a proxy's page, say): the status line says what happened
  }
  return new ApiError(message, response.status, code);
}

/** The error event of a stream that had begun, in OpenAI's error shape. */
export function streamError(body) {
  return new ApiError(body.error?.message || "the server reported an error", 0, body.error?.code ?? null);
}

/**
 * The server-sent events of a response, as ``{event, data}`` (data as text), as they arrive.
 * Lines end in CR, LF or CRLF; a CR at the end of a chunk waits for the next (it may be a CRLF's half).
 */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch {
        throw new ApiError("The connection to the server was cut before the end.");
      }
      if (chunk.done) return;
      buffer += chunk.value;
      const end = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, end).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(end);
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { event, data: data.join("\n") };
          event = "message";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
