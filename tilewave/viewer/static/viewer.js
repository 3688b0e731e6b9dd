// tilewave view: a deep-zoom view of an output's pyramid, with its input beside it or
// under a swipe, both locked to one position and zoom. The view lives in the URL's
// hash (cx, cy: the output pixel at the centre; z: screen pixels per output pixel;
// mode; split), so a view can be shared or reopened.
"use strict";

const state = { cx: 0, cy: 0, z: 1, mode: "side", split: 0.5 };
const cache = new Map();
// The last image shown for each tile: drawn until a newer one (a running job's tiles
// are fetched again as it progresses) has loaded, so the view never blanks.
const shown = new Map();
let version = 0;
let info = null;
let progress = null;
const $ = (id) => document.getElementById(id);
const canvases = { left: $("left"), right: $("right") };

const MODES = ["side", "swipe", "output"];
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const key of ["cx", "cy", "z", "split"]) {
    if (p.has(key) && isFinite(parseFloat(p.get(key)))) state[key] = parseFloat(p.get(key));
  }
  state.z = clamp(state.z, 1e-4, 64);
  state.split = clamp(state.split, 0, 1);
  if (p.has("mode") && MODES.includes(p.get("mode"))) state.mode = p.get("mode");
  return p.has("z");
}

function writeHash() {
  const p = new URLSearchParams({ cx: state.cx.toFixed(2), cy: state.cy.toFixed(2),
    z: state.z.toPrecision(5), mode: state.mode, split: state.split.toFixed(3) });
  history.replaceState(null, "", "#" + p.toString());
}

function tile(side, level, row, col) {
  const key = `/tiles/${side}/${level}/${row}/${col}.png`;
  const url = side === "output" && version ? `${key}?v=${version}` : key;
  let img = cache.get(url);
  if (!img) {
    img = new Image();
    img.onload = () => { img.ready = true; shown.set(key, img); schedule(); };
    img.onerror = () => { img.failed = true; };
    img.src = url;
    cache.set(url, img);
  }
  // What to draw now (the tile, or the last one shown there, or nothing) and whether
  // the view still waits for it.
  if (img.ready) return { img, loading: false };
  return { img: shown.get(key) || null, loading: !img.failed };
}

// The coarsest level that still has at least one of its pixels per screen pixel.
function levelFor(z) {
  const k = Math.floor(Math.log2(1 / z) + 1e-9);
  return Math.max(0, Math.min(info.levels.length - 1, k));
}

function drawSide(ctx, side, width, height, from, to) {
  const k = levelFor(state.z), f = 2 ** k, T = info.tile, z = state.z;
  const [lh, lw] = info.levels[k];
  const x0 = state.cx - width / (2 * z), y0 = state.cy - height / (2 * z);
  const c0 = Math.max(0, Math.floor((x0 + from / z) / (T * f)));
  const c1 = Math.min(Math.ceil(lw / T) - 1, Math.floor((x0 + to / z) / (T * f)));
  const r0 = Math.max(0, Math.floor(y0 / (T * f)));
  const r1 = Math.min(Math.ceil(lh / T) - 1, Math.floor((y0 + height / z) / (T * f)));
  ctx.save();
  ctx.beginPath();
  ctx.rect(from, 0, to - from, height);
  ctx.clip();
  ctx.imageSmoothingEnabled = z * f < 1;  // magnified: show the pixels as they are
  for (let r = r0; r <= r1; r++) {
    for (let c = c0; c <= c1; c++) {
      const { img, loading } = tile(side, k, r, c);
      if (loading) missing++;
      if (!img) continue;
      const sx = Math.round((c * T * f - x0) * z), sy = Math.round((r * T * f - y0) * z);
      const ex = Math.round((c * T * f + img.width * f - x0) * z);
      const ey = Math.round((r * T * f + img.height * f - y0) * z);
      ctx.drawImage(img, sx, sy, ex - sx, ey - sy);
    }
  }
  ctx.restore();
}

function niceLength(maximum) {
  const p = 10 ** Math.floor(Math.log10(maximum));
  for (const m of [5, 2, 1]) if (m * p <= maximum) return m * p;
  return p;
}

function drawScale(width) {
  if (!info.pixel_size) { $("scale").style.display = "none"; return; }
  let [size, unit] = info.pixel_size;
  let perScreen = size / state.z;
  if (unit === "µm" && perScreen * 150 >= 1000) { perScreen /= 1000; unit = "mm"; }
  if (unit === "m" && perScreen * 150 >= 1000) { perScreen /= 1000; unit = "km"; }
  const length = niceLength(perScreen * Math.min(150, width / 3));
  $("scalebar").style.width = `${Math.round(length / perScreen)}px`;
  $("scaletext").textContent = `${length} ${unit}`;
}

function drawMap() {
  const map = $("map"), ctx = map.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, map.width, map.height);
  if (progress) {
    const cw = map.width / progress.cols, ch = map.height / progress.rows;
    ctx.fillStyle = "#2e7d32";
    for (const [r, c] of progress.done) ctx.fillRect(c * cw, r * ch, Math.ceil(cw), Math.ceil(ch));
  }
  const sx = map.width / info.width, sy = map.height / info.height;
  const w = canvases.left.width, h = canvases.left.height;
  ctx.strokeStyle = "#fff";
  ctx.strokeRect((state.cx - w / (2 * state.z)) * sx, (state.cy - h / (2 * state.z)) * sy,
    (w / state.z) * sx, (h / state.z) * sy);
}

