/* expllm evaluate page: confusion matrices side by side, per-class F1 and recall, CoT metrics. */
"use strict";
(() => {
  const C = Charts, D = C.readJSON("evaluation-data"), E = D.emotions, P = D.present;
  const started = performance.now();
  const anyNone = D.predictors.some((p) => p.confusion.some((row) => row[row.length - 1] > 0));
  const cols = anyNone ? E.concat([D.no_label]) : E;
  D.predictors.forEach((p, k) => {
    const el = document.getElementById("chart-confusion-" + k);
    const row = (e) => E.indexOf(e);  // rows: the classes the faces have; columns: all answers
    C.heatmap(el, {
      rows: P, cols, left: 80, cell: 44, cellHeight: 24, max: 1, label: `confusion matrix of ${p.label}`,
      values: P.map((e) => p.confusion_normalised[row(e)].slice(0, cols.length)),
      format: (v) => Math.round(100 * v), highlight: (i, j) => cols[j] === P[i], xlabel: "predicted",
      cellTitle: (i, j, v) => `true ${P[i]}, predicted ${cols[j]}: ${C.num(p.confusion[row(P[i])][j])} of ${C.num(p.per_class[P[i]].support)} (${C.pct(v)})`,
    });
  });
  const perClass = (key) => D.predictors.map((p, k) => ({ name: p.label, values: P.map((e) => p.per_class[e][key]), colour: C.SERIES[k % C.SERIES.length] }));
  const shares = { max: 1, format: (v) => C.pct(v, 1), tick: (v) => C.pct(v, 0), width: 1100, height: 260, legend: true };
  C.bars(document.getElementById("chart-f1"), { ...shares, categories: P, series: perClass("f1"), label: "F1 per class" });
  C.bars(document.getElementById("chart-recall"), { ...shares, categories: P, series: perClass("recall"), label: "recall per class" });
  const withCot = D.predictors.filter((p) => p.cot);
  const cotChart = (id, label, keys) => {
    const el = document.getElementById(id);
    if (!el || !withCot.length) return;
    C.bars(el, {
      ...shares, categories: keys.map((k) => k[1]), label,
      series: withCot.map((p) => ({ name: p.label, values: keys.map((k) => p.cot[k[0]]), colour: C.SERIES[D.predictors.indexOf(p) % C.SERIES.length] })),
    });
  };
  cotChart("chart-cot", "CoT metrics", [["exact_format", "exact format"], ["conclusion_matches", "conclusion = prediction"], ["faithfulness_mean", "AU faithfulness"], ["fully_faithful", "fully faithful"]]);
  cotChart("chart-cot-wording", "CoT wording", [["interpretation_agreement", "conclusion = interpretation"], ["non_word_tokens", "non-word tokens"], ["non_word_cots", "CoTs with non-words"], ["annotation_wording", "annotation wording"]]);
  document.body.dataset.state = "ready";
  document.body.dataset.firstScreenMs = Math.round(performance.now());
  window.expllmReport = { ready: Promise.resolve({ charts: performance.now() - started }) };
})();
