/* Functions dash-ag-grid calls by name from a grid's props (here: its eventListeners). */
var dagfuncs = (window.dashAgGridFunctions = window.dashAgGridFunctions || {});

/* Give a grid's role="grid" element an accessible name (AG Grid has no option for it). */
dagfuncs.vbLabelGrid = function (params, label) {
  var root = document.querySelector('[grid-id="' + params.api.getGridId() + '"]');
  var grid = root && root.querySelector('[role="grid"], [role="treegrid"]');
  if (grid) grid.setAttribute("aria-label", label);
};

/* Sort a column of durations in words ("1m 30s") by the row's seconds in `field`; rows
 * without a value sort first. */
function vbSecondsOrder(field) {
  return function (valueA, valueB, nodeA, nodeB) {
    var a = nodeA.data[field], b = nodeB.data[field];
    return (typeof a === "number" ? a : -1) - (typeof b === "number" ? b : -1);
  };
}
dagfuncs.vbEtaOrder = vbSecondsOrder("eta_s");
dagfuncs.vbDurationOrder = vbSecondsOrder("duration_s");
