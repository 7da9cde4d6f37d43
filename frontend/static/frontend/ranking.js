// The ranking widget: keyboard first, drag and drop as well, nothing lost.
//
// The labeler's work on an item lives in localStorage under its assignment id from the first
// keystroke, together with the idempotency key of its submission: a reload, a lost connection or
// an expired session all resend the same key, so the server records the item once.

const container = document.getElementById("item-container");
const csrf = { token: document.querySelector('meta[name="csrf-token"]').content };
const DRAFT_PREFIX = "pp:draft:";
const DRAFT_MAX_AGE_MS = 3 * 24 * 3600 * 1000;
const RETRY_MS = 2000;
// Refusals after which this item can never be saved (``ranking_submit``'s 409s and a missing item):
// the draft is dropped and the page offers the next item instead of sending it again. A new code
// for that in the service belongs here too (tests/frontend/test_ranking_widget_codes.py).
const ITEM_GONE_CODES = ["already_submitted", "already_skipped", "not_found", "lease_expired", "set_complete"];

// Submit -> next item visible, in ms, for the browser tests and the benchmark.
window.ppTimings = window.ppTimings || [];

let item = null;
let pendingAfterLogin = null;

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function readDraft(id) {
  try {
    return JSON.parse(localStorage.getItem(DRAFT_PREFIX + id)) || null;
  } catch {
    return null;
  }
}

function saveDraft() {
  if (!item) return;
  try {
    localStorage.setItem(DRAFT_PREFIX + item.data.assignment_id, JSON.stringify(item.state));
  } catch {
    // A full or disabled storage only costs the reload safety net; ranking still works.
  }
}

function dropDraft(id) {
  localStorage.removeItem(DRAFT_PREFIX + id);
}

function pruneDrafts(currentId) {
  const now = Date.now();
  for (let i = localStorage.length - 1; i >= 0; i--) {
    const key = localStorage.key(i);
    if (!key || !key.startsWith(DRAFT_PREFIX) || key === DRAFT_PREFIX + currentId) continue;
    const draft = readDraft(key.slice(DRAFT_PREFIX.length));
    if (!draft || now - (draft.started || 0) > DRAFT_MAX_AGE_MS) localStorage.removeItem(key);
  }
}

const $ = (selector, root = document) => root.querySelector(selector);

function setText(selector, text) {
  const el = $(selector);
  if (el) el.textContent = text;
}

function showError(message) {
  setText("#item-error", message || "");
}

function showStatus(message) {
  setText("#item-status", message || "");
}

function init() {
  const dataEl = document.getElementById("item-data");
  if (!dataEl) {
    item = null;
    return;
  }
  const data = JSON.parse(dataEl.textContent);
  const draft = readDraft(data.assignment_id) || {};
  item = {
    data,
    cards: Array.from(document.querySelectorAll("#item .card")),
    state: {
      key: draft.key || newKey(),
      started: draft.started || Date.now(),
      ranks: draft.ranks || {},
      scores: draft.scores || {},
      flags: draft.flags || {},
      comment: draft.comment || "",
      choice: draft.choice || null,
    },
    sending: false,
  };
  saveDraft();
  pruneDrafts(data.assignment_id);
  restoreInputs();
  render();
  if (Object.keys(draft).length > 2) showStatus("Your draft of this item was restored.");
  const firstOpen = item.cards.findIndex((card) => !item.state.ranks[card.dataset.responseId]);
  focusCard(firstOpen >= 0 ? firstOpen : 0);
  tick();
}

function restoreInputs() {
  const { scores, flags, comment } = item.state;
  for (const card of item.cards) {
    const id = card.dataset.responseId;
    if (scores[id]) {
      const radio = card.querySelector(`input[type=radio][value="${scores[id]}"]`);
      if (radio) radio.checked = true;
    }
    for (const box of card.querySelectorAll("input[type=checkbox]")) {
      box.checked = (flags[id] || []).includes(box.value);
    }
    if ((flags[id] || []).length) card.querySelector("details.flags")?.setAttribute("open", "");
  }
  const textarea = $("#comment");
  if (textarea) textarea.value = comment;
}