// Tiles of the current view still loading, as of the last drawing; with `pending`, what
// `tilewaveIdle` reports (for scripts and tests that wait for a view to be complete).
let missing = 0;
window.tilewaveIdle = () => info !== null && !pending && missing === 0;

function draw() {
  pending = false;
  missing = 0;
  if (!info) return;
  const two = state.mode === "side" && info.input;
  canvases.right.style.display = two ? "block" : "none";
  // Sized from their container, in CSS pixels: one canvas pixel per screen pixel.
  const box = $("views").getBoundingClientRect();
  const cw = Math.floor(two ? (box.width - 2) / 2 : box.width), ch = Math.floor(box.height);
  for (const cv of Object.values(canvases)) {
    cv.width = cw;
    cv.height = ch;
    cv.style.width = `${cw}px`;
    cv.style.height = `${ch}px`;
  }
  const width = canvases.left.width, height = canvases.left.height;
  const left = canvases.left.getContext("2d");
  left.fillStyle = "#111";
  left.fillRect(0, 0, width, height);
  $("leftlabel").style.left = "12px";
  $("rightlabel").style.display = "none";
  if (two) {
    drawSide(left, "input", width, height, 0, width);
    const right = canvases.right.getContext("2d");
    right.fillStyle = "#111";
    right.fillRect(0, 0, width, height);
    drawSide(right, "output", width, height, 0, width);
    $("leftlabel").textContent = "input";
    $("rightlabel").textContent = "output";
    $("rightlabel").style.display = "block";
    $("rightlabel").style.left = `${width + 14}px`;
  } else if (state.mode === "swipe" && info.input) {
    const s = Math.round(width * state.split);
    drawSide(left, "input", width, height, 0, s);
    drawSide(left, "output", width, height, s, width);
    left.fillStyle = "#fff";
    left.fillRect(s - 1, 0, 2, height);
    $("leftlabel").textContent = "input | output";
  } else {
    drawSide(left, "output", width, height, 0, width);
    $("leftlabel").textContent = "output";
  }
  drawScale(width);
  drawMap();
  $("status").textContent = `level ${levelFor(state.z)}, ${Math.round(state.z * 100)} %` +
    (progress && !progress.complete ? `, ${progress.done.length} of ${progress.rows * progress.cols} tiles done` : "");
  writeHash();
}

let pending = false;
function schedule() {
  if (!pending) { pending = true; requestAnimationFrame(draw); }
}

function fit() {
  const box = $("views").getBoundingClientRect();
  const two = state.mode === "side" && info.input;
  const w = two ? box.width / 2 : box.width, h = box.height;
  state.z = Math.min(w / info.width, h / info.height);
  state.cx = info.width / 2;
  state.cy = info.height / 2;
}

function zoomAt(factor, px, py) {
  const w = canvases.left.clientWidth, h = canvases.left.clientHeight;
  const x = state.cx + (px - w / 2) / state.z, y = state.cy + (py - h / 2) / state.z;
  state.z = Math.min(64, Math.max(1e-4, state.z * factor));
  state.cx = x - (px - w / 2) / state.z;
  state.cy = y - (py - h / 2) / state.z;
  schedule();
}

function listen() {
  let drag = null;
  for (const cv of Object.values(canvases)) {
    cv.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY }; });
    cv.addEventListener("wheel", (e) => {
      e.preventDefault();
      const box = cv.getBoundingClientRect();
      zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - box.left, e.clientY - box.top);
    }, { passive: false });
  }
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    state.cx -= (e.clientX - drag.x) / state.z;
    state.cy -= (e.clientY - drag.y) / state.z;
    drag = { x: e.clientX, y: e.clientY };
    schedule();
  });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("resize", schedule);
  window.addEventListener("hashchange", () => { readHash(); syncControls(); schedule(); });
  $("mode").addEventListener("change", (e) => { state.mode = e.target.value; syncControls(); schedule(); });
  $("split").addEventListener("input", (e) => { state.split = parseFloat(e.target.value); schedule(); });
  $("zoomin").addEventListener("click", () => zoomAt(2, canvases.left.clientWidth / 2, canvases.left.clientHeight / 2));
  $("zoomout").addEventListener("click", () => zoomAt(0.5, canvases.left.clientWidth / 2, canvases.left.clientHeight / 2));
  $("fit").addEventListener("click", () => { fit(); schedule(); });
}

function syncControls() {
  $("mode").value = state.mode;
  $("split").value = state.split;
  $("split").style.display = state.mode === "swipe" ? "inline" : "none";
}

async function poll() {
  try {
    const next = await (await fetch("/progress")).json();
    if (progress && next.done.length !== progress.done.length) {
      version++;  // output tiles are asked for again; the shown ones stay until then
      for (const url of [...cache.keys()]) if (url.startsWith("/tiles/output/")) cache.delete(url);
    }
    progress = next;
    schedule();
    if (!progress.complete) setTimeout(poll, 2000);
  } catch (err) {
    setTimeout(poll, 5000);
  }
}

async function start() {
  info = await (await fetch("/info")).json();
  $("name").textContent = info.name;
  if (!info.input) {
    for (const option of $("mode").options) option.disabled = option.value !== "output";
    state.mode = "output";
  }
  const fromHash = readHash();
  if (!info.input) state.mode = "output";
  if (!fromHash) fit();
  syncControls();
  listen();
  schedule();
  poll();
}

start();
