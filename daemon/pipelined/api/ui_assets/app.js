// The operator page: polls the daemon once a second (GET /stats and /pipelines for everything,
// plus the chosen pipeline's runs and dead letters), draws it, and sends the actions.

import { fillStagePicker, initActions, pickStage } from "./actions.js";
import { ApiError, call, detailOf, getJson, hasToken, pipelinePath, setToken, tokenProblem } from "./api.js";
import { el, fmtBytes, fmtClock, fmtCount, fmtDuration, fmtRate, setText, setVariant, truncate } from "./dom.js";
import { clearGraph, layoutGraph, renderGraph, updateGraph } from "./graph.js";
import { syncRows, updateDeadLetters, updateRuns, updateStages } from "./tables.js";

const REFRESH_MS = 1000;
const RUNS_SHOWN = 25;
const DEAD_LETTERS_SHOWN = 20;

const $ = (id) => document.getElementById(id);

const page = {
  selected: null, // the chosen pipeline's name
  loaded: null, // "<name>@<version>" whose detail and graph are drawn
  detail: null, // GET /pipelines/{name}
  depths: new Map(), // stage → nesting depth
  handles: new Map(), // graph handles from renderGraph
  lastGood: null, // Date of the last complete refresh
  timer: null,
  busy: false,
  again: false,
  waitingForToken: false,
  lastStats: null, // the previous refresh's GET /stats
  deadLetters: null, // {key, answer}: the chosen pipeline's dead letters, fetched again when the key changes
};

/** The pipeline named in the URL's #fragment ("" when there is none or it is not valid %-encoding). */
function hashName() {
  try {
    return decodeURIComponent(window.location.hash.slice(1));
  } catch {
    return "";
  }
}

/** What the chosen pipeline's dead letters depend on: its dead-letter count in the daemon's last
 * stats (and which daemon process), so a page kept open does not download the same — possibly
 * huge — items every second. */
function deadLetterKey(name, stats) {
  const pipeline = stats && stats.pipelines && stats.pipelines[name];
  if (!pipeline) return null;
  const dead = Object.values(pipeline.stages || {}).reduce((sum, s) => sum + (s.items_dead_lettered || 0), 0);
  return `${name}|${stats.daemon && stats.daemon.pid}|${dead}`;
}

async function deadLetters(name) {
  const key = deadLetterKey(name, page.lastStats);
  if (key !== null && page.deadLetters && page.deadLetters.key === key) return page.deadLetters.answer;
  const answer = await call("GET", pipelinePath(name, "dead-letters") + `?limit=${DEAD_LETTERS_SHOWN}`);
  page.deadLetters = answer.ok && key !== null && page.selected === name ? { key, answer } : null;
  return answer;
}

// -- refresh loop ----------------------------------------------------------------------------

function schedule(delay) {
  clearTimeout(page.timer);
  page.timer = setTimeout(tick, delay);
}

/** Refresh now (after an action), or right after the refresh in progress. */
function refreshSoon() {
  if (page.busy) page.again = true;
  else schedule(0);
}

async function tick() {
  if (page.waitingForToken) return;
  page.busy = true;
  const started = performance.now();
  try {
    await refresh();
    page.lastGood = new Date();
    showConnected();
  } catch (error) {
    if (error instanceof ApiError && error.kind === "auth") {
      page.busy = false;
      askForToken(error);
      return;
    }
    showUnreachable(error);
  }
  page.busy = false;
  if (page.again) {
    page.again = false;
    schedule(0);
  } else {
    schedule(Math.max(100, REFRESH_MS - (performance.now() - started)));
  }
}

async function pipelineExtras(name) {
  if (!name) return [null, null];
  return Promise.all([call("GET", pipelinePath(name, "runs")), deadLetters(name)]);
}

async function refresh() {
  const asked = page.selected;
  let [stats, pipelines, [runs, dead]] = await Promise.all([getJson("stats"), getJson("pipelines"), pipelineExtras(asked)]);
  if (!pipelines.some((p) => p.name === page.selected)) {
    const fromHash = hashName();
    const name = pipelines.some((p) => p.name === fromHash) ? fromHash : pipelines.length ? pipelines[0].name : null;
    select(name, false);
  }
  if (page.selected !== asked) [runs, dead] = await pipelineExtras(page.selected);
  page.lastStats = stats;
  renderDaemon(stats.daemon || {});
  renderPipelineList(pipelines, stats.pipelines || {});
  const summary = pipelines.find((p) => p.name === page.selected) || null;
  if (summary && page.loaded !== `${summary.name}@${summary.version}`) await loadPipeline(summary);
  renderPipeline(summary, summary ? (stats.pipelines || {})[summary.name] : null, runs, dead);
}

