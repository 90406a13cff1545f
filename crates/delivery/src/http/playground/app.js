// The SBA playground: mints a development token, starts a run of the `echo` agent and shows
// its events as they stream in over the WebSocket `GET /v1/stream` (ARCHITECTURE.md §7), with
// cancel and resume-from-seq. No library: the page must work offline, under a
// Content-Security-Policy that allows this origin only. Text from the server is only ever set
// as `textContent`, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

/** Run statuses after which nothing more happens. */
const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);

/** The status a run is in after an event of this kind. */
const STATUS_AFTER = {
  "run.created": "queued",
  "run.started": "in_progress",
  "run.requires_action": "requires_action",
  "run.completed": "completed",
  "run.failed": "failed",
  "run.cancelled": "cancelled",
};

/** What a close code means (§7), and whether resuming with `after_seq` is the remedy. */
const CLOSE_CODES = {
  1000: { meaning: "closed normally", resume: false },
  1001: { meaning: "the server is going away", resume: true },
  1006: { meaning: "the connection dropped", resume: true },
  1008: { meaning: "policy: the token expired or was refused", resume: false },
  1009: { meaning: "a frame was too big", resume: false },
  1011: { meaning: "the server failed", resume: true },
  1013: { meaning: "too slow to keep up (slow consumer or overload)", resume: true },
};

/** The most lines kept in the message list. */
const MAX_MESSAGES = 200;

const state = {
  token: null,
  runId: null,
  runStatus: null,
  socket: null,
  /** The id of the current socket's subscribe op. */
  subscribeId: null,
  nextOpId: 1,
  /** The highest seq shown: everything up to it is in `events`, once. */
  lastSeq: 0,
  /** Shown events in seq order: `{seq, fromSeq, kind, data}` (`fromSeq` < `seq` when coalesced). */
  events: [],
  duplicates: 0,
};

function message(text, level = "info") {
  const list = $("messages");
  const item = document.createElement("li");
  item.className = level;
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  list.append(item);
  while (list.children.length > MAX_MESSAGES) list.firstElementChild.remove();
}

function setOutput(id, text, attribute, value) {
  const output = $(id);
  output.textContent = text;
  if (attribute) output.dataset[attribute] = value;
}

/** A problem+json body as one line: its code and detail. */
function describeProblem(status, body) {
  if (body && body.code) return `${status} ${body.code}: ${body.detail || body.title || ""}`;
  return `HTTP ${status}`;
}

/**
 * `fetch` on the API, as the bearer of the current token unless `anonymous`; the answer's
 * status and JSON body.
 */
async function api(method, path, body, anonymous = false) {
  const headers = { Accept: "application/json" };
  if (state.token && !anonymous) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let json = null;
  try {
    json = await response.json();
  } catch {
    // An answer without a JSON body (none is expected): described by its status alone.
  }
  return { status: response.status, ok: response.ok, body: json };
}

// --- token ---------------------------------------------------------------------------------

function useToken(token, description) {
  state.token = token;
  setOutput("token-status", description, "state", "ok");
  $("start").disabled = false;
}

async function mintToken() {
  const request = { role: $("token-role").value };
  const tenant = $("token-tenant").value.trim();
  const user = $("token-user").value.trim();
  if (tenant) request.tenant_id = tenant;
  if (user) request.user_id = user;
  setOutput("token-status", "minting…", "state", "pending");
  try {
    // Minting needs no token: the current one may be the expired one being replaced.
    const answer = await api("POST", "/dev/token", request, true);
    if (answer.ok) {
      const minted = answer.body;
      const expires = new Date(minted.expires_at).toLocaleTimeString();
      useToken(
        minted.token,
        `minted for ${minted.user_id} of tenant ${minted.tenant_id} (${minted.role}), valid until ${expires}`,
      );
    } else if (answer.status === 404) {
      setOutput(
        "token-status",
        "this server mints no development token (production, or the playground's tokens are off): use another token below",
        "state",
        "error",
      );
    } else {
      setOutput("token-status", `not minted: ${describeProblem(answer.status, answer.body)}`, "state", "error");
    }
  } catch (error) {
    setOutput("token-status", `not minted: ${error}`, "state", "error");
  }
}

// --- run -------------------------------------------------------------------------------------

function setRunStatus(status) {
  state.runStatus = status;
  setOutput("run-status", status, "status", status);
  $("cancel").disabled = !state.runId || TERMINAL.has(status);
}

function resetEvents() {
  state.events = [];
  state.lastSeq = 0;
  state.duplicates = 0;
  renderAll();
}

