// The pipeline graph as SVG: a layered (longest-path) layout of GET /pipelines/{name}/graph,
// nested pipelines drawn as boxes around their own layout, and live numbers on every stage that
// update in place (the drawing is rebuilt only when the graph itself changes).

import { fillLevel, fmtCompact, fmtPercent, fmtRate, fmtShort, setAttr, setText, setVariant, svg, truncate } from "./dom.js";

export const NODE_W = 184;
export const NODE_H = 90;
const COL_GAP = 50;
const ROW_GAP = 22;
const PAD = 14; // below a nested pipeline's children
const PAD_X = 44; // left and right of them: room for the entry and exit edges
const BOX_HEAD = 46; // a nested pipeline's title and numbers
const MARGIN = 14; // around the drawing (room for the bottleneck badge)
const ROUTE_NAMES = { round_robin: "round robin", broadcast: "broadcast", weighted: "weighted" };

/** Longest-path layer of every node; nodes on a cycle (never in a valid graph) go last. */
function assignLayers(ids, edges) {
  const preds = new Map(ids.map((id) => [id, []]));
  const succs = new Map(ids.map((id) => [id, []]));
  for (const edge of edges) {
    succs.get(edge.from).push(edge.to);
    preds.get(edge.to).push(edge.from);
  }
  const waiting = new Map(ids.map((id) => [id, preds.get(id).length]));
  const layer = new Map();
  const queue = ids.filter((id) => waiting.get(id) === 0);
  queue.forEach((id) => layer.set(id, 0));
  while (queue.length) {
    const id = queue.shift();
    for (const next of succs.get(id)) {
      layer.set(next, Math.max(layer.get(next) ?? 0, layer.get(id) + 1));
      waiting.set(next, waiting.get(next) - 1);
      if (waiting.get(next) === 0) queue.push(next);
    }
  }
  let last = Math.max(-1, ...[...layer.entries()].filter(([id]) => waiting.get(id) === 0).map(([, l]) => l));
  for (const id of ids) if (waiting.get(id) > 0 || !layer.has(id)) layer.set(id, ++last);
  return { layer, preds };
}

/** Columns of node ids: file order, then one barycenter sweep to keep edges short and straight. */
function orderColumns(ids, layer, preds) {
  const count = ids.length ? Math.max(...layer.values()) + 1 : 0;
  const columns = Array.from({ length: count }, () => []);
  ids.forEach((id) => columns[layer.get(id)].push(id));
  const position = new Map();
  const centre = (column) => column.forEach((id, i) => position.set(id, i - (column.length - 1) / 2));
  columns.forEach(centre);
  for (const column of columns.slice(1)) {
    const key = new Map(
      column.map((id) => {
        const before = preds.get(id).filter((p) => layer.get(p) < layer.get(id));
        const mean = before.length ? before.reduce((sum, p) => sum + position.get(p), 0) / before.length : position.get(id);
        return [id, mean];
      }),
    );
    column.sort((a, b) => key.get(a) - key.get(b));
    centre(column);
  }
  return columns;
}

/** Lay out one level (the pipeline, or a nested pipeline's children) with relative coordinates. */
function measure(graph, container) {
  const nodes = graph.nodes || [];
  const ids = nodes.map((n) => n.id);
  const known = new Set(ids);
  const inner = [];
  const entries = [];
  const exits = [];
  for (const edge of graph.edges || []) {
    if (known.has(edge.from) && known.has(edge.to)) inner.push(edge);
    else if (edge.from === container && known.has(edge.to)) entries.push(edge);
    else if (edge.to === container && known.has(edge.from)) exits.push(edge);
  }
  const items = new Map();
  for (const node of nodes) {
    const sub = node.kind === "pipeline" && node.children ? measure(node.children, node.id) : null;
    const w = sub ? Math.max(sub.w + 2 * PAD_X, NODE_W) : NODE_W;
    const h = sub ? sub.h + BOX_HEAD + PAD : NODE_H;
    items.set(node.id, { node, sub, w, h, x: 0, y: 0 });
  }
  const { layer, preds } = assignLayers(ids, inner);
  const columns = orderColumns(ids, layer, preds);
  const widths = columns.map((col) => Math.max(...col.map((id) => items.get(id).w)));
  const heights = columns.map((col) => col.reduce((sum, id) => sum + items.get(id).h, 0) + ROW_GAP * (col.length - 1));
  const w = Math.max(0, widths.reduce((a, b) => a + b, 0) + COL_GAP * (columns.length - 1));
  const h = Math.max(0, ...heights);
  let x = 0;
  columns.forEach((column, c) => {
    let y = (h - heights[c]) / 2;
    for (const id of column) {
      const item = items.get(id);
      item.x = x + (widths[c] - item.w) / 2;
      item.y = y;
      y += item.h + ROW_GAP;
    }
    x += widths[c] + COL_GAP;
  });
  return { w, h, items, inner, entries, exits };
}

