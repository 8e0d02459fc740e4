// smallfleet dashboard: a few enhancements; every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The canary fraction only matters for the canary mode.
  for (const form of document.querySelectorAll("form.mode-form")) {
    const select = form.querySelector("select[name=mode]");
    const fraction = form.querySelector(".fraction");
    if (!select || !fraction) continue;
    const sync = () => { fraction.hidden = select.value !== "canary"; };
    select.addEventListener("change", sync);
    sync();
  }
  // Ask before acting where a form says so (roll back).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  }
  // The search's selects apply at once.
  const search = document.getElementById("search");
  if (search) {
    for (const sel of search.querySelectorAll("select")) {
      sel.addEventListener("change", () => search.requestSubmit());
    }
    // Leave empty filters out of the URL.
    search.addEventListener("submit", () => {
      for (const el of search.elements) {
        if (el.name && !el.value) el.disabled = true;
      }
    });
    window.addEventListener("pageshow", () => {
      for (const el of search.elements) el.disabled = false;
    });
  }
});