async function startRun() {
  const prompt = $("prompt").value;
  $("start").disabled = true;
  try {
    const answer = await api("POST", "/v1/runs", { agent: "echo", input: prompt });
    if (!answer.ok) {
      message(`the run was not started: ${describeProblem(answer.status, answer.body)}`, "error");
      return;
    }
    state.runId = answer.body.id;
    setOutput("run-id", state.runId);
    resetEvents();
    setRunStatus(answer.body.status);
    message(`run ${state.runId} started`);
    connect(0);
  } catch (error) {
    message(`the run was not started: ${error}`, "error");
  } finally {
    $("start").disabled = !state.token;
  }
}

async function cancelRun() {
  if (!state.runId) return;
  $("cancel").disabled = true;
  try {
    const answer = await api("POST", `/v1/runs/${state.runId}/cancel`);
    if (answer.ok) {
      setRunStatus(answer.body.status);
      message(`run ${state.runId} cancelled`);
    } else {
      message(`the run was not cancelled: ${describeProblem(answer.status, answer.body)}`, "error");
      $("cancel").disabled = TERMINAL.has(state.runStatus);
    }
  } catch (error) {
    message(`the run was not cancelled: ${error}`, "error");
    $("cancel").disabled = false;
  }
}

// --- stream ----------------------------------------------------------------------------------

function setConnection(text, connectionState) {
  setOutput("connection-status", text, "state", connectionState);
  const open = connectionState === "open" || connectionState === "connecting";
  $("disconnect").disabled = !open;
  $("resume").disabled = !state.runId;
}

function offerResume(on) {
  $("resume").classList.toggle("offer", on);
}

/** Closes the current socket, if any, without reporting it as a drop. */
function dropSocket(reason) {
  const socket = state.socket;
  if (!socket) return;
  state.socket = null;
  socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
  if (socket.readyState <= WebSocket.OPEN) socket.close(1000, reason);
}

/** Opens a new socket and subscribes to the run's channel after `afterSeq`. */
function connect(afterSeq) {
  dropSocket("reconnecting");
  offerResume(false);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // Browsers cannot set headers on a WebSocket: the token travels as a subprotocol (§7).
  const socket = new WebSocket(`${scheme}://${location.host}/v1/stream`, ["sba.v1", `bearer.${state.token}`]);
  state.socket = socket;
  let opened = false;
  setConnection("connecting…", "connecting");
  socket.onopen = () => {
    opened = true;
    setConnection(`open (${socket.protocol || "no subprotocol"})`, "open");
    subscribe(afterSeq);
  };
  socket.onmessage = (frame) => onFrame(frame.data);
  socket.onclose = (close) => {
    state.socket = null;
    onClose(close, opened);
  };
}

function subscribe(afterSeq) {
  const id = String(state.nextOpId++);
  state.subscribeId = id;
  const op = { op: "subscribe", id, channel: `run:${state.runId}`, after_seq: afterSeq };
  state.socket.send(JSON.stringify(op));
  message(`subscribe to run:${state.runId} after seq ${afterSeq} (op ${id})`);
}

function onFrame(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    message("a frame that is not JSON was ignored", "warn");
    return;
  }
  switch (frame.type) {
    case "event":
      onEvent(frame);
      break;
    case "ack":
      if (frame.id === state.subscribeId && state.socket) {
        setConnection(`open (${state.socket.protocol || "no subprotocol"}), subscribed to run:${state.runId}`, "open");
      }
      break;
    case "error":
      onErrorFrame(frame);
      break;
    case "pong":
      break;
    default:
      message(`a frame of unknown type ${JSON.stringify(frame.type)} was ignored`, "warn");
  }
}

function onEvent(frame) {
  const event = frame.event || {};
  const seq = frame.seq;
  if (!Number.isSafeInteger(seq) || seq <= state.lastSeq) {
    // The server never repeats an event; this count proves it on the page.
    state.duplicates += 1;
    $("duplicates").textContent = String(state.duplicates);
    return;
  }
  const data = event.data || {};
  const coalesced = data.coalesced;
  const shown = { seq, fromSeq: coalesced ? coalesced.from_seq : seq, kind: event.kind, data };
  state.events.push(shown);
  state.lastSeq = seq;
  $("events").tBodies[0].append(eventRow(shown));
  if (shown.kind === "step.delta") $("text").textContent += data.text || "";
  renderSeq();
  if (STATUS_AFTER[shown.kind]) setRunStatus(STATUS_AFTER[shown.kind]);
}

