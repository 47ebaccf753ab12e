// The "remember" choice next to Approve: this action only (the default), this session, or a
// duration; and how far it reaches: exactly these arguments, the same value of one argument,
// or (for a plain command line) the same program. The server checks it against the policy
// and refuses what it does not allow; the action then still waits.
import { el } from "./api.js";

let counter = 0;
const PLAIN = /^[A-Za-z0-9_./:=@%+,\- ]+$/;
const DURATIONS = [["15m", "for 15 minutes"], ["1h", "for 1 hour"], ["8h", "for 8 hours"]];

// `p`: the action (agent_action payload or action_list item). Returns { element, read() }.
export function rememberControls(p) {
  const id = ++counter;
  const scope = el("select", { id: `remember-scope-${id}`, className: "remember-scope" });
  scope.append(el("option", { value: "", text: "this action only" }));
  if (p.session_id) scope.append(el("option", { value: "session", text: "for this session" }));
  for (const [value, text] of DURATIONS) scope.append(el("option", { value, text }));
  const reach = el("select", { id: `remember-reach-${id}`, className: "remember-reach", disabled: true });
  reach.append(el("option", { value: "", text: "exactly these arguments" }));
  for (const [name, value] of Object.entries(p.arguments || {})) {
    reach.append(el("option", { value: `same:${name}`, text: `any arguments with this ${name}` }));
    // "The same program" is for command lines: an argument named command, or several words.
    const commandLine = name === "command" || /\s/.test(value.trim ? value.trim() : "");
    if (typeof value === "string" && PLAIN.test(value) && value.trim() && commandLine) {
      reach.append(el("option", { value: `program:${name}`, text: `${name} running ${value.trim().split(/\s+/)[0]}` }));
    }
  }
  scope.addEventListener("change", () => { reach.disabled = !scope.value; });
  const element = el("div", { className: "row remember" },
    el("label", { for: scope.id, text: "Remember" }), scope,
    el("label", { for: reach.id, text: "Reach" }), reach);
  const read = () => {
    if (!scope.value) return undefined;
    const remember = scope.value === "session" ? { scope: "session" } : { scope: "duration", duration: scope.value };
    if (reach.value) {
      const [kind, name] = [reach.value.slice(0, reach.value.indexOf(":")), reach.value.slice(reach.value.indexOf(":") + 1)];
      remember.match = { [name]: kind };
    }
    return remember;
  };
  const disable = () => { scope.disabled = reach.disabled = true; };
  const enable = () => { scope.disabled = false; reach.disabled = !scope.value; };
  return { element, read, disable, enable };
}
