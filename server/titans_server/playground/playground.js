// The playground's page: sessions, chat, ingestion with its plot, and the memory inspector, all
// through the public API (api.js), as any client would use it.

import { ApiError, apiKey, events, json, request, streamError } from "./api.js";
import { SurprisePlot } from "./plot.js";

const MAX_UPLOAD_BYTES = 64 * 1024 * 1024; // the server's default --max-ingest-bytes
const PAGE_SIZE = 20;

const $ = (id) => document.getElementById(id);
const ui = {
  alert: $("alert"),
  model: $("model-name"),
  keyForm: $("key-form"),
  key: $("api-key"),
  newSession: $("new-session"),
  list: $("session-list"),
  more: $("more-sessions"),
  title: $("session-id"),
  fork: $("fork-session"),
  reset: $("reset-session"),
  exportState: $("export-session"),
  importState: $("import-state"),
  remove: $("delete-session"),
  chatLog: $("chat-log"),
  chatForm: $("chat-form"),
  chatInput: $("chat-input"),
  maxTokens: $("max-tokens"),
  send: $("chat-send"),
  ingestForm: $("ingest-form"),
  ingestText: $("ingest-text"),
  ingestFile: $("ingest-file"),
  binTokens: $("bin-tokens"),
  ingestStart: $("ingest-start"),
  progress: $("ingest-progress"),
  numbers: $("ingest-numbers"),
  tokens: $("session-tokens"),
  version: $("session-version"),
  bytes: $("session-bytes"),
  created: $("session-created"),
  updated: $("session-updated"),
  layers: $("memory-layers"),
  timeline: $("timeline"),
};

const state = {
  connected: false,
  model: null,
  current: null, // the picked session's id
  after: null, // the cursor of the next page of sessions
  logs: new Map(), // session id -> its conversation on this page (an element, kept while others show)
  ingestions: new Map(), // session id -> the last ingestion this page ran on it (its plot and numbers)
  busy: new Set(), // what is running: "chat", "ingest"
};

const path = (id, rest = "") => `/v1/sessions/${encodeURIComponent(id)}${rest}`;
const plot = new SurprisePlot($("surprise-plot"));

// Messages ---------------------------------------------------------------------------------------

function say(message) {
  ui.alert.textContent = message;
  ui.alert.hidden = false;
}

function unsay() {
  ui.alert.hidden = true;
  ui.alert.textContent = "";
}

/** Runs a user's action: its failure is said on the page (the server's own words where it answered). */
async function act(work) {
  unsay();
  try {
    await work();
  } catch (error) {
    if (!(error instanceof ApiError)) console.error(error); // a bug of this page: keep it visible
    if (error.status === 401) ui.keyForm.hidden = false;
    say(error.message);
  }
}

