// vaelab explorer: plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const state = {
  info: null, z: null, zClicked: null, label: null, marker: null, picked: null,
  sampleSeed: 1, similarSeed: 1, upload: null, mask: null, busy: 0,
};

// ---- talking to the server -------------------------------------------------------------
async function api(path, body) {
  state.busy += 1;
  document.body.dataset.busy = state.busy;
  try {
    const r = await fetch(path, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  } finally {
    state.busy -= 1;
    document.body.dataset.busy = state.busy;
  }
}

function say(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", !!isError);
}

// One request in flight per control; while it runs only the newest argument waits, so a
// drag or a slider never queues up stale decodes.
function latest(fn) {
  let running = false, pending = false, arg;
  const run = async () => {
    running = true;
    while (pending) {
      pending = false;
      try { await fn(arg); } catch (e) { say(e.message, true); }
    }
    running = false;
  };
  return (a) => { arg = a; pending = true; if (!running) run(); };
}

function tiles(container, urls, cls) {
  container.replaceChildren(...urls.map((src) => {
    const img = new Image();
    img.src = src;
    img.className = cls || "tile";
    img.alt = "decoded image";
    return img;
  }));
}

// tab10 up to ten classes (as vaelab's scatter plots), else a hue ramp over the classes.
function colour(c) {
  const n = state.classes;
  return n <= 10 ? TAB10[c % 10] : `hsl(${Math.round(300 * c / Math.max(1, n - 1))}, 70%, 45%)`;
}

function labelName(c) {
  const names = state.info.class_names;
  return names && names[c] !== undefined ? names[c] : String(c);
}

// ---- the map -----------------------------------------------------------------------------
const map = {canvas: null, ctx: null, base: null, scale: 1, cx: 0, cy: 0, dragging: false};

function setupMap() {
  const m = state.info.map, pts = m.points;
  map.canvas = $("map");
  map.ctx = map.canvas.getContext("2d");
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const lo = [Math.min(...xs), Math.min(...ys)], hi = [Math.max(...xs), Math.max(...ys)];
  map.cx = (lo[0] + hi[0]) / 2;
  map.cy = (lo[1] + hi[1]) / 2;
  // One scale for both axes (a 2-D latent keeps its true shape), 8% margin around the codes.
  const span = Math.max(hi[0] - lo[0], hi[1] - lo[1], 1e-6) * 1.16;
  map.scale = map.canvas.width / span;
  map.base = document.createElement("canvas");
  map.base.width = map.canvas.width;
  map.base.height = map.canvas.height;
  drawBase(map.base.getContext("2d"));
  drawMap();
  const c = map.canvas;
  c.addEventListener("pointerdown", (e) => {
    map.dragging = true;
    c.setPointerCapture(e.pointerId);
    const i = nearestPoint(e, 6);
    if (i === null) { decodeAt(e); return; }
    pick(i);  // a click on a point decodes that image's own code
    state.marker = state.info.map.points[i];
    drawMap();
    requestDecode({index: i});
  });
  c.addEventListener("pointermove", (e) => {
    if (map.dragging) { decodeAt(e); hideHover(); } else hover(e);
  });
  const stop = () => { map.dragging = false; };
  c.addEventListener("pointerup", stop);
  c.addEventListener("pointercancel", stop);
  c.addEventListener("pointerleave", hideHover);
}

function toCanvas(u, v) {
  return [map.canvas.width / 2 + (u - map.cx) * map.scale,
          map.canvas.height / 2 - (v - map.cy) * map.scale];
}

function fromEvent(e) {
  const r = map.canvas.getBoundingClientRect();
  const px = (e.clientX - r.left) * map.canvas.width / r.width;
  const py = (e.clientY - r.top) * map.canvas.height / r.height;
  return {px, py, u: map.cx + (px - map.canvas.width / 2) / map.scale,
          v: map.cy - (py - map.canvas.height / 2) / map.scale};
}

function drawBase(ctx) {
  const {width: w, height: h} = ctx.canvas, m = state.info.map;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  if (m.kind !== "tsne") {  // the axes through 0 (the prior's centre for z, the mean for PCA)
    const [x0, y0] = toCanvas(0, 0);
    ctx.strokeStyle = "#ddd";
    ctx.beginPath();
    ctx.moveTo(x0, 0); ctx.lineTo(x0, h); ctx.moveTo(0, y0); ctx.lineTo(w, y0);
    ctx.stroke();
  }
  ctx.globalAlpha = 0.75;
  m.points.forEach((p, i) => {
    const [x, y] = toCanvas(p[0], p[1]);
    const lab = m.labels ? m.labels[i] : 0;
    ctx.fillStyle = m.labels ? colour(lab) : "#1f77b4";
    ctx.beginPath();
    ctx.arc(x, y, 2.4, 0, 2 * Math.PI);
    ctx.fill();
  });
  ctx.globalAlpha = 1;
  ctx.fillStyle = "#555";
  ctx.font = "13px sans-serif";
  const name = m.prefix.trim();
  ctx.fillText(`${name}1 →`, w - 64, h - 8);
  ctx.save(); ctx.translate(14, 64); ctx.rotate(-Math.PI / 2); ctx.fillText(`${name}2 →`, 0, 0);
  ctx.restore();
}

function drawMap() {
  const ctx = map.ctx;
  ctx.drawImage(map.base, 0, 0);
  const ring = (uv, colour, text) => {
    const [x, y] = toCanvas(uv[0], uv[1]);
    ctx.strokeStyle = colour; ctx.lineWidth = 2.5;
    ctx.beginPath(); ctx.arc(x, y, 9, 0, 2 * Math.PI); ctx.stroke();
    if (text) { ctx.fillStyle = colour; ctx.font = "bold 13px sans-serif"; ctx.fillText(text, x + 11, y - 8); }
  };
  const pts = state.info.map.points;
  for (const [id, text] of [["interp-a", "A"], ["interp-b", "B"]]) {
    const i = Number($(id).value);
    if (pts[i]) ring(pts[i], "#555", text);
  }
  if (state.marker) {
    const [x, y] = toCanvas(state.marker[0], state.marker[1]);
    ring(state.marker, "#000");
    ctx.beginPath(); ctx.moveTo(x - 14, y); ctx.lineTo(x + 14, y);
    ctx.moveTo(x, y - 14); ctx.lineTo(x, y + 14); ctx.lineWidth = 1; ctx.stroke();
  }
}

function nearestPoint(e, radius) {
  const {px, py} = fromEvent(e), pts = state.info.map.points;
  let best = null, bestD = radius * radius;
  pts.forEach((p, i) => {
    const [x, y] = toCanvas(p[0], p[1]);
    const d = (x - px) ** 2 + (y - py) ** 2;
    if (d <= bestD) { bestD = d; best = i; }
  });
  return best;
}

function hover(e) {
  const i = nearestPoint(e, 6), box = $("hover");
  if (i === null) { hideHover(); return; }
  $("hover-img").src = `/api/test-image/${i}`;
  const labels = state.info.map.labels;
  $("hover-label").textContent = `#${i}` + (labels ? ` · ${labelName(labels[i])}` : "");
  const r = map.canvas.getBoundingClientRect(), {px, py} = fromEvent(e);
  box.style.left = `${px * r.width / map.canvas.width + 14}px`;
  box.style.top = `${py * r.height / map.canvas.height + 14}px`;
  box.hidden = false;
}

function hideHover() { $("hover").hidden = true; }

// ---- the decoded point and its sliders ----------------------------------------------------
const requestDecode = latest(async (body) => {
  const t0 = performance.now();
  const r = await api("/api/decode", {...body, label: state.label});
  $("decoded").src = r.image;
  state.z = r.z;
  if (body.xy || body.index !== undefined) { state.zClicked = r.z.slice(); buildSliders(); }
  state.marker = r.xy || body.xy || state.marker;
  drawMap();
  $("zinfo").textContent = `z = (${r.z.slice(0, 6).map((v) => v.toFixed(2)).join(", ")}`
    + `${r.z.length > 6 ? ", …" : ""}); nearest test image #${r.nearest}`;
  if (r.classes && r.classes.length) showClasses(r.classes);
  say(`decoded in ${Math.round(performance.now() - t0)} ms`);
});

function decodeAt(e) {
  const {u, v} = fromEvent(e);
  state.marker = [u, v];
  drawMap();
  requestDecode({xy: [u, v]});
}

function buildSliders() {
  const box = $("sliders");
  box.replaceChildren();
  for (const d of state.info.dims) {
    const centre = state.zClicked[d.index], span = 3 * d.scale;
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    name.textContent = `z${d.index}`;
    name.title = `${state.info.measure} ${d.score}`;
    const input = document.createElement("input");
    Object.assign(input, {type: "range", min: centre - span, max: centre + span,
                          step: span / 150, value: state.z[d.index]});
    input.dataset.dim = d.index;
    const out = document.createElement("output");
    out.textContent = Number(input.value).toFixed(2);
    input.addEventListener("input", () => {
      state.z[d.index] = Number(input.value);
      out.textContent = Number(input.value).toFixed(2);
      requestDecode({z: state.z.slice()});
    });
    const score = document.createElement("small");
    score.textContent = `${state.info.measure} ${Number(d.score).toFixed(2)}`;
    row.append(name, input, out, score);
    box.append(row);
  }
}

function pick(i) {
  state.picked = i;
  $("picked").hidden = false;
  $("picked-img").src = `/api/test-image/${i}`;
  const labels = state.info.map.labels;
  $("picked-name").textContent = `test image #${i}` + (labels ? ` (${labelName(labels[i])})` : "");
  if (state.info.features.codes) showCodes({index: i}).catch((e) => say(e.message, true));
}

// ---- categorical latents (gumbel, JointVAE): a class per group instead of C sliders ----------
// Each group (ranked by KL) is a row of class buttons; a click decodes the code with that
// group one-hot at the class (the server snaps every group to one-hot, its argmax).
function setupGroups(info) {
  const groups = info.groups;
  state.groupClasses = groups.map(() => 0);  // until the first decode answers
  $("groups-box").hidden = false;
  $("groups-desc").textContent = "(ranked by KL; each group decodes one-hot at the pressed class)";
  if (!info.dims.length) $("dims-desc").parentElement.hidden = true;  // no Gaussian dims
  $("map-desc").textContent += "; each group then decodes at its largest class";
  $("groups").replaceChildren(...groups.map((g) => {
    const row = document.createElement("div");
    row.className = "group";
    const name = document.createElement("span"), score = document.createElement("small");
    score.textContent = `${info.measure} ${Number(g.score).toFixed(2)}`;
    name.append(g.name, score);
    const buttons = document.createElement("div");
    buttons.append(...g.classes.map((cls, k) => {
      const b = document.createElement("button");
      Object.assign(b, {type: "button", textContent: String(k), title: `${g.name}: ${cls}`});
      b.dataset.group = g.group;
      b.dataset.cls = k;
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", () => chooseClass(g.group, k));
      return b;
    }));
    row.append(name, buttons);
    return row;
  }));
  // Random classes: each group's class drawn from its prior U(C); the Gaussian dims stay.
  $("random-classes").addEventListener("click", () => {
    const classes = groups.map(() => 0);
    for (const g of groups) classes[g.group] = Math.floor(Math.random() * g.classes.length);
    requestDecode({z: state.z.slice(), classes});
  });
  const p = $("sample-card").querySelector("p.small");
  p.textContent = info.dims.length
    ? "Decodings of the Gaussian dims ~ N(0, T²I), each group's class drawn uniformly (its prior)."
    : "Decodings of classes drawn uniformly (the prior); T has no effect without Gaussian dims.";
}

function chooseClass(group, k) {
  const classes = state.groupClasses.slice();
  classes[group] = k;
  requestDecode({z: state.z.slice(), classes});
}

function showClasses(classes) {
  state.groupClasses = classes.slice();
  for (const b of document.querySelectorAll("#groups button")) {
    b.setAttribute("aria-pressed", String(classes[Number(b.dataset.group)] === Number(b.dataset.cls)));
  }
}

// On the sphere (svae) a slider moves one coordinate off S^{D-1}; the server decodes z/|z|.
function describeSphere() {
  $("dims-desc").textContent += "; the moved point is put back on the sphere (z/|z|) before decoding";
}

// ---- a VQ-VAE's code grid: each cell a code in [0, K); changing one decodes the grid ----
async function showCodes(body) {
  const r = await api("/api/codes", body);
  $("codes-img").src = r.image;
  const table = $("codes-grid");
  table.replaceChildren(...r.codes.map((row) => {
    const tr = document.createElement("tr");
    for (const k of row) {
      const td = document.createElement("td");
      const input = document.createElement("input");
      Object.assign(input, {type: "number", min: 0, max: r.num_codes - 1, value: k});
      input.style.width = `${String(r.num_codes - 1).length + 1.5}ch`;  // room for every digit
      input.addEventListener("change", () => {
        const codes = [...table.rows].map((tr) =>
          [...tr.querySelectorAll("input")].map((c) => Number(c.value)));
        showCodes({codes}).catch((e) => say(e.message, true));
      });
      td.append(input);
      tr.append(td);
    }
    return tr;
  }));
}

function usePicked(to) {
  const i = state.picked;
  if (i === null) return;
  if (to === "similar") { $("similar-index").value = i; state.upload = null; requestSimilar(); }
  if (to === "a" || to === "b") { $(`interp-${to}`).value = i; drawMap(); requestInterp(); }
  if (to === "complete") { $("complete-index").value = i; loadCompletionImage(); }
}

// ---- new images ------------------------------------------------------------------------------
const requestSamples = latest(async () => {
  const t = Number($("temperature").value);
  const r = await api("/api/sample", {n: 15, temperature: t, seed: state.sampleSeed, label: state.label});
  tiles($("samples"), r.images);
});

// ---- similar images ------------------------------------------------------------------------------
const requestSimilar = latest(async () => {
  const body = {n: 10, spread: Number($("spread").value), seed: state.similarSeed};
  if (state.upload) body.image = state.upload; else body.index = Number($("similar-index").value);
  const r = await api("/api/similar", body);
  $("similar-input").src = r.input;
  tiles($("similar-out"), r.images);
});

function readUpload(file) {
  // Draw the file at the run's size here; the server accepts exactly its own shape.
  const [, h, w] = state.info.image_shape, img = new Image(), url = URL.createObjectURL(file);
  img.onload = () => {
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    c.getContext("2d").drawImage(img, 0, 0, w, h);
    URL.revokeObjectURL(url);
    state.upload = c.toDataURL("image/png");
    requestSimilar();
  };
  img.onerror = () => say(`${file.name}: not an image the browser can read`, true);
  img.src = url;
}

// ---- interpolation --------------------------------------------------------------------------------
const requestInterp = latest(async () => {
  const body = {a: Number($("interp-a").value), b: Number($("interp-b").value),
                steps: Number($("interp-steps").value), label: state.label};
  const rows = [];
  for (const method of state.info.interpolations) {
    const r = await api("/api/interpolate", {...body, method});
    const row = document.createElement("div");
    row.className = "interp-row";
    const name = document.createElement("div");
    name.className = "small";
    name.textContent = method;
    const strip = document.createElement("div");
    strip.className = "grid nowrap";
    strip.dataset.method = method;
    tiles(strip, r.images);
    row.append(name, strip);
    rows.push(row);
  }
  $("interp-rows").replaceChildren(...rows);
});

// ---- completion ------------------------------------------------------------------------------------
const mask = {canvas: null, image: null, painting: false, scale: 1};

function setupMask() {
  const [, h, w] = state.info.image_shape;
  mask.scale = Math.max(1, Math.floor(196 / Math.max(h, w)));
  mask.canvas = $("mask");
  mask.canvas.width = w * mask.scale;
  mask.canvas.height = h * mask.scale;
  state.mask = new Uint8Array(h * w);
  preset("top");
  const c = mask.canvas;
  c.addEventListener("pointerdown", (e) => { mask.painting = true; c.setPointerCapture(e.pointerId); paint(e); });
  c.addEventListener("pointermove", (e) => { if (mask.painting) paint(e); });
  const stop = () => { if (mask.painting) { mask.painting = false; requestCompletion(); } };
  c.addEventListener("pointerup", stop);
  c.addEventListener("pointercancel", stop);
}

function paint(e) {
  const [, h, w] = state.info.image_shape, r = mask.canvas.getBoundingClientRect();
  const col = Math.floor((e.clientX - r.left) / r.width * w);
  const row = Math.floor((e.clientY - r.top) / r.height * h);
  const rad = Number($("brush").value) - 1, value = $("erase").checked ? 0 : 1;
  for (let y = row - rad; y <= row + rad; y++) {
    for (let x = col - rad; x <= col + rad; x++) {
      if (y >= 0 && y < h && x >= 0 && x < w) state.mask[y * w + x] = value;
    }
  }
  drawMask();
}

function preset(name) {
  const [, h, w] = state.info.image_shape;
  state.mask.fill(0);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const inside = {left: x < Math.floor(w / 2), top: y < Math.floor(h / 2),
        centre: y >= Math.floor(h / 4) && y < Math.floor(h / 4) + Math.floor(h / 2)
                && x >= Math.floor(w / 4) && x < Math.floor(w / 4) + Math.floor(w / 2)}[name];
      if (inside) state.mask[y * w + x] = 1;
    }
  }
  drawMask();
}