// -- connection state ------------------------------------------------------------------------

function showConnected() {
  const banner = $("banner");
  if (!banner.hidden) banner.hidden = true;
  document.body.classList.remove("stale");
  setVariant($("conn"), "conn-", "ok");
  setText($("conn-text"), `live · updated ${fmtClock(page.lastGood.toISOString())}`);
}

function showUnreachable(error) {
  const unreachable = error instanceof ApiError && error.kind === "unreachable";
  setText($("banner-title"), unreachable ? "Daemon unreachable" : "Daemon answered with an error");
  const since = page.lastGood ? `last good answer at ${fmtClock(page.lastGood.toISOString())}` : "no answer yet";
  setText($("banner-text"), `${error.message} — retrying every second (${since}).`);
  $("banner").hidden = false;
  document.body.classList.add("stale");
  setVariant($("conn"), "conn-", "bad");
  setText($("conn-text"), unreachable ? "unreachable · retrying" : "error · retrying");
  if (!(error instanceof ApiError)) console.error(error);
}

function askForToken(error) {
  page.waitingForToken = true;
  setVariant($("conn"), "conn-", "wait");
  setText($("conn-text"), "token needed");
  setText(
    $("token-why"),
    hasToken()
      ? `The daemon refused the token (${error.message}). Enter the current one.`
      : "This daemon needs a token: the content of the file named by [api] token_file.",
  );
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

function useToken(event) {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  const problem = tokenProblem(value);
  if (problem) {
    setText($("token-why"), `Not sent: ${problem} Enter the content of the file named by [api] token_file.`);
    return;
  }
  setToken(value);
  $("token-input").value = "";
  $("token-dialog").close();
  $("btn-forget").hidden = false;
  page.waitingForToken = false;
  refreshSoon();
}

function forgetToken() {
  setToken(null);
  $("btn-forget").hidden = true;
  refreshSoon();
}

// -- daemon header and pipeline list -------------------------------------------------------------

function renderDaemon(d) {
  setText($("d-version"), d.version ?? "–");
  setText($("d-uptime"), fmtDuration(d.uptime_s));
  setText($("d-pid"), d.pid ?? "–");
  setText($("d-threads"), fmtCount(d.threads));
  setText($("d-processes"), fmtCount(d.processes));
  setText($("d-rss"), fmtBytes(d.rss_bytes));
}

function producerRate(stats) {
  const stages = Object.values((stats && stats.stages) || {}).filter((s) => s.kind === "producer");
  return stages.length ? stages.reduce((sum, s) => sum + (s.throughput_per_s || 0), 0) : null;
}

function renderPipelineList(pipelines, allStats) {
  setText($("p-count"), pipelines.length ? `(${pipelines.length})` : "");
  $("no-pipelines").hidden = pipelines.length > 0;
  syncRows(
    $("pipelines"),
    pipelines,
    (p) => p.name,
    (p) => {
      const li = el("li", { "data-pipeline": p.name, tabindex: 0, role: "button" },
        el("div", { class: "pl-top" }, el("span", { class: "pl-name" }, p.name), el("span", { class: "state" })),
        el("div", { class: "pl-meta" }), el("div", { class: "pl-err" }));
      li.addEventListener("click", () => select(p.name, true));
      li.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && select(p.name, true));
      return li;
    },
    (li, p) => {
      const stats = allStats[p.name];
      const badge = li.querySelector(".state");
      setText(badge, p.state);
      setVariant(badge, "state-", p.state);
      li.classList.toggle("selected", p.name === page.selected);
      const parts = [`${p.stages} stages`];
      if (stats) {
        const rate = producerRate(stats);
        if (rate !== null) parts.push(fmtRate(rate));
        parts.push(`${stats.runs.active} active`);
        const dead = Object.values(stats.stages).reduce((sum, s) => sum + s.items_dead_lettered, 0);
        if (dead) parts.push(`${fmtCount(dead)} dead`);
        if (stats.bottleneck) parts.push(`★ ${stats.bottleneck}`);
      }
      setText(li.querySelector(".pl-meta"), parts.join(" · "));
      const err = li.querySelector(".pl-err");
      setText(err, p.error ? truncate(p.error, 90) : "");
      err.title = p.error || "";
    },
  );
}

