// The stages, runs and dead-letter tables. Rows are keyed (stage name, run id, dead-letter id)
// and updated in place, so a refresh changes text, never the layout.

import {
  el,
  fillLevel,
  fmtClock,
  fmtCompact,
  fmtCount,
  fmtDuration,
  fmtMs,
  fmtPercent,
  fmtRate,
  itemText,
  setText,
  setVariant,
  truncate,
} from "./dom.js";

/** Make tbody's rows match `items` (in order), creating, updating and removing rows by key. */
export function syncRows(tbody, items, keyOf, create, update) {
  const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  const rows = items.map((item) => {
    const key = String(keyOf(item));
    let tr = existing.get(key);
    if (tr) existing.delete(key);
    else {
      tr = create(item);
      tr.dataset.key = key;
    }
    update(tr, item);
    return tr;
  });
  for (const tr of existing.values()) tr.remove();
  rows.forEach((tr, i) => {
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
}

function cells(tr, count, classes = []) {
  for (let i = 0; i < count; i++) tr.append(el("td", { class: classes[i] || null }));
  return [...tr.children];
}

function bar(td) {
  const fill = el("span", { class: "bar-fill" });
  const text = el("span", { class: "bar-text" });
  td.append(el("span", { class: "bar" }, fill), text);
  return { fill, text };
}

function setBar(parts, fraction, text, variant) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  const width = pct.toFixed(1) + "%";
  if (parts.fill.style.width !== width) parts.fill.style.width = width;
  setVariant(parts.fill, "fill-", variant);
  setText(parts.text, text);
}

// -- stages ------------------------------------------------------------------------------

const STAGE_CLASSES = ["name", "kind", "num", "num", "num", "num", "num", "num", "num", "num", "num", "queue", "num", "num"];

/** Rows of the stages table: one per stage in file order (nested stages indented). */
export function updateStages(tbody, stageList, depths, stats) {
  const stages = (stats && stats.stages) || {};
  const bottleneck = stats ? stats.bottleneck : null;
  syncRows(
    tbody,
    stageList,
    (s) => s.name,
    (s) => {
      const tr = el("tr", { "data-stage": s.name });
      const td = cells(tr, STAGE_CLASSES.length, STAGE_CLASSES);
      td[0].append(el("span", { class: "star", "aria-label": "bottleneck" }, "★"), el("span", { class: "stage-name" }, s.name));
      td[0].title = s.name;
      td[0].classList.add("depth-" + Math.min(3, depths.get(s.name) || 0));
      tr._bar = bar(td[11]);
      return tr;
    },
    (tr, s) => {
      const td = tr.children;
      const st = stages[s.name];
      tr.classList.toggle("bottleneck", s.name === bottleneck);
      setText(td[1], s.kind);
      if (!st) {
        for (let i = 2; i < td.length; i++) if (i !== 11) setText(td[i], "–");
        setBar(tr._bar, 0, "–", "empty");
        return;
      }
      const workers = st.threads + st.processes;
      setText(td[2], workers ? `${st.busy}/${workers}${st.processes ? " proc" : ""}` : "–");
      setText(td[3], s.kind === "pipeline" ? "–" : fmtPercent(st.utilization));
      setText(td[4], fmtRate(st.throughput_per_s));
      setText(td[5], fmtCount(st.items_in));
      setText(td[6], fmtCount(st.items_out));
      setText(td[7], fmtCount(st.items_failed));
      setText(td[8], fmtCount(st.items_retried));
      setText(td[9], fmtCount(st.items_dropped));
      setText(td[10], fmtCount(st.items_dead_lettered));
      td[7].classList.toggle("bad", st.items_failed > 0);
      td[9].classList.toggle("bad", st.items_dropped > 0);
      td[10].classList.toggle("bad", st.items_dead_lettered > 0);
      const fill = st.queue_capacity > 0 ? st.queue_depth / st.queue_capacity : 0;
      const text = st.queue_capacity > 0 ? `${fmtCompact(st.queue_depth)} / ${fmtCompact(st.queue_capacity)}` : "–";
      setBar(tr._bar, fill, text, fillLevel(fill));
      const latency = st.latency_ms || {};
      setText(td[12], fmtMs(latency.p50));
      setText(td[13], fmtMs(latency.p99));
    },
  );
}

// -- runs --------------------------------------------------------------------------------

const RUN_CLASSES = ["mono", "run-state", "name", "clock", "num", "num", "num", "num", "num", "num", "progress", "error"];

function runDuration(run, now) {
  const start = Date.parse(run.started_at);
  const end = run.finished_at ? Date.parse(run.finished_at) : now;
  return Number.isNaN(start) || Number.isNaN(end) ? NaN : Math.max(0, (end - start) / 1000);
}

export function updateRuns(tbody, runs, now = Date.now()) {
  syncRows(
    tbody,
    runs,
    (r) => r.run,
    (r) => {
      const tr = el("tr", { "data-run": r.run });
      const td = cells(tr, RUN_CLASSES.length, RUN_CLASSES);
      td[1].append(el("span", { class: "badge" }));
      tr._bar = bar(td[10]);
      return tr;
    },
    (tr, r) => {
      const td = tr.children;
      const items = r.items || {};
      setText(td[0], r.run);
      setText(td[1].firstChild, r.state);
      setVariant(td[1].firstChild, "run-", r.state);
      setText(td[2], r.stage);
      setText(td[3], fmtClock(r.started_at));
      td[3].title = r.started_at || "";
      setText(td[4], fmtDuration(runDuration(r, now)));
      setText(td[5], fmtCount(items.produced));
      setText(td[6], fmtCount(items.in_flight));
      setText(td[7], fmtCount(items.finished));
      setText(td[8], fmtCount(items.filtered));
      setText(td[9], fmtCount(items.dead_lettered));
      td[9].classList.toggle("bad", items.dead_lettered > 0);
      const done = (items.finished || 0) + (items.filtered || 0) + (items.dead_lettered || 0);
      const fraction = r.state === "running" ? done / Math.max(1, done + (items.in_flight || 0)) : 1;
      const label = r.state === "running" ? `${fmtCompact(done)} done · ${fmtCompact(items.in_flight)} in flight` : `${fmtCompact(done)} done`;
      setBar(tr._bar, fraction, label, r.state === "running" ? "ok" : "run-" + r.state);
      setText(td[11], truncate(r.error || "", 120));
      td[11].title = r.error || "";
    },
  );
}

// -- dead letters --------------------------------------------------------------------------

const DEAD_CLASSES = ["clock", "mono", "name", "num", "error", "item"];

export function updateDeadLetters(tbody, letters) {
  syncRows(
    tbody,
    letters,
    (d) => d.id,
    (d) => {
      const tr = el("tr", { "data-dead-letter": d.id });
      cells(tr, DEAD_CLASSES.length, DEAD_CLASSES);
      return tr;
    },
    (tr, d) => {
      const td = tr.children;
      setText(td[0], fmtClock(d.at));
      td[0].title = d.at || "";
      setText(td[1], d.run ?? "–");
      setText(td[2], d.stage);
      setText(td[3], fmtCount(d.attempts));
      setText(td[4], truncate(d.error, 100));
      td[4].title = d.error || "";
      setText(td[5], itemText(d.item, 120));
      td[5].title = itemText(d.item, 4000);
    },
  );
}
