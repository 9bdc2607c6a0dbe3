// FreeBind playground: plain JavaScript over the public API (/spaces, /collections, /search).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { spaces: [], space: null, query: null, searchTimer: null, lastRequest: null };

// A server with FREEBIND_API_KEYS answers 401 without a key: the page asks for one once and keeps it
// in this browser's localStorage (sent only to this origin, as the API expects: Authorization: Bearer).
const KEY_STORE = "freebind-api-key";

async function api(method, path, body) {
  const headers = body ? { "content-type": "application/json" } : {};
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.authorization = `Bearer ${key}`;
  const response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  if (response.status === 401) $("auth").hidden = false;
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    // problem+json: say what was wrong, in the API's own words
    const detail = data && (data.detail || data.title) ? `${data.title || "Error"}: ${typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)}` : `HTTP ${response.status}`;
    throw new Error(detail);
  }
  return data;
}

const listOf = (data, key) => (Array.isArray(data) ? data : (data && (data[key] || data.data)) || []);

function showError(message) {
  const box = $("error");
  box.hidden = !message;
  box.textContent = message || "";
}

function fileAsDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// Media kept in an item's metadata (a thumbnail, a short clip to play back) must fit the server's metadata
// limit (FREEBIND_MAX_METADATA_BYTES, 16 KiB as JSON by default) beside the item's other fields.
const METADATA_MEDIA_CHARS = 12000;
const keepable = (uri) => (uri && uri.length <= METADATA_MEDIA_CHARS ? uri : null);

function thumbnail(file) {
  // A small JPEG kept in the item's metadata, so results can show the picture without a media store:
  // smaller and coarser until it fits (a busy photo at 160 px can pass the limit).
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      for (const [side, quality] of [[160, 0.8], [128, 0.7], [96, 0.6], [64, 0.5]]) {
        const scale = side / Math.max(img.width, img.height);
        const canvas = document.createElement("canvas");
        canvas.width = Math.max(1, Math.round(img.width * scale));
        canvas.height = Math.max(1, Math.round(img.height * scale));
        canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
        const uri = keepable(canvas.toDataURL("image/jpeg", quality));
        if (uri) return resolve(uri);
      }
      resolve(null);
    };
    img.onerror = () => resolve(null);
    img.src = URL.createObjectURL(file);
  });
}

async function loadSpaces() {
  state.spaces = listOf(await api("GET", "/spaces"), "spaces");
  $("space").innerHTML = state.spaces.map((s) => `<option value="${s.name}">${s.name} (${s.dim}-d)</option>`).join("");
  selectSpace($("space").value);
}

function selectSpace(name) {
  state.space = state.spaces.find((s) => s.name === name) || null;
  const presets = Object.keys((state.space && state.space.presets) || {});
  const fallback = state.space && state.space.default_preset;
  $("preset").innerHTML = ['<option value="">(defaults)</option>']
    .concat(presets.map((p) => `<option value="${escapeHtml(p)}" ${p === fallback ? "selected" : ""}>${escapeHtml(p)}</option>`))
    .concat(['<option value="custom" disabled>(custom)</option>']).join("");
  buildSliders();
}

function factorFor(bond, modality, preset = $("preset").value) {
  const fromPreset = preset && state.space.presets[preset] && state.space.presets[preset][bond.name];
  if (fromPreset && modality in fromPreset) return fromPreset[modality];
  return (bond.defaults && bond.defaults[modality]) || 0;
}

// The menu names what the sliders hold: a preset (or the defaults) whose every factor they match, else
// "(custom)", so the menu never claims a preset the request does not use.
function presetOfSliders() {
  const sliders = [...document.querySelectorAll("#sliders input[type=range]")];
  const matches = (preset) => sliders.every((input) => {
    const bond = state.space.bonds.find((b) => b.name === input.dataset.bond);
    return Math.abs(Number(input.value) - factorFor(bond, input.dataset.modality, preset)) < 1e-6;
  });
  const current = $("preset").value;
  if (current !== "custom" && matches(current)) return current;
  return ["", ...Object.keys(state.space.presets || {})].find(matches) ?? "custom";
}

