// smpp-bridge operator console. Plain JS, no dependencies.
// The token comes from the URL fragment (#token=..., never sent to the server) or the
// sign-in form, and is kept in sessionStorage only (it goes with the tab). Nothing is
// fetched or shown until the server accepts it. Data is written with textContent only.
"use strict";

(() => {
  const KEY = "smpp-bridge-operator-token";
  const POLL_MS = 2000;
  const HISTORY = 300;                    // points kept for the charts (10 minutes at 2 s)
  const $ = (sel) => document.querySelector(sel);
  let token = null;
  let timers = [];
  let snaps = [];                       // {t, counters, latency} snapshots
  let lastBinds = new Map();              // bind_id -> {t, submitted}

  class AuthError extends Error {}

  // -- numbers: masked like the logs (country code and last 4 digits) ------------------

  const NUMBER_RE = /(?<![\w:])(\+?)(\d{7,21})(?!\w)/g;
  function mask(text) {
    return String(text).replace(NUMBER_RE, (all, plus, digits) => {
      let cc = 0;
      if (plus) cc = "17".includes(digits[0]) ? 1 : 2;
      else if (digits.startsWith("86") && digits.length === 13) cc = 2;
      const hidden = digits.length - cc - 4;
      return hidden <= 0 ? all : plus + digits.slice(0, cc) + "*".repeat(hidden) + digits.slice(-4);
    });
  }

  function numberCell(full) {
    const b = el("button", { className: "num", type: "button", title: "click to unmask" }, mask(full));
    b.addEventListener("click", () => { b.textContent = full; b.classList.add("unmasked"); b.title = ""; });
    return b;
  }

  // -- DOM helpers ---------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
    return node;
  }
  const row = (...cells) => el("tr", {}, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
  function fill(tbody, rows, empty) {
    tbody.replaceChildren(...(rows.length ? rows : [row(el("td", { colSpan: 12, className: "muted" }, empty))]));
  }
  const status = (text) => { $("#status").textContent = text; };

  // -- API -----------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method, headers, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401) {
      signOut("The operator token was refused.");
      throw new AuthError("unauthorised");
    }
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.description || `${res.status} ${res.statusText}`);
    return data;
  }

  // -- sign in / out -------------------------------------------------------------------

  function tokenFromFragment() {
    const m = location.hash.match(/(?:^#|&)token=([^&]*)/);
    if (!m) return null;
    historyReplace();
    return decodeURIComponent(m[1]);
  }
  function historyReplace() { window.history.replaceState(null, "", location.pathname + location.search); }

  async function signIn(candidate) {
    token = candidate;
    try {
      const first = await api("GET", "/v1/console/stats");
      sessionStorage.setItem(KEY, token);
      $("#signin").hidden = true;
      $("#signout").hidden = false;
      $("#app").hidden = false;
      snaps = [];
      onStats(first);
      start();
    } catch (err) {
      if (!(err instanceof AuthError)) signOut("Cannot reach the bridge: " + err.message);
    }
  }

  function signOut(reason) {
    token = null;
    sessionStorage.removeItem(KEY);
    timers.forEach(clearInterval);
    timers = [];
    snaps = [];
    lastBinds = new Map();
    for (const tb of document.querySelectorAll("#app tbody")) tb.replaceChildren();
    for (const id of ["#backlog", "#message", "#lookup-list"]) $(id).replaceChildren();
    $("#app").hidden = true;
    $("#signout").hidden = true;
    $("#signin").hidden = false;
    $("#signin-error").textContent = reason || "";
    status("");
  }

  function start() {
    const every = (fn, ms) => { fn(); timers.push(setInterval(fn, ms)); };
    every(pollBinds, POLL_MS);
    timers.push(setInterval(pollStats, POLL_MS));
    every(loadBlacklist, 15000);
    every(loadDead, 15000);
  }

  const guard = (fn) => async (...args) => {
    try { await fn(...args); } catch (err) { if (!(err instanceof AuthError)) status("error: " + err.message); }
  };

  // -- binds ---------------------------------------------------------------------------

  const pollBinds = guard(async () => {
    const { binds } = await api("GET", "/v1/binds");
    const now = performance.now() / 1000;
    const rows = binds.map((b) => {
      const prev = lastBinds.get(b.bind_id);
      const tps = prev && now > prev.t ? (b.submitted - prev.submitted) / (now - prev.t) : 0;
      lastBinds.set(b.bind_id, { t: now, submitted: b.submitted });
      const st = b.state.toLowerCase();
      const cls = st.startsWith("bound") ? "state-bound" : (["waiting", "stopped", "idle"].includes(st) ? "state-down" : "state-other");
      return row(b.carrier, el("span", { className: "mono" }, b.bind_id), b.bind_type,
        el("span", { className: cls }, b.state + (b.paused_until ? " (paused)" : "")),
        `${b.in_flight}/${b.window}`, tps.toFixed(1), String(b.submitted), String(b.throttled),
        String(b.errors), String(b.reconnects), el("td", { className: "wrap" }, b.last_error || ""));
    });
    fill($("#binds tbody"), rows, "no binds");
    const bound = binds.filter((b) => b.state.toLowerCase().startsWith("bound")).length;
    status(`${bound}/${binds.length} binds bound · updated ${new Date().toLocaleTimeString()}`);
  });

  // -- stats, backlog and charts -------------------------------------------------------

  const pollStats = guard(async () => onStats(await api("GET", "/v1/console/stats")));

  function onStats(stats) {
    snaps.push({ t: performance.now() / 1000, counters: stats.counters, latency: stats.latency });
    if (snaps.length > HISTORY + 1) snaps.shift();
    const b = stats.backlog;
    const tiles = [["queued", "segments queued"], ["inFlight", "segments in flight"],
      ["awaitingReceipt", "awaiting receipt"], ["held", "messages held"],
      ["outboxPending", "pushes pending"], ["outboxDead", "pushes dead"]];
    $("#backlog").replaceChildren(...tiles.map(([k, label]) =>
      el("div", { className: "tile" + (k === "outboxDead" && b[k] > 0 ? " bad" : ""), id: "tile-" + k },
        el("b", {}, String(b[k])), el("span", {}, label))));
    drawCharts();
  }

  function percentile(prev, cur, q) {
    const count = cur.count - prev.count;
    if (!(count > 0)) return null;
    const want = q * count;
    let below = 0;
    for (let i = 0; i < cur.le.length; i++) {
      const n = cur.cumulative[i] - (prev.cumulative[i] || 0);   // a label seen for the first time
      if (n >= want) {
        const lo = i ? cur.le[i - 1] : 0;
        return lo + (cur.le[i] - lo) * ((want - below) / Math.max(n - below, 1e-9));
      }
      below = n;
    }
    return cur.le[cur.le.length - 1];
  }

  function drawCharts() {
    const pairs = snaps.slice(1).map((cur, i) => [snaps[i], cur]);
    const rate = (k) => pairs.map(([a, b]) => Math.max(0, (b.counters[k] - a.counters[k]) / Math.max(b.t - a.t, 1e-3)));
    const lat = (k, q) => pairs.map(([a, b]) => (a.latency[k] && b.latency[k] ? percentile(a.latency[k], b.latency[k], q) : null));
    drawChart($("#chart-rate"), [
      { label: "accepted", color: "#1f5fa8", values: rate("accepted") },
      { label: "submitted", color: "#1f8a4c", values: rate("submitted") },
      { label: "final", color: "#8e44ad", values: rate("finalised") },
      { label: "throttled", color: "#c0392b", values: rate("throttled") },
    ]);
    drawChart($("#chart-latency"), [
      { label: "submit→resp p50", color: "#1f8a4c", values: lat("submit_response", 0.5) },
      { label: "submit→resp p95", color: "#16a085", values: lat("submit_response", 0.95) },
      { label: "intake→submit p95", color: "#1f5fa8", values: lat("intake_to_submit", 0.95) },
      { label: "push ack p95", color: "#b7791f", values: lat("push_ack", 0.95) },
    ]);
  }

  function drawChart(canvas, series) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    canvas.width = w * ratio; canvas.height = h * ratio;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 46, right = 8, top = 22, bottom = 16;
    const all = series.flatMap((s) => s.values).filter((v) => v !== null && isFinite(v));
    const max = niceMax(Math.max(0, ...all));
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#dde2e7"; g.fillStyle = "#66707a"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + (h - top - bottom) * (1 - i / 4);
      g.beginPath(); g.moveTo(left, y); g.lineTo(w - right, y); g.stroke();
      g.fillText(fmt(max * i / 4), 2, y + 4);
    }
    g.fillText("-10 min", left, h - 3);
    g.fillText("now", w - right - 22, h - 3);
    const x = (i) => left + (w - left - right) * (i + HISTORY - series[0].values.length) / HISTORY;
    const y = (v) => top + (h - top - bottom) * (1 - v / max);
    let lx = left;
    for (const s of series) {
      g.strokeStyle = s.color; g.lineWidth = 1.5; g.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || !isFinite(v)) { pen = false; return; }
        if (pen) g.lineTo(x(i), y(v)); else g.moveTo(x(i), y(v));
        pen = true;
      });
      g.stroke();
      g.fillStyle = s.color; g.fillRect(lx, 6, 10, 10);
      g.fillStyle = "#1d232a"; g.fillText(s.label, lx + 13, 15);
      lx += 20 + g.measureText(s.label).width;
    }
  }
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
  }
  const fmt = (v) => (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v >= 0.01 ? v.toFixed(3) : v.toPrecision(2));

  // -- message lookup ------------------------------------------------------------------

  const MESSAGE_ID = /^[0-9a-f]{27}$/i;

  const lookup = guard(async (query) => {
    $("#lookup-error").textContent = "";
    $("#lookup-list").replaceChildren();
    $("#message").replaceChildren();
    try {
      if (MESSAGE_ID.test(query)) return await showMessage(query.toLowerCase());
      const found = await api("GET", "/v1/console/messages?number=" + encodeURIComponent(query));
      if (!found.messages.length) { $("#lookup-error").textContent = "No messages to that number."; return; }
      const tbody = el("tbody");
      fill(tbody, found.messages.map((m) => {
        const open = el("button", { className: "link", type: "button" }, m.smsMsgId);
        open.addEventListener("click", () => showMessage(m.smsMsgId));
        return row(open, m.from, numberCell(m.to), m.carrier || "", m.state, m.status || "", m.createTime);
      }), "");
      $("#lookup-list").replaceChildren(el("table", { id: "lookup-table" },
        el("thead", {}, row(...["smsMsgId", "From", "To", "Carrier", "State", "Status", "Created"].map((t) => el("th", {}, t)))), tbody));
    } catch (err) {
      if (err instanceof AuthError) throw err;
      $("#lookup-error").textContent = err.message;
    }
  });

  async function showMessage(id) {
    const [m, trail] = await Promise.all([api("GET", "/v1/sms/" + encodeURIComponent(id)),
      api("GET", "/v1/console/message/" + encodeURIComponent(id))]);
    const facts = [["smsMsgId", m.smsMsgId], ["From", m.from], ["To", numberCell(m.to)], ["Carrier", m.carrier || ""],
      ["State", m.state], ["Status", `${m.status || ""} ${m.orgCode ? "(" + m.orgCode + ")" : ""}`],
      ["Created", m.createTime], ["Final", m.finalTime || ""], ["Reported", m.reported ? "yes" : "no"]];
    const table = (head, rows) => {
      const tbody = el("tbody");
      fill(tbody, rows, "none");
      return el("table", {}, el("thead", {}, row(...head.map((t) => el("th", {}, t)))), tbody);
    };
    $("#message").replaceChildren(
      el("dl", { id: "message-facts" }, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("h3", {}, "Segments"),
      table(["Seq", "State", "Status", "orgCode", "Carrier id", "Submit status", "Submitted", "Receipt"],
        m.segments.map((s) => row(String(s.sequence), s.state, s.status || "", s.orgCode || "",
          el("span", { className: "mono" }, s.carrierMessageId || ""), s.submitStatus ?? "", s.submitTime || "",
          s.receiptTime || ""))),
      el("h3", {}, "Receipts"),
      table(["Seq", "Received", "Outcome", "stat", "err"], trail.receipts.map((r) => row(String(r.sequence),
        r.receiveTime, r.outcome, r.receipt.stat || "", r.receipt.err || ""))),
      el("h3", {}, "Report pushes"),
      table(["Id", "Kind", "State", "Attempts", "Queued", "Acknowledged", "Last error"], trail.pushes.map((p) =>
        row(String(p.id), p.kind, p.state, String(p.attempts), p.createTime, p.ackTime || "",
          el("td", { className: "wrap" }, p.lastError || "")))),
    );
  }

  // -- blacklist -----------------------------------------------------------------------

  const loadBlacklist = guard(async () => {
    const channel = $("#blacklist-channel").value.trim();
    const data = await api("GET", "/v1/blacklist" + (channel ? "?channel=" + encodeURIComponent(channel) : ""));
    fill($("#blacklist tbody"), data.entries.map((e) => {
      const remove = el("button", { type: "button", className: "remove" }, "Remove");
      remove.addEventListener("click", guard(async () => {
        remove.disabled = true;
        await api("DELETE", `/v1/blacklist/${encodeURIComponent(e.channel)}/${encodeURIComponent(e.number)}`);
        await loadBlacklist();
      }));
      return row(e.channel, numberCell(e.number), e.createTime, el("span", { className: "mono" }, e.moId || ""), remove);
    }), "the blacklist is empty");
  });

  // -- dead-lettered pushes ------------------------------------------------------------

  const loadDead = guard(async () => {
    const data = await api("GET", "/v1/outbox/dead");
    fill($("#dead tbody"), data.dead.map((d) => {
      const replay = el("button", { type: "button", className: "replay" }, "Replay");
      replay.addEventListener("click", guard(async () => {
        replay.disabled = true;
        await api("POST", `/v1/outbox/${d.id}/replay`);
        await loadDead();
      }));
      return row(String(d.id), d.kind, el("span", { className: "mono" }, d.smsMsgId), d.host, String(d.attempts),
        d.createTime, el("td", { className: "wrap" }, d.lastError || ""), replay);
    }), "no dead-lettered pushes");
  });

  // -- wiring --------------------------------------------------------------------------

  $("#signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("#token-input").value.trim();
    $("#token-input").value = "";
    if (value) signIn(value);
  });
  $("#signout").addEventListener("click", () => signOut(""));
  $("#lookup").addEventListener("submit", (ev) => { ev.preventDefault(); lookup($("#lookup-input").value.trim()); });
  $("#blacklist-filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadBlacklist(); });

  const initial = tokenFromFragment() || sessionStorage.getItem(KEY);
  if (initial) signIn(initial);
})();