function onErrorFrame(frame) {
  const op = frame.id ? ` (op ${frame.id})` : "";
  const retry = frame.retry_after_ms ? `, retry after ${frame.retry_after_ms} ms` : "";
  switch (frame.code) {
    case "resume_required":
      // The server could not fill a gap: subscribe again from where it says.
      message(`resume required after seq ${frame.after_seq}${op}`, "warn");
      resumeFrom(Number.isSafeInteger(frame.after_seq) ? frame.after_seq : state.lastSeq, true);
      break;
    case "token_expired":
      message(`the token expired${op}: mint a new one, then Resume`, "error");
      setOutput("token-status", "expired: mint a new one", "state", "error");
      break;
    default:
      message(`error ${frame.code}${op}${retry}${frame.message ? `: ${frame.message}` : ""}`, "error");
  }
}

function onClose(close, opened) {
  const known = CLOSE_CODES[close.code] || { meaning: "closed", resume: true };
  const reason = close.reason ? ` (${close.reason})` : "";
  if (!opened) {
    // A refused handshake (401 for a bad or expired token) reaches a page only as 1006.
    setConnection(`not connected: the server refused the WebSocket (${close.code})`, "error");
    message("the WebSocket was refused: check the token (a bad or expired one is refused before any upgrade)", "error");
    return;
  }
  setConnection(`closed ${close.code}: ${known.meaning}${reason}`, close.code === 1000 ? "closed" : "error");
  const unfinished = !TERMINAL.has(state.runStatus);
  if (known.resume && unfinished) {
    offerResume(true);
    message(`connection closed (${close.code}, ${known.meaning}): Resume continues after seq ${state.lastSeq}`, "warn");
  } else if (close.code === 1008) {
    message("connection closed by policy (1008): mint a new token, then Resume", "error");
  } else if (close.code !== 1000) {
    message(`connection closed (${close.code}, ${known.meaning})`, "error");
  }
}

/**
 * Subscribes again after `requested` (at most the last seq shown: after it there would be a
 * gap): on a new connection, or on the open one when `sameSocket` (a `resume_required` ended
 * the subscription there). Events after it are taken off the page first, so the replay shows
 * each once; a coalesced delta reaching back before it goes too, with the seqs it covers.
 */
function resumeFrom(requested, sameSocket = false) {
  if (!state.runId) return;
  let after = Math.max(0, Math.min(requested, state.lastSeq));
  while (state.events.length && state.events[state.events.length - 1].seq > after) {
    const removed = state.events.pop();
    after = Math.min(after, removed.fromSeq - 1);
  }
  state.lastSeq = after;
  renderAll();
  if (sameSocket && state.socket && state.socket.readyState === WebSocket.OPEN) {
    subscribe(after);
  } else {
    connect(after);
  }
}

// --- rendering ------------------------------------------------------------------------------

function eventRow(shown) {
  const row = document.createElement("tr");
  row.dataset.seq = String(shown.seq);
  row.dataset.fromSeq = String(shown.fromSeq);
  row.dataset.kind = shown.kind;
  const seq = shown.fromSeq === shown.seq ? String(shown.seq) : `${shown.fromSeq}–${shown.seq}`;
  let detail;
  if (shown.kind === "step.delta") {
    detail = JSON.stringify(shown.data.text || "");
    if (shown.fromSeq !== shown.seq) detail += ` (coalesced ${shown.fromSeq}–${shown.seq})`;
  } else {
    detail = JSON.stringify(shown.data);
    if (detail === "{}") detail = "";
    if (detail.length > 200) detail = `${detail.slice(0, 200)}…`;
  }
  for (const text of [seq, shown.kind, detail]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  return row;
}

function renderSeq() {
  $("last-seq").textContent = String(state.lastSeq);
  const resume = $("resume-seq");
  if (document.activeElement !== resume) resume.value = String(state.lastSeq);
}

function renderAll() {
  $("events").tBodies[0].replaceChildren(...state.events.map(eventRow));
  $("text").textContent = state.events
    .filter((shown) => shown.kind === "step.delta")
    .map((shown) => shown.data.text || "")
    .join("");
  $("duplicates").textContent = String(state.duplicates);
  renderSeq();
}

// --- wiring ---------------------------------------------------------------------------------

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  mintToken();
});
$("paste-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-paste").value.trim();
  if (token) useToken(token, "pasted");
});
$("run-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startRun();
});
$("cancel").addEventListener("click", cancelRun);
$("disconnect").addEventListener("click", () => {
  dropSocket("disconnected at the page");
  setConnection(`disconnected (at seq ${state.lastSeq})`, "closed");
  message(`disconnected at seq ${state.lastSeq}`);
});
$("resume").addEventListener("click", () => {
  const requested = Number.parseInt($("resume-seq").value, 10);
  resumeFrom(Number.isNaN(requested) ? state.lastSeq : requested);
});

mintToken();
