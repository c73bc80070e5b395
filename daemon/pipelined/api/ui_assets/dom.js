// DOM and formatting helpers. Data only ever reaches the page through textContent and
// setAttribute (never parsed as markup), so names and items show as text, whatever they contain.

export const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: el("td", {class: "num"}, "text", otherNode). */
export function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same signature as el(). */
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Set a node's text only when it changed (no needless repaints). */
export function setText(node, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function setAttr(node, name, value) {
  const text = String(value);
  if (node.getAttribute(name) !== text) node.setAttribute(name, text);
}

/** Replace a class out of a set (e.g. the state-* class of a badge). */
export function setVariant(node, prefix, variant) {
  for (const name of [...node.classList]) {
    if (name.startsWith(prefix) && name !== prefix + variant) node.classList.remove(name);
  }
  if (variant) node.classList.add(prefix + variant);
}

const GROUPED = new Intl.NumberFormat("en-US");

export function fmtCount(n) {
  return typeof n === "number" && Number.isFinite(n) ? GROUPED.format(n) : "–";
}

export function fmtCompact(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  const abs = Math.abs(n);
  if (abs < 10_000) return GROUPED.format(Math.round(n));
  for (const [limit, suffix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (abs >= limit) return (n / limit).toFixed(abs >= limit * 100 ? 0 : 1) + suffix;
  }
  return String(n);
}

/** Shortest form, for tight spots: 950, 1k, 1.5k, 12k, 1.2M. */
export function fmtShort(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  const abs = Math.abs(n);
  for (const [limit, suffix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (abs >= limit) return (n / limit).toFixed(abs >= limit * 10 ? 0 : 1).replace(/\.0$/, "") + suffix;
  }
  return String(Math.round(n));
}

export function fmtRate(perSecond) {
  if (typeof perSecond !== "number" || !Number.isFinite(perSecond)) return "–";
  if (perSecond === 0) return "0/s";
  if (perSecond < 10) return perSecond.toFixed(perSecond < 0.1 ? 2 : 1) + "/s";
  return fmtCompact(perSecond) + "/s";
}

export function fmtPercent(fraction) {
  if (typeof fraction !== "number" || !Number.isFinite(fraction)) return "–";
  return Math.round(fraction * 100) + "%";
}

export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 10) return seconds.toFixed(1) + " s";
  const s = Math.floor(seconds);
  const [d, h, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${String(m).padStart(2, "0")} m`;
  if (m > 0) return `${m} m ${String(s % 60).padStart(2, "0")} s`;
  return `${s} s`;
}

export function fmtBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return (unit === 0 ? String(value) : value.toFixed(value < 10 ? 1 : 0)) + " " + units[unit];
}

export function fmtMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "–";
  return ms < 10 ? ms.toFixed(1) : fmtCompact(ms);
}

/** ISO 8601 → local "HH:MM:SS" (the full timestamp goes in a title attribute). */
export function fmtClock(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toLocaleTimeString("en-GB", { hour12: false });
}

export function truncate(text, max) {
  const s = String(text ?? "");
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

/** An item as one line of JSON (strings the daemon sent as repr stay as they are). */
export function itemText(item, max = 160) {
  let text;
  try {
    text = JSON.stringify(item);
  } catch {
    text = String(item);
  }
  return truncate(text ?? "null", max);
}

/** Queue fill level as NiFi colours it: ok < 60% ≤ warn < 85% ≤ full. */
export function fillLevel(fraction) {
  if (!(fraction > 0)) return "empty";
  if (fraction >= 0.85) return "full";
  if (fraction >= 0.6) return "warn";
  return "ok";
}
