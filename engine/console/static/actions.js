// One action's card (tool call or resource read): tool, arguments, level, who approves; the answer; the result.
import { el, facts, pretty } from "./api.js";
import { rememberControls } from "./remember.js";

let counter = 0;

// `answer(approved, reason, remember)` sends the action_approval; the card shows buttons only when the user
// may answer. An action a grant covered says so (it ran without asking).
export function actionCard(p, answer) {
  const card = el("li", { className: "action", "data-action": p.action_id, "aria-label": `Action ${p.name}` });
  const who = p.grant ? `nobody: grant ${p.grant.grant_id} of ${p.grant.made_by} (remembered)`
    : p.requires_approval ? (p.approver === "admin" ? "an admin" : "you") : "nobody (allowed)";
  card.append(
    el("strong", { text: `${p.kind === "resource" ? "Read" : "Tool"}: ${p.name}` }),
    facts([["level", String(p.level)], ["approval by", who], ["runs on", p.executor], ["why", p.reason]]),
    el("pre", { className: "arguments", "aria-label": "Arguments", text: pretty(p.arguments) }),
  );
  const status = el("p", { className: "action-status", role: "status" });
  card.append(status);
  if (p.requires_approval && p.approver === "user") {
    const reasonId = `reason-${++counter}`;
    const reason = el("input", { id: reasonId, type: "text", placeholder: "optional" });
    const approve = el("button", { type: "button", className: "approve", text: "Approve", "aria-label": `Approve ${p.name}` });
    const deny = el("button", { type: "button", className: "deny", text: "Deny", "aria-label": `Deny ${p.name}` });
    const remember = rememberControls(p);
    const decide = (approved) => {
      const kept = approved ? remember.read() : undefined;
      approve.disabled = deny.disabled = reason.disabled = true;
      remember.disable();
      status.textContent = approved ? (kept ? "Approved and remembered by you" : "Approved by you") : "Denied by you";
      answer(approved, reason.value.trim(), kept);
    };
    approve.addEventListener("click", () => decide(true));
    deny.addEventListener("click", () => decide(false));
    card.append(el("div", { className: "answer" }, remember.element,
      el("div", { className: "row" }, el("label", { for: reasonId, text: "Reason" }), reason, approve, deny)));
    // The server refused the answer (e.g. a remember its policy does not allow): answer again.
    card.reopen = (message) => {
      approve.disabled = deny.disabled = reason.disabled = false;
      remember.enable();
      status.textContent = `Refused: ${message}. Still waiting for your answer`;
    };
    status.textContent = "Waiting for your answer";
  } else if (p.requires_approval) {
    status.textContent = "Waiting for an admin";
  }
  return card;
}

export function showResult(card, p) {
  const answerRow = card.querySelector(".answer");
  if (answerRow) answerRow.remove();
  const status = card.querySelector(".action-status");
  status.textContent = `Result: ${p.status}`;
  status.className = `action-status ${p.status === "ok" ? "status-ok" : "status-bad"}`;
  card.append(el("pre", { className: "output", "aria-label": "Output", text: pretty(p.output) }));
}

export function approvalPayload(actionId, approved, reason, remember) {
  const payload = { action_id: actionId, approved };
  if (reason) payload.reason = reason;
  if (remember) payload.remember = remember;
  return payload;
}
