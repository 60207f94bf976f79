// Loopwise review console: keyboard shortcuts and the task page's actions (no build step).
(function () {
  "use strict";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const task = $("#task");
  const say = (text, bad) => {
    const m = $("#message");
    if (m) { m.textContent = text; m.className = bad ? "error" : "ok"; }
  };

  async function api(method, path, body) {
    const res = await fetch("/api/v1" + path, {
      method, credentials: "same-origin",
      headers: body ? {"Content-Type": "application/json"} : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
    return data;
  }

  // -- selection (queue rows or task segments) ---------------------------------------------
  let cursor = -1;
  const items = () => task ? $$(".segment") : $$("tr.row");
  function select(i) {
    const list = items();
    if (!list.length) return;
    cursor = Math.max(0, Math.min(list.length - 1, i));
    list.forEach((el, n) => el.classList.toggle("selected", n === cursor));
    list[cursor].scrollIntoView({block: "nearest"});
  }
  const current = () => items()[cursor];

  // -- task actions ------------------------------------------------------------------------
  function edit(seg) {
    const area = $(".edit", seg);
    area.hidden = false; $(".text", seg).hidden = true; area.focus();
  }
  function decision(verdict) {
    const body = {verdict, transcript_corrections: [], sentiment_labels: [], finding_verdicts: []};
    $$(".segment").forEach((seg) => {
      const area = $(".edit", seg);
      if (!area.hidden && area.value !== $(".text", seg).dataset.original) {
        body.transcript_corrections.push({segment_id: seg.dataset.segment, text: area.value});
      }
      const label = $(".relabel", seg).value;
      if (label) body.sentiment_labels.push({segment_id: seg.dataset.segment, label});
    });
    $$(".finding").forEach((f) => {
      const checked = $("input[type=radio]:checked", f);
      if (checked) {
        const note = $(".note", f).value;
        body.finding_verdicts.push({finding_id: f.dataset.finding, verdict: checked.value, note: note || null});
      }
    });
    const comment = $("#comment") && $("#comment").value;
    if (comment) body.comment = comment;
    return body;
  }
  async function act(name, fn) {
    try { const r = await fn(); say(name + ": " + (r.state || "done") + (r.decision_id ? " (" + r.decision_id + ")" : "")); return r; }
    catch (e) { say(name + " refused: " + e.message, true); return null; }
  }
  const id = task && task.dataset.task;
  const claim = () => act("claimed", () => api("POST", `/tasks/${encodeURIComponent(id)}/claim`)).then((r) => r && location.reload());
  const release = () => act("released", () => api("POST", `/tasks/${encodeURIComponent(id)}/release`)).then((r) => r && location.reload());
  const decide = (verdict) => act(verdict === "approve" ? "approved" : "rejected",
    () => api("POST", `/tasks/${encodeURIComponent(id)}/decision`, decision(verdict)))
    .then((r) => { if (r) { task.dataset.state = r.state; const s = $("[data-testid=state]"); if (s) s.textContent = r.state; } });
  function judgeNext(verdict) {
    const f = $$(".finding").find((x) => !$("input[type=radio]:checked", x));
    if (f) $(`input[value=${verdict}]`, f).checked = true;
  }
  async function giveLabels() {
    const labels = $$(".segment").map((seg) => ({segment_id: seg.dataset.segment, label: $(".relabel", seg).value})).filter((x) => x.label);
    const r = await act("labels recorded", () => api("POST", `/tasks/${encodeURIComponent(id)}/labels`, {labels}));
    if (r) location.reload();
  }

  if (task) {
    const on = (sel, fn) => { const el = $(sel); if (el) el.addEventListener("click", fn); };
    on("#claim", claim); on("#release", release);
    on("#approve", () => decide("approve")); on("#reject", () => decide("reject"));
    on("#give-labels", giveLabels);
    on("#rework", () => {
      const note = prompt("Why is it sent back?");
      if (note) act("sent back", () => api("POST", `/tasks/${encodeURIComponent(id)}/rework`, {note})).then((r) => r && location.reload());
    });
    $$(".segment .text").forEach((t) => t.addEventListener("dblclick", () => edit(t.closest(".segment"))));
  }
  $$("form.assign").forEach((form) => form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const reviewer_id = form.reviewer_id.value;
    api("POST", `/tasks/${encodeURIComponent(form.dataset.task)}/assign`, {reviewer_id}).then(() => location.reload(), (e) => alert(e.message));
  }));

  // -- live alerts (supervisor) --------------------------------------------------------------
  if (window.LOOPWISE_SUPERVISOR && window.EventSource) {
    const list = $("#alerts");
    const source = new EventSource("/api/v1/supervisor/alerts");
    source.addEventListener("alert", (ev) => {
      const a = JSON.parse(ev.data);
      const li = document.createElement("li");
      li.innerHTML = `<span class="prio ${a.priority}"></span> <a></a> <span class="muted"></span>`;
      li.querySelector(".prio").textContent = a.priority;
      li.querySelector("a").textContent = `${a.tenant_id} · ${a.call_id} · ${a.rule_ids.join(", ")}`;
      li.querySelector("a").href = `/ui/tasks/${encodeURIComponent(a.task_id)}`;
      li.querySelector(".muted").textContent = (a.reasons || []).join("; ");
      const waiting = $(".muted", list); if (waiting && waiting.parentElement === list) waiting.remove();
      list.prepend(li);
    });
  }

  // -- keyboard ------------------------------------------------------------------------------
  let pendingG = false;
  document.addEventListener("keydown", (ev) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(ev.target.tagName);
    const help = $("#help");
    if (ev.key === "Escape") { if (help) help.hidden = true; if (typing) ev.target.blur(); return; }
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    if (pendingG) { pendingG = false; if (k === "q") location.href = "/ui/queue"; return; }
    if (k === "g") { pendingG = true; return; }
    if (k === "?") { if (help) help.hidden = !help.hidden; return; }
    if (k === "j") { select(cursor + 1); return; }
    if (k === "k") { select(cursor - 1); return; }
    if (!task) { if (k === "Enter" && current()) location.href = current().dataset.href; return; }
    if (k === "c") claim();
    else if (k === "u") release();
    else if (k === "a") decide("approve");
    else if (k === "r") decide("reject");
    else if (k === "y") judgeNext("confirmed");
    else if (k === "n") judgeNext("dismissed");
    else if (k === "e" && current()) { ev.preventDefault(); edit(current()); }
    else if (["1", "2", "3"].includes(k) && current()) {
      $(".relabel", current()).value = {"1": "negative", "2": "neutral", "3": "positive"}[k];
    } else return;
    ev.preventDefault();
  });
})();
