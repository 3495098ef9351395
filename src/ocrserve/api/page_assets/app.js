// The page at /: sends one file to POST /ocr and shows what came back.
//
// Plain DOM code, no framework and no build step, so that it ships inside the Python package
// as it is written. Nothing is put into the page as HTML: every text from a result goes in
// through textContent, so a recognised "<script>" stays text.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const KEY_STORE = "ocrserve.apiKey";
// Formats a browser draws by itself. A PDF or a TIFF is shown as a white sheet instead: drawing
// those would take pdf.js or a TIFF decoder, which the service does not ship.
const DRAWABLE = new Set(["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"]);
const EXTENSIONS = { json: "json", text: "txt", hocr: "hocr.html", alto: "alto.xml", pdf: "pdf" };

const $ = (id) => document.getElementById(id);

// What was last read: downloads send this file with these options again, even after the user
// has picked another file or changed the form.
let last = null;

init();

function init() {
  const key = $("key");
  // sessionStorage, not localStorage: the key is forgotten when the tab closes.
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  key.addEventListener("input", () => {
    if (key.value) sessionStorage.setItem(KEY_STORE, key.value);
    else sessionStorage.removeItem(KEY_STORE);
  });
  $("file").addEventListener("change", () => showChosen($("file").files[0]));
  setUpDrop($("drop"), $("file"));
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    read();
  });
  $("min_confidence").addEventListener("input", applyFilter);
  for (const button of document.querySelectorAll(".downloads button")) {
    button.addEventListener("click", () => download(button.dataset.format, button));
  }
  loadLanguages();
}

// --- the form ------------------------------------------------------------------------------

// The drop zone is the file input's label: clicking it, or Enter/Space on the focused input,
// opens the file picker; dropping a file puts it into the same input.
function setUpDrop(zone, input) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      showChosen(input.files[0]);
    }
  });
}

function showChosen(file) {
  $("file-name").textContent = file ? `${file.name} (${formatBytes(file.size)})` : "No file chosen";
}

// The server names its languages; the engine it runs decides which (a second engine adds more).
// When the list cannot be had, "Server default" stays the one choice and reading still works.
async function loadLanguages() {
  const select = $("lang");
  try {
    const response = await fetch("/languages");
    if (!response.ok) throw await apiError(response);
    const { langs, default: fallback } = await response.json();
    select.replaceChildren(
      ...langs.map((code) => {
        const label = code === fallback ? `${code} (default)` : code;
        return new Option(label, code, code === fallback, code === fallback);
      }),
    );
  } catch (error) {
    console.warn("no language list:", error);
  }
}

// Only what the user chose is sent: an empty value means the server's own default.
function chosenOptions() {
  const options = {};
  for (const name of ["lang", "orientation", "pdf_text", "cls"]) {
    if ($(name).value) options[name] = $(name).value;
  }
  return options;
}

// --- talking to the server -----------------------------------------------------------------

async function post(file, options, format) {
  const body = new FormData();
  body.append("image", file, file.name);
  for (const [name, value] of Object.entries(options)) body.append(name, value);
  if (format) body.append("format", format);
  const headers = {};
  const key = $("key").value.trim();
  if (key) headers["X-API-Key"] = key; // keys off: no header, and the server asks for none
  const response = await fetch("/ocr", { method: "POST", body, headers });
  if (!response.ok) throw await apiError(response);
  return response;
}

