/*
 * VoxelBoard evaluation page: threshold tuning in the browser (loaded by Dash from assets/).
 *
 * The page sends one split's cumulative counts once (the `eval-data` store, built by
 * app.evaluation_view.browser_view: thresholds, TP and FP as base64 typed arrays, decoded here
 * once per store; TN and FN follow from the class sizes). Moving the threshold then costs a
 * binary search and a few
 * divisions here, no round trip: the metrics table is returned as callback outputs, the figures
 * (markers, threshold lines, confusion cells, shaded error mass, the Neurons panel's threshold
 * line) are moved in place with one Plotly.update per figure, one figure per idle task, figures
 * out of view when they come into view.
 *
 * Plotly.update, not restyle/relayout: dcc.Graph answers a plotly_relayout event by copying the
 * changed layout keys into its figure prop, which re-plots the whole figure (Plotly.react, tens
 * of ms per figure on a busy machine, before the browser even sends the server's requests of
 * the same step). plotly_update has no such listener. The trace changes land in the figure
 * prop's own trace objects (dcc.Graph hands Plotly its figure's data arrays); the layout changes
 * do not, so after a re-plot from the prop (a zoom, a new figure) the last threshold is drawn
 * again (plotly_react listener).
 *
 * The formulas mirror trainer.metrics.derived_metrics operation for operation (float64 in both),
 * so the numbers equal the Python ones; the browser test checks that.
 */
