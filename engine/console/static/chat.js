// Chat: pick an agent (or an earlier session), stream the answers, show and answer each action, stop a turn.
import { el, getJson } from "./api.js";
import { actionCard, approvalPayload, showResult } from "./actions.js";

const $ = (id) => document.getElementById(id);
const BUSY = new Set(["processing", "tool_use"]);

export class ChatPage {
  constructor({ me, protocol, notice }) {
    this.me = me;
    this.protocol = protocol;
    this.notice = notice;
    this.sessionId = null;
    this.connectId = null;
    this.mine = new Set();  // ids of frames this page sent: their errors are shown here
    this.approving = new Map();  // action_approval frame id -> action id
    this.answers = new Map();  // turn_id -> the <li> being streamed into
    this.actions = new Map();  // action_id -> its card
    protocol.on((frame) => this.frame(frame));
    $("chat-connect").addEventListener("submit", (event) => { event.preventDefault(); this.open(); });
    $("chat-send").addEventListener("submit", (event) => { event.preventDefault(); this.sendMessage(); });
    $("chat-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); this.sendMessage(); }
    });
    $("chat-stop").addEventListener("click", () => this.stop());
    $("chat-session").addEventListener("change", () => {
      const option = $("chat-session").selectedOptions[0];
      if (option && option.dataset.agent) $("chat-agent").value = option.dataset.agent;
    });
    this.load();
  }

  async load() {
    try {
      const { agents } = await getJson("/api/agents");
      const select = $("chat-agent");
      select.replaceChildren(...agents.map((a) => el("option", { value: a.name, title: a.description, text: a.name })));
      const { sessions } = await getJson("/api/sessions");
      const earlier = $("chat-session");
      earlier.replaceChildren(el("option", { value: "", text: "New session" }));
      for (const s of sessions.filter((s) => s.state !== "terminated").sort((a, b) => b.updated_at - a.updated_at)) {
        const when = new Date(s.updated_at * 1000).toLocaleString();
        earlier.append(el("option", { value: s.session_id, "data-agent": s.agent, text: `${s.agent}, ${when} (${s.state})` }));
      }
    } catch (error) {
      this.notice(error.message);
    }
  }

  async send(type, payload) {
    const id = await this.protocol.send(type, payload);
    this.mine.add(id);
    return id;
  }

  async open() {
    const agent = $("chat-agent").value;
    const session = $("chat-session").value;
    const payload = session ? { agent, session_id: session } : { agent };
    $("chat-log").replaceChildren();
    this.answers.clear();
    this.actions.clear();
    this.sessionId = null;
    this.connectId = await this.send("agent_connect", payload);
  }

  async sendMessage() {
    const input = $("chat-input");
    const content = input.value.trim();
    if (!content || !this.sessionId) return;
    input.value = "";
    $("chat-log").append(el("li", { className: "user", text: content }));
    await this.send("user_message", { session_id: this.sessionId, content });
  }

  async stop() {
    if (this.sessionId) await this.send("agent_control", { session_id: this.sessionId, command: "cancel" });
  }

  setState(state) {
    const busy = BUSY.has(state);
    $("chat-state").textContent = `Session ${this.sessionId} with ${this.agent}: ${state.replace("_", " ")}`;
    $("chat-input").disabled = state === "terminated" || state === "paused";
    $("chat-submit").disabled = busy || state === "terminated" || state === "paused";
    $("chat-stop").disabled = !busy;
  }

  frame(frame) {
    const p = frame.payload || {};
    if (frame.type === "agent_state") {
      if (p.reply_to && p.reply_to === this.connectId) { this.sessionId = p.session_id; this.agent = p.agent; }
      if (p.session_id === this.sessionId) this.setState(p.state);
    } else if (p.session_id && p.session_id !== this.sessionId) {
      return;  // another session's frame (an admin sees others' actions on the Approvals page)
    } else if (frame.type === "response_token") {
      this.answer(p.turn_id).textContent += p.token;
    } else if (frame.type === "agent_response") {
      const li = this.answer(p.turn_id);
      li.textContent = p.content;
      if (p.cancelled) li.append(el("em", { text: " (stopped)" }));
      this.answers.delete(p.turn_id);
    } else if (frame.type === "agent_action") {
      this.action(p);
    } else if (frame.type === "agent_result") {
      this.result(p);
    } else if (frame.type === "error" && p.reply_to && this.mine.has(p.reply_to)) {
      $("chat-log").append(el("li", { className: "error", role: "alert", text: `${p.code}: ${p.message}` }));
      // A refused answer (a remember the policy does not allow): the action still waits, ask again.
      const card = this.actions.get(this.approving.get(p.reply_to));
      if (card && card.reopen && p.code !== "already_decided" && p.code !== "expired") card.reopen(p.message);
    }
  }

  answer(turnId) {
    let li = this.answers.get(turnId);
    if (!li) {
      li = el("li", { className: "agent" });
      this.answers.set(turnId, li);
      $("chat-log").append(li);
    }
    return li;
  }

  action(p) {
    const card = actionCard(p, async (approved, reason, remember) => {
      const id = await this.send("action_approval", approvalPayload(p.action_id, approved, reason, remember));
      this.approving.set(id, p.action_id);
    });
    this.actions.set(p.action_id, card);
    $("chat-log").append(card);
  }

  result(p) {
    const card = this.actions.get(p.action_id);
    if (card) showResult(card, p);
  }
}