function drawMask() {
  const ctx = mask.canvas.getContext("2d"), [, h, w] = state.info.image_shape, s = mask.scale;
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#888";
  ctx.fillRect(0, 0, mask.canvas.width, mask.canvas.height);
  if (mask.image) ctx.drawImage(mask.image, 0, 0, w * s, h * s);
  ctx.fillStyle = "rgba(230, 40, 40, 0.6)";
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) if (state.mask[y * w + x]) ctx.fillRect(x * s, y * s, s, s);
  }
}

function loadCompletionImage() {
  const img = new Image();
  img.onload = () => { mask.image = img; drawMask(); requestCompletion(); };
  img.src = `/api/test-image/${Number($("complete-index").value)}`;
}

const requestCompletion = latest(async () => {
  const r = await api("/api/complete", {
    index: Number($("complete-index").value), mask: Array.from(state.mask).join(""),
    method: $("complete-method").value, steps: Number($("complete-steps").value), n: 6, seed: 0,
  });
  $("observed").src = r.observed;
  tiles($("completions"), r.images);
  $("acceptance").textContent = r.acceptance === null ? "" : `acceptance rate ${r.acceptance.toFixed(2)}`;
});

// ---- start -------------------------------------------------------------------------------------------
function describe(info) {
  const [c, h, w] = info.image_shape;
  $("run-info").textContent = `${info.run} · ${info.dataset} · ${info.model} · `
    + `${info.latent_dim}-D latent · images ${c}×${h}×${w}`;
  const n = info.map.points.length;
  $("map-desc").textContent = {
    z: `the ${info.latent_dim}-D latent itself, ${n} test images`,
    pca: `PCA of ${n} test images' ${info.latent_dim}-D codes; a click fills the other axes from nearby codes`,
    tsne: `t-SNE of ${n} test images' ${info.latent_dim}-D codes; a click decodes a weighted mean of nearby codes`,
  }[info.map.kind];
  $("dims-desc").textContent = `(ranked by ${info.measure}; ±3 prior std around the clicked point)`;
  if (info.map.labels) {
    const present = [...new Set(info.map.labels)].sort((a, b) => a - b);
    $("legend").replaceChildren(...present.map((c) => {
      const item = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour(c);
      item.append(dot, labelName(c));
      return item;
    }));
  }
  const f = info.features;
  $("sample-card").hidden = !f.sample;
  $("similar-card").hidden = !f.similar;
  $("complete-card").hidden = !f.complete;
  $("codes-card").hidden = !f.codes;
  if (f.codes) {  // a VQ-VAE: what its cards do instead
    $("sample-caption").textContent = "Code grids drawn from the run's PixelCNN prior at " +
      "temperature T (softmax of logits / T), decoded.";
    $("similar-caption").textContent = "The image's code grid with each code moved, with " +
      "probability min(1, s/4), to one of its 3 nearest codebook entries.";
  }
  if (f.sample_note) {  // a VQ-VAE without a code prior: one line says how to train one
    $("sample-note").textContent = f.sample_note;
    $("sample-note").hidden = false;
    $("sample-controls").hidden = true;
  }
  $("label-picker").hidden = !f.conditional;
  const last = n - 1;
  for (const id of ["similar-index", "interp-a", "interp-b", "complete-index"]) $(id).max = last;
}

