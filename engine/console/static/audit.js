// Audit (admins, auditors): the log as a table with filters, each record's details, and the verification.
import { el, getJson, pretty } from "./api.js";

const $ = (id) => document.getElementById(id);

export class AuditPage {
  constructor({ notice }) {
    this.notice = notice;
    this.bad = new Set();
    this.kindsShown = false;
    $("audit-filter").addEventListener("submit", (event) => { event.preventDefault(); this.load(); });
    $("audit-verify-again").addEventListener("click", () => this.verify());
  }

  shown() { this.verify().then(() => this.load()); }

  async verify() {
    const box = $("audit-verify");
    box.className = "verify";
    box.textContent = "Verifying the log…";
    try {
      const report = await getJson("/api/audit/verify");
      this.bad = new Set(report.problems.filter((p) => p.seq !== null).map((p) => p.seq));
      if (report.ok) {
        box.className = "verify ok";
        box.textContent = `Log intact: ${report.records} records, ${report.checkpoints} checkpoints, all verified.`;
      } else {
        const first = report.first_problem;
        box.className = "verify bad";
        box.replaceChildren(
          el("span", { text: `Log NOT intact: ${report.problems.length} problem${report.problems.length === 1 ? "" : "s"}. ` }),
          el("span", { className: "first-bad", text: first.seq !== null
            ? `First bad record: seq ${first.seq} (${first.kind}): ${first.message}`
            : `${first.kind}: ${first.message}` }),
        );
      }
      for (const warning of report.warnings) box.append(el("div", { className: "warning", text: `note: ${warning}` }));
    } catch (error) {
      box.className = "verify bad";
      box.textContent = `Could not verify: ${error.message}`;
    }
  }

  async load() {
    const form = $("audit-filter").elements;
    const params = { limit: "500" };
    for (const name of ["subject", "kind", "tool", "since", "until"]) {
      const value = form[name].value.trim();
      if (value) params[name] = value;
    }
    try {
      const { records, kinds } = await getJson("/api/audit", params);
      if (!this.kindsShown) {
        this.kindsShown = true;
        form.kind.append(...kinds.map((kind) => el("option", { value: kind, text: kind })));
      }
      $("audit-count").textContent = `${records.length} record${records.length === 1 ? "" : "s"}`;
      $("audit-table").tBodies[0].replaceChildren(...records.map((r) => this.row(r)));
    } catch (error) {
      $("audit-count").textContent = error.message;
    }
  }

  row(record) {
    const details = el("button", { type: "button", text: "Show", "aria-label": `Show record ${record.seq}` });
    details.addEventListener("click", () => {
      $("audit-details").hidden = false;
      $("audit-details-title").textContent = `Record ${record.seq}`;
      $("audit-details-body").textContent = pretty(record);
      $("audit-details-title").focus();
    });
    const row = el("tr", { "data-seq": record.seq, className: this.bad.has(record.seq) ? "bad" : undefined },
      el("td", { text: record.seq }), el("td", { text: record.time_iso }), el("td", { text: record.kind }),
      el("td", { text: record.subject ?? "" }), el("td", { text: record.target ?? "" }),
      el("td", { text: record.outcome ?? "" }), el("td", { text: record.decided_by ?? "" }), el("td", {}, details));
    return row;
  }
}