function letterOf(id) {
  return item.data.letters[item.data.response_ids.indexOf(Number(id))];
}

function chip(id) {
  const el = document.createElement("span");
  el.className = "chip";
  el.draggable = true;
  el.dataset.responseId = id;
  el.textContent = letterOf(id);
  el.title = `Response ${letterOf(id)}: drag to a rank`;
  return el;
}

function render() {
  if (!item) return;
  const { ranks, choice } = item.state;
  for (const card of item.cards) {
    const rank = ranks[card.dataset.responseId];
    const tied = rank && Object.values(ranks).filter((r) => r === rank).length > 1;
    card.dataset.rank = rank || "";
    card.classList.toggle("ranked", Boolean(rank));
    card.querySelector(".rank-badge").textContent = rank ? `rank ${rank}${tied ? " (tie)" : ""}` : "not ranked";
  }
  const rows = document.querySelectorAll("#item .rank-row");
  for (const row of rows) {
    const slot = row.querySelector(".rank-slot");
    slot.replaceChildren();
    const rank = Number(row.dataset.rank);
    for (const id of item.data.response_ids) {
      if ((ranks[id] || 0) === rank) slot.appendChild(chip(id));
    }
    row.classList.toggle("tie", rank > 0 && slot.children.length > 1);
  }
  for (const button of document.querySelectorAll("#item .choice")) {
    button.setAttribute("aria-pressed", String(button.dataset.choice === choice));
  }
}

function tick() {
  if (!item) return;
  const seconds = Math.floor((Date.now() - item.state.started) / 1000);
  setText("#timer", `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`);
}
setInterval(tick, 1000);

function focusedIndex() {
  const card = document.activeElement && document.activeElement.closest && document.activeElement.closest(".card");
  return card ? item.cards.indexOf(card) : -1;
}

function focusCard(index) {
  if (!item || !item.cards.length) return;
  const clamped = Math.max(0, Math.min(item.cards.length - 1, index));
  item.cards[clamped].focus({ preventScroll: false });
}

function setRank(id, rank) {
  if (rank) item.state.ranks[id] = rank;
  else delete item.state.ranks[id];
  showError("");
  saveDraft();
  render();
}

function setScore(id, score) {
  item.state.scores[id] = score;
  const radio = document.querySelector(`#item input[name="score-${id}"][value="${score}"]`);
  if (radio) radio.checked = true;
  saveDraft();
}

function setChoice(choice) {
  item.state.choice = choice;
  showError("");
  saveDraft();
  render();
}

// The server wants dense ranks (1, 2, 3 with ties sharing one); the labeler may leave gaps.
function denseRanks() {
  const used = [...new Set(Object.values(item.state.ranks))].sort((a, b) => a - b);
  const dense = new Map(used.map((rank, index) => [rank, index + 1]));
  return Object.fromEntries(Object.entries(item.state.ranks).map(([id, rank]) => [id, dense.get(rank)]));
}

function problems() {
  const { ranks, scores, choice } = item.state;
  const ids = item.data.response_ids;
  if (item.data.mode === "pairwise") {
    if (!choice) return "Choose A, B, tie or both bad before you submit.";
  } else {
    const open = ids.filter((id) => !ranks[id]).map(letterOf);
    if (open.length) return `Rank every response before you submit: ${open.join(", ")} ${open.length > 1 ? "have" : "has"} no rank yet.`;
  }
  if (item.data.require_likert) {
    const open = ids.filter((id) => !scores[id]).map(letterOf);
    if (open.length) return `Give every response a Likert score: ${open.join(", ")} ${open.length > 1 ? "have" : "has"} none yet.`;
  }
  return "";
}

function payload() {
  const { key, started, scores, flags, comment, choice } = item.state;
  const body = { idempotency_key: key, scores, flags, comment, time_spent_ms: Math.max(0, Math.round(Date.now() - started)) };
  if (item.data.mode === "pairwise") body.choice = choice;
  else body.ranks = denseRanks();
  return body;
}

function setSending(sending) {
  item.sending = sending;
  for (const id of ["#submit", "#skip"]) {
    const button = $(id);
    if (button) button.disabled = sending;
  }
}

