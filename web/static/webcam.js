// Enrol by webcam: show the camera, send a frame every ~0.7 s to the quality gate, keep the
// frames it accepts, then upload the kept frames through the same enrolment as photo uploads.
"use strict";
(function () {
  const box = document.getElementById("webcam");
  const min = Number(box.dataset.min), max = Number(box.dataset.max), csrf = box.dataset.csrf;
  const video = document.getElementById("webcam-video");
  const status = document.getElementById("webcam-status");
  const keptEl = document.getElementById("webcam-kept");
  const enrolBtn = document.getElementById("webcam-enrol");
  const result = document.getElementById("webcam-result");
  const kept = [];
  let timer = null, busy = false, finished = false;

  function frame() {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  }

  async function post(url, form) {
    const response = await fetch(url, { method: "POST", body: form, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
    const body = await response.json().catch(() => ({ error: "the server sent no JSON" }));
    return { ok: response.ok, status: response.status, body };
  }

  async function tick() {
    if (finished || busy || !video.videoWidth || kept.length >= max) return;
    busy = true;
    try {
      const blob = await frame();
      const form = new FormData();
      form.append("photo", blob, "frame.jpg");
      const { ok, body } = await post("/api/v1/people/check-photo", form);
      if (finished) return; // Enrol was pressed while this frame was being checked
      if (!ok) { status.textContent = body.error || "check failed"; return; }
      if (body.accepted) { kept.push(blob); keptEl.textContent = String(kept.length); status.textContent = "Good shot. Turn your head a little."; }
      else status.textContent = body.reason;
      enrolBtn.disabled = kept.length < min;
      if (kept.length >= max) { clearInterval(timer); status.textContent = "Enough shots: press Enrol."; }
    } finally { busy = false; }
  }

  document.getElementById("webcam-start").addEventListener("click", async () => {
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
      status.textContent = "Camera on.";
      timer = setInterval(tick, 700);
    } catch (err) {
      status.textContent = "No camera: " + err.name + ". Allow camera access, or enrol from photos.";
    }
  });

  enrolBtn.addEventListener("click", async () => {
    const name = document.getElementById("webcam-name").value.trim();
    if (!name) { status.textContent = "Type the person's name first."; return; }
    finished = true;
    clearInterval(timer);
    enrolBtn.disabled = true;
    status.textContent = "Enrolling…";
    const form = new FormData();
    form.append("name", name);
    kept.forEach((blob, i) => form.append("photos", blob, "webcam-" + String(i + 1).padStart(2, "0") + ".jpg"));
    const { body } = await post("/api/v1/people", form);
    result.replaceChildren();
    const p = document.createElement("p");
    p.id = "webcam-message";
    p.className = body.enrolled ? "ok" : "error";
    p.textContent = body.message || body.error || "enrolment failed";
    result.appendChild(p);
    status.textContent = body.enrolled ? "Done." : "Not enrolled.";
    if (video.srcObject) video.srcObject.getTracks().forEach((t) => t.stop());
  });
})();