(function () {
  "use strict";

  var COUNT_KEYS = ["tp", "fp", "tn", "fn"];
  var ROWS = [
    "tp", "fp", "tn", "fn", "tpr", "fpr", "tnr", "precision", "recall", "f1", "fbeta",
    "accuracy", "balanced_accuracy", "mcc", "dice", "iou", "youden_j", "predicted_positive_rate"
  ];
  var PRESET_IDS = ["max_f1", "max_accuracy", "max_youden", "eer", "precision_at", "chosen"];

  function div(num, den, empty) {
    return den !== 0 ? num / den : empty;
  }

  /* Index of the smallest stored threshold >= t (numpy searchsorted 'left'), clipped. */
  function searchsorted(a, t) {
    var lo = 0, hi = a.length;
    while (lo < hi) {
      var mid = (lo + hi) >>> 1;
      if (a[mid] < t) { lo = mid + 1; } else { hi = mid; }
    }
    return Math.min(lo, a.length - 1);
  }

  function fbeta(tp, fp, fn, beta) {
    var b2 = beta * beta;
    return div((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp, 0.0);
  }

  /* Every metric of trainer.metrics.derived_metrics from four counts. */
  function metrics(tp, fp, tn, fn, beta) {
    var tpr = div(tp, tp + fn, 0.0);
    var tnr = div(tn, tn + fp, 0.0);
    var ftp = tp, ffp = fp, ftn = tn, ffn = fn;
    var mccDen = Math.sqrt((ftp + ffp) * (ftp + ffn) * (ftn + ffp) * (ftn + ffn));
    return {
      tp: tp, fp: fp, tn: tn, fn: fn,
      tpr: tpr,
      fpr: div(fp, fp + tn, 0.0),
      tnr: tnr,
      fnr: div(fn, tp + fn, 0.0),
      precision: div(tp, tp + fp, 1.0),
      recall: tpr,
      f1: fbeta(tp, fp, fn, 1.0),
      fbeta: fbeta(tp, fp, fn, beta),
      accuracy: div(tp + tn, tp + fp + tn + fn, NaN),
      balanced_accuracy: 0.5 * (tpr + tnr),
      mcc: div(ftp * ftn - ffp * ffn, mccDen, 0.0),
      dice: div(2 * tp, 2 * tp + fp + fn, 1.0),
      iou: div(tp, tp + fp + fn, 1.0),
      youden_j: tpr + tnr - 1.0,
      predicted_positive_rate: div(tp + fp, tp + fp + tn + fn, NaN)
    };
  }

  var TYPED = {
    u1: Uint8Array, u2: Uint16Array, u4: Uint32Array, f4: Float32Array, f8: Float64Array
  };

  /* A packed array (app.evaluation_view.pack_array: {dtype, bdata[, tail]}, little-endian) as
     a typed array of the same numbers; float32 values become the doubles they are exactly. */
  function unpack(packed) {
    var bin = atob(packed.bdata);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    var values = new TYPED[packed.dtype](bytes.buffer);
    var tail = packed.tail || [];
    if (!tail.length) { return values; }
    var out = new Float64Array(values.length + tail.length);
    out.set(values);
    out.set(tail, values.length);
    return out;
  }

  var unpacked = new WeakMap();

  /* The store's thresholds and counts, decoded once per store object. */
  function counts(data) {
    var c = unpacked.get(data);
    if (!c) {
      c = {
        thresholds: unpack(data.thresholds),
        tp: unpack(data.tp),
        fp: unpack(data.fp),
        nPos: data.n_pos,
        nNeg: data.n_neg
      };
      unpacked.set(data, c);
    }
    return c;
  }

  function metricsAt(data, t, beta) {
    var c = counts(data);
    var i = searchsorted(c.thresholds, t);
    var tp = c.tp[i], fp = c.fp[i];
    var m = metrics(tp, fp, c.nNeg - fp, c.nPos - tp, beta);
    m.index = i;
    m.threshold = t;
    m.stored_threshold = c.thresholds[i];
    m.beta = beta;
    return m;
  }

  /* Smallest threshold with precision >= target and something predicted positive, or null. */
  function precisionAt(data, target) {
    var c = counts(data);
    for (var i = 0; i < c.thresholds.length; i++) {
      var pp = c.tp[i] + c.fp[i];
      if (pp > 0 && div(c.tp[i], pp, 1.0) >= target) { return c.thresholds[i]; }
    }
    return null;
  }

  function bestPrecision(data) {
    var c = counts(data);
    var best = NaN;
    for (var i = 0; i < c.thresholds.length; i++) {
      var pp = c.tp[i] + c.fp[i];
      if (pp > 0) {
        var p = c.tp[i] / pp;
        if (!(p <= best)) { best = p; }
      }
    }
    return best;
  }

  function fmt(key, v) {
    if (v === null || v === undefined || (typeof v === "number" && isNaN(v))) { return "–"; }
    if (COUNT_KEYS.indexOf(key) >= 0) { return v.toLocaleString("en-US"); }
    return v.toFixed(4);
  }

  function tLabel(t) {
    return t > 1.0 ? "none positive" : t.toFixed(4);
  }

  function plotOf(id) {
    var el = document.getElementById(id);
    if (!el) { return null; }
    var gd = el.classList && el.classList.contains("js-plotly-plot") ? el : el.querySelector(".js-plotly-plot");
    return gd && gd.data ? gd : null;
  }

  function traceIndex(gd, meta) {
    for (var k = 0; k < gd.data.length; k++) {
      if (gd.data[k].meta === meta) { return k; }
    }
    return -1;
  }

  function moveMarker(id, x, y, t) {
    var gd = plotOf(id);
    if (!gd) { return; }
    var k = traceIndex(gd, "vb-marker");
    if (k < 0) { return; }
    window.Plotly.update(gd, { x: [[x]], y: [[y]], name: ["threshold " + tLabel(t)] }, {}, [k]);
  }

  function lineAt(t) {
    var x = Math.min(Math.max(t, 0), 1);
    return { "shapes[0].x0": x, "shapes[0].x1": x };
  }

  function moveLine(id, t) {
    var gd = plotOf(id);
    if (!gd || !gd.layout.shapes || !gd.layout.shapes.length) { return; }
    window.Plotly.update(gd, {}, lineAt(t));
  }

  /* The Neurons panel's curves (app.neuron_figures): their threshold line is a trace. */
  function moveNeuronLine(t) {
    var gd = plotOf("eval-neurons");
    if (!gd) { return; }
    var k = traceIndex(gd, "vb-neuron-threshold");
    if (k < 0) { return; }
    window.Plotly.update(gd, { x: [[t, t]], name: ["threshold " + t.toFixed(2)] }, {}, [k]);
  }

  function pct(a, n) { return n ? a / n : 0.0; }

  function updateConfusion(m) {
    var gd = plotOf("eval-confusion");
    if (!gd) { return; }
    var k = traceIndex(gd, "vb-confusion");
    if (k < 0) { return; }
    var rows = [[m.tn, m.fp], [m.fn, m.tp]];
    var z = [], text = [];
    rows.forEach(function (r) {
      var n = r[0] + r[1];
      var fa = pct(r[0], n), fb = pct(r[1], n);
      z.push([fa, fb]);
      text.push([
        r[0].toLocaleString("en-US") + "<br>" + (100 * fa).toFixed(1) + "%",
        r[1].toLocaleString("en-US") + "<br>" + (100 * fb).toFixed(1) + "%"
      ]);
    });
    window.Plotly.update(gd, { z: [z], text: [text] },
      { "title.text": "Confusion at threshold " + tLabel(m.threshold) }, [k]);
  }

  function updateHist(data, m) {
    var gd = plotOf("eval-hist");
    if (!gd) { return; }
    var kn = traceIndex(gd, "vb-fn-shade"), kp = traceIndex(gd, "vb-fp-shade");
    var edges = data.hist.edges, pos = data.hist.pos, neg = data.hist.neg;
    var fnBins = [], fpBins = [];
    for (var b = 0; b < pos.length; b++) {
      var above = edges[b] >= m.threshold;
      fnBins.push(above ? 0 : pos[b]);
      fpBins.push(above ? neg[b] : 0);
    }
    var layout = gd.layout.shapes && gd.layout.shapes.length ? lineAt(m.threshold) : {};
    if (kn >= 0 && kp >= 0) {
      window.Plotly.update(gd, {
        y: [fnBins, fpBins],
        name: [
          "false negatives (" + m.fn.toLocaleString("en-US") + ")",
          "false positives (" + m.fp.toLocaleString("en-US") + ")"
        ]
      }, layout, [kn, kp]);
    } else {
      window.Plotly.update(gd, {}, layout);
    }
  }

  /* Each figure's update from the threshold state {data, m}. */
  var DRAW = {
    "eval-roc": function (j) { moveMarker("eval-roc", j.m.fpr, j.m.tpr, j.m.threshold); },
    "eval-pr": function (j) { moveMarker("eval-pr", j.m.recall, j.m.precision, j.m.threshold); },
    "eval-confusion": function (j) { updateConfusion(j.m); },
    "eval-curves": function (j) { moveLine("eval-curves", j.m.threshold); },
    "eval-hist": function (j) { updateHist(j.data, j.m); },
    "eval-neurons": function (j) { moveNeuronLine(j.m.threshold); }
  };
  var job = null;     /* the latest threshold state */
  var todo = [];      /* figures not yet drawn at `job` */
  var scheduled = false;

  /*
   * One figure per task, when the browser is idle (at the latest after 100 ms), and only the
   * figures in view: a Plotly.update costs 10-100 ms on a busy 2-core machine, so drawing all
   * six in one go would hold the server's requests of the same step (Dash sends them after this
   * callback) and the answers that arrive meanwhile. A figure out of view is drawn when it comes
   * into view (IntersectionObserver). A burst of slider events draws only the latest threshold.
   */
  function later(fn) {
    if (window.requestIdleCallback) { window.requestIdleCallback(fn, { timeout: 100 }); }
    else { window.setTimeout(fn, 0); }
  }

  function inView(id) {
    var el = document.getElementById(id);
    if (!el) { return false; }
    if (!window.IntersectionObserver) { return true; }
    var r = el.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight && r.right > 0 && r.left < window.innerWidth;
  }

  var observer = null;
  var observed = new WeakSet();

  /* Draw what waits for a figure when it scrolls (or is laid out) into view. */
  function observe(id) {
    var el = document.getElementById(id);
    if (!el || observed.has(el) || !window.IntersectionObserver) { return; }
    if (!observer) {
      observer = new window.IntersectionObserver(function () { draw([]); });
    }
    observed.add(el);
    observer.observe(el);
  }

  function drawNext() {
    scheduled = false;
    if (!job) { return; }
    if (!window.Plotly) { scheduled = true; later(drawNext); return; }
    var k = 0;
    while (k < todo.length && !inView(todo[k])) { k++; }
    if (k === todo.length) { return; }  /* the rest waits until it comes into view */
    var id = todo.splice(k, 1)[0];
    watchReplot(id);
    DRAW[id](job);
    scheduled = true;
    later(drawNext);
  }

  function draw(ids) {
    ids.forEach(function (id) { if (todo.indexOf(id) < 0) { todo.push(id); } });
    todo.forEach(observe);
    if (!scheduled && todo.some(inView)) { scheduled = true; later(drawNext); }
  }

  function scheduleFigures(data, m) {
    job = { data: data, m: m };
    draw(Object.keys(DRAW));
  }

  /* dcc.Graph re-plots from its figure prop (a new figure, a zoom), whose layout does not hold
     the threshold's layout changes: draw that figure's threshold again. */
  function watchReplot(id) {
    var gd = plotOf(id);
    if (!gd || gd.__vbWatched || !gd.on) { return; }
    gd.__vbWatched = true;
    gd.on("plotly_react", function () { if (job) { draw([id]); } });
  }

  var unpackedCustom = new WeakMap();

  /* The threshold of a clicked point of the main curve: its customdata at the point's index
     (the curve may show only every k-th stored threshold). The figure sends customdata as a
     typed array ({dtype, bdata}), which Dash's click data leaves out: read here from the
     trace, decoded once. */
  function clickedThreshold(graphId, click, data) {
    if (!click || !click.points || !click.points.length) { return null; }
    var gd = plotOf(graphId);
    for (var k = 0; k < click.points.length; k++) {
      var p = click.points[k];
      var trace = gd && gd.data[p.curveNumber];
      if (!trace || trace.meta !== "vb-curve" || !trace.customdata) { continue; }
      var values = trace.customdata;
      if (!Array.isArray(values)) {
        if (!unpackedCustom.has(values)) { unpackedCustom.set(values, unpack(values)); }
        values = unpackedCustom.get(values);
      }
      var t = values[p.pointNumber];
      if (finite(t)) { return t; }
    }
    return null;
  }

  function finite(x) {
    return typeof x === "number" && isFinite(x);
  }

  /*
   * The server's threshold (eval-t-server: the segmentation plane and the neuron scores) follows
   * the threshold with at most one request in flight: later thresholds wait, and when the answer
   * arrives (eval-t-answered) the latest of them is sent. Dash alone would send a request per
   * slider event while dragging and apply only the last answer, so the panel stood still during
   * a drag while the server segmented the cube for every event. A request unanswered after 3 s
   * no longer holds the next one.
   */
  var server = { inflight: false, since: 0, pending: null };

  function askServer(t) {
    if (t !== null) { server.pending = t; }
    var now = window.performance.now();
    if (server.pending === null || (server.inflight && now - server.since < 3000)) {
      return window.dash_clientside.no_update;
    }
    var next = server.pending;
    server.pending = null;
    server.inflight = true;
    server.since = now;
    return next;
  }

  /* The server answered (eval-t-answered): send the threshold that waited, if one did. Through
     set_props: an output would close a loop of callbacks (threshold -> server -> answer), which
     Dash refuses to run. */
  function onAnswer() {
    server.inflight = false;
    var next = askServer(null);
    if (next !== window.dash_clientside.no_update) {
      window.dash_clientside.set_props("eval-t-server", { data: next });
    }
  }

  /*
   * The one clientside callback: whatever set the threshold (data load, slider, typed value,
   * click on a curve, preset, beta), answer the threshold store, slider, input, label, message,
   * the metrics as JSON (full precision, for tests and tools), every table cell and the
   * server's threshold (askServer).
   */
  function onThreshold(slider, typed, rocClick, prClick, p1, p2, p3, p4, p5, p6, beta, data, current, target) {
    var nu = window.dash_clientside.no_update;
    var nOut = 8 + ROWS.length;
    if (!data || !data.thresholds || !counts(data).thresholds.length) {
      var out = [];
      for (var q = 0; q < nOut; q++) { out.push(nu); }
      return out;
    }
    var ctx = window.dash_clientside.callback_context;
    var trig = ctx && ctx.triggered && ctx.triggered.length ? ctx.triggered[0].prop_id : "";
    var id = trig.split(".")[0];
    var t = finite(current) ? current : null;
    var message = "";
    var fromSlider = false, fromTyped = false;
    if (id === "eval-data" || t === null) {
      t = data.chosen ? data.chosen.threshold : data.presets.max_accuracy;
      message = data.chosen ? "threshold chosen by the evaluation (" + data.chosen.method + ")" : "";
    } else if (id === "eval-slider" && finite(slider)) {
      t = slider; fromSlider = true;
    } else if (id === "eval-t-input" && finite(typed)) {
      t = typed; fromTyped = true;
    } else if (id === "eval-roc" || id === "eval-pr") {
      var c = clickedThreshold(id, id === "eval-roc" ? rocClick : prClick, data);
      if (c !== null) { t = c; message = "threshold picked on the " + (id === "eval-roc" ? "ROC" : "PR") + " curve"; }
    } else if (id.indexOf("eval-preset-") === 0) {
      var preset = id.slice("eval-preset-".length);
      if (preset === "precision_at") {
        var goal = finite(target) ? target : NaN;
        if (!(goal >= 0 && goal <= 1)) {
          message = "type a target precision between 0 and 1";
        } else {
          var found = precisionAt(data, goal);
          if (found === null) {
            message = "no threshold reaches precision ≥ " + goal + " (the best is " + bestPrecision(data).toFixed(4) + "); lower the target";
          } else {
            t = found;
            message = "smallest threshold with precision ≥ " + goal;
          }
        }
      } else if (preset === "chosen") {
        if (data.chosen) { t = data.chosen.threshold; message = "threshold chosen by the evaluation (" + data.chosen.method + ")"; }
        else { message = "this result records no chosen threshold"; }
      } else if (data.presets[preset] !== undefined) {
        t = data.presets[preset];
        message = "preset: " + preset.replace("_", " ");
      }
    }
    var b = finite(beta) && beta > 0 ? beta : 1.0;
    var m = metricsAt(data, t, b);
    scheduleFigures(data, m);
    var json = {};
    ["threshold", "stored_threshold", "index", "beta"].concat(ROWS).forEach(function (k) {
      json[k] = m[k];
    });
    var result = [
      t,
      fromSlider ? nu : Math.min(Math.max(t, 0), 1),
      fromTyped ? nu : t,
      "threshold " + tLabel(t) + (m.stored_threshold !== t ? " (counts at stored threshold " + tLabel(m.stored_threshold) + ")" : ""),
      message,
      JSON.stringify(json),
      "F-beta (beta=" + b + ")"
    ];
    ROWS.forEach(function (k) { result.push(fmt(k, m[k])); });
    result.push(askServer(t));
    return result;
  }

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.vbEval = {
    onThreshold: onThreshold,
    onAnswer: onAnswer,
    metrics: metrics,
    metricsAt: metricsAt,
    precisionAt: precisionAt,
    searchsorted: searchsorted,
    counts: counts
  };
}());