// The API answers every error as {"error": {"code", "message"}}; a proxy in front of it may
// answer with a page of its own, so the status line is the fallback.
async function apiError(response) {
  const error = new Error(response.statusText || "request failed");
  error.status = response.status;
  try {
    const body = await response.json();
    if (body && body.error) {
      error.code = body.error.code;
      error.message = body.error.message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return error;
}

async function read() {
  const file = $("file").files[0];
  if (!file) {
    showError({ message: "Choose an image or a PDF first." });
    $("file").focus();
    return;
  }
  const options = chosenOptions();
  setBusy(true, `Reading ${file.name}…`);
  showError(null);
  try {
    const result = await (await post(file, options)).json();
    if (last && last.url) URL.revokeObjectURL(last.url);
    const url = DRAWABLE.has(file.type) ? URL.createObjectURL(file) : null;
    last = { file, options, result, url };
    showResult(result, url);
    setBusy(false, `Read ${file.name} in ${result.timings.total.toFixed(2)} s.`);
  } catch (error) {
    setBusy(false, "");
    showError(error);
  }
}

// JSON and text are in the result already. hOCR, ALTO and the searchable PDF are written by the
// server: the same file and options go again with a format, and the result cache answers them
// without reading the document a second time.
async function download(format, button) {
  if (!last) return;
  const stem = last.file.name.replace(/\.[^.]*$/, "") || "document";
  let blob;
  button.disabled = true;
  try {
    if (format === "json") {
      blob = new Blob([JSON.stringify(last.result, null, 2)], { type: "application/json" });
    } else if (format === "text") {
      blob = new Blob([last.result.text], { type: "text/plain;charset=utf-8" });
    } else {
      blob = await (await post(last.file, last.options, format)).blob();
    }
    save(blob, `${stem}.${EXTENSIONS[format]}`);
    showError(null);
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function save(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // Revoked later, not at once: the browser may still be reading the blob into the file.
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

// --- showing the result --------------------------------------------------------------------

function showResult(result, url) {
  const pages = $("pages");
  pages.replaceChildren(...result.pages.map((page) => renderPage(page, page.page === 1 ? url : null)));
  const parts = [
    `${result.page_count} ${result.page_count === 1 ? "page" : "pages"}`,
    `average confidence ${percent(result.avg_confidence)}`,
    `${result.timings.total.toFixed(2)} s`,
  ];
  if (result.truncated) parts.push(`only the first ${result.page_count} of ${result.pages_total} read`);
  $("summary").textContent = parts.join(" · ");
  $("sheet-note").hidden = Boolean(url) || result.pages.length === 0;
  $("result").hidden = false;
  applyFilter();
}

function renderPage(page, url) {
  const node = $("page-template").content.firstElementChild.cloneNode(true);
  node.querySelector(".page-title").textContent = `Page ${page.page}`;
  const meta = [`read by ${page.engine}`];
  if (page.source === "pdf") meta.push("from the PDF's text layer");
  if (page.angle) meta.push(`turned ${page.angle}° and read upright`);
  meta.push(`${page.lines.length} ${page.lines.length === 1 ? "line" : "lines"}`);
  meta.push(`${page.width} × ${page.height} px`);
  node.querySelector(".page-meta").textContent = meta.join(" · ");
  node.querySelector(".page-model").textContent = page.model ? `model ${page.model}` : "";

  const info = node.querySelector(".hover-info");
  if (page.lines.length === 0) info.textContent = "No text was found on this page.";
  const list = node.querySelector(".lines");
  const svg = svgElement("svg", { viewBox: `0 0 ${page.width} ${page.height}`, role: "img" });
  svg.setAttribute("aria-label", `Page ${page.page} with ${page.lines.length} line boxes`);
  if (url) {
    svg.append(svgElement("image", { href: url, width: page.width, height: page.height }));
  } else {
    svg.append(svgElement("rect", { class: "paper", width: page.width, height: page.height }));
  }
  const boxes = page.lines.map((line, i) => {
    if (!url) svg.append(sheetText(line));
    const box = svgElement("polygon", { class: "box", points: line.box.map((p) => p.join(",")).join(" ") });
    const title = svgElement("title");
    title.textContent = `${line.text} (confidence ${percent(line.confidence)})`;
    box.append(title);
    box.dataset.confidence = line.confidence;

    const item = document.createElement("li");
    item.dataset.confidence = line.confidence;
    const text = document.createElement("span");
    text.textContent = line.text;
    const confidence = document.createElement("span");
    confidence.className = "confidence";
    confidence.textContent = percent(line.confidence);
    const row = document.createElement("span"); // the list item stays a list item: its number shows
    row.className = "row";
    row.append(text, confidence);
    item.append(row);
    list.append(item);

    // The box and its line light up together, wherever the pointer is.
    const focus = (on) => {
      box.classList.toggle("active", on);
      item.classList.toggle("active", on);
      if (on) info.textContent = `Line ${i + 1}: confidence ${percent(line.confidence)}`;
    };
    for (const element of [box, item]) {
      element.addEventListener("pointerenter", () => focus(true));
      element.addEventListener("pointerleave", () => focus(false));
    }
    return box;
  });
  svg.append(...boxes); // after the sheet's texts: the boxes take the pointer
  node.querySelector(".sheet").append(svg);
  return node;
}

// A line's text in its box on the white sheet: as tall as the box, stretched to its width. A box
// much taller than wide holding a few characters is a line set vertically (a form's margin):
// its text is turned a quarter to run up the box, as such lines mostly do.
function sheetText(line) {
  const xs = line.box.map((p) => p[0]);
  const ys = line.box.map((p) => p[1]);
  const [left, top] = [Math.min(...xs), Math.min(...ys)];
  let [width, height] = [Math.max(...xs) - left, Math.max(...ys) - top];
  const upright = height > 1.5 * width && line.text.length > 2;
  const [cx, cy] = [left + width / 2, top + height / 2];
  if (upright) [width, height] = [height, width];
  const text = svgElement("text", {
    class: "sheet-text",
    x: cx - width / 2,
    y: cy + height * 0.3, // the baseline, leaving room for descenders
    "font-size": height * 0.85,
    textLength: Math.max(width, 1),
    lengthAdjust: "spacingAndGlyphs",
  });
  if (upright) text.setAttribute("transform", `rotate(-90 ${cx} ${cy})`);
  text.textContent = line.text;
  return text;
}

// Hides what falls below the chosen confidence; the result itself is kept whole.
function applyFilter() {
  const minimum = Number($("min_confidence").value) || 0;
  for (const element of document.querySelectorAll("#pages [data-confidence]")) {
    element.classList.toggle("filtered", Number(element.dataset.confidence) < minimum);
  }
}

// --- small things --------------------------------------------------------------------------

function svgElement(name, attributes = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function setBusy(busy, message) {
  $("submit").disabled = busy;
  $("form").setAttribute("aria-busy", String(busy));
  $("status").textContent = message;
}

function showError(error) {
  const box = $("error");
  box.hidden = !error;
  if (!error) return;
  const title = document.createElement("strong");
  title.textContent = error.status
    ? `The server answered ${error.status}${error.code ? ` (${error.code})` : ""}`
    : "Could not read the file";
  const message = document.createElement("p");
  message.textContent = error.message;
  box.replaceChildren(title, message);
}

function percent(value) {
  return `${(value * 100).toFixed(1)}%`;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
