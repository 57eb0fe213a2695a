/* Backup Portal: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $$(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      });
  }

  /* Forms that ask before submitting (cancel a request). */
  $$("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  /* Restore form: ask the server's approval rules again when the target or overwrite changes. */
  var restoreForm = $("form[data-restore-form]");
  if (restoreForm) {
    var box = $("#decision", restoreForm);
    var agent = restoreForm.elements["target_agent"];
    var overwrite = restoreForm.elements["overwrite"];
    var pending = 0;
    var refresh = function () {
      var url = box.getAttribute("data-decision-url");
      if (!url || !agent || !agent.value) { return; }
      var ticket = ++pending;
      var query = "?target_agent=" + encodeURIComponent(agent.value) + "&overwrite=" + (overwrite && overwrite.checked ? "1" : "0");
      box.classList.add("decision-loading");
      getJSON(url + query).then(function (data) {
        if (ticket !== pending) { return; }  // an older answer arriving late
        box.classList.remove("decision-loading", "decision-auto", "decision-approval");
        box.classList.add(data.needs_approval ? "decision-approval" : "decision-auto");
        $("[data-decision-title]", box).textContent =
          data.needs_approval ? "Needs the backup team's approval" : "Approved automatically";
        $("[data-decision-reason]", box).textContent = data.reason;
      }).catch(function () {
        box.classList.remove("decision-loading");
      });
    };
    if (agent) { agent.addEventListener("change", refresh); }
    if (overwrite) { overwrite.addEventListener("change", refresh); }
    // Back/forward restores the inputs the person had changed, but not the hint.
    window.addEventListener("pageshow", function (event) { if (event.persisted) { refresh(); } });
  }

  /* Protect form: show only the chosen plugin's fields (all are shown without JavaScript). */
  var protectForm = $("form[data-protect-form]");
  if (protectForm) {
    var radios = $$("input[name='plugin']", protectForm);
    var showPlugin = function () {
      var chosen = radios.filter(function (r) { return r.checked; })[0];
      $$(".plugin-fields", protectForm).forEach(function (group) {
        var plugins = group.getAttribute("data-plugins").split(" ");
        group.hidden = !chosen || plugins.indexOf(chosen.value) === -1;
      });
    };
    radios.forEach(function (r) { r.addEventListener("change", showPlugin); });
    protectForm.classList.add("js-plugins");
    showPlugin();
  }

  /* Restore request: follow the job's progress without reloading the page. */
  var card = $("[data-progress-url]");
  if (card) {
    var url = card.getAttribute("data-progress-url");
    var bar = $("[data-progress-bar]", card);
    var timer = null;
    var render = function (data) {
      var percent = data.percent === null ? 0 : data.percent;
      bar.style.width = percent + "%";
      bar.className = "progress-bar progress-" + data.tone;
      bar.parentNode.setAttribute("aria-valuenow", String(percent));
      $("[data-progress-bytes]", card).textContent = data.bytes_done_human + " of " + data.bytes_total_human;
      $("[data-job-state]", card).textContent = data.job_state_label.toLowerCase();
      var error = $("[data-progress-error]", card);
      error.textContent = data.error || "";
      error.hidden = !data.error;
      var badge = $("[data-status-badge] .badge");
      if (badge) {
        badge.className = "badge badge-" + data.tone;
        badge.textContent = data.status_label;
      }
      if (data.terminal) {
        window.clearInterval(timer);
        var live = $("[data-progress-live]", card);
        live.textContent = "· finished — ";
        var link = document.createElement("a");
        link.href = window.location.pathname;
        link.textContent = "reload for the full timeline";
        live.appendChild(link);
      }
    };
    var poll = function () {
      getJSON(url).then(render).catch(function () { /* a missed poll: try again next tick */ });
    };
    timer = window.setInterval(poll, 2000);
  }
  /* File browser: the selection survives moving between folders and pages (this tab only).
     Without JavaScript, the ticks of one page go to the restore form. */
  var selectionForm = $("form[data-file-selection]");
  if (selectionForm) {
    var storeKey = "bp-selection-" + selectionForm.getAttribute("data-file-selection");
    var load = function () {
      try { return JSON.parse(window.sessionStorage.getItem(storeKey) || "[]"); } catch (e) { return []; }
    };
    var save = function (paths) {
      try { window.sessionStorage.setItem(storeKey, JSON.stringify(paths)); } catch (e) { /* private mode */ }
    };
    var boxes = $$("input[type=checkbox][name=path]", selectionForm);
    var pageBox = $("[data-select-page]", selectionForm);
    var count = $("[data-selection-count]", selectionForm);
    var submit = $("[data-restore-selected]", selectionForm);
    var clear = $("[data-selection-clear]", selectionForm);
    var hint = count ? count.textContent : "";
    var chosen = load();
    var sync = function () {
      boxes.forEach(function (box) {
        var at = chosen.indexOf(box.value);
        if (box.checked && at === -1) { chosen.push(box.value); }
        if (!box.checked && at !== -1) { chosen.splice(at, 1); }
        box.closest("tr").classList.toggle("is-selected", box.checked);
      });
      save(chosen);
      var onPage = boxes.filter(function (box) { return box.checked; }).length;
      if (count) {
        count.textContent = chosen.length === 0 ? hint
          : chosen.length + " selected" + (chosen.length > onPage ? " (" + (chosen.length - onPage) + " in other folders or pages)" : "");
      }
      if (submit) { submit.disabled = chosen.length === 0; }
      if (clear) { clear.hidden = chosen.length === 0; }
      if (pageBox) {
        pageBox.hidden = boxes.length === 0;
        pageBox.checked = boxes.length > 0 && onPage === boxes.length;
        pageBox.indeterminate = onPage > 0 && onPage < boxes.length;
      }
    };
    boxes.forEach(function (box) {
      box.checked = chosen.indexOf(box.value) !== -1;
      box.addEventListener("change", sync);
    });
    if (pageBox) {
      pageBox.addEventListener("change", function () {
        boxes.forEach(function (box) { box.checked = pageBox.checked; });
        sync();
      });
    }
    if (clear) {
      clear.addEventListener("click", function () {
        chosen = [];
        boxes.forEach(function (box) { box.checked = false; });
        sync();
      });
    }
    selectionForm.addEventListener("submit", function () {
      var here = boxes.map(function (box) { return box.value; });
      chosen.forEach(function (path) {
        if (here.indexOf(path) !== -1) { return; }
        var input = document.createElement("input");
        input.type = "hidden";
        input.name = "path";
        input.value = path;
        selectionForm.appendChild(input);
      });
    });
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) { chosen = load(); boxes.forEach(function (box) { box.checked = chosen.indexOf(box.value) !== -1; }); sync(); }
    });
    sync();
  }
  if (restoreForm && restoreForm.getAttribute("data-backup")) {
    /* Asked for: the browser's selection for this point has served its purpose. */
    restoreForm.addEventListener("submit", function () {
      try { window.sessionStorage.removeItem("bp-selection-" + restoreForm.getAttribute("data-backup")); } catch (e) { /* ignore */ }
    });
  }
})();
