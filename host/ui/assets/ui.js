// eshost admin UI: the live tail, and bounds on live tables. Every page works without this
// file; it only makes the live parts live.
(function () {
  "use strict";

  // Tables fed by server-sent events keep at most data-keep rows (newest first).
  function trim(body, keep) {
    keep = keep || parseInt(body.getAttribute("data-keep"), 10) || 100;
    while (body.rows.length > keep) body.deleteRow(body.rows.length - 1);
  }
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.hasAttribute && target.hasAttribute("data-keep")) trim(target);
  });

  // The live tail: events as they commit, pausable, and resumed from the last position shown
  // (the server catches up from there, so nothing is skipped).
  function tail(root) {
    var rows = root.querySelector("tbody");
    var toggle = root.querySelector("[data-tail-toggle]");
    var state = root.querySelector("[data-tail-state]");
    var last = parseInt(root.getAttribute("data-last"), 10) || 0;
    var source = null;

    function url() {
      var base = root.getAttribute("data-stream");
      return base + (base.indexOf("?") < 0 ? "?" : "&") + "from=" + (last + 1);
    }
    function show(live) {
      toggle.textContent = live ? "Pause" : "Resume";
      state.textContent = live ? "live from position " + (last + 1) : "paused after position " + last;
      root.setAttribute("data-last", String(last));
    }
    function start() {
      source = new EventSource(url());
      source.addEventListener("events", function (message) {
        var template = document.createElement("template");
        template.innerHTML = message.data;
        rows.insertBefore(template.content, rows.firstChild);
        var position = parseInt(message.lastEventId, 10);
        if (position > last) last = position;
        trim(rows, parseInt(root.getAttribute("data-keep"), 10));
        root.setAttribute("data-last", String(last));
        state.textContent = "live, last position " + last;
      });
      source.addEventListener("error", function () {
        if (source && source.readyState === EventSource.CLOSED) {
          state.textContent = "disconnected after position " + last + "; press Resume";
          source = null;
          toggle.textContent = "Resume";
        }
      });
      show(true);
    }
    function stop() {
      if (source) source.close();
      source = null;
      show(false);
    }
    toggle.addEventListener("click", function (event) {
      event.preventDefault();
      if (source) stop(); else start();
    });
    toggle.setAttribute("role", "button");
    start();
  }

  function init() {
    var roots = document.querySelectorAll("[data-tail]");
    for (var i = 0; i < roots.length; i++) tail(roots[i]);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
