// The console's talk with its server: JSON over fetch (same origin, cookie) and the protocol WebSocket.
// Nothing here stores the token: it goes to /api/signin once, in a POST body.

let csrf = "";

export function setCsrf(token) { csrf = token; }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function reply(response) {
  let data = {};
  try { data = await response.json(); } catch { data = {}; }
  if (!response.ok) throw new ApiError(response.status, data.message || `HTTP ${response.status}`);
  return data;
}

export async function getJson(path, params) {
  const query = params ? "?" + new URLSearchParams(params).toString() : "";
  return reply(await fetch(path + query, { credentials: "same-origin", headers: { "Accept": "application/json" } }));
}

export async function postForm(path, fields) {
  return reply(await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf },
    body: new URLSearchParams(fields).toString(),
  }));
}

// One WebSocket for the page; frames go to every listener, replies are matched by id.
export class Protocol {
  constructor() {
    this.listeners = new Set();
    this.counter = 0;
    this.ws = null;
    this.opened = null;
  }

  connect() {
    if (this.opened) return this.opened;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.opened = new Promise((resolve, reject) => {
      const ws = new WebSocket(`${scheme}://${location.host}/ws`);
      this.ws = ws;
      ws.addEventListener("open", () => resolve(ws));
      ws.addEventListener("error", () => reject(new Error("the connection to the server failed")));
      ws.addEventListener("message", (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch { return; }
        for (const listener of this.listeners) listener(frame);
      });
      ws.addEventListener("close", (event) => {
        this.opened = null;
        for (const listener of this.listeners) listener({ type: "closed", payload: { code: event.code, reason: event.reason } });
      });
    });
    return this.opened;
  }

  on(listener) { this.listeners.add(listener); return () => this.listeners.delete(listener); }

  async send(type, payload) {
    const ws = await this.connect();
    const id = `console-${++this.counter}`;
    ws.send(JSON.stringify({ type, id, payload }));
    return id;
  }
}

// Builds elements with text only: values from users and tools never become markup.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function facts(pairs) {
  const list = el("dl", { className: "facts" });
  for (const [term, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    list.append(el("dt", { text: term }), el("dd", { text: value }));
  }
  return list;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}