function buildSliders() {
  const container = $("sliders");
  container.innerHTML = "";
  const bonds = (state.space && state.space.bonds) || [];
  if (!bonds.length) container.textContent = "This space has no bonds to mix.";
  for (const bond of bonds) {
    for (const modality of bond.modalities || []) {
      const id = `f-${bond.name}-${modality}`;
      const value = factorFor(bond, modality);
      const row = document.createElement("div");
      row.innerHTML = `<label for="${id}">${bond.name} · ${modality} (${bond.kind})</label>
        <div class="slider"><input id="${id}" type="range" min="0" max="1" step="0.05" value="${value}"
          data-bond="${bond.name}" data-modality="${modality}" aria-describedby="${id}-out">
        <output id="${id}-out" for="${id}">${Number(value).toFixed(2)}</output></div>`;
      container.appendChild(row);
      row.querySelector("input").addEventListener("input", (event) => {
        row.querySelector("output").textContent = Number(event.target.value).toFixed(2);
        $("preset").value = presetOfSliders();
        scheduleSearch();
      });
    }
  }
  renderMixing();
}

function currentMixing() {
  const factors = {};
  for (const input of document.querySelectorAll("#sliders input[type=range]")) {
    (factors[input.dataset.bond] ||= {})[input.dataset.modality] = Number(input.value);
  }
  const mixing = { factors };
  const preset = $("preset").value;
  if (preset && preset !== "custom") mixing.preset = preset;
  return mixing;
}

function renderMixing() {
  const mixing = currentMixing();
  $("mixing-json").textContent = JSON.stringify(mixing, null, 2);
  const query = state.query || { text: "a dog barking" };
  const shown = query.text !== undefined ? query : { [Object.keys(query)[0]]: "<base64 or data URI>" };
  const body = { collection: $("collection").value, query: shown, top_k: Number($("top-k").value), mixing };
  const auth = localStorage.getItem(KEY_STORE) ? ` -H "authorization: Bearer $FREEBIND_API_KEY"` : "";
  $("curl").textContent = `curl -s ${location.origin}/search${auth} -H 'content-type: application/json' -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`;
}

async function loadCollections(select) {
  const collections = listOf(await api("GET", "/collections"), "collections");
  $("first-run").hidden = collections.length > 0;  // an empty server: offer the demo, open the form
  if (!collections.length) $("new-collection").open = true;
  $("collection").innerHTML = collections.map((c) => {
    const name = typeof c === "string" ? c : c.name;
    const count = c.count !== undefined ? ` (${c.count})` : "";
    const space = (c && c.space) || "";
    return `<option value="${escapeHtml(name)}" data-space="${escapeHtml(space)}" ${name === select ? "selected" : ""}>${escapeHtml(name)}${count}</option>`;
  }).join("");
  followCollectionSpace();
}

// A collection's items live in its own space: the sliders (bonds, presets) must be that space's.
function followCollectionSpace() {
  const option = $("collection").selectedOptions[0];
  const space = option && option.dataset.space;
  if (space && state.space && space !== state.space.name && state.spaces.some((s) => s.name === space)) {
    $("space").value = space;
    selectSpace(space);
  }
}

