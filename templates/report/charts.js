/* expllm report pages: small SVG charts, no library. Shared by the inspect and evaluate pages. */
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const EMOTION_COLOURS = {
    neutral: "#8a8f98", happiness: "#e8a600", surprise: "#e26d0e", sadness: "#3a6fb0",
    anger: "#d6404e", disgust: "#7b4fa0", fear: "#14967a", contempt: "#6d8f2e",
  };
  const SERIES = ["#3a6fb0", "#e8a600", "#14967a", "#d6404e", "#7b4fa0", "#8a8f98"];

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function tip(node, text) { node.appendChild(svg("title", {}, text)); return node; }
  function root(el, width, height, label) {
    el.textContent = "";
    const s = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label || "", class: "chart-svg" });
    s.style.maxWidth = width + "px";
    el.appendChild(s);
    return s;
  }
  const pct = (v, digits = 1) => (v === null || v === undefined ? "—" : (100 * v).toFixed(digits) + " %");
  const num = (v, digits = 0) => (v === null || v === undefined ? "—" : Number(v).toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits }));
  const compact = (v) => (v >= 1e6 ? num(v / 1e6, v % 1e6 ? 1 : 0) + "M" : v >= 1e4 ? num(v / 1e3, v % 1e3 ? 1 : 0) + "k" : num(v, v % 1 ? 1 : 0));
  function niceMax(v) {  /* 4 x a round step (1, 2, 2.5 or 5 x 10^k; whole numbers for counts) */
    if (!(v > 0)) return 4;
    const raw = v / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= raw && (raw < 1 || Number.isInteger(m * p))) return 4 * m * p;
    return 40 * p;
  }
  function legend(s, items, x, y) {
    let cx = x;
    for (const it of items) {
      s.appendChild(svg("rect", { x: cx, y: y - 9, width: 10, height: 10, rx: 2, fill: it.colour }));
      const t = s.appendChild(svg("text", { x: cx + 14, y, class: "legend" }, it.name));
      cx += 22 + 6.5 * it.name.length;
      void t;
    }
  }

  /* Vertical bars per category: grouped series, or stacked with opts.stacked. */
  function bars(el, opts) {
    const cats = opts.categories, series = opts.series.filter((s) => s && s.values);
    const W = opts.width || 560, H = opts.height || 250, L = 48, R = 10, T = series.length > 1 || opts.legend ? 34 : 18, B = 30;
    const s = root(el, W, H, opts.label);
    const fmt = opts.format || ((v) => num(v));
    const total = (i) => series.reduce((a, sr) => a + (sr.values[i] || 0), 0);
    const top = opts.max || niceMax(Math.max(0, ...cats.map((_, i) => (opts.stacked ? total(i) : Math.max(...series.map((sr) => sr.values[i] || 0))))));
    const y = (v) => T + (H - T - B) * (1 - v / top);
    for (let k = 0; k <= 4; k++) {
      const v = (top * k) / 4;
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: k ? "grid" : "axis" }));
      s.appendChild(svg("text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, opts.tick ? opts.tick(v) : fmt(v)));
    }
    const band = (W - L - R) / cats.length, inner = band * 0.78;
    const bw = opts.stacked ? inner : inner / series.length;
    cats.forEach((c, i) => {
      const x0 = L + band * i + (band - inner) / 2;
      let acc = 0;
      series.forEach((sr, j) => {
        const v = sr.values[i];
        if (v === null || v === undefined) return;
        const colour = sr.colour || (opts.byCategory ? EMOTION_COLOURS[c] : SERIES[j % SERIES.length]);
        const x = opts.stacked ? x0 : x0 + j * bw;
        const y1 = y(opts.stacked ? acc + v : v), y0 = y(opts.stacked ? acc : 0);
        const r = svg("rect", { x: x + 0.5, y: y1, width: Math.max(bw - 1, 1), height: Math.max(y0 - y1, v > 0 ? 1 : 0), fill: colour, class: "bar", opacity: sr.opacity });
        tip(r, `${c} · ${sr.name}: ${fmt(v)}`);
        if (opts.onClick) { r.classList.add("clickable"); r.addEventListener("click", () => opts.onClick(c, sr, i)); }
        s.appendChild(r);
        if (opts.values && !opts.stacked && series.length === 1) s.appendChild(svg("text", { x: x + bw / 2, y: y1 - 4, class: "value", "text-anchor": "middle" }, fmt(v)));
        acc += opts.stacked ? v : 0;
      });
      if (opts.stacked && opts.values) s.appendChild(svg("text", { x: x0 + inner / 2, y: y(acc) - 4, class: "value", "text-anchor": "middle" }, fmt(series[0].values[i])));
      s.appendChild(svg("text", { x: L + band * i + band / 2, y: H - B + 16, class: "cat", "text-anchor": "middle" }, c));
    });
    if (opts.xlabel) s.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 8, class: "axis-label", "text-anchor": "middle" }, opts.xlabel));
    if (series.length > 1 || opts.legend) legend(s, series.map((sr, j) => ({ name: sr.name, colour: sr.colour || SERIES[j % SERIES.length] })), L, 14);
    return s;
  }

  /* Horizontal bars with the label above each bar (long labels such as rejected reasons). */
  function hbars(el, opts) {
    const rows = opts.rows, W = opts.width || 560, row = 34, H = Math.max(rows.length * row + 8, 40);
    const s = root(el, W, H, opts.label);
    const top = Math.max(1, ...rows.map((r) => r.value));
    rows.forEach((r, i) => {
      const y0 = 4 + i * row, w = ((W - 70) * r.value) / top;
      const label = r.label.length > 92 ? r.label.slice(0, 90) + "…" : r.label;
      tip(s.appendChild(svg("text", { x: 0, y: y0 + 11, class: "row-label" }, label)), r.label);
      tip(s.appendChild(svg("rect", { x: 0, y: y0 + 15, width: Math.max(w, 1), height: 12, rx: 2, fill: r.colour || SERIES[3], class: "bar" })), `${r.label}: ${num(r.value)}`);
      s.appendChild(svg("text", { x: w + 6, y: y0 + 25, class: "value" }, num(r.value)));
    });
    return s;
  }

  function seqColour(t) {  /* white -> deep blue */
    t = Math.max(0, Math.min(1, t));
    const a = [247, 251, 255], b = [8, 69, 148];
    return `rgb(${a.map((x, i) => Math.round(x + (b[i] - x) * Math.pow(t, 0.8))).join(",")})`;
  }
  function divColour(t) {  /* -1 red .. 0 white .. +1 blue */
    t = Math.max(-1, Math.min(1, t));
    const w = [247, 247, 247], hi = t >= 0 ? [33, 102, 172] : [178, 24, 43], k = Math.abs(t);
    return `rgb(${w.map((x, i) => Math.round(x + (hi[i] - x) * k)).join(",")})`;
  }

  /* A matrix of cells: rows x cols, values[r][c] (null: blank), colour by value / max. */
  function heatmap(el, opts) {
    const rows = opts.rows, cols = opts.cols, cw = opts.cell || 44, ch = opts.cellHeight || 20;
    const L = opts.left || 120, T = opts.top || 64, W = L + cols.length * cw + 40, H = T + rows.length * ch + (opts.xlabel ? 22 : 6);
    const s = root(el, W, H, opts.label);
    const fmt = opts.format || ((v) => v.toFixed(2));
    const max = opts.max || Math.max(1e-9, ...opts.values.flat().filter((v) => v !== null).map(Math.abs));
    cols.forEach((c, j) => {
      const x = L + j * cw + cw / 2;
      s.appendChild(svg("text", { x, y: T - 8, class: "cat", transform: `rotate(-40 ${x} ${T - 8})` }, c));
    });
    if (opts.colTitle) s.appendChild(svg("text", { x: L, y: 12, class: "axis-label" }, opts.colTitle));
    rows.forEach((r, i) => {
      const yy = T + i * ch;
      const faded = opts.fadedRows && opts.fadedRows[i];
      const label = s.appendChild(svg("text", { x: L - 6, y: yy + ch / 2 + 4, class: "row-label" + (faded ? " faded" : ""), "text-anchor": "end" }, r));
      if (opts.rowTitles) tip(label, opts.rowTitles[i]);
      cols.forEach((c, j) => {
        const v = opts.values[i][j];
        const x = L + j * cw;
        const t = v === null ? 0 : v / max;
        const fill = v === null ? "#f0f0f0" : opts.diverging ? divColour(t) : seqColour(t);
        const cell = svg("rect", { x: x + 0.5, y: yy + 0.5, width: cw - 1, height: ch - 1, fill, class: "cell" + (opts.highlight && opts.highlight(i, j) ? " diag" : "") });
        tip(cell, opts.cellTitle ? opts.cellTitle(i, j, v) : `${r} · ${c}: ${v === null ? "—" : fmt(v)}`);
        if (opts.onClick) { cell.classList.add("clickable"); cell.addEventListener("click", () => opts.onClick(i, j, v)); }
        s.appendChild(cell);
        if (v !== null && opts.labels !== false) {
          const dark = opts.diverging ? Math.abs(t) > 0.55 : t > 0.5;
          s.appendChild(svg("text", { x: x + cw / 2, y: yy + ch / 2 + 4, class: "cell-text" + (dark ? " on-dark" : ""), "text-anchor": "middle" }, fmt(v)));
        }
      });
    });
    if (opts.xlabel) s.appendChild(svg("text", { x: L + (cols.length * cw) / 2, y: H - 4, class: "axis-label", "text-anchor": "middle" }, opts.xlabel));
    return s;
  }

  /* A histogram over bin edges, with an optional vertical marker (e.g. the active threshold). */
  function histogram(el, opts) {
    const edges = opts.edges, counts = opts.counts;
    const W = opts.width || 560, H = opts.height || 220, L = 52, R = 12, T = 14, B = 40;
    const s = root(el, W, H, opts.label);
    const x = (v) => L + ((W - L - R) * (v - edges[0])) / (edges[edges.length - 1] - edges[0]);
    let y, ticks;
    if (opts.log) {  /* log10(1 + count): tails stay visible beside a tall first bin */
      const top = Math.ceil(Math.log10(1 + Math.max(1, ...counts)));
      y = (v) => T + (H - T - B) * (1 - Math.log10(1 + v) / top);
      ticks = Array.from({ length: top + 1 }, (_, k) => (k ? Math.pow(10, k) : 0));
    } else {
      const top = niceMax(Math.max(1, ...counts));
      y = (v) => T + (H - T - B) * (1 - v / top);
      ticks = [0, 1, 2, 3, 4].map((k) => (top * k) / 4);
    }
    ticks.forEach((v, k) => {
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: k ? "grid" : "axis" }));
      s.appendChild(svg("text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, compact(v)));
    });
    counts.forEach((c, i) => {
      const x0 = x(edges[i]), x1 = x(edges[i + 1]);
      const r = svg("rect", { x: x0 + 0.5, y: y(c), width: Math.max(x1 - x0 - 1, 1), height: y(0) - y(c), fill: opts.colour || SERIES[0], class: "bar" });
      s.appendChild(tip(r, `${edges[i]}–${edges[i + 1]}: ${num(c)}`));
    });
    const step = Math.max(1, Math.ceil(edges.length / 11));
    edges.forEach((e, i) => {
      if (i % step) return;
      s.appendChild(svg("text", { x: x(e), y: H - B + 15, class: "tick", "text-anchor": "middle" }, String(e)));
    });
    if (opts.marker !== undefined) {
      const mx = x(opts.marker);
      s.appendChild(svg("line", { x1: mx, x2: mx, y1: T, y2: y(0), class: "marker" }));
      s.appendChild(svg("text", { x: mx + 4, y: T + 10, class: "marker-label" }, opts.markerLabel || ""));
    }
    if (opts.xlabel) s.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 6, class: "axis-label", "text-anchor": "middle" }, opts.xlabel));
    return s;
  }

  /* AU intensity bars of one face (0-5), optionally paired with a second run's values. */
  function auBars(el, items, threshold) {
    const row = items.some((it) => it.b !== undefined) ? 18 : 14, W = 250, H = Math.max(items.length * row, 14);
    const s = root(el, W, H, "AU intensities");
    const x = (v) => (v / 5) * 170;
    items.forEach((it, i) => {
      const y0 = i * row;
      tip(s.appendChild(svg("text", { x: 0, y: y0 + 10, class: "au-code" }, it.code)), it.name || it.code);
      s.appendChild(svg("rect", { x: 38, y: y0 + 2, width: 170, height: 9, class: "au-track" }));
      s.appendChild(tip(svg("rect", { x: 38, y: y0 + 2, width: Math.max(x(it.a), 0.5), height: 9, class: it.a >= threshold ? "au-on" : "au-off" }), `${it.code}: ${it.a.toFixed(1)}`));
      if (it.b !== undefined) s.appendChild(tip(svg("rect", { x: 38, y: y0 + 12, width: Math.max(x(Math.max(it.b, 0)), 0.5), height: 4, class: "au-b" }), `${it.code} (B): ${it.b < 0 ? "—" : it.b.toFixed(1)}`));
      s.appendChild(svg("text", { x: 42 + x(Math.max(it.a, 0)), y: y0 + 10, class: "au-value" }, it.a.toFixed(1) + (it.b !== undefined && it.b >= 0 ? ` · ${it.b.toFixed(1)}` : "")));
    });
    s.appendChild(svg("line", { x1: 38 + x(threshold), x2: 38 + x(threshold), y1: 0, y2: H, class: "au-threshold" }));
    return s;
  }

  /* base64(gzip(JSON)) -> object, with the browser's DecompressionStream. */
  async function inflate(b64) {
    const text = atob(b64.trim());
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  function readJSON(id) { return JSON.parse(document.getElementById(id).textContent); }

  return { bars, hbars, heatmap, histogram, auBars, inflate, readJSON, pct, num, EMOTION_COLOURS, SERIES };
})();