const bytes = (n) =>
  n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`;
const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "–");
const count = (n) => Math.round(n).toLocaleString("en-US");

// Connecting and the key -------------------------------------------------------------------------

async function start() {
  try {
    await request("/v1/models", { auth: false });
  } catch (error) {
    if (error.status !== 401) return say(error.message);
    ui.keyForm.hidden = false; // the server has keys
    ui.key.value = apiKey.get();
    if (!apiKey.get()) {
      say("This server wants an API key: enter yours above.");
      return ui.key.focus();
    }
  }
  await act(connect);
}

async function connect() {
  const models = await json("/v1/models");
  state.model = models.data[0].id;
  ui.model.textContent = state.model;
  await loadSessions(false);
  state.connected = true;
  ui.newSession.disabled = false;
  enable();
}

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey.set(ui.key.value.trim());
  act(async () => {
    try {
      await connect();
      ui.key.removeAttribute("aria-invalid");
    } catch (error) {
      if (error.status === 401) ui.key.setAttribute("aria-invalid", "true");
      throw error;
    }
  });
});

// Sessions ---------------------------------------------------------------------------------------

async function loadSessions(more) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (more && state.after) query.set("after", state.after);
  const page = await json(`/v1/sessions?${query}`);
  if (!more) ui.list.replaceChildren();
  page.data.forEach(show);
  state.after = page.last_id;
  ui.more.hidden = !page.has_more;
}

function itemOf(id) {
  return [...ui.list.children].find((item) => item.dataset.sessionId === id);
}

/** The session's line in the list, added or brought up to date. */
function show(meta) {
  let item = itemOf(meta.id);
  if (!item) {
    item = document.createElement("li");
    item.dataset.sessionId = meta.id;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "session";
    button.innerHTML = '<span class="name"></span><span class="meta"></span>';
    button.querySelector(".name").textContent = meta.id;
    button.addEventListener("click", () => pick(meta.id));
    item.append(button);
    ui.list.append(item);
  }
  item.querySelector(".meta").textContent = `${count(meta.tokens_seen)} tokens · v${meta.version}`;
  item.firstChild.setAttribute("aria-pressed", String(meta.id === state.current));
}

function logOf(id) {
  if (!state.logs.has(id)) {
    const log = document.createElement("ol");
    log.className = "messages";
    state.logs.set(id, log);
  }
  return state.logs.get(id);
}

function pick(id) {
  state.current = id;
  for (const item of ui.list.children) {
    item.firstChild.setAttribute("aria-pressed", String(item.dataset.sessionId === id));
  }
  ui.title.textContent = id ?? "No session picked";
  ui.chatLog.replaceChildren(...(id ? [logOf(id)] : []));
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight; // its latest lines
  showIngestion();
  enable();
  if (id) act(inspect);
  else clearInspector();
}

/** Controls that act on a session work when one is picked and nothing else is running on it. */
function enable() {
  for (const control of document.querySelectorAll("[data-needs-session]")) {
    control.disabled = !(state.connected && state.current);
  }
  if (state.busy.has("chat")) ui.send.disabled = true;
  if (state.busy.has("ingest")) ui.ingestStart.disabled = true;
}

ui.more.addEventListener("click", () => act(() => loadSessions(true)));

ui.newSession.addEventListener("click", () =>
  act(async () => {
    const meta = await json("/v1/sessions", { method: "POST", body: {} });
    show(meta);
    pick(meta.id);
  }),
);

ui.fork.addEventListener("click", () =>
  act(async () => {
    const source = state.current;
    const meta = await json(path(source, "/fork"), { method: "POST", body: {} });
    const log = logOf(source).cloneNode(true); // the fork remembers this conversation: show it
    log.append(note(`Forked from ${source}.`));
    log.dataset.opened = "true"; // its past is the lines above
    state.logs.set(meta.id, log);
    show(meta);
    pick(meta.id);
  }),
);

ui.reset.addEventListener("click", () =>
  act(async () => {
    const id = state.current;
    if (!confirm(`Reset the memory of ${id} to the model's initial memory?`)) return;
    show(await json(path(id, "/reset"), { method: "POST" }));
    addNote(id, "The memory was reset: it remembers none of the above.");
    forgetIngestion(id);
    await inspect();
  }),
);

ui.remove.addEventListener("click", () =>
  act(async () => {
    const id = state.current;
    if (!confirm(`Delete the session ${id} and its memory?`)) return;
    await json(path(id), { method: "DELETE" });
    const item = itemOf(id);
    if (state.after === id) state.after = item?.previousElementSibling?.dataset.sessionId ?? null; // a cursor that exists
    item?.remove();
    state.logs.delete(id);
    state.ingestions.delete(id);
    pick(null);
  }),
);