function place(level, ox, oy, out, depth) {
  for (const [id, item] of level.items) {
    const box = { id, node: item.node, x: ox + item.x, y: oy + item.y, w: item.w, h: item.h, depth };
    out.where.set(id, box);
    if (item.sub) {
      box.routes = [...new Set(item.sub.entries.map((e) => e.route))];
      out.boxes.push(box);
      place(item.sub, box.x + (box.w - item.sub.w) / 2, box.y + BOX_HEAD, out, depth + 1);
    } else {
      out.nodes.push(box);
    }
  }
  for (const edge of level.inner) out.edges.push({ ...edge, fromSide: "out", toSide: "in" });
  for (const edge of level.entries) out.edges.push({ ...edge, fromSide: "in", toSide: "in" });
  for (const edge of level.exits) out.edges.push({ ...edge, fromSide: "out", toSide: "out" });
}

/** The whole drawing's geometry: {width, height, nodes, boxes, edges: [{from, to, route, d}]}. */
export function layoutGraph(graph) {
  const top = measure(graph, null);
  const out = { nodes: [], boxes: [], edges: [], where: new Map() };
  place(top, MARGIN, MARGIN, out, 0);
  const port = (id, side) => {
    const b = out.where.get(id);
    return { x: side === "in" ? b.x : b.x + b.w, y: b.y + b.h / 2 };
  };
  for (const edge of out.edges) {
    const a = port(edge.from, edge.fromSide);
    const b = port(edge.to, edge.toSide);
    const bend = Math.max(18, (b.x - a.x) / 2);
    edge.a = a;
    edge.d = `M${a.x},${a.y} C${a.x + bend},${a.y} ${b.x - bend},${b.y} ${b.x},${b.y}`;
  }
  return { width: top.w + 2 * MARGIN, height: top.h + 2 * MARGIN, ...out };
}

function drawNode(box, onPick) {
  const w = box.w;
  const g = svg("g", { class: "node", "data-stage": box.id, "data-kind": box.node.kind, transform: `translate(${box.x},${box.y})` });
  const parts = {
    title: svg("title"),
    name: svg("text", { class: "n-name", x: 10, y: 19 }, truncate(box.id, 24)),
    kind: svg("text", { class: "n-kind", x: 10, y: 35 }, box.node.kind),
    util: svg("text", { class: "n-util", x: w - 10, y: 35, "text-anchor": "end" }),
    rate: svg("text", { class: "n-rate", x: 10, y: 56 }),
    busy: svg("text", { class: "n-busy", x: w - 10, y: 56, "text-anchor": "end" }),
    bar: svg("rect", { class: "n-bar", x: 10, y: 63, width: 0, height: 6, rx: 3 }),
    queue: svg("text", { class: "n-queue", x: 10, y: 82 }),
    errors: svg("text", { class: "n-errors", x: w - 10, y: 82, "text-anchor": "end" }),
  };
  g.append(
    parts.title,
    svg("rect", { class: "n-frame", width: w, height: box.h, rx: 8 }),
    parts.name,
    parts.kind,
    parts.util,
    parts.rate,
    parts.busy,
    svg("rect", { class: "n-track", x: 10, y: 63, width: w - 20, height: 6, rx: 3 }),
    parts.bar,
    parts.queue,
    parts.errors,
    svg("g", { class: "n-badge", transform: `translate(${w - 106},-10)` },
      svg("rect", { width: 98, height: 18, rx: 9 }),
      svg("text", { x: 49, y: 13, "text-anchor": "middle" }, "★ BOTTLENECK")),
  );
  g.addEventListener("click", () => onPick(box.id));
  return { type: "node", g, parts, trackWidth: w - 20 };
}

function drawBox(box, onPick) {
  const g = svg("g", { class: "box", "data-stage": box.id, "data-kind": "pipeline", transform: `translate(${box.x},${box.y})` });
  const routes = box.routes.filter((r) => r !== "direct").map((r) => ROUTE_NAMES[r] || r);
  const parts = {
    title: svg("title"),
    numbers: svg("text", { class: "b-numbers", x: 12, y: 36 }),
  };
  g.append(
    parts.title,
    svg("rect", { class: "b-frame", width: box.w, height: box.h, rx: 12 }),
    svg("text", { class: "b-name", x: 12, y: 19 }, truncate(box.id, 28),
      svg("tspan", { class: "b-kind" }, "  nested pipeline" + (routes.length ? " · " + routes.join(", ") : ""))),
    parts.numbers,
  );
  g.addEventListener("click", (event) => {
    if (event.target.closest(".node")) return;
    onPick(box.id);
  });
  return { type: "box", g, parts };
}

