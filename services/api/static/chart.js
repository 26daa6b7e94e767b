// The spend chart: stacked bars of spend per UTC day, one colour per team, drawn as inline SVG
// (no library: a few rectangles). Everything from the fleet goes in as text, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b6ea5", "#d1793b", "#4f9a5a", "#b84a62", "#7d5ba6", "#8c6d3f", "#c25fa0",
  "#5f8f99", "#a3a33a", "#666e7a"];

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

// rows: [{key, day, cost_usd}], days: ["YYYY-MM-DD", ...] oldest first.
// Returns {chart: <svg>, colours: Map(team -> colour)}.
function spendChart(rows, days) {
  const teams = [...new Set(rows.map((r) => r.key ?? "(none)"))].sort();
  const colours = new Map(teams.map((t, i) => [t, PALETTE[i % PALETTE.length]]));
  const byDay = new Map(days.map((d) => [d, []]));
  for (const r of rows) if (byDay.has(r.day)) byDay.get(r.day).push(r);
  const totals = days.map((d) => byDay.get(d).reduce((s, r) => s + Number(r.cost_usd), 0));
  const top = Math.max(...totals, 0) || 1;
  const W = 900, H = 240, left = 60, bottom = 24, bar = (W - left) / Math.max(days.length, 1);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img",
    "aria-label": "spend per team and day" });
  const y = (usd) => (H - bottom) * (1 - usd / top);
  chart.append(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, stroke: "#889" }));
  chart.append(svg("text", { x: left - 4, y: 12, "text-anchor": "end", "font-size": 11 },
    "$" + top.toFixed(2)));
  chart.append(svg("text", { x: left - 4, y: H - bottom, "text-anchor": "end", "font-size": 11 },
    "$0"));
  days.forEach((day, i) => {
    let base = 0;
    for (const r of byDay.get(day).sort((a, b) => String(a.key).localeCompare(String(b.key)))) {
      const usd = Number(r.cost_usd);
      const rect = svg("rect", { x: left + i * bar + 1, y: y(base + usd), width: Math.max(bar - 2, 1),
        height: Math.max(y(base) - y(base + usd), 0), fill: colours.get(r.key ?? "(none)") });
      rect.dataset.team = r.key ?? "(none)";
      rect.dataset.day = day;
      rect.append(svg("title", {}, `${r.key ?? "(none)"} ${day}: $${usd.toFixed(4)}`));
      chart.append(rect);
      base += usd;
    }
    if (i % 5 === 0 || i === days.length - 1) {
      chart.append(svg("text", { x: left + i * bar + bar / 2, y: H - 6, "text-anchor": "middle",
        "font-size": 11 }, day.slice(5)));
    }
  });
  return { chart, colours };
}

function swatch(colour) {
  const s = svg("svg", { width: 12, height: 12 });
  s.append(svg("rect", { width: 12, height: 12, fill: colour }));
  return s;
}

window.spendChart = spendChart;
window.swatch = swatch;