async function refreshCsrf() {
  const response = await fetch(container.dataset.csrfUrl, { credentials: "same-origin" });
  csrf.token = (await response.json()).csrf;
}

// POST one item action; retries on a lost connection and after a new login, with the same body.
async function send(url, body, startedAt, csrfRetried = false) {
  const assignmentId = item.data.assignment_id;
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf.token, "X-Requested-With": "fetch" },
      body: JSON.stringify(body),
    });
  } catch {
    showStatus("Connection lost. Your work is kept in this browser and is sent again when the connection is back.");
    const retry = () => {
      window.removeEventListener("online", retry);
      clearTimeout(timer);
      send(url, body, startedAt);
    };
    const timer = setTimeout(retry, RETRY_MS);
    window.addEventListener("online", retry);
    return;
  }
  if (response.status === 401) {
    pendingAfterLogin = () => send(url, body, startedAt);
    showStatus("Your session has expired; log in again to send this item.");
    openLogin();
    return;
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (response.status === 403 && answer === null && !csrfRetried) {
    // A CSRF failure: the token changed with a login in another tab.
    await refreshCsrf();
    return send(url, body, startedAt, true);
  }
  if (!response.ok) {
    setSending(false);
    showStatus("");
    const detail = (answer && answer.detail) || `The server answered ${response.status}; try again.`;
    showError(detail);
    const code = answer && answer.code;
    if (ITEM_GONE_CODES.includes(code)) {
      dropDraft(assignmentId);
      showNextLink();
    }
    return;
  }
  dropDraft(assignmentId);
  if (answer.redirect) {
    window.location.assign(answer.redirect);
    return;
  }
  container.innerHTML = answer.html;
  init();
  requestAnimationFrame(() => {
    window.ppTimings.push(performance.now() - startedAt);
    document.dispatchEvent(new CustomEvent("pp:item", { detail: { assignmentId: answer.assignment_id } }));
  });
}

function showNextLink() {
  const error = $("#item-error");
  const link = document.createElement("a");
  link.href = window.location.pathname;
  link.textContent = " Load the next item.";
  error.appendChild(link);
}

function submit() {
  if (!item || item.sending) return;
  const problem = problems();
  if (problem) {
    showError(problem);
    return;
  }
  const startedAt = performance.now();
  setSending(true);
  showError("");
  showStatus("Sending…");
  send(item.data.submit_url, payload(), startedAt);
}

function openSkip() {
  if (!item || item.sending) return;
  const dialog = $("#skip-dialog");
  $("#skip-form").reset();
  setText("#skip-error", "");
  dialog.showModal();
}

function skipReason(form) {
  const choice = form.querySelector("input[name=reason]:checked");
  if (!choice) return "";
  if (choice.value === "other") return form.elements.other.value.trim();
  return choice.value;
}

function openLogin() {
  const dialog = $("#login-dialog");
  setText("#login-error", "");
  if (!dialog.open) dialog.showModal();
  dialog.querySelector("input[name=password]").focus();
}

async function login(form) {
  try {
    await refreshCsrf();
    const response = await fetch(container.dataset.loginUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf.token },
      body: new FormData(form),
    });
    const answer = await response.json();
    if (!response.ok) {
      setText("#login-error", answer.detail || "Could not log in.");
      return;
    }
    csrf.token = answer.csrf;
  } catch {
    setText("#login-error", "No connection to the server; try again in a moment.");
    return;
  }
  form.reset();
  $("#login-dialog").close();
  showStatus("Logged in again; sending your work…");
  const pending = pendingAfterLogin;
  pendingAfterLogin = null;
  if (pending) pending();
}

function toggleGuideline() {
  const panel = $("#guideline-panel");
  panel.hidden = !panel.hidden;
  document.body.classList.toggle("with-guideline", !panel.hidden);
}

// --- events, bound once on the container so they survive item swaps -----------------------

container.addEventListener("change", (event) => {
  if (!item) return;
  const target = event.target;
  const card = target.closest(".card");
  if (!card) return;
  const id = card.dataset.responseId;
  if (target.type === "radio") {
    item.state.scores[id] = Number(target.value);
  } else if (target.type === "checkbox") {
    item.state.flags[id] = Array.from(card.querySelectorAll("input[type=checkbox]:checked"), (box) => box.value);
    if (!item.state.flags[id].length) delete item.state.flags[id];
  }
  saveDraft();
});

