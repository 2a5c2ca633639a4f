/* expllm inspect page: charts from the summary block, then the sample browser over the records. */
"use strict";
(() => {
  const C = Charts, $ = (sel, el) => (el || document).querySelector(sel);
  const S = C.readJSON("summary-data");
  const E = S.summary.emotions, T = S.summary.threshold, F = S.summary.au_floor;
  const started = performance.now();
  let browser = null;

  function drawCharts() {
    const sm = S.summary;
    C.bars($("#chart-classes"), {
      categories: E, stacked: true, values: true, label: "records per class",
      series: [
        { name: "accepted", values: sm.class_counts.accepted, colour: C.SERIES[0] },
        { name: "rejected", values: sm.class_counts.rejected, colour: "#c4c8cf" },
      ],
      onClick: (c) => browser && browser.set({ class: c }),
    });
    const sh = sm.class_shares;
    C.bars($("#chart-shares"), {
      categories: E, max: 1, format: (v) => C.pct(v, 1), tick: (v) => C.pct(v, 0), label: "shares per class",
      series: [
        { name: "verified", values: sh.verified, colour: C.SERIES[0] },
        { name: "AU-supported", values: sh.supported, colour: C.SERIES[1] },
        sh.complete ? { name: "complete", values: sh.complete, colour: C.SERIES[2] } : null,
      ],
      onClick: (c, sr) => browser && browser.set(sr.name === "AU-supported" ? { class: c, supported: "no" } : { class: c }),
    });
    const hm = sm.heatmap, faded = hm.overall_active.map((v) => !v);
    const common = { rows: hm.aus, rowTitles: hm.names.map((n, i) => `${hm.aus[i]} ${n}`), cols: E, fadedRows: faded, left: 46, cell: 40, cellHeight: 17,
      onClick: (i, j) => browser && browser.set({ class: E[j], sort: hm.aus[i] }) };
    C.heatmap($("#chart-heat-mean"), { ...common, values: hm.mean, max: Math.max(0.5, ...hm.mean.flat().filter((v) => v !== null)), format: (v) => v.toFixed(1), label: "mean AU intensity per class",
      cellTitle: (i, j, v) => `${hm.aus[i]} ${hm.names[i]} · ${E[j]}: mean ${v === null ? "—" : v.toFixed(2)}` });
    C.heatmap($("#chart-heat-active"), { ...common, values: hm.active, max: 1, format: (v) => (v === 0 ? "0" : Math.round(100 * v)), label: "active share per class",
      cellTitle: (i, j, v) => `${hm.aus[i]} ${hm.names[i]} · ${E[j]}: active (≥ ${T}) on ${C.pct(v)}` });
    if (sm.agreement.length) {
      C.heatmap($("#chart-agreement"), {
        rows: E, cols: E, left: 80, cell: 46, cellHeight: 22, label: "label by AU evidence",
        values: sm.agreement.map((r) => { const n = r.reduce((a, b) => a + b, 0); return r.map((v) => (n ? v / n : null)); }),
        max: 1, format: (v) => Math.round(100 * v), highlight: (i, j) => i === j,
        cellTitle: (i, j) => `label ${E[i]}, AU evidence ${E[j]}: ${C.num(sm.agreement[i][j])} records`,
        onClick: (i, j) => browser && browser.set({ class: E[i], dominant: E[j] }),
      });
    }
    const reasons = sm.reasons;
    if (reasons.length) C.hbars($("#chart-reasons"), { rows: reasons.map((r) => ({ label: (r[0] ? r[0] + ": " : "") + r[1], value: r[2] })), label: "rejected reasons" });
    C.histogram($("#chart-words"), { edges: sm.words.edges, counts: sm.words.counts, colour: C.SERIES[2], label: "words per CoT", xlabel: "words" });
    drawIntensity();
    if (S.compare) drawCompare();
  }

  function drawIntensity() {
    const pick = $("#intensity-au"), per = S.summary.intensity.per_au;
    const code = pick ? pick.value : "";
    const counts = code ? per[code] : Object.values(per).reduce((acc, c) => acc.map((v, i) => v + c[i]), S.summary.intensity.edges.slice(1).map(() => 0));
    const log = $("#intensity-log") ? $("#intensity-log").checked : false;
    C.histogram($("#chart-intensity"), { edges: S.summary.intensity.edges, counts, marker: T, log, xlabel: "intensity (0-5)", markerLabel: `active ≥ ${T}`, colour: C.SERIES[4], label: "AU intensity distribution" });
  }

  function drawCompare() {
    const X = S.compare, a = X.per_class.a, b = X.per_class.b;
    const delta = (k) => E.map((_, i) => (a[k][i] === null || b[k][i] === null ? null : b[k][i] - a[k][i]));
    C.bars($("#chart-cmp-shares"), {
      categories: E, max: 1, format: (v) => C.pct(v, 1), tick: (v) => C.pct(v, 0), label: "AU-supported share, A and B",
      series: [
        { name: "supported A", values: a.supported, colour: C.SERIES[0] },
        { name: "supported B", values: b.supported, colour: C.SERIES[1] },
      ],
    });
    const keys = ["records", "verified", "supported"].concat(a.complete.some((v) => v !== null) ? ["complete"] : []);
    C.heatmap($("#chart-cmp-deltas"), {
      rows: keys.map((k) => (k === "records" ? "records (%)" : k)), cols: E, left: 92, cell: 46, cellHeight: 22, diverging: true, max: 0.25,
      values: keys.map((k) => (k === "records" ? E.map((_, i) => (a.records[i] ? (b.records[i] - a.records[i]) / a.records[i] : null)) : delta(k))),
      format: (v) => (v > 0 ? "+" : "") + (100 * v).toFixed(1), label: "per-class deltas B - A",
      cellTitle: (i, j, v) => `${keys[i]} · ${E[j]}: A ${keys[i] === "records" ? a.records[j] : C.pct(a[keys[i]][j])}, B ${keys[i] === "records" ? b.records[j] : C.pct(b[keys[i]][j])}`,
    });
    C.heatmap($("#chart-cmp-transitions"), {
      rows: E, cols: E, left: 80, cell: 46, cellHeight: 22, values: X.transitions.map((r) => r.map((v) => v)), labels: true,
      max: Math.max(1, ...X.transitions.flat().filter((_, k) => k % (E.length + 1) !== 0)), format: (v) => C.num(v), highlight: (i, j) => i === j,
      cellTitle: (i, j, v) => `AU evidence ${E[i]} in A, ${E[j]} in B: ${C.num(v)} records`,
      onClick: (i, j) => browser && browser.set({ dominant: E[i], dominant_b: E[j], changed: i === j ? "" : "yes" }),
    });
    const ad = X.active_delta;
    C.heatmap($("#chart-cmp-active"), {
      rows: ad.aus, cols: E, left: 46, cell: 40, cellHeight: 17, diverging: true, max: 0.5, values: ad.values,
      format: (v) => Math.round(100 * v), label: "active share delta",
      cellTitle: (i, j, v) => `${ad.aus[i]} · ${E[j]}: active share B - A = ${v === null ? "—" : (100 * v).toFixed(1) + " points"}`,
    });
  }

  /* ---------------------------------------------------------------- the sample browser */
  const FILTERS = ["class", "dominant", "dominant_b", "verified", "supported", "complete", "writer", "changed", "q", "sort", "per", "page"];

  function Browser(R, thumbs) {
    const form = $("#filters"), cards = $("#cards"), tpl = $("#card-template");
    const aus = Object.keys(R.aus), names = S.au_names;
    const idx = (name) => E.indexOf(name);
    let state = {}, lower = null, cacheKey = null, cacheList = null;

    function readHash() {
      const p = new URLSearchParams(location.hash.slice(1));
      const st = {};
      for (const k of FILTERS) st[k] = p.get(k) || "";
      st.page = Math.max(1, parseInt(st.page, 10) || 1);
      st.per = Math.max(1, parseInt(st.per, 10) || S.page_size);
      return st;
    }
    function writeHash() {
      const p = new URLSearchParams();
      for (const k of FILTERS) if (state[k] && !(k === "page" && state[k] === 1) && !(k === "per" && state[k] === S.page_size)) p.set(k, state[k]);
      const h = p.toString();
      if (location.hash.slice(1) !== h) history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
    }
    function syncForm() {
      for (const el of form.elements) {
        if (!el.name || !(el.name in state)) continue;
        const v = String(state[el.name]);
        if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === v)) el.add(new Option(v, v));
        if (el.value !== v) el.value = v;
      }
    }
    const flag = (want, v) => !want || (want === "yes" ? v === 1 : v === 0);
    function filtered() {
      const key = JSON.stringify([state.class, state.dominant, state.dominant_b, state.verified, state.supported, state.complete, state.writer, state.changed, state.q, state.sort]);
      if (key === cacheKey) return cacheList;
      const cls = idx(state.class), dom = idx(state.dominant), domB = idx(state.dominant_b), wr = R.writers.indexOf(state.writer);
      const terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
      if (terms.length && !lower) lower = R.cot.map((t, i) => (R.id[i] + "\n" + t).toLowerCase());
      const out = [];
      for (let i = 0; i < R.n; i++) {
        if (state.class && R.label[i] !== cls) continue;
        if (state.dominant && R.dom[i] !== dom) continue;
        if (!flag(state.verified, R.ver[i]) || !flag(state.supported, R.sup[i])) continue;
        if (R.comp && !flag(state.complete, R.comp[i])) continue;
        if (state.writer && R.wr[i] !== wr) continue;
        if (R.b_dom) {
          if (state.dominant_b && R.b_dom[i] !== domB) continue;
          const changed = R.b_dom[i] < 0 ? -1 : R.b_dom[i] !== R.dom[i] ? 1 : 0;
          if (!flag(state.changed, changed)) continue;
        }
        if (terms.length && !terms.every((t) => lower[i].includes(t))) continue;
        out.push(i);
      }
      const by = state.sort === "words" ? R.words : state.sort === "faithfulness" ? R.faith : R.aus[state.sort];
      if (by) out.sort((x, y) => by[y] - by[x] || x - y);
      cacheKey = key; cacheList = out;
      return out;
    }
    function cotInto(el, text, terms) {
      el.textContent = "";
      for (const block of text.split("\n\n")) {
        const p = document.createElement("p");
        block.split(/(\*\*[^*]+\*\*)/).forEach((part) => {
          if (!part) return;
          const bold = part.startsWith("**") && part.endsWith("**");
          const host = bold ? p.appendChild(document.createElement("b")) : p;
          marked(host, bold ? part.slice(2, -2) : part, terms);
        });
        el.appendChild(p);
      }
    }
    function marked(host, text, terms) {
      if (!terms.length) { host.appendChild(document.createTextNode(text)); return; }
      const re = new RegExp("(" + terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|") + ")", "gi");
      text.split(re).forEach((part, k) => {
        if (!part) return;
        if (k % 2) host.appendChild(document.createElement("mark")).textContent = part;
        else host.appendChild(document.createTextNode(part));
      });
    }
    const yesNo = (v) => (v === 1 ? "yes" : v === 0 ? "no" : "—");
    function card(i, terms) {
      const node = tpl.content.firstElementChild.cloneNode(true);
      const put = (sel, text) => { const el = $(sel, node); if (el) el.textContent = text; return el; };
      const label = E[R.label[i]] || "—", dom = E[R.dom[i]] || "—";
      node.dataset.id = R.id[i]; node.dataset.label = label; node.dataset.dominant = dom;
      node.dataset.verified = yesNo(R.ver[i]); node.dataset.supported = yesNo(R.sup[i]);
      const img = $(".thumb", node);
      if (thumbs[i]) img.src = "data:image/webp;base64," + thumbs[i];
      else { img.remove(); $(".no-image", node).hidden = false; }
      put(".f-id", R.id[i]);
      const lab = put(".f-label", label); lab.style.background = C.EMOTION_COLOURS[label] || "#999";
      const dm = put(".f-dom", dom); dm.style.borderColor = C.EMOTION_COLOURS[dom] || "#999";
      put(".f-sec", E[R.sec[i]] || "—");
      put(".f-inf", E[R.inf[i]] || "—");
      const ver = put(".f-ver", yesNo(R.ver[i])); ver.className += " " + yesNo(R.ver[i]);
      const sup = put(".f-sup", yesNo(R.sup[i])); sup.className += " " + yesNo(R.sup[i]);
      if (R.comp) { const cp = put(".f-comp", yesNo(R.comp[i])); cp.className += " " + yesNo(R.comp[i]); } else $(".fact-comp", node).remove();
      put(".f-words", R.words[i]); put(".f-faith", (R.faith[i] / 100).toFixed(2));
      put(".f-writer", R.writers[R.wr[i]] + (R.rounds[i] > 1 ? ` · ${R.rounds[i]} rounds` : "")); put(".f-tpl", R.templates[R.tpl[i]]);
      if (R.fail && R.fail[i]) put(".f-fail", R.fail[i]); else $(".fact-fail", node).remove();
      const items = [];
      for (const code of aus) {
        const a = R.aus[code][i], b = R.b_aus && R.b_aus[code] ? R.b_aus[code][i] : undefined;
        if (a >= 10 * F || (b !== undefined && b >= 10 * F)) items.push({ code, name: names[code], a: Math.max(a, 0) / 10, b: b === undefined ? undefined : b / 10 });
      }
      if (items.length) C.auBars($(".aus", node), items, T); else $(".aus", node).remove();
      if (!items.length) $(".no-aus", node).hidden = false;
      cotInto($(".cot-a", node), R.cot[i], terms);
      const cmp = $(".compare", node);
      if (R.b_dom && R.b_dom[i] >= 0) {
        const db = put(".f-dom-b", E[R.b_dom[i]]); db.style.borderColor = C.EMOTION_COLOURS[E[R.b_dom[i]]];
        put(".f-sup-b", yesNo(R.b_sup[i]));
        if (R.b_dom[i] !== R.dom[i]) node.classList.add("changed");
        cotInto($(".cot-b", node), R.b_cot[i], terms);
      } else if (cmp) cmp.remove();
      return node;
    }
    function render() {
      const list = filtered();
      const pages = Math.max(1, Math.ceil(list.length / state.per));
      state.page = Math.min(state.page, pages);
      const terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
      const frag = document.createDocumentFragment();
      for (const i of list.slice((state.page - 1) * state.per, state.page * state.per)) frag.appendChild(card(i, terms));
      cards.textContent = "";
      cards.appendChild(frag);
      const count = $("#browser-count");
      count.textContent = C.num(list.length); count.dataset.count = list.length;
      $("#browser-empty").hidden = list.length > 0;
      for (const nav of document.querySelectorAll(".pager")) {
        $(".page-no", nav).textContent = state.page; $(".page-count", nav).textContent = pages;
        $(".first", nav).disabled = $(".prev", nav).disabled = state.page <= 1;
        $(".last", nav).disabled = $(".next", nav).disabled = state.page >= pages;
      }
      cards.dataset.page = state.page;
      writeHash();
    }
    function set(changes, keepPage) {
      Object.assign(state, changes);
      if (!keepPage) state.page = 1;
      syncForm(); render();
      if (!keepPage && !("q" in changes)) $("#browser").scrollIntoView({ behavior: "smooth", block: "start" });
    }
    form.addEventListener("input", (ev) => {
      const el = ev.target;
      if (!el.name) return;
      state[el.name] = el.name === "per" ? parseInt(el.value, 10) : el.value;
      state.page = 1; render();
    });
    form.addEventListener("submit", (ev) => ev.preventDefault());
    for (const nav of document.querySelectorAll(".pager")) {
      nav.addEventListener("click", (ev) => {
        const b = ev.target.closest("button");
        if (!b) return;
        const pages = Math.max(1, Math.ceil(filtered().length / state.per));
        const to = { first: 1, prev: state.page - 1, next: state.page + 1, last: pages }[b.dataset.go];
        set({ page: Math.max(1, Math.min(pages, to)) }, true);
        if (nav.classList.contains("bottom")) $("#browser").scrollIntoView({ block: "start" });
      });
    }
    $("#filters-reset").addEventListener("click", () => set({ ...Object.fromEntries(FILTERS.map((k) => [k, ""])), per: state.per }));
    window.addEventListener("hashchange", () => { state = readHash(); syncForm(); render(); });
    state = readHash(); syncForm(); render();
    $("#browser-total").textContent = C.num(R.n);
    return { set, filtered, state: () => ({ ...state }) };
  }

  const ready = (async () => {
    drawCharts();
    const pick = $("#intensity-au");
    if (pick) pick.addEventListener("change", drawIntensity);
    if ($("#intensity-log")) $("#intensity-log").addEventListener("change", drawIntensity);
    const timings = { charts: performance.now() };
    /* the records and thumbnails follow this script in the file: wait until they are parsed */
    if (document.readyState === "loading") await new Promise((r) => document.addEventListener("DOMContentLoaded", r));
    timings.parsed = performance.now();
    const R = await C.inflate($("#records-data").textContent);
    const thumbs = $("#thumbs-data").textContent.split(" ");
    browser = Browser(R, thumbs);
    timings.firstScreen = performance.now();
    timings.script = started;
    document.body.dataset.firstScreenMs = Math.round(timings.firstScreen);
    document.body.dataset.state = "ready";
    window.expllmReport.timings = timings;
    return timings;
  })().catch((err) => {
    document.body.dataset.state = "error";
    const box = $("#load-error");
    box.hidden = false; box.querySelector(".detail").textContent = String(err && err.stack || err);
    throw err;
  });
  window.expllmReport = { ready, set: (changes) => browser && browser.set(changes), filtered: () => browser && browser.filtered() };
})();
