// The console's shell: sign-in (token or one-time code), the pages by role, the hash router.
import { ApiError, Protocol, getJson, postForm, setCsrf } from "./api.js";
import { ChatPage } from "./chat.js";
import { ApprovalsPage } from "./approvals.js";
import { AuditPage } from "./audit.js";
import { PoliciesPage } from "./policies.js";
import { ToolsPage } from "./tools.js";

const $ = (id) => document.getElementById(id);
const state = { me: null, protocol: null, pages: {} };

function show(name) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== `page-${name}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const page = state.pages[name];
  if (page && page.shown) page.shown();
}

function allowed(link) {
  const roles = state.me ? state.me.roles : [];
  if (link.dataset.role === "admin") return roles.includes("admin");
  if (link.dataset.role === "audit") return roles.includes("admin") || roles.includes("auditor");
  return true;
}

function route() {
  if (!state.me) { show("signin"); return; }
  const wanted = location.hash.replace(/^#/, "") || "chat";
  const link = document.querySelector(`#nav a[data-page="${CSS.escape(wanted)}"]`);
  show(link && allowed(link) ? wanted : "chat");
}

function notice(message) {
  const box = $("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

async function signedIn(me) {
  state.me = me;
  setCsrf(me.csrf);
  $("who-name").textContent = `${me.sub} (${me.roles.join(", ") || "no roles"})`;
  $("who").hidden = false;
  $("nav").hidden = false;
  for (const link of document.querySelectorAll("#nav a")) link.hidden = !allowed(link);
  state.protocol = new Protocol();
  state.protocol.on((frame) => {
    if (frame.type === "closed") notice(`The connection to the server closed (${frame.payload.code}${frame.payload.reason ? ": " + frame.payload.reason : ""}). Reload the page to reconnect.`);
  });
  const context = { me, protocol: state.protocol, notice };
  state.pages.chat = new ChatPage(context);
  if (me.roles.includes("admin")) state.pages.approvals = new ApprovalsPage(context);
  if (me.roles.includes("admin") || me.roles.includes("auditor")) {
    state.pages.audit = new AuditPage(context);
    state.pages.policies = new PoliciesPage(context);
  }
  state.pages.tools = new ToolsPage(context);
  try { await state.protocol.connect(); } catch (error) { notice(error.message); }
  route();
  $("main").focus();
}

async function signIn(fields) {
  const pre = await getJson("/api/csrf");
  setCsrf(pre.csrf);
  await postForm("/api/signin", fields);
  await signedIn(await getJson("/api/me"));
}

async function start() {
  window.addEventListener("hashchange", route);
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = $("signin-token");
    const token = field.value.trim();
    field.value = "";  // the page keeps nothing of it
    $("signin-error").textContent = "";
    try { await signIn({ token }); } catch (error) { $("signin-error").textContent = error.message; }
  });
  $("signout").addEventListener("click", async () => {
    try { await postForm("/api/signout", {}); } finally { location.hash = ""; location.reload(); }
  });
  const code = new URLSearchParams(location.hash.replace(/^#/, "")).get("code");
  if (code) {
    // The one-time code leaves the address bar (and the history entry) before anything else.
    history.replaceState(null, "", location.pathname + "#chat");
    try { await signIn({ code }); return; } catch (error) { show("signin"); $("signin-error").textContent = error.message; return; }
  }
  try {
    await signedIn(await getJson("/api/me"));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) notice(error.message);
    show("signin");
  }
}

start();
