// Approvals (admins): what waits for them, live; approve or deny with a reason (and remember it);
// what they decided here; the live grants (remembered approvals), each with Revoke.
import { el, facts, getJson, pretty } from "./api.js";
import { rememberControls } from "./remember.js";

const $ = (id) => document.getElementById(id);

export class ApprovalsPage {
  constructor({ protocol, notice }) {
    this.protocol = protocol;
    this.notice = notice;
    this.listId = null;
    this.answering = new Map();  // approval frame id -> { action, approved, line }: sent, not yet confirmed
    this.refused = new Map();  // action id -> why the server refused the last answer (shown on its card)
    this.grantsId = null;
    this.revoking = new Map();  // grant_revoke frame id -> grant
    protocol.on((frame) => this.frame(frame));
    $("approvals-refresh").addEventListener("click", () => { this.refresh(); this.history(); });
  }

  shown() { this.refresh(); this.history(); }

  async refresh() {
    this.listId = await this.protocol.send("action_list", {});
    this.grantsId = await this.protocol.send("grant_list", {});
  }

  renderGrants(grants) {
    $("approvals-grants-empty").textContent = grants.length
      ? `${grants.length} remembered approval${grants.length === 1 ? "" : "s"}.` : "Nothing is remembered.";
    $("approvals-grants").replaceChildren(...grants.map((g) => {
      const reach = g.match ? Object.entries(g.match).map(([name, kind]) => `${name}: ${kind}`).join(", ")
        : "exactly these arguments";
      const what = `${g.name} for ${g.subject}`;
      const revoke = el("button", { type: "button", className: "deny", text: "Revoke", "aria-label": `Revoke ${what}` });
      revoke.addEventListener("click", async () => {
        revoke.disabled = true;
        this.revoking.set(await this.protocol.send("grant_revoke", { grant_id: g.grant_id }), g);
      });
      return el("li", { "data-grant": g.grant_id, "aria-label": `Grant ${what}` },
        el("strong", { text: `${g.kind === "resource" ? "Read" : "Tool"}: ${g.name}` }),
        facts([["for", g.subject], ["made by", g.made_by], ["scope", g.session_id ? `session ${g.session_id}` : g.scope],
          ["reach", reach], ["until", g.expires_at], ["grant", g.grant_id]]),
        el("pre", { "aria-label": "Arguments", text: pretty(g.arguments) }),
        el("div", { className: "row" }, revoke));
    }));
  }

  async history() {
    try {
      const { decided } = await getJson("/api/approvals/decided");
      $("approvals-decided").replaceChildren(...decided.map((r) => {
        const reason = r.details && r.details.reason ? ` (${r.details.reason})` : "";
        return el("li", { text: `${r.time_iso}: ${r.outcome} ${r.target} for ${r.subject}${reason}` });
      }));
    } catch (error) {
      this.notice(error.message);
    }
  }

  frame(frame) {
    const p = frame.payload || {};
    if (frame.type === "grant_list" && p.reply_to === this.grantsId) {
      this.renderGrants(p.grants);
    } else if (frame.type === "grant_revoke" && this.revoking.has(p.reply_to)) {
      this.revoking.delete(p.reply_to);
      this.refresh();
    } else if (frame.type === "error" && this.revoking.has(p.reply_to)) {
      const grant = this.revoking.get(p.reply_to);
      this.revoking.delete(p.reply_to);
      this.notice(`${grant.name}: ${p.code}: ${p.message}`);
      this.refresh();
    } else if (frame.type === "action_list" && p.reply_to === this.listId) {
      // The server answers frames in order: an answer it refused has had its error by now, so
      // one still here whose action left the queue was taken. Only then is it "decided".
      const waiting = new Set(p.actions.map((a) => a.action_id));
      let remembered = false;
      for (const [id, sent] of this.answering) {
        if (waiting.has(sent.action.action_id)) continue;
        this.answering.delete(id);
        $("approvals-decided").prepend(el("li", { text: sent.line }));
        remembered = remembered || sent.remembered;
      }
      if (remembered) this.grantsId = null;
      this.render(p.actions.filter((a) => a.approver === "admin"));
      // A grant is made once its approval is recorded: ask for the list again after that.
      if (remembered) this.protocol.send("grant_list", {}).then((id) => { this.grantsId = id; });
    } else if (frame.type === "agent_action" && p.requires_approval && p.approver === "admin") {
      this.refresh();  // the list carries who asked; the event alone does not
    } else if (frame.type === "agent_result") {
      const card = document.querySelector(`#approvals-queue li[data-action="${CSS.escape(p.action_id || "")}"]`);
      if (card) this.refresh();
    } else if (frame.type === "error" && this.answering.has(p.reply_to)) {
      // Refused (a remember the policy does not allow, an answer too late): said on the card,
      // which can be answered again; nothing was decided.
      const { action } = this.answering.get(p.reply_to);
      this.answering.delete(p.reply_to);
      this.refused.set(action.action_id, `${p.code}: ${p.message}`);
      this.refresh();
    }
  }

  render(actions) {
    const queue = $("approvals-queue");
    queue.replaceChildren(...actions.map((action) => this.card(action)));
    $("approvals-empty").textContent = actions.length
      ? `${actions.length} action${actions.length === 1 ? "" : "s"} waiting for an admin.`
      : "Nothing waits for you.";
  }

  card(action) {
    const card = el("li", { "data-action": action.action_id, "aria-label": `${action.name} asked by ${action.requester}` });
    const reasonId = `approval-reason-${action.action_id}`;
    const reason = el("input", { id: reasonId, type: "text", placeholder: "optional" });
    const what = `${action.name} for ${action.requester}`;
    const approve = el("button", { type: "button", className: "approve", text: "Approve", "aria-label": `Approve ${what}` });
    const deny = el("button", { type: "button", className: "deny", text: "Deny", "aria-label": `Deny ${what}` });
    const remember = rememberControls(action);
    const answer = async (approved) => {
      approve.disabled = deny.disabled = reason.disabled = true;
      remember.disable();
      const payload = { action_id: action.action_id, approved };
      if (reason.value.trim()) payload.reason = reason.value.trim();
      const kept = approved ? remember.read() : undefined;
      if (kept) payload.remember = kept;
      this.refused.delete(action.action_id);
      const line = `${new Date().toLocaleTimeString()}: ${approved ? "approved" : "denied"} ${action.name} for ${action.requester}${payload.reason ? ` (${payload.reason})` : ""}${kept ? " and remembered" : ""}`;
      const id = await this.protocol.send("action_approval", payload);
      this.answering.set(id, { action, approved, line, remembered: Boolean(kept) });
      this.refresh();
    };
    approve.addEventListener("click", () => answer(true));
    deny.addEventListener("click", () => answer(false));
    card.append(
      el("strong", { text: `${action.kind === "resource" ? "Read" : "Tool"}: ${action.name}` }),
      facts([
        ["asked by", action.requester], ["session", action.session_id || "(a direct call)"],
        ["level", String(action.level)], ["rule", action.reason],
        ["expires in", `${Math.round(action.expires_in_s)} s`],
      ]),
      el("pre", { "aria-label": "Arguments", text: pretty(action.arguments) }),
      remember.element,
      el("div", { className: "row" }, el("label", { for: reasonId, text: "Reason" }), reason, approve, deny),
    );
    const refused = this.refused.get(action.action_id);
    if (refused) card.append(el("p", { className: "refused", role: "alert", text: `Not taken: ${refused}` }));
    return card;
  }
}
