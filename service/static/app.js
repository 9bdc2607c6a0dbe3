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

function thumbnail(file) {
  // A small JPEG kept in the item's metadata, so results can show the picture without a media store.
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      const scale = 160 / Math.max(img.width, img.height);
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(img.width * scale));
      canvas.height = Math.max(1, Math.round(img.height * scale));
      canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
      resolve(canvas.toDataURL("image/jpeg", 0.8));
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
    .concat(presets.map((p) => `<option value="${p}" ${p === fallback ? "selected" : ""}>${p}</option>`)).join("");
  buildSliders();
}

function factorFor(bond, modality) {
  const preset = $("preset").value;
  const fromPreset = preset && state.space.presets[preset] && state.space.presets[preset][bond.name];
  if (fromPreset && modality in fromPreset) return fromPreset[modality];
  return (bond.defaults && bond.defaults[modality]) || 0;
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
  if ($("preset").value) mixing.preset = $("preset").value;
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
      else items.push({ id: file.name, audio: uri, metadata: { name: file.name, audio: uri.length < 2e6 ? uri : null } });
    }
    for (const batch of batches(items, 16, 8e6)) {
      await api("POST", `/collections/${encodeURIComponent(name)}/items`, { items: batch });
    }
    await loadCollections(name);
  } catch (error) {
    showError(error.message);
  }
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
    li.innerHTML = `${media}<div><span class="rank">#${rank + 1}</span><span class="score">${r.score.toFixed(3)}</span> · ${escapeHtml(r.modality || "")}</div>
      <div class="id">${escapeHtml(String(r.id))}</div><div class="small">${escapeHtml(String(snippet)).slice(0, 160)}</div>`;
    list.appendChild(li);
  }
  if (!results.length) list.innerHTML = "<li>No results.</li>";
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
