// Fleet dashboard: renders the control API's overview and follows its event stream.
// No inline script, no HTML built from data (text nodes only), the operator token lives
// in memory and in this tab's sessionStorage, and is only ever sent in a header.
(function () {
  "use strict";

  const API = "api/v1";
  const TOKEN_KEY = "backend_services.token";
  const MAX_LATENCY_POINTS = 120;
  const GOOD = new Set(["healthy", "closed", "normal"]);
  const WARN = new Set(["starting", "half_open", "partial", "minimal", "stopping", "degraded"]);
  const BAD = new Set(["unhealthy", "open", "forced_open", "emergency", "offline", "down", "disabled"]);

  let token = "";
  let latencyChart = null;
  let timelineChart = null;
  let lastSnapshot = null;
  let seenTransitions = new Set();
  let retryDelay = 500;

  // ---- small helpers -------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function tone(state) {
    const s = String(state || "").toLowerCase();
    if (GOOD.has(s)) return "ok";
    if (WARN.has(s)) return "warn";
    if (BAD.has(s)) return "bad";
    return "unknown";
  }

  function badge(state) {
    const node = el("span", state || "unknown", "badge badge-" + tone(state));
    node.dataset.state = String(state || "unknown");
    return node;
  }

  function color(state) {
    return { ok: "#1a7f37", warn: "#b35900", bad: "#c62828", unknown: "#5f6b7a" }[tone(state)];
  }

  function pct(x) { return (typeof x === "number") ? (x * 100).toFixed(1) + "%" : "–"; }

  function clock(ts) {
    if (typeof ts !== "number" || !isFinite(ts) || ts <= 0) return "–";
    return new Date(ts * 1000).toLocaleTimeString();
  }

  function show(message, isError) {
    const box = $("notice");
    box.textContent = message;
    box.classList.toggle("error", Boolean(isError));
    box.hidden = !message;
  }

  function headers(withBody) {
    const h = { "Accept": "application/json" };
    if (withBody) h["Content-Type"] = "application/json";
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  async function api(method, path, body) {
    const response = await fetch(API + path, {
      method: method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    const text = await response.text();
    let doc = null;
    try { doc = text ? JSON.parse(text) : null; } catch (e) { doc = null; }
    if (!response.ok) {
      const detail = doc && (doc.detail || doc.title) ? (doc.detail || doc.title) : response.statusText;
      throw new Error(response.status + ": " + detail);
    }
    return doc;
  }

  async function act(method, path, body, done) {
    if (!token) { show("Enter the operator token first (it stays in this tab only).", true); return; }
    try {
      await api(method, path, body);
      show(done, false);
    } catch (err) {
      show(String(err.message || err), true);
    }
  }

  // ---- token ------------------------------------------------------------------------

  function setToken(value) {
    token = value || "";
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: memory only */ }
    $("token-state").textContent = token ? "token set for this tab" : "no token";
    $("token").value = "";
  }

  function initToken() {
    try { token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { token = ""; }
    $("token-state").textContent = token ? "token set for this tab" : "no token";
    $("token-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      setToken($("token").value.trim());
      restartStream();
    });
    $("token-clear").addEventListener("click", function () { setToken(""); restartStream(); });
  }

  // ---- rendering --------------------------------------------------------------------

  function fill(tbodyParent, rows, emptyId) {
    const tbody = $(tbodyParent).querySelector("tbody");
    tbody.replaceChildren.apply(tbody, rows);
    if (emptyId) $(emptyId).hidden = rows.length > 0;
  }

  function renderServices(services) {
    const rows = services.map(function (s) {
      const tr = el("tr");
      tr.dataset.serviceId = s.service_id;
      tr.append(el("td", s.service_id), el("td", s.service_type), el("td", s.address || s.url));
      const health = el("td"); health.append(badge(s.status)); tr.append(health);
      tr.append(el("td", typeof s.response_time_ms === "number" ? s.response_time_ms.toFixed(1) + " ms" : "–", "num"));
      tr.append(el("td", s.consecutive_failures, "num"), el("td", clock(s.last_check)));
      return tr;
    });
    fill("services", rows, "services-empty");
  }

  function button(label, handler, cls) {
    const b = el("button", label, cls);
    b.type = "button";
    b.addEventListener("click", handler);
    return b;
  }

  function seconds(x) { return (typeof x === "number" && isFinite(x)) ? x.toFixed(1) + " s" : "–"; }

  function renderCircuits(circuits) {
    const rows = circuits.map(function (c) {
      const tr = el("tr");
      tr.dataset.circuit = c.name;
      tr.append(el("td", c.name));
      const st = el("td"); st.append(badge(c.state)); tr.append(st);
      tr.append(el("td", c.trigger || ""), el("td", c.openings === undefined || c.openings === null ? "–" : c.openings, "num"),
        el("td", seconds(c.open_remaining), "num"), el("td", clock(c.changed_at)));
      const actions = el("td");
      const path = "/circuits/" + encodeURIComponent(c.name);
      actions.append(
        button("Open", function () { act("POST", path + "/open", {}, "Circuit " + c.name + " forced open."); }),
        button("Close", function () { act("POST", path + "/close", {}, "Circuit " + c.name + " closed."); }),
        button("Reset", function () { act("POST", path + "/reset", {}, "Circuit " + c.name + " reset."); })
      );
      tr.append(actions);
      return tr;
    });
    fill("circuits", rows, "circuits-empty");
  }

  function instancesOf(d) {
    const inst = d.instances || {};
    return Object.keys(inst).sort().map(function (k) { return inst[k] || {}; });
  }

  function renderDegradation(items) {
    const rows = items.map(function (d) {
      const tr = el("tr");
      tr.dataset.service = d.service;
      tr.append(el("td", d.service));
      const lv = el("td"); lv.append(badge(d.level)); tr.append(lv);
      const instances = instancesOf(d);
      tr.append(el("td", instances.length, "num"));
      const reasons = instances.map(function (i) { return i.reason; }).filter(Boolean);
      tr.append(el("td", reasons.length ? reasons[0] : ""));
      const usage = {};
      instances.forEach(function (i) {
        const res = i.resources || {};
        Object.keys(res).forEach(function (k) { usage[k] = Math.max(usage[k] || 0, res[k]); });
      });
      tr.append(el("td", Object.keys(usage).sort().map(function (k) { return k + " " + pct(usage[k]); }).join(", ")));
      let on = 0, off = 0;
      instances.forEach(function (i) { on += i.enabled_features || 0; off += i.disabled_features || 0; });
      tr.append(el("td", on + " / " + off, "num"));
      return tr;
    });
    fill("degradation", rows, "degradation-empty");
  }

  function initDegradationActions() {
    $("fleet-force").addEventListener("click", function () {
      const level = $("fleet-level").value;
      act("POST", "/degradation/fleet/force", { level: level, reason: "forced from the dashboard" },
        "Fleet forced to " + level + ".");
    });
    $("fleet-clear").addEventListener("click", function () {
      act("POST", "/degradation/fleet/clear", {}, "Fleet back to automatic levels.");
    });
  }

  function versionLabel(v) { return "#" + v.version + (v.description ? " " + v.description : ""); }

  function renderConfig(config) {
    if (!config) return;
    $("config-service").textContent = config.service ? "(" + config.service + ")" : "";
    $("config-version").textContent = config.version === undefined || config.version === null ? "–" : "#" + config.version;
    $("config-version-id").textContent = config.version_id || "";
    const versions = config.versions || [];
    const rows = versions.slice().reverse().map(function (v) {
      const tr = el("tr");
      tr.dataset.version = v.id;
      tr.append(el("td", "#" + v.version), el("td", clock(v.created_at)), el("td", v.kind || ""),
        el("td", v.description || ""), el("td", (v.changed_keys || []).join(", ")));
      return tr;
    });
    fill("config-versions", rows);
    [["diff-from", versions.length - 2], ["diff-to", versions.length - 1]].forEach(function (pair) {
      const select = $(pair[0]);
      const previous = select.value;
      const options = versions.map(function (v) { const o = el("option", versionLabel(v)); o.value = v.id; return o; });
      select.replaceChildren.apply(select, options);
      const ids = versions.map(function (v) { return v.id; });
      if (previous && ids.indexOf(previous) >= 0) select.value = previous;
      else if (pair[1] >= 0) select.value = versions[pair[1]].id;
      else if (versions.length) select.value = versions[0].id;
    });
    updateRollbackLabel();
  }

  function updateRollbackLabel() {
    const select = $("diff-from");
    const btn = $("rollback-button");
    btn.disabled = !select.value;
    const option = select.selectedOptions && select.selectedOptions[0];
    btn.textContent = btn.disabled ? "Roll back" : "Roll back to " + (option ? option.textContent.split(" ")[0] : select.value);
  }

  function renderDiff(diff) {
    const rows = [];
    function row(key, change, oldValue, newValue) {
      const tr = el("tr", null, "diff-" + change);
      tr.dataset.key = key;
      tr.append(el("td", key), el("td", change),
        el("td", oldValue === undefined ? "" : JSON.stringify(oldValue)),
        el("td", newValue === undefined ? "" : JSON.stringify(newValue)));
      rows.push(tr);
    }
    Object.keys(diff.added || {}).sort().forEach(function (k) { row(k, "added", undefined, diff.added[k]); });
    Object.keys(diff.removed || {}).sort().forEach(function (k) { row(k, "removed", diff.removed[k], undefined); });
    Object.keys(diff.changed || {}).sort().forEach(function (k) { row(k, "changed", diff.changed[k].old, diff.changed[k].new); });
    if (rows.length === 0) {
      const tr = el("tr"); const td = el("td", "No differences."); td.colSpan = 4; tr.append(td); rows.push(tr);
    }
    fill("config-diff", rows);
  }

  function initConfigActions() {
    $("diff-from").addEventListener("change", updateRollbackLabel);
    $("diff-button").addEventListener("click", async function () {
      const q = "?from=" + encodeURIComponent($("diff-from").value) + "&to=" + encodeURIComponent($("diff-to").value);
      try { renderDiff(await api("GET", "/config/diff" + q)); show("", false); } catch (err) { show(String(err.message || err), true); }
    });
    $("rollback-button").addEventListener("click", function () {
      const select = $("diff-from");
      const target = select.value;
      if (!target) return;
      const option = select.selectedOptions && select.selectedOptions[0];
      const label = option ? option.textContent.split(" ")[0] : target;
      act("POST", "/config/rollback", { version: target }, "Configuration rolled back to " + label + ".");
    });
  }

  // ---- charts -----------------------------------------------------------------------

  function timeTicks(value) { return clock(value); }

  function initCharts() {
    if (typeof window.Chart !== "function") { show("Chart library failed to load.", true); return; }
    window.Chart.defaults.animation = false;
    latencyChart = new window.Chart($("latency-chart"), {
      type: "line",
      data: { datasets: [] },
      options: {
        maintainAspectRatio: false,
        parsing: false,
        scales: {
          x: { type: "linear", ticks: { callback: timeTicks, maxTicksLimit: 6 } },
          y: { beginAtZero: true, title: { display: true, text: "health-check ms" } },
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 10 } } },
      },
    });
    timelineChart = new window.Chart($("timeline-chart"), {
      type: "scatter",
      data: { datasets: [{ label: "transitions", data: [], pointRadius: 6,
        pointBackgroundColor: function (ctx) { return ctx.raw ? color(ctx.raw.state) : "#5f6b7a"; } }] },
      options: {
        maintainAspectRatio: false,
        parsing: false,
        scales: {
          x: { type: "linear", ticks: { callback: timeTicks, maxTicksLimit: 6 } },
          y: { type: "category", labels: [], offset: true },
        },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: function (ctx) { return ctx.raw.text; } } },
        },
      },
    });
  }

  function feedLatency(snapshot) {
    if (!latencyChart) return;
    const t = snapshot.time;
    const byId = new Map(latencyChart.data.datasets.map(function (d) { return [d.label, d]; }));
    (snapshot.services || []).forEach(function (s, i) {
      if (typeof s.response_time_ms !== "number") return;
      let ds = byId.get(s.service_id);
      if (!ds) {
        const hue = (i * 67) % 360;
        ds = { label: s.service_id, data: [], borderColor: "hsl(" + hue + ",60%,40%)", pointRadius: 0, borderWidth: 2 };
        latencyChart.data.datasets.push(ds);
        byId.set(s.service_id, ds);
      }
      const last = ds.data[ds.data.length - 1];
      if (!last || last.x !== t) ds.data.push({ x: t, y: s.response_time_ms });
      if (ds.data.length > MAX_LATENCY_POINTS) ds.data.splice(0, ds.data.length - MAX_LATENCY_POINTS);
    });
    latencyChart.update("none");
  }

  function describe(tr) {
    let text = tr.kind + " " + tr.name + ": " + (tr.old || "–") + " → " + tr.new;
    if (tr.reason) text += " (" + tr.reason + ")";
    return text;
  }

  function addTransitions(list) {
    let added = false;
    const ol = $("transitions");
    list.forEach(function (tr) {
      if (seenTransitions.has(tr.seq)) return;
      seenTransitions.add(tr.seq);
      added = true;
      const li = el("li", clock(tr.time) + "  " + describe(tr));
      li.dataset.kind = tr.kind; li.dataset.name = tr.name; li.dataset.state = tr.new;
      ol.prepend(li);
      while (ol.children.length > 200) ol.lastChild.remove();
      if (timelineChart) {
        const row = tr.kind + ":" + tr.name;
        const labels = timelineChart.options.scales.y.labels;
        if (labels.indexOf(row) < 0) labels.push(row);
        const data = timelineChart.data.datasets[0].data;
        data.push({ x: tr.time, y: row, state: tr.new, text: describe(tr) });
        if (data.length > 500) data.splice(0, data.length - 500);
      }
    });
    if (added && timelineChart) timelineChart.update("none");
  }

  function render(snapshot) {
    lastSnapshot = snapshot;
    renderServices(snapshot.services || []);
    renderCircuits(snapshot.circuits || []);
    renderDegradation(snapshot.degradation || []);
    renderConfig(snapshot.config);
    feedLatency(snapshot);
    addTransitions(snapshot.transitions || []);
    document.body.dataset.updated = String(snapshot.time);
  }

  // ---- event stream (fetch-based, so the token can travel in a header) -------------

  let controller = null;

  function setConnection(state, text) {
    const node = $("connection");
    node.dataset.state = state;
    node.textContent = text;
    node.className = "badge badge-" + (state === "live" ? "ok" : state === "error" ? "bad" : "unknown");
  }

  function dispatch(event, data) {
    let doc;
    try { doc = JSON.parse(data); } catch (e) { return; }
    if (event === "snapshot") render(doc);
    else if (event === "transition") addTransitions([doc]);
  }

  async function stream() {
    controller = new AbortController();
    const mine = controller;
    try {
      const response = await fetch(API + "/events", {
        headers: Object.assign(headers(false), { "Accept": "text/event-stream" }),
        signal: mine.signal, cache: "no-store", credentials: "omit",
      });
      if (!response.ok || !response.body) {
        setConnection("error", "stream refused (" + response.status + ")");
        if (response.status === 401 || response.status === 403) { show("Reading needs the operator token.", true); return; }
        throw new Error("status " + response.status);
      }
      setConnection("live", "live");
      retryDelay = 500;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message";
          const data = [];
          block.split("\n").forEach(function (line) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          });
          if (data.length) dispatch(event, data.join("\n"));
        }
      }
      throw new Error("stream ended");
    } catch (err) {
      if (mine.signal.aborted) return;
      setConnection("reconnecting", "reconnecting…");
      setTimeout(function () { if (controller === mine) stream(); }, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    }
  }

  function restartStream() {
    if (controller) controller.abort();
    seenTransitions = new Set();
    $("transitions").replaceChildren();
    if (timelineChart) {
      timelineChart.data.datasets[0].data = [];
      timelineChart.options.scales.y.labels = [];
      timelineChart.update("none");
    }
    stream();
  }

  document.addEventListener("DOMContentLoaded", function () {
    initToken();
    initCharts();
    initConfigActions();
    initDegradationActions();
    stream();
  });

  window.backendServicesDashboard = { snapshot: function () { return lastSnapshot; } };
})();