async function createCollection() {
  showError("");
  const name = $("new-name").value.trim();
  if (!/^[A-Za-z0-9_-]+$/.test(name)) return showError("Collection name: letters, digits, _ and - only.");
  const files = [...$("new-files").files, ...(state.dropped || [])];
  const texts = $("new-texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
  try {
    await api("POST", "/collections", { name, space: $("space").value });
    const items = texts.map((text, i) => ({ id: `text-${i}`, text, metadata: { text } }));
    for (const file of files) {
      const uri = await fileAsDataUri(file);
      if (file.type.startsWith("image/")) items.push({ id: file.name, image: uri, metadata: { name: file.name, thumbnail: await thumbnail(file) } });
      else items.push({ id: file.name, audio: uri, metadata: { name: file.name, audio: keepable(uri) } });
    }
    for (const batch of batches(items, 16, 8e6)) {
      await api("POST", `/collections/${encodeURIComponent(name)}/items`, { items: batch });
    }
    await loadCollections(name);
  } catch (error) {
    showError(error.message);
  }
}

// The demo collection: shipped photos (served by /playground/media), English texts and a tone made here,
// added through the API like any upload. A query in another language then finds the English items.
async function loadDemo() {
  showError("");
  $("load-demo").disabled = true;
  $("demo-status").textContent = "Embedding the demo items…";
  try {
    const demo = await (await fetch("playground/demo.json")).json();
    const items = demo.texts.map((text, i) => ({ id: `text-${i}`, text, metadata: { text } }));
    for (const photo of demo.photos) {
      const blob = await (await fetch(photo.url)).blob();
      items.push({ id: photo.id, image: await fileAsDataUri(blob),
                   metadata: { name: photo.caption, text: photo.caption, credit: photo.credit, thumbnail: await thumbnail(blob) } });
    }
    const tone = toneWavDataUri(440, 0.5, 8000);  // 11 KB as a data URI: small enough to keep for playback
    items.push({ id: demo.tone.id, audio: tone, metadata: { name: demo.tone.caption, text: demo.tone.caption, audio: keepable(tone) } });
    try {
      await api("POST", "/collections", { name: demo.collection, space: $("space").value });
    } catch (error) {
      if (!/exists/i.test(error.message)) throw error;  // loaded before: add the items again (same ids)
    }
    for (const batch of batches(items, 16, 8e6)) await api("POST", `/collections/${demo.collection}/items`, { items: batch });
    await loadCollections(demo.collection);
    $("demo-status").textContent = `${items.length} items in "${demo.collection}". Try a query in another language:`;
    $("query-text").value = "eine Blume im Garten";
    state.query = await readQuery();
    renderMixing();
    await runSearch();
  } catch (error) {
    $("demo-status").textContent = "";
    showError(error.message);
  } finally {
    $("load-demo").disabled = false;
  }
}

// A sine tone as a 16-bit mono WAV data URI: audio with no speech in it, which the starter space says so of.
function toneWavDataUri(frequency, seconds, rate = 16000) {
  const n = Math.round(seconds * rate), view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) view.setInt16(44 + 2 * i, Math.round(9000 * Math.sin(2 * Math.PI * frequency * i / rate)), true);
  const bytes = new Uint8Array(view.buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return `data:audio/wav;base64,${btoa(binary)}`;
}

// Requests of at most `count` items and about `bytes` of JSON: a few phone photos (data URIs, 4/3 of the
// file size) would otherwise pass the server's body limit (32 MiB by default) and fail the whole batch.
function* batches(items, count, bytes) {
  let batch = [], size = 0;
  for (const item of items) {
    const length = JSON.stringify(item).length;
    if (batch.length && (batch.length >= count || size + length > bytes)) { yield batch; batch = []; size = 0; }
    batch.push(item);
    size += length;
  }
  if (batch.length) yield batch;
}

async function readQuery() {
  const file = $("query-file").files[0];
  if (file) return { [file.type.startsWith("audio/") ? "audio" : "image"]: await fileAsDataUri(file) };
  const text = $("query-text").value.trim();
  return text ? { text } : null;
}

function scheduleSearch() {
  renderMixing();
  clearTimeout(state.searchTimer);
  if (state.query) state.searchTimer = setTimeout(runSearch, 150);
}

async function runSearch() {
  showError("");
  if (!state.query) return showError("Type a query or choose a file first.");
  if (!$("collection").value) return showError("Choose or make a collection first.");
  const body = { collection: $("collection").value, query: state.query, top_k: Number($("top-k").value), mixing: currentMixing() };
  const ticket = (state.lastRequest = Symbol("search"));
  try {
    const data = await api("POST", "/search", body);
    if (ticket !== state.lastRequest) return; // a newer slider position already answered
    $("fingerprint").textContent = `fingerprint ${data.fingerprint || ""}`;
    const note = describeNote(data.query_note);
    $("query-note").hidden = !note;
    $("query-note").textContent = note ? `Your query: ${note}` : "";
    renderResults(data.results || []);
  } catch (error) {
    showError(error.message);
  }
}

function renderResults(results) {
  const list = $("results");
  list.innerHTML = "";
  for (const [rank, r] of results.entries()) {
    const li = document.createElement("li");
    li.dataset.id = r.id;
    const meta = r.metadata || {};
    let media = "";
    const thumbnail = mediaUrl(meta.thumbnail, "image"), audio = mediaUrl(meta.audio, "audio");
    if (thumbnail) media = `<img src="${escapeHtml(thumbnail)}" alt="${escapeHtml(meta.name || r.id)}">`;
    else if (audio) media = `<audio controls src="${escapeHtml(audio)}" aria-label="${escapeHtml(meta.name || r.id)}"></audio>`;
    const snippet = meta.text || meta.title || meta.name || "";
    const note = describeNote(meta.note);
    li.innerHTML = `${media}<div><span class="rank">#${rank + 1}</span><span class="score">${r.score.toFixed(3)}</span> · ${escapeHtml(r.modality || "")}</div>
      <div class="id">${escapeHtml(String(r.id))}</div><div class="small">${escapeHtml(String(snippet)).slice(0, 160)}</div>
      ${note ? `<div class="note">${escapeHtml(note)}</div>` : ""}`;
    list.appendChild(li);
  }
  if (!results.length) list.innerHTML = "<li>No results.</li>";
}

// An encoder's note in words: "no speech detected" means the vector stands for silence, so a score
// against it says little (a clip of a dog barking is not "about" anything to a speech model).
function describeNote(note) {
  if (typeof note !== "string" || !note) return "";
  if (/no speech/i.test(note)) return "no speech: the starter space hears words only, so this score says little";
  return note;
}

// Metadata is whatever any API client stored: a media URL is used only as a data URI of its kind or an
// http(s) URL, and every value is escaped before it meets innerHTML.
function mediaUrl(value, kind) {
  if (typeof value !== "string") return null;
  return value.startsWith(`data:${kind}/`) || /^https?:\/\//i.test(value) ? value : null;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function wireDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    state.dropped = [...(state.dropped || []), ...e.dataTransfer.files];
    drop.textContent = `${state.dropped.length} file(s) ready`;
  });
}

async function start() {
  wireDrop();
  $("save-key").addEventListener("click", () => {
    localStorage.setItem(KEY_STORE, $("api-key").value.trim());
    $("auth").hidden = true;
    showError("");
    load();
  });
  $("space").addEventListener("change", (e) => selectSpace(e.target.value));
  $("collection").addEventListener("change", () => { followCollectionSpace(); renderMixing(); });
  $("preset").addEventListener("change", () => { buildSliders(); scheduleSearch(); });
  $("create").addEventListener("click", createCollection);
  $("load-demo").addEventListener("click", loadDemo);
  $("search").addEventListener("click", async () => { state.query = await readQuery(); renderMixing(); runSearch(); });
  $("query-text").addEventListener("keydown", async (e) => { if (e.key === "Enter") { $("query-file").value = ""; state.query = await readQuery(); renderMixing(); runSearch(); } });
  $("copy-curl").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("curl").textContent));
  await load();
}

async function load() {
  try {
    await loadSpaces();
    await loadCollections();
    renderMixing();
  } catch (error) {
    showError(error.message);
  }
}

start();