ui.exportState.addEventListener("click", () =>
  act(async () => {
    const id = state.current;
    const response = await request(path(id, "/state"));
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "")?.[1];
    const url = URL.createObjectURL(await response.blob());
    const link = Object.assign(document.createElement("a"), { href: url, download: name || `${id}.safetensors` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }),
);

ui.importState.addEventListener("change", () =>
  act(async () => {
    const id = state.current;
    const file = ui.importState.files[0];
    if (!file) return;
    try {
      tooLarge(file.size, file.name);
      const response = await request(path(id, "/state"), { method: "PUT", body: file, type: "application/octet-stream" });
      show(await response.json());
      addNote(id, `The memory was replaced by the state in ${file.name}.`);
      forgetIngestion(id);
      await inspect();
    } finally {
      ui.importState.value = ""; // the same file can be chosen again
    }
  }),
);

function tooLarge(size, what) {
  if (size > MAX_UPLOAD_BYTES) {
    const limit = `${bytes(MAX_UPLOAD_BYTES)} (${count(MAX_UPLOAD_BYTES)} bytes)`;
    throw new ApiError(`${what} is too large: ${count(size)} bytes, and the server takes up to ${limit}.`);
  }
}

function note(text) {
  const item = document.createElement("li");
  item.className = "note";
  item.textContent = text;
  return item;
}

/** A note at the end of a session's log, scrolled into view when the session shows. */
function addNote(id, text) {
  logOf(id).append(note(text));
  if (id === state.current) ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

// The inspector ----------------------------------------------------------------------------------

async function inspect() {
  const id = state.current;
  const [meta, memory, versions] = await Promise.all([
    json(path(id)),
    json(path(id, "/memory")),
    json(path(id, "/versions")),
  ]);
  const moves = await Promise.all(versions.data.slice(0, -1).map((v, i) => moved(id, v, versions.data[i + 1])));
  if (id !== state.current) return; // another session was picked meanwhile
  show(meta);
  noteThePast(meta);
  ui.tokens.textContent = String(meta.tokens_seen);
  ui.version.textContent = String(meta.version);
  ui.bytes.textContent = bytes(meta.state_bytes);
  ui.created.textContent = when(meta.created_at);
  ui.updated.textContent = when(meta.updated_at);
  showTimeline(id, versions.data, moves, meta.version);
  ui.layers.replaceChildren(
    ...memory.layers.map((layer) => {
      const row = document.createElement("tr");
      for (const value of [layer.layer, layer.weight_norm.toPrecision(4), layer.distance_from_initial.toPrecision(4)]) {
        row.insertCell().textContent = String(value);
      }
      return row;
    }),
  );
}

/**
 * The first time this page shows a session that was used before (by the API, another tab), its log
 * says so: the server keeps the memory and a hash of the conversation, not the conversation.
 */
function noteThePast(meta) {
  const log = logOf(meta.id);
  if (log.dataset.opened) return;
  log.dataset.opened = "true";
  if (meta.version > 0 && !log.children.length) {
    const past = `version ${meta.version}, ${count(meta.tokens_seen)} tokens in its memory`;
    addNote(
      meta.id,
      `Before this tab, the session was used elsewhere (${past}). ` +
        "What was said there is in its memory but not shown: the server keeps no transcript.",
    );
  }
}

function clearInspector() {
  for (const field of [ui.tokens, ui.version, ui.bytes, ui.created, ui.updated]) field.textContent = "–";
  ui.layers.replaceChildren();
  ui.timeline.replaceChildren();
}

// The timeline of kept versions -------------------------------------------------------------------

/** The largest per-layer relative change of the memory from version ``older`` to ``newer``. */
async function moved(id, newer, older) {
  const report = await json(path(id, `/memory?version=${newer.version}&against=${older.version}`));
  return Math.max(0, ...report.changes.map((change) => change.relative_change ?? 0));
}

function showTimeline(id, versions, moves, current) {
  ui.timeline.replaceChildren(
    ...versions.map((v, i) => {
      const item = document.createElement("li");
      item.dataset.version = String(v.version);
      const made = v.made_by === "restore" ? `restore of version ${v.restored_from}` : v.made_by || "?";
      const change = i < moves.length ? ` · moved ${moves[i].toPrecision(3)}` : "";
      const label = document.createElement("span");
      label.textContent = `v${v.version} · ${made} · ${count(v.tokens_seen)} tokens${change}`;
      item.append(label);
      if (v.current) {
        item.append(" (current)");
      } else {
        const restore = Object.assign(document.createElement("button"), { type: "button", textContent: "Restore" });
        restore.dataset.testid = "restore-version";
        restore.addEventListener("click", () => act(() => restoreVersion(id, v.version, current)));
        item.append(restore);
      }
      return item;
    }),
  );
}

async function restoreVersion(id, version, current) {
  const body = { version, if_version: current }; // refused if the session moved on meanwhile
  show(await json(path(id, "/restore"), { method: "POST", body }));
  addNote(id, `Version ${version} was restored: its memory, and the conversation it had seen.`);
  forgetIngestion(id);
  if (id === state.current) await inspect();
}

// Chat -------------------------------------------------------------------------------------------

function message(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.textContent = text;
  if (role === "assistant") item.dataset.testid = "chat-reply";
  return item;
}

ui.chatInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.chatForm.requestSubmit();
  }
});

ui.chatForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.busy.has("chat")) act(chat);
});

async function chat() {
  const id = state.current;
  const text = ui.chatInput.value;
  if (!text.trim()) throw new ApiError("Type a message first: an empty message is not sent.");
  const body = { model: state.model, session_id: id, messages: [{ role: "user", content: text }], stream: true };
  const limit = Number(ui.maxTokens.value);
  if (ui.maxTokens.value !== "") {
    if (!Number.isInteger(limit) || limit < 1) throw new ApiError("The reply length is a whole number of tokens, 1 or more.");
    body.max_tokens = limit;
  }
  // The session keeps the conversation in its memory: only the new message is sent.
  state.busy.add("chat");
  enable();
  const log = logOf(id);
  try {
    const response = await request("/v1/chat/completions", { method: "POST", body: JSON.stringify(body), type: "application/json" });
    const mine = message("user", text);
    const reply = message("assistant", "");
    reply.setAttribute("aria-busy", "true");
    log.append(mine, reply);
    ui.chatInput.value = "";
    try {
      for await (const { data } of events(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw streamError(chunk);
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) reply.textContent += delta; // token by token, as they arrive
        ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
      }
    } catch (error) {
      // Nothing of a failed reply is committed: the message is back in the box, to send again.
      mine.classList.add("failed");
      reply.classList.add("failed");
      if (!ui.chatInput.value) ui.chatInput.value = text;
      throw error;
    } finally {
      reply.setAttribute("aria-busy", "false");
    }
  } finally {
    state.busy.delete("chat");
    enable();
  }
  if (id === state.current) await inspect();
}

