// The buttons: trigger (args or items as JSON), drain (asks to confirm), start and reload, each
// showing the API's answer. app.js hands in what they need of the page (initActions).

import { ApiError, call, detailOf, pipelinePath } from "./api.js";
import { el, fmtClock, setText } from "./dom.js";

const CONFIRM_MS = 4000;
const $ = (id) => document.getElementById(id);

// from app.js: the chosen pipeline, a refresh after an action, the token dialog on a 401
let pageHooks = { selected: () => null, refreshSoon: () => {}, askForToken: () => {} };

export function fillStagePicker(stages) {
  const picker = $("trigger-stage");
  const previous = picker.value;
  picker.replaceChildren(...stages.map((s) => el("option", { value: s.name, "data-kind": s.kind }, `${s.name} (${s.kind})`)));
  const producer = stages.find((s) => s.kind === "producer");
  if (stages.some((s) => s.name === previous)) picker.value = previous;
  else if (producer) picker.value = producer.name;
  describeTriggerBody();
}

function pickedKind() {
  const option = $("trigger-stage").selectedOptions[0];
  return option ? option.dataset.kind : null;
}

function describeTriggerBody() {
  const producer = pickedKind() === "producer";
  setText($("trigger-label"), producer ? "args: a JSON object" : "items: a JSON list");
  $("trigger-body").placeholder = producer ? 'optional, e.g. {"start": 1, "stop": 10}' : "e.g. [1, 2, 3]";
}

export function pickStage(stage) {
  if ([...$("trigger-stage").options].some((o) => o.value === stage)) {
    $("trigger-stage").value = stage;
    describeTriggerBody();
  }
}

function showAnswer(answer, summary) {
  const box = $("answer");
  const status = el("span", { class: `status status-${String(answer.status)[0]}xx` }, String(answer.status));
  const text = answer.ok && summary ? summary : detailOf(answer);
  box.replaceChildren(
    el("div", { class: "answer-head" }, status, el("span", { class: "mono" }, `${answer.method} ${answer.path}`),
      el("span", { class: "muted" }, fmtClock(new Date().toISOString()))),
    el("div", { class: "answer-text" }, text),
  );
}

function showLocalError(message) {
  $("answer").replaceChildren(el("div", { class: "answer-head" }, el("span", { class: "status status-local" }, "not sent")),
    el("div", { class: "answer-text" }, message));
}

async function act(method, path, body, summarise) {
  try {
    const answer = await call(method, path, body, 30000);
    showAnswer(answer, answer.ok ? summarise(answer.body) : null);
  } catch (error) {
    if (error instanceof ApiError && error.kind === "auth") pageHooks.askForToken(error);
    else showLocalError(error.message);
  }
  pageHooks.refreshSoon();
}

function trigger(event) {
  event.preventDefault();
  const name = pageHooks.selected();
  const stage = $("trigger-stage").value;
  if (!name || !stage) return showLocalError("choose a pipeline and a stage first");
  const producer = pickedKind() === "producer";
  const raw = $("trigger-body").value.trim();
  let body;
  if (raw) {
    let value;
    try {
      value = JSON.parse(raw);
    } catch (error) {
      return showLocalError(`${producer ? "args" : "items"} is not valid JSON: ${error.message}`);
    }
    body = producer ? { args: value } : { items: value };
  } else if (!producer) {
    return showLocalError(`stage ${stage} is not a producer: give the items to inject as a JSON list`);
  }
  act("POST", pipelinePath(name, "stages", stage, "trigger"), body, (b) => `run ${b.run} started at stage ${b.stage}`);
}

let drainArmed = null;

function drain() {
  const button = $("btn-drain");
  if (!pageHooks.selected()) return;
  if (!drainArmed) {
    button.classList.add("armed");
    setText(button, "Confirm drain");
    drainArmed = setTimeout(disarmDrain, CONFIRM_MS);
    return;
  }
  disarmDrain();
  act("POST", pipelinePath(pageHooks.selected(), "drain"), undefined, (b) => `state: ${b.state}`);
}

function disarmDrain() {
  clearTimeout(drainArmed);
  drainArmed = null;
  $("btn-drain").classList.remove("armed");
  setText($("btn-drain"), "Drain");
}

function start() {
  if (pageHooks.selected()) act("POST", pipelinePath(pageHooks.selected(), "start"), undefined, (b) => `state: ${b.state}`);
}

function reloadAll() {
  act("POST", "reload", undefined, (b) => {
    const failed = Object.entries(b.failed || {}).map(([n, e]) => `${n}: ${e}`);
    const parts = ["added", "updated", "removed"].filter((k) => (b[k] || []).length).map((k) => `${k} ${b[k].join(", ")}`);
    parts.push(`${(b.unchanged || []).length} unchanged`);
    if (failed.length) parts.push(`failed ${failed.join("; ")}`);
    return parts.join(" · ");
  });
}

/** Wire the buttons; `hooks`: {selected(), refreshSoon(), askForToken(error)} of the page. */
export function initActions(hooks) {
  pageHooks = hooks;
  $("btn-drain").addEventListener("click", drain);
  $("btn-start").addEventListener("click", start);
  $("btn-reload").addEventListener("click", reloadAll);
  $("trigger-form").addEventListener("submit", trigger);
  $("trigger-stage").addEventListener("change", describeTriggerBody);
}