function select(name, byUser) {
  if (name === page.selected) return;
  page.selected = name;
  page.loaded = null;
  page.detail = null;
  page.deadLetters = null;
  page.handles = new Map();
  clearGraph($("graph"));
  $("graph-note").hidden = true;
  for (const id of ["stages", "runs", "dead-letters"]) $(id).tBodies[0].replaceChildren();
  $("trigger-stage").replaceChildren();
  setText($("p-name"), name ?? "–");
  for (const li of $("pipelines").children) li.classList.toggle("selected", li.dataset.pipeline === name);
  if (name) window.history.replaceState(null, "", "#" + encodeURIComponent(name));
  if (byUser) refreshSoon();
}

// -- the chosen pipeline ---------------------------------------------------------------------------

function nestingDepths(graph, depth = 0, into = new Map()) {
  for (const node of graph.nodes || []) {
    into.set(node.id, depth);
    if (node.children) nestingDepths(node.children, depth + 1, into);
  }
  return into;
}

async function loadPipeline(summary) {
  const name = summary.name;
  const [detail, graph] = await Promise.all([call("GET", pipelinePath(name)), call("GET", pipelinePath(name, "graph"))]);
  if (page.selected !== name) return;
  page.detail = detail.ok ? detail.body : null;
  const note = $("graph-note");
  if (graph.ok) {
    page.depths = nestingDepths(graph.body);
    page.handles = renderGraph($("graph"), layoutGraph(graph.body), pickStage);
    note.hidden = true;
  } else {
    page.depths = new Map();
    page.handles = new Map();
    clearGraph($("graph"));
    setText(note, `No graph: ${detailOf(graph)}`);
    note.hidden = false;
  }
  setText($("p-desc"), page.detail ? page.detail.description || "" : detailOf(detail));
  setText($("p-file"), page.detail ? describeFile(page.detail) : "");
  fillStagePicker(page.detail ? page.detail.stages : []);
  page.loaded = `${name}@${summary.version}`;
}

function describeFile(detail) {
  const parts = [detail.file];
  if (detail.loaded_at) parts.push(`loaded ${fmtClock(detail.loaded_at)}`);
  const limits = detail.limits || {};
  if (limits.max_threads !== undefined && limits.max_threads !== null) {
    parts.push(`limits: ${limits.max_threads} threads, ${limits.max_processes} processes, ${limits.max_retries} retries`);
  }
  return parts.join(" · ");
}

function renderPipeline(summary, stats, runs, dead) {
  if (!summary) return;
  document.title = `pipelined — ${summary.name} (${summary.state})`;
  setText($("p-name"), summary.name);
  const badge = $("p-state");
  setText(badge, summary.state);
  setVariant(badge, "state-", summary.state);
  setText($("p-version"), summary.version ? `version ${summary.version}` : "");
  const r = (stats && stats.runs) || {};
  setText($("p-uptime"), fmtDuration(stats ? stats.uptime_s : NaN));
  setText($("p-active"), fmtCount(r.active));
  setText($("p-started"), fmtCount(r.started));
  setText($("p-completed"), fmtCount(r.completed));
  setText($("p-failed"), fmtCount(r.failed));
  setText($("p-cancelled"), fmtCount(r.cancelled));
  $("p-failed").classList.toggle("bad", r.failed > 0);
  setText($("p-bottleneck"), stats && stats.bottleneck ? `★ ${stats.bottleneck}` : "none");
  $("p-bottleneck").title = (stats && stats.bottleneck) || "";
  $("p-bottleneck").classList.toggle("none", !(stats && stats.bottleneck));
  const error = summary.error || (page.detail && page.detail.last_reload && page.detail.last_reload.error) || "";
  setText($("p-error"), error);
  $("p-error").hidden = !error;
  updateGraph(page.handles, stats);
  updateStages($("stages").tBodies[0], page.detail ? page.detail.stages : [], page.depths, stats);
  const runList = runs && runs.ok && Array.isArray(runs.body) ? runs.body.slice(0, RUNS_SHOWN) : [];
  updateRuns($("runs").tBodies[0], runList);
  $("runs-empty").hidden = runList.length > 0;
  const deadList = dead && dead.ok && Array.isArray(dead.body) ? dead.body.slice(0, DEAD_LETTERS_SHOWN) : [];
  updateDeadLetters($("dead-letters").tBodies[0], deadList);
  $("dead-empty").hidden = deadList.length > 0;
}

function init() {
  initActions({ selected: () => page.selected, refreshSoon, askForToken });
  $("btn-forget").addEventListener("click", forgetToken);
  $("btn-forget").hidden = !hasToken();
  $("token-form").addEventListener("submit", useToken);
  $("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
  window.addEventListener("hashchange", () => select(hashName(), true));
  tick();
}

init();