// Ingestion --------------------------------------------------------------------------------------

ui.ingestForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.busy.has("ingest")) act(ingest);
});

async function ingest() {
  const id = state.current;
  const file = ui.ingestFile.files[0];
  const text = ui.ingestText.value;
  const bin = Number(ui.binTokens.value);
  if (!Number.isInteger(bin) || bin < 1 || bin > 65536) throw new ApiError("Tokens per bin: a whole number from 1 to 65536.");
  let body;
  let type;
  if (file) {
    tooLarge(file.size, file.name);
    body = new FormData();
    body.append("file", file);
  } else {
    if (!text.trim()) throw new ApiError("Paste a text or choose a file to ingest.");
    tooLarge(new Blob([text]).size, "The text");
    body = text;
    type = "text/plain; charset=utf-8";
  }
  state.busy.add("ingest");
  enable();
  const run = { binTokens: bin, bins: [], done: 0, total: 1, status: "sending…" };
  state.ingestions.set(id, run);
  if (id === state.current) showIngestion();
  /** The run's new numbers (and bins), drawn while its session shows. */
  const update = (numbers, bins = null) => {
    Object.assign(run, numbers);
    if (bins) run.bins.push(bins);
    if (id !== state.current || state.ingestions.get(id) !== run) return;
    if (bins) plot.add(...bins);
    showProgress(run);
  };
  try {
    const response = await request(path(id, `/ingest?stream=true&bin_tokens=${bin}`), { method: "POST", body, type });
    for await (const { event, data } of events(response)) {
      const fields = JSON.parse(data);
      if (event === "progress") {
        const [done, total] = [fields.tokens_done, fields.tokens_total];
        const status = progressText(done, total, fields.tokens_per_second);
        update({ done, total, status }, [fields.first_bin, fields.loss, fields.write_strength]);
      } else if (event === "done") {
        const n = fields.tokens_ingested;
        const took = ` · done in ${fields.seconds.toFixed(1)} s${means(fields)}`;
        update({ done: n, total: n, status: progressText(n, n, fields.tokens_per_second) + took });
        if (file && ui.ingestFile.files[0] === file) ui.ingestFile.value = ""; // ingested: not again by mistake
      } else if (event === "error") {
        throw streamError(fields);
      }
    }
  } catch (error) {
    update({ status: "not ingested: the memory is as it was" });
    throw error;
  } finally {
    state.busy.delete("ingest");
    enable();
    if (id === state.current) await inspect().catch(() => {});
  }
}

function progressText(done, total, perSecond) {
  const rate = perSecond == null ? "" : ` · ${count(perSecond)} tokens/s`;
  return `${count(done)} / ${count(total)} tokens${rate}`;
}

/** The picked session's last ingestion on this page (its plot, bar and numbers), or an empty plot. */
function showIngestion() {
  const run = state.ingestions.get(state.current);
  plot.clear(run?.binTokens ?? plot.binTokens);
  for (const bins of run?.bins ?? []) plot.add(...bins);
  showProgress(run);
}

function showProgress(run) {
  ui.progress.max = Math.max(run?.total ?? 1, 1);
  ui.progress.value = run?.done ?? 0;
  if (run) Object.assign(ui.progress.dataset, { done: String(run.done), total: String(run.total) });
  else for (const key of ["done", "total"]) delete ui.progress.dataset[key];
  ui.numbers.textContent = run?.status ?? "";
}

/** A session whose memory was replaced: its plot described a memory it no longer has. */
function forgetIngestion(id) {
  state.ingestions.delete(id);
  if (id === state.current) showIngestion();
}

function means(done) {
  const parts = [];
  if (done.mean_loss != null) parts.push(`mean loss ${done.mean_loss.toFixed(2)} nats`);
  if (done.mean_write_strength != null) parts.push(`mean write strength ${done.mean_write_strength.toPrecision(3)}`);
  return parts.length ? ` · ${parts.join(" · ")}` : "";
}

start();
