// Tools and resources the signed-in user may use; a form generated from a tool's JSON Schema calls it directly.
import { el, pretty } from "./api.js";
import { actionCard, approvalPayload, showResult } from "./actions.js";

const $ = (id) => document.getElementById(id);
const LEVELS = ["0: runs at once", "1: you approve", "2: an admin approves", "3: named people only"];

// One form control for one schema property; `read()` gives its value, or undefined when left empty.
function field(name, schema, required) {
  const id = `tool-arg-${name}`;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  const hintId = schema.description ? `${id}-hint` : undefined;
  const label = el("label", { for: id, text: `${name}${required ? " (required)" : ""}` });
  let control;
  let read;
  if (Array.isArray(schema.enum)) {
    control = el("select", { id, "aria-describedby": hintId },
      el("option", { value: "", text: required ? "choose…" : "(none)" }),
      ...schema.enum.map((v, i) => el("option", { value: String(i), text: JSON.stringify(v) })));
    read = () => (control.value === "" ? undefined : schema.enum[Number(control.value)]);
  } else if (type === "boolean") {
    control = el("input", { id, type: "checkbox", "aria-describedby": hintId, checked: schema.default === true });
    read = () => control.checked;
  } else if (type === "integer" || type === "number") {
    control = el("input", { id, type: "number", step: type === "integer" ? "1" : "any", "aria-describedby": hintId,
      min: schema.minimum, max: schema.maximum });
    read = () => (control.value === "" ? undefined : Number(control.value));
  } else if (type === "string") {
    control = el("input", { id, type: "text", "aria-describedby": hintId, maxlength: schema.maxLength });
    read = () => (control.value === "" ? undefined : control.value);
  } else {
    control = el("textarea", { id, rows: "3", "aria-describedby": hintId, placeholder: "JSON" });
    read = () => {
      if (control.value.trim() === "") return undefined;
      try { return JSON.parse(control.value); } catch { throw new Error(`${name}: not JSON`); }
    };
  }
  if (required && control.type !== "checkbox") control.required = true;
  const wrap = el("div", { className: "field" }, label, control);
  if (hintId) wrap.append(el("small", { id: hintId, text: schema.description }));
  return { wrap, read, name, required };
}

export class ToolsPage {
  constructor({ protocol, notice }) {
    this.protocol = protocol;
    this.notice = notice;
    this.tools = [];
    this.listIds = new Set();
    this.calls = new Map();  // tool_call frame id -> its <li> (before its agent_action arrives)
    this.cards = new Map();  // action_id -> card
    protocol.on((frame) => this.frame(frame));
  }

  async shown() {
    this.listIds.add(await this.protocol.send("tool_list", {}));
    this.listIds.add(await this.protocol.send("resource_list", {}));
  }

  frame(frame) {
    const p = frame.payload || {};
    if (frame.type === "tool_list" && (!p.reply_to || this.listIds.has(p.reply_to))) {
      this.tools = p.tools;
      this.renderTools();
    } else if (frame.type === "resource_list" && this.listIds.has(p.reply_to)) {
      $("resources-list").replaceChildren(...p.resources.map((r) =>
        el("li", {}, el("code", { text: r.uri_template }), ` ${r.description}`)));
    } else if (frame.type === "agent_action" && this.calls.has(p.reply_to)) {
      const card = actionCard(p, (approved, reason, remember) =>
        this.protocol.send("action_approval", approvalPayload(p.action_id, approved, reason, remember)));
      this.calls.get(p.reply_to).replaceWith(card);
      this.calls.delete(p.reply_to);
      this.cards.set(p.action_id, card);
    } else if (frame.type === "agent_result" && this.cards.has(p.action_id)) {
      showResult(this.cards.get(p.action_id), p);
    } else if (frame.type === "error" && this.calls.has(p.reply_to)) {
      this.calls.get(p.reply_to).textContent = `Refused: ${p.code}: ${p.message}`;
      this.calls.delete(p.reply_to);
    }
  }

  renderTools() {
    const list = $("tools-list");
    list.replaceChildren(...this.tools.map((tool) => {
      const button = el("button", { type: "button", text: tool.name, "aria-describedby": `tool-desc-${tool.name}` });
      button.addEventListener("click", () => this.form(tool));
      return el("li", {}, button, " ",
        el("span", { id: `tool-desc-${tool.name}`, text: `level ${LEVELS[tool.level] || tool.level}: ${tool.description}` }));
    }));
  }

  form(tool) {
    const schema = tool.parameters || {};
    const required = new Set(schema.required || []);
    const fields = Object.entries(schema.properties || {}).map(([name, sub]) => field(name, sub, required.has(name)));
    const form = $("tool-form");
    const error = el("p", { role: "alert", className: "error" });
    form.replaceChildren(
      el("h3", { id: "tool-form-title", tabindex: "-1", text: `Call ${tool.name}` }),
      el("p", { text: tool.description }),
      ...fields.map((f) => f.wrap),
      el("button", { type: "submit", text: `Call ${tool.name}` }),
      error,
    );
    form.hidden = false;
    form.onsubmit = async (event) => {
      event.preventDefault();
      const args = {};
      try {
        for (const f of fields) {
          const value = f.read();
          if (value !== undefined) args[f.name] = value;
        }
      } catch (problem) { error.textContent = problem.message; return; }
      error.textContent = "";
      const pending = el("li", { className: "action", text: `Calling ${tool.name}…` });
      $("tools-calls").prepend(pending);
      const id = await this.protocol.send("tool_call", { name: tool.name, arguments: args });
      this.calls.set(id, pending);
    };
    $("tool-form-title").focus();
  }
}
