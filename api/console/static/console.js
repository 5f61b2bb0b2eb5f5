// Live panels: the server's event stream names each panel whose content changed (and sends
// `tick` now and then); the page asks htmx to fetch those panels again. No reloads.
(function () {
  "use strict";
  const flash = document.getElementById("flash");
  const live = document.getElementById("live");

  function show(text) {
    flash.textContent = text;
    flash.hidden = !text;
  }

  function busy(panel) {
    // Someone typing a reason in this panel: its refresh waits for the next change or tick.
    const active = document.activeElement;
    return panel.contains(active) && active.tagName === "INPUT" && active.value !== "";
  }

  function refresh(panel) {
    if (!busy(panel)) htmx.trigger(panel, "console:refresh");
  }

  document.body.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    let text = xhr.status + " " + xhr.statusText;
    try {
      const body = JSON.parse(xhr.responseText);
      text = body.detail || body.title || text;
    } catch (_) {}
    show(text);
  });
  document.body.addEventListener("htmx:afterRequest", (event) => {
    if (event.detail.successful && event.detail.requestConfig.verb === "post") show("");
  });

  const panels = Array.from(document.querySelectorAll("[data-panel]"));
  if (!panels.length || !window.EventSource) return;
  const source = new EventSource("/console/events");
  source.addEventListener("open", () => {
    live.dataset.state = "live";
    live.textContent = "live";
  });
  source.addEventListener("error", () => {
    live.dataset.state = "reconnecting";
    live.textContent = "reconnecting";
  });
  for (const panel of panels) {
    source.addEventListener(panel.dataset.panel, () => refresh(panel));
  }
  source.addEventListener("tick", () => panels.forEach(refresh));
})();
