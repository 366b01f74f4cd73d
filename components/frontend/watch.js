// A watch: an element that reruns its fragment when the push channel says something it
// shows changed, or when a moment it waits for comes (components/watch.py). No timer
// reruns anything.
//
// Data in: { v, feed, sids, oids, kinds, job, unknown, gap, due, text }.
// - `v` is the bus's (boot, seq) the script read before it read what it drew: a change
//   at or before it is already drawn. A `hello` newer than it (a reconnect, a restart, a
//   change made while the script ran) asks for one rerun.
// - A `change` concerns this watch when one of its events names one of `sids` (tasks),
//   `oids` (images), `job`, or is of one of `kinds`; when the message cannot tell
//   (`events` is null: too many, or forgotten) or the event names nothing (another
//   process committed), it concerns the watch if `unknown`.
// - Reruns are at least `gap` ms apart: the ones asked for meanwhile become one.
// - `due` ms from now the fragment reruns once (an undo window ending).
// - `text`, if given, is shown with {s} replaced by the seconds left until `due`.
// - `outage`, if not null, is the outage the page was drawn with ("" for none): a message
//   saying another one shows its `problem` sentence at once if one went away (the page is
//   left as it is, so typing goes on), and reruns it when it is back.
// The push channel's functions (feed*) are components/frontend/feed.js, put in front.

const STATES = new WeakMap();

function concerns(state, msg) {
  if (!msg || !Array.isArray(msg.events)) return state.unknown;
  for (const e of msg.events) {
    if (state.kinds.has(e.kind)) return true;
    if (e.sid !== undefined && state.sids.has(e.sid)) return true;
    if (e.oid !== undefined && state.oids.has(e.oid)) return true;
    if (state.job && e.job === state.job) return true;
    if (e.sid === undefined && e.oid === undefined && e.job === undefined && state.unknown) return true;
  }
  return false;
}

function rerun(state, why) {
  if (state.closed) return;
  const wait = state.last + state.gap - Date.now();
  if (wait > 0) {
    if (!state.pending) state.pending = setTimeout(() => rerun(state, why), wait);
    return;
  }
  clearTimeout(state.pending);
  state.pending = null;
  state.last = Date.now();
  state.root.dataset.reruns = String((Number(state.root.dataset.reruns) || 0) + 1);
  state.trigger("changed", why);
}

function onNews(state, msg, name) {
  if (!msg || !state.v) return;
  if (state.outage !== null && typeof msg.outage === "string") {
    if (msg.outage === state.outage && !(state.problem && msg.outage === "")) {
      showProblem(state, "");
    } else if (msg.outage === "" || state.outage !== "") {
      // Back (also after an outage that began and was told here while the page was drawn
      // without it: parts may be missing, Generate waiting), or another outage: drawn again.
      rerun(state, "outage");
      return;
    } else {
      // Newly away: said here at once, and the page is left as it is, so nothing being
      // typed is interrupted; the next run draws the page's own banner.
      showProblem(state, msg.problem || "");
    }
  }
  if (!state.news) return; // an outage watch only: other news is not its business
  if (!feedNewer(msg, state.v)) return; // already drawn
  if (name === "hello" || msg.boot !== state.v.boot || concerns(state, msg)) rerun(state, msg.seq);
}

function showProblem(state, text) {
  state.problem = text;
  state.root.classList.toggle("w-outage", Boolean(text));
  state.root.classList.toggle("w-hidden", !text && !state.text);
  if (text && state.root.textContent !== text) state.root.textContent = text;
  if (!text && !state.text) state.root.textContent = "";
}

function showLeft(state) {
  if (!state.text || state.dueAt === null) return;
  const secs = Math.max(0, Math.ceil((state.dueAt - Date.now()) / 1000));
  const text = state.text.replace("{s}", String(secs));
  if (state.root.textContent !== text) state.root.textContent = text;
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let state = STATES.get(parentElement);
  if (!state) {
    const root = document.createElement("span");
    root.className = "studio-watch";
    parentElement.appendChild(root);
    state = { root, closed: false, last: 0, pending: null, dueAt: null, due: null, ticker: null };
    STATES.set(parentElement, state);
  }
  state.trigger = setTriggerValue;
  state.v = data.v;
  state.sids = new Set(data.sids || []);
  state.oids = new Set(data.oids || []);
  state.kinds = new Set(data.kinds || []);
  state.job = data.job || null;
  state.unknown = Boolean(data.unknown);
  state.gap = Number(data.gap) || 0;
  state.text = data.text || "";
  state.outage = typeof data.outage === "string" ? data.outage : null;
  if (state.outage !== null) showProblem(state, ""); // drawn again: the page's own banner says it now
  state.root.classList.toggle("w-hidden", !state.text && !state.problem);
  state.root.dataset.seq = String(data.v ? data.v.seq : 0);
  if (data.due !== state.due) {
    // A new deadline from the script (each run sends the time left as it sees it).
    state.due = data.due;
    clearTimeout(state.dueTimer);
    clearInterval(state.ticker);
    state.dueAt = null;
    if (typeof data.due === "number") {
      state.dueAt = Date.now() + data.due;
      state.dueTimer = setTimeout(() => rerun(state, "due"), Math.max(0, data.due));
      if (state.text) state.ticker = setInterval(() => showLeft(state), 250);
    }
  }
  showLeft(state);
  state.news = Boolean(state.sids.size || state.oids.size || state.kinds.size || state.job || state.unknown);
  const listens = state.news || state.outage !== null;
  if (listens && data.feed) feedUse(state, data.feed, (msg, name) => onNews(state, msg, name));
  return () => {
    feedClose(state);
    clearTimeout(state.pending);
    clearTimeout(state.dueTimer);
    clearInterval(state.ticker);
    STATES.delete(parentElement);
    state.root.remove();
  };
}
