/*
 * VoxelBoard: a page's graphs are first drawn one per task (loaded by Dash from assets/).
 *
 * Each dcc.Graph draws its figure with Plotly.react when it mounts. A page's graphs mount in
 * one React commit, so all of them were drawn in one task: on a page of seven to ten graphs
 * nothing showed until the last one was drawn, a third of a second later. Here a graph's
 * first drawing is done at once only if no other graph was drawn in the same task, else it
 * waits in a queue that draws one figure per task: the browser shows the first graph as soon
 * as it is drawn, and the page stays responsive while the others follow.
 * Only first drawings are queued, first in first drawn; a graph not on screen (display:
 * none: a hidden panel, the page frame's warm-up graph) is first drawn when the page is idle;
 * a graph that is already drawn updates at once (dcc.Graph chains each change of a figure on
 * the promise of the drawing before it, so a graph's drawings keep their order). A graph
 * removed from the page while waiting is skipped.
 *
 * bench/bench_first_paint.py measures pages' first drawings; tests/app/
 * test_run_page_look_browser.py checks that a run page's graphs are drawn in several tasks.
 */
(function () {
  "use strict";

  var channel = new MessageChannel();
  var waiting = [];
  var drewInThisTask = false;
  var posted = false;

  function nextTask() {
    if (!posted) {
      posted = true;
      channel.port2.postMessage(null);
    }
  }

  function draw(job) {
    drewInThisTask = true;
    nextTask();
    return job.react.apply(job.plotly, job.args);
  }

  /* A waiting drawing's turn: drawn with drawFn (a graph removed meanwhile is skipped), and
     the promise its graph got settles with the drawing's. */
  function settle(job, drawFn) {
    try {
      Promise.resolve(job.gd.isConnected ? drawFn(job) : job.gd).then(job.resolve, job.reject);
    } catch (err) {
      job.reject(err);
    }
  }

  function later(job, schedule) {
    return new Promise(function (resolve, reject) {
      job.resolve = resolve;
      job.reject = reject;
      schedule(job);
    });
  }

  /* A new task: the next waiting first drawing, if any. */
  channel.port1.onmessage = function () {
    posted = false;
    drewInThisTask = false;
    var job = waiting.shift();
    if (!job) { return; }
    settle(job, draw);
    if (waiting.length) { nextTask(); }
  };

  function queue(job) {
    waiting.push(job);
    nextTask();
  }

  /* A graph not on screen (display: none: a hidden panel, the page frame's warm-up graph) is
     drawn when the page has nothing else to do, after what is shown. */
  function whenIdle(job) {
    var run = function () {
      settle(job, function (j) { return j.react.apply(j.plotly, j.args); });
    };
    if (window.requestIdleCallback) {
      window.requestIdleCallback(run, {timeout: 2000});
    } else {
      setTimeout(run, 200);
    }
  }

  function oneByOne(plotly) {
    if (!plotly || !plotly.react || plotly.react.vbQueued) { return; }
    var react = plotly.react;
    var queued = function (gd) {
      var job = {plotly: plotly, react: react, gd: gd, args: arguments};
      if (!gd || typeof gd !== "object" || gd._fullLayout || !gd.isConnected) {
        return react.apply(plotly, job.args);
      }
      if (gd.offsetParent === null) { return later(job, whenIdle); }
      if (!drewInThisTask && !waiting.length) { return draw(job); }
      return later(job, queue);
    };
    queued.vbQueued = true;
    plotly.react = queued;
  }

  /* plotly.js sets window.Plotly when it runs, before or after this file, and again if a page
     loads it a second time (dcc.Graph asks for it itself when it was not there yet): every
     copy is wrapped. */
  var current = window.Plotly;
  oneByOne(current);
  Object.defineProperty(window, "Plotly", {
    configurable: true,
    enumerable: true,
    get: function () { return current; },
    set: function (value) { current = value; oneByOne(value); }
  });
}());
