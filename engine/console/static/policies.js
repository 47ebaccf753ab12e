// Policies (admins, auditors): explain one request, the matrix of roles × tools, who can; the revision in force, when the config
// last loaded, and the errors of a refused reload.
import { el, getJson } from "./api.js";

const $ = (id) => document.getElementById(id);
// A wall-clock epoch (seconds) as a <time>: the reader's local time, the exact instant in datetime.
const when = (epoch, id) => {
  const date = new Date(epoch * 1000);
  return el("time", { id, datetime: date.toISOString(), text: date.toLocaleString() });
};
const LABELS = { allow: "allowed", user: "user approves", admin: "admin approves", deny: "denied" };

export class PoliciesPage {
  constructor({ notice }) {
    this.notice = notice;
    $("policy-explain").addEventListener("submit", (event) => { event.preventDefault(); this.explain(); });
    $("policy-who").addEventListener("submit", (event) => { event.preventDefault(); this.whoCan(); });
  }

  shown() { this.matrix(); }

  revision(answer) {
    const box = $("policy-revision");
    box.replaceChildren(el("span", { text: `Policy revision in force: ${answer.policy_revision}` }),
      el("span", { className: "loaded", text: " · configuration loaded " }), when(answer.config_loaded_at, "loaded-at"));
    if (answer.reload_refused_at !== null) {
      box.append(el("p", { className: "error" }, el("span", { text: "The last reload, " }),
        when(answer.reload_refused_at, "refused-at"),
        el("span", { text: ", was refused; the configuration above still serves:" })),
        el("ul", { className: "reload-errors" }, ...answer.reload_errors.map((e) => el("li", { text: e }))));
    }
  }

  async matrix() {
    try {
      const answer = await getJson("/api/policy/matrix");
      this.revision(answer);
      const head = el("tr", {}, el("th", { scope: "col", text: "Tool or resource" }),
        ...answer.subjects.map((s) => el("th", { scope: "col", text: s })));
      const rows = answer.rows.map((row) => el("tr", {}, el("th", { scope: "row", text: row.target }),
        ...answer.subjects.map((s) => {
          const cell = row.cells[s];
          return el("td", { className: `cell-${cell.label}`, title: cell.reason,
            text: `${LABELS[cell.label] || cell.label}${cell.conditional ? " *" : ""}` });
        })));
      $("policy-matrix").replaceChildren(el("caption", { text: "Who may do what (* depends on the arguments or the path)" }),
        el("thead", {}, head), el("tbody", {}, ...rows));
    } catch (error) {
      this.notice(error.message);
    }
  }

  async explain() {
    const form = $("policy-explain").elements;
    const out = $("policy-explain-result");
    try {
      const answer = await getJson("/api/policy/explain", {
        subject: form.subject.value, roles: form.roles.value, target: form.target.value, arguments: form.arguments.value,
      });
      const d = answer.decision;
      out.replaceChildren(
        el("p", { className: "decision", text: `${d.effect}${d.effect === "require_approval" ? ` (approver: ${d.approver})` : ""}: ${d.reason}` }),
        ...(d.effect === "require_approval" ? [el("p", { className: "remember", text: `Remember: ${answer.remember.text}` })] : []),
        el("table", {}, el("caption", { text: "Rules considered, in policy order" }),
          el("thead", {}, el("tr", {}, ...["Rule", "Effect", "Where", "Matched", "Why not"].map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", {}, ...answer.considered.map((c) => el("tr", {},
            el("td", { text: c.id }), el("td", { text: c.effect }), el("td", { text: c.source }),
            el("td", { text: c.matched ? "yes" : "no" }), el("td", { text: c.why_not || "" }))))),
      );
    } catch (error) {
      out.replaceChildren(el("p", { className: "error", role: "alert", text: error.message }));
    }
  }

  async whoCan() {
    const out = $("policy-who-result");
    try {
      const answer = await getJson("/api/policy/who-can", { target: $("policy-who").elements.target.value });
      out.replaceChildren(answer.subjects.length
        ? el("ul", {}, ...answer.subjects.map((s) => el("li", { text: `${s.subject}: ${LABELS[s.label] || s.label}${s.conditional ? " *" : ""} (${s.reason})` })))
        : el("p", { text: `Nobody may use ${answer.target}.` }));
    } catch (error) {
      out.replaceChildren(el("p", { className: "error", role: "alert", text: error.message }));
    }
  }
}