/** Draw `layout` into the <svg> element; returns the handles updateGraph() needs. */
export function renderGraph(root, layout, onPick = () => {}) {
  root.replaceChildren();
  root.removeAttribute("hidden");
  setAttr(root, "viewBox", `0 0 ${layout.width} ${layout.height}`);
  setAttr(root, "width", layout.width);
  setAttr(root, "height", layout.height);
  // shrink a wide graph to fit, but not below 75% (then the panel scrolls instead)
  root.style.minWidth = Math.round(Math.min(layout.width, Math.max(720, layout.width * 0.75))) + "px";
  const defs = svg("defs", {},
    svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" })));
  const boxes = svg("g", { class: "boxes" });
  const edges = svg("g", { class: "edges" });
  const nodes = svg("g", { class: "nodes" });
  const handles = new Map();
  for (const box of layout.boxes) {
    const handle = drawBox(box, onPick);
    boxes.append(handle.g);
    handles.set(box.id, handle);
  }
  const labelled = new Set();
  for (const edge of layout.edges) {
    edges.append(svg("path", { class: `edge route-${edge.route}`, d: edge.d, "marker-end": "url(#arrow)", "data-from": edge.from, "data-to": edge.to }));
    const key = `${edge.from}|${edge.route}`;
    if (edge.route !== "direct" && edge.fromSide === "out" && !labelled.has(key)) {
      labelled.add(key);
      edges.append(svg("text", { class: "edge-label", x: edge.a.x + 4, y: edge.a.y - 9 }, ROUTE_NAMES[edge.route] || edge.route));
    }
  }
  for (const box of layout.nodes) {
    const handle = drawNode(box, onPick);
    nodes.append(handle.g);
    handles.set(box.id, handle);
  }
  root.append(defs, boxes, edges, nodes);
  return handles;
}

function stageTitle(id, s) {
  if (!s) return `${id}: no stats yet`;
  const workers = s.threads + s.processes;
  return [
    `${id} (${s.kind})`,
    `in ${s.items_in} · out ${s.items_out} · failed ${s.items_failed} · retried ${s.items_retried}`,
    `dropped ${s.items_dropped} · dead-lettered ${s.items_dead_lettered}`,
    `queue ${s.queue_depth}/${s.queue_capacity} · busy ${s.busy}/${workers} · utilization ${fmtPercent(s.utilization)}`,
  ].join("\n");
}

function updateNode(id, handle, s, bottleneck) {
  const { g, parts } = handle;
  g.classList.toggle("bottleneck", id === bottleneck);
  g.classList.toggle("no-stats", !s);
  setText(parts.title, stageTitle(id, s));
  if (!s) {
    for (const key of ["util", "rate", "busy", "queue", "errors"]) setText(parts[key], key === "rate" ? "–" : "");
    setAttr(parts.bar, "width", 0);
    return;
  }
  setText(parts.util, `util ${fmtPercent(s.utilization)}`);
  setText(parts.rate, fmtRate(s.throughput_per_s));
  const workers = s.threads + s.processes;
  setText(parts.busy, workers ? `busy ${s.busy}/${workers}` : "built in");
  const fill = s.queue_capacity > 0 ? Math.min(1, s.queue_depth / s.queue_capacity) : 0;
  setAttr(parts.bar, "width", Math.round(handle.trackWidth * fill));
  setVariant(parts.bar, "fill-", fillLevel(fill));
  if (s.queue_capacity > 0) setText(parts.queue, `queue ${fmtShort(s.queue_depth)}/${fmtShort(s.queue_capacity)}`);
  else setText(parts.queue, `out ${fmtCompact(s.items_out)}`);
  const failed = s.items_failed + s.items_dead_lettered;
  setText(parts.errors, failed ? `${fmtCompact(s.items_failed)} err · ${fmtCompact(s.items_dead_lettered)} dead` : "0 err");
  parts.errors.classList.toggle("bad", failed > 0);
}

function updateBox(id, handle, s) {
  setText(handle.parts.title, stageTitle(id, s));
  if (!s) return setText(handle.parts.numbers, "–");
  const errors = s.items_failed + s.items_dead_lettered;
  setText(handle.parts.numbers, `${fmtRate(s.throughput_per_s)} · in ${fmtCompact(s.items_in)} · out ${fmtCompact(s.items_out)}` + (errors ? ` · ${fmtCompact(errors)} err` : ""));
}

/** Clear the drawing (no graph to show). */
export function clearGraph(root) {
  root.replaceChildren();
  for (const name of ["viewBox", "width", "height"]) root.removeAttribute(name);
  root.style.minWidth = "";
  root.setAttribute("hidden", "");
}

/** Put the pipeline's latest stats (GET /stats → pipelines[name]) on the drawing. */
export function updateGraph(handles, pipelineStats) {
  const stages = (pipelineStats && pipelineStats.stages) || {};
  const bottleneck = pipelineStats ? pipelineStats.bottleneck : null;
  for (const [id, handle] of handles) {
    if (handle.type === "node") updateNode(id, handle, stages[id], bottleneck);
    else updateBox(id, handle, stages[id]);
  }
}