async function start() {
  const r = await fetch("/api/info");
  const info = state.info = await r.json();
  const labels = info.map.labels || [];
  state.classes = Math.max(info.class_names.length, ...labels.map((y) => y + 1), 1);
  describe(info);
  if (info.groups.length) setupGroups(info);
  if (info.latent_space === "sphere") describeSphere();
  if (info.features.conditional) {
    const sel = $("label");
    sel.replaceChildren(...info.class_names.map((name, i) => new Option(`${i}: ${name}`, i)));
    state.label = 0;
    sel.addEventListener("change", () => {
      state.label = Number(sel.value);
      requestDecode({z: state.z.slice()});
      requestSamples();
      requestInterp();
    });
  }
  for (const m of info.completions) $("complete-method").append(new Option(m, m));
  $("complete-method").value = "pseudo-gibbs";  // vaelab complete's default
  setupMap();
  const first = info.map.points[0];
  // B: the test image farthest from A on the map, so the first path crosses the space.
  let far = 0, farD = -1;
  info.map.points.forEach((p, i) => {
    const d = (p[0] - first[0]) ** 2 + (p[1] - first[1]) ** 2;
    if (d > farD) { farD = d; far = i; }
  });
  $("interp-b").value = far;
  pick(0);
  state.marker = first;
  requestDecode({index: 0});
  $("reset-sliders").addEventListener("click", () => {
    state.z = state.zClicked.slice();
    buildSliders();
    requestDecode({z: state.z.slice()});
  });
  for (const b of document.querySelectorAll("#picked button")) {
    b.addEventListener("click", () => usePicked(b.dataset.to));
  }
  if (info.features.sample && !info.features.sample_note) {
    $("temperature").addEventListener("input", () => {
      $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
      requestSamples();
    });
    $("new-images").addEventListener("click", () => { state.sampleSeed += 1; requestSamples(); });
    requestSamples();
  }
  if (info.features.similar) {
    $("spread").addEventListener("input", () => {
      $("spread-value").textContent = Number($("spread").value).toFixed(2);
      requestSimilar();
    });
    $("similar-index").addEventListener("change", () => { state.upload = null; requestSimilar(); });
    $("upload").addEventListener("change", (e) => { if (e.target.files[0]) readUpload(e.target.files[0]); });
    requestSimilar();
  }
  for (const id of ["interp-a", "interp-b", "interp-steps"]) {
    $(id).addEventListener("change", () => { drawMap(); requestInterp(); });
  }
  requestInterp();
  if (info.features.complete) {
    setupMask();
    for (const b of document.querySelectorAll("[data-preset]")) {
      b.addEventListener("click", () => {
        if (b.dataset.preset === "clear") { state.mask.fill(0); drawMask(); } else preset(b.dataset.preset);
        requestCompletion();
      });
    }
    $("complete-index").addEventListener("change", loadCompletionImage);
    $("complete-method").addEventListener("change", requestCompletion);
    $("complete-steps").addEventListener("change", requestCompletion);
    loadCompletionImage();
  }
  document.body.dataset.ready = "1";
}

start().catch((e) => say(`could not start: ${e.message}`, true));
