/* Cell renderers of the experiments page's runs grid (app/runs_table.py names them in its
 * column definitions; dash-ag-grid looks them up in this object by name). */
var dagcomponentfuncs = (window.dashAgGridComponentFunctions =
  window.dashAgGridComponentFunctions || {});

(function () {
  var h = React.createElement;

  function finite(x) {
    return typeof x === "number" && isFinite(x);
  }

  function short(x) {
    return Number(x.toPrecision(3)).toString();
  }

  /* the run state as a coloured badge; colours come from the column's params */
  dagcomponentfuncs.VbStateBadge = function (props) {
    var looks = props.looks || {};
    var look = looks[props.value] || looks.unknown || {};
    return h(
      "span",
      { className: "vb-badge", style: { backgroundColor: look.background, color: look.color } },
      props.value
    );
  };

  /* the sweep a run is a trial of, linking to its page; nothing for other runs */
  dagcomponentfuncs.VbSweepLink = function (props) {
    if (typeof props.value !== "string" || props.value === "") {
      return null;
    }
    return h(
      "a",
      { className: "vb-link", href: "/sweep/" + encodeURIComponent(props.value) },
      props.value
    );
  };

  /* a bar as wide as the progress (0..100) and the rounded per cent as text */
  dagcomponentfuncs.VbProgress = function (props) {
    var p = finite(props.value) ? Math.max(0, Math.min(100, props.value)) : 0;
    return h(
      "div",
      { className: "vb-progress" },
      h(
        "div",
        { className: "vb-progress-track", "aria-hidden": "true" },
        h("div", { className: "vb-progress-fill", style: { width: p + "%" } })
      ),
      h("span", { className: "vb-progress-text" }, Math.round(p) + "%")
    );
  };

  /* an inline SVG line of the values (null: a gap), scaled to the cell, with the first and
   * last value said in words for screen readers and as a tooltip */
  dagcomponentfuncs.VbSparkline = function (props) {
    var values = Array.isArray(props.value) ? props.value : [];
    var shown = values.filter(finite);
    if (shown.length === 0) {
      return h("span", { className: "vb-muted" }, "no valid loss yet");
    }
    var width = 120, height = 26, pad = 3;
    var lo = Math.min.apply(null, shown), hi = Math.max.apply(null, shown);
    var dx = values.length > 1 ? (width - 2 * pad) / (values.length - 1) : 0;
    var points = [];
    values.forEach(function (v, i) {
      if (!finite(v)) return;
      var y = hi > lo ? pad + ((hi - v) / (hi - lo)) * (height - 2 * pad) : height / 2;
      points.push((pad + i * dx).toFixed(1) + "," + y.toFixed(1));
    });
    var last = points[points.length - 1].split(",");
    var label =
      "valid loss " + short(shown[0]) + " to " + short(shown[shown.length - 1]) +
      " (" + shown.length + " points)";
    return h(
      "svg",
      {
        className: "vb-sparkline",
        width: width,
        height: height,
        viewBox: "0 0 " + width + " " + height,
        role: "img",
        "aria-label": label,
      },
      h("title", null, label),
      h("polyline", { points: points.join(" ") }),
      h("circle", { cx: last[0], cy: last[1], r: 2 })
    );
  };
})();