container.addEventListener("input", (event) => {
  if (item && event.target.id === "comment") {
    item.state.comment = event.target.value;
    saveDraft();
  }
});

document.addEventListener("click", (event) => {
  const target = event.target.closest("button, [data-action]");
  if (!target) return;
  if (target.id === "submit") submit();
  else if (target.id === "skip") openSkip();
  else if (target.dataset.choice && item) setChoice(target.dataset.choice);
  else if (target.dataset.action === "guideline") toggleGuideline();
  else if (target.dataset.action === "close-dialog") target.closest("dialog").close();
});

$("#skip-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const reason = skipReason(event.target);
  if (!reason) {
    setText("#skip-error", "Choose a reason or write one.");
    return;
  }
  $("#skip-dialog").close();
  setSending(true);
  showStatus("Skipping…");
  send(item.data.skip_url, { reason }, performance.now());
});

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  login(event.target);
});

let dragged = null;
container.addEventListener("dragstart", (event) => {
  const source = event.target.closest && event.target.closest(".card, .chip");
  if (!source || !item) return;
  dragged = source.dataset.responseId;
  event.dataTransfer.setData("text/plain", dragged);
  event.dataTransfer.effectAllowed = "move";
});
container.addEventListener("dragover", (event) => {
  const row = event.target.closest && event.target.closest(".rank-row");
  if (!row) return;
  event.preventDefault();
  row.classList.add("drop-target");
});
container.addEventListener("dragleave", (event) => {
  const row = event.target.closest && event.target.closest(".rank-row");
  if (row) row.classList.remove("drop-target");
});
container.addEventListener("drop", (event) => {
  const row = event.target.closest && event.target.closest(".rank-row");
  if (!row || !item) return;
  event.preventDefault();
  row.classList.remove("drop-target");
  const id = event.dataTransfer.getData("text/plain") || dragged;
  if (id) setRank(id, Number(row.dataset.rank));
  dragged = null;
});

document.addEventListener("keydown", (event) => {
  if (document.querySelector("dialog[open]")) return;
  const target = event.target;
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    submit();
    return;
  }
  if (target.matches("textarea, select, input[type=text], input[type=password]")) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  if (key === "g" || key === "G") {
    toggleGuideline();
    return;
  }
  if (key === "Escape" && !$("#guideline-panel").hidden) {
    toggleGuideline();
    return;
  }
  if (key === "?") {
    $("#help-dialog").showModal();
    return;
  }
  if (!item) return;
  if (target.matches("input") && key.startsWith("Arrow")) return;
  const index = focusedIndex();
  const card = item.cards[index];
  if (key === "Enter") {
    if (target.matches("button, a, summary")) return;
    event.preventDefault();
    submit();
  } else if (key === "s" || key === "S") {
    event.preventDefault();
    openSkip();
  } else if (["ArrowRight", "ArrowDown", "j"].includes(key)) {
    event.preventDefault();
    focusCard(index + 1);
  } else if (["ArrowLeft", "ArrowUp", "k"].includes(key)) {
    event.preventDefault();
    focusCard(index < 0 ? 0 : index - 1);
  } else if (event.shiftKey && /^Digit[1-7]$/.test(event.code)) {
    if (card) setScore(card.dataset.responseId, Number(event.code.slice(5)));
  } else if (item.data.mode === "pairwise") {
    const choice = { a: "a", b: "b", t: "tie", x: "both_bad" }[key.toLowerCase()];
    if (choice) setChoice(choice);
  } else if (/^[0-9]$/.test(key) && card) {
    const rank = Number(key);
    if (rank > item.data.k) {
      showError(`Ranks go from 1 to ${item.data.k}.`);
      return;
    }
    setRank(card.dataset.responseId, rank);
    if (rank) focusCard(index + 1);
  } else if ((key === "Backspace" || key === "Delete") && card) {
    setRank(card.dataset.responseId, 0);
  }
});

init();
