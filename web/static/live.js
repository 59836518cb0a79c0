// Live Today and Kiosks pages: one server-sent-events stream; the server sends the whole
// snapshot after every change, and this script redraws the parts of the page it shows.
"use strict";
(function () {
  const page = document.body.dataset.page;
  const state = document.getElementById("live-state");
  const text = (id, value) => { const el = document.getElementById(id); if (el) el.textContent = value; };
  const link = (name) => {
    const a = document.createElement("a");
    a.href = "/person/" + encodeURIComponent(name);
    a.textContent = name;
    return a;
  };
  const cell = (row, value) => { const td = row.insertCell(); td.textContent = value == null ? "" : String(value); return td; };

  function drawToday(s) {
    text("today-date", s.date);
    text("generated", s.generated);
    text("count-present", s.counts.present);
    text("count-absent", s.counts.absent);
    text("count-unknown", s.counts.unknown);
    text("count-kiosks", s.counts.kiosks_alive + "/" + s.counts.kiosks);
    const err = document.getElementById("store-error");
    if (err) { err.hidden = !s.error; err.textContent = s.error || ""; }
    const body = document.querySelector("#present tbody");
    if (body) {
      body.replaceChildren();
      for (const p of s.present) {
        const row = body.insertRow();
        row.insertCell().appendChild(link(p.name));
        cell(row, p.since); cell(row, p.last_seen);
      }
      document.getElementById("present-empty").hidden = s.present.length > 0;
    }
    const absent = document.getElementById("absent");
    if (absent) {
      absent.replaceChildren();
      for (const name of s.absent) { const li = document.createElement("li"); li.appendChild(link(name)); absent.appendChild(li); }
      document.getElementById("absent-empty").hidden = s.absent.length > 0;
    }
  }

  function drawKiosks(s) {
    const body = document.querySelector("#kiosks tbody");
    if (!body) return;
    body.replaceChildren();
    for (const k of s.kiosks) {
      const row = body.insertRow();
      row.className = k.row;
      for (const v of [k.name, k.state, k.seen, k.fps, k.source, k.model_version, k.marked, k.unknown]) cell(row, v);
    }
    document.getElementById("kiosks-empty").hidden = s.kiosks.length > 0;
  }

  const stream = new EventSource("/events/today");
  stream.addEventListener("open", () => { if (state) state.textContent = "connected"; });
  stream.addEventListener("error", () => { if (state) state.textContent = "reconnecting…"; });
  stream.addEventListener("today", (event) => {
    const snapshot = JSON.parse(event.data);
    if (page === "today") drawToday(snapshot);
    if (page === "kiosks") drawKiosks(snapshot);
    document.body.dataset.liveVersion = event.lastEventId;
  });
})();
