/*
 * VoxelBoard: say on the page why an action did nothing (loaded by Dash from assets/).
 *
 * Exceptions inside callbacks reach the banner from the server (app._show_callback_error).
 * A request the server refuses or cannot answer (403 on a read-only dashboard, 413 for a body
 * over the size limit, 500, a lost connection) never reaches a callback, so the renderer would
 * stay silent: this wrapper around fetch shows the server's one-line reason in the same banner.
 */
(function () {
  "use strict";

  var BANNER = "vb-callback-error";
  var TEXT = "vb-callback-error-text";
  var ENDPOINT = "_dash-update-component";

  function show(message) {
    var setProps = window.dash_clientside && window.dash_clientside.set_props;
    if (setProps) {
      setProps(TEXT, {children: message});
      setProps(BANNER, {hidden: false});
    }
  }

  function firstLine(text) {
    var line = (text || "").trim().split("\n")[0];
    return line.length > 300 ? line.slice(0, 300) + " ..." : line;
  }

  var fetch = window.fetch;
  window.fetch = function (input, init) {
    var url = typeof input === "string" ? input : (input && input.url) || "";
    var promise = fetch.apply(this, arguments);
    if (url.indexOf(ENDPOINT) === -1) {
      return promise;
    }
    return promise.then(
      function (response) {
        if (!response.ok && response.status !== 204) {
          response.clone().text().then(function (text) {
            var reason = firstLine(text) || response.statusText;
            show("The server refused or failed this action (HTTP " + response.status + "): " + reason);
          });
        }
        return response;
      },
      function (error) {
        show("The dashboard server cannot be reached: " + error);
        throw error;
      }
    );
  };
})();
