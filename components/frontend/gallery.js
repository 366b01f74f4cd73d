// The gallery grid, drawn in the browser from a JSON view model (components/gallery.py).
//
// Data in: { view, selected, base, feed, source, paged, size, empty }. `view` is a window of the
// filtered gallery as the script saw it ({ v, total, offset, items }).
// - Scroll view: one scroll through every match. Only the rows near the viewport are in
//   the DOM (a spacer as tall as all rows keeps the scrollbar true); items not yet loaded
//   are fetched a page (`size`) at a time from `source` (&offset=&limit=).
// - Paged view: the items of one page, nothing fetched beyond it.
// Either way the page listens to the push channel (`feed`, an EventSource; the feed*
// functions are components/frontend/feed.js, put in front of this file) and, when told
// something changed, refetches what it shows; the answers of an older generation are
// dropped. Cards are keyed by output id, so an image is never drawn twice and a card that
// did not change is kept as it is (its thumbnail is not reloaded).
//
// While nothing matches it shows `empty` and keeps listening, so the first image arrives
// like every later one (no rerun).
//
// Clicks go back to Python as trigger events: open, select, favourite, reference, edit.
// Keyboard: a thumbnail takes focus; ← → ↑ ↓ move between them (scrolling as needed),
// Enter opens. Every string from outside (prompts, HiAPI's messages, authors) is put in the
// DOM with textContent, never innerHTML.

const STATES = new WeakMap();
const GAP = 16; // px between cards, both ways
const MIN_CARD = 220; // px: narrower than this and the grid has fewer columns
const OVERSCAN = 1; // rows drawn above and below the viewport
const SEQUENCE = 100; // ids the lightbox steps through, each side of the opened one

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

const newer = feedNewer;

function button(label, cls, onClick, opts = {}) {
  const b = el("button", `g-btn ${cls || ""}`.trim(), label);
  b.type = "button";
  if (opts.title) b.title = opts.title;
  if (opts.aria) b.setAttribute("aria-label", opts.aria);
  b.addEventListener("click", (e) => {
    e.preventDefault();
    onClick(b);
  });
  return b;
}

// -- cards ---------------------------------------------------------------------------

function keyOf(item) {
  return item.kind === "failed" ? `f${item.key}` : `k${item.id}`;
}

function sequenceAround(state, index) {
  const ids = [];
  const from = Math.max(0, index - SEQUENCE);
  for (let i = from; i < Math.min(state.total, index + SEQUENCE + 1); i++) {
    const it = state.items.get(i);
    if (!it) {
      if (i < index) ids.length = 0; // keep the run of loaded items that holds `index`
      else break;
    } else if (it.kind !== "failed") ids.push(it.id);
  }
  return ids;
}

function open(state, item) {
  const index = state.index.get(keyOf(item));
  state.trigger("open", { id: item.id, sequence: sequenceAround(state, index ?? 0) });
}

function byLine(item) {
  // Who made it (the team login is on): text from the identity provider, set as text only.
  const line = el("div", "g-by", `by ${item.by}`);
  line.title = String(item.by);
  return line;
}

function keptCard(state, item) {
  const card = el("div", `g-card st-key-card_${item.id}`);
  card.dataset.id = String(item.id);
  if (state.selected.has(item.id)) card.classList.add("g-selected");
  const thumb = el("div", "g-thumb");
  thumb.tabIndex = 0;
  thumb.setAttribute("role", "img");
  thumb.setAttribute("aria-label", item.prompt);
  thumb.title = "Open (Enter)";
  const img = el("img");
  img.loading = "lazy";
  img.decoding = "async";
  img.alt = "";
  img.src = state.base + item.thumb;
  thumb.appendChild(img);
  thumb.addEventListener("click", () => open(state, item));
  card.appendChild(thumb);

  const meta = el("div", "g-meta");
  meta.appendChild(el("span", "g-badge g-blue", item.ratio));
  meta.appendChild(el("span", "g-badge g-violet", item.res));
  if (item.fav) meta.appendChild(el("span", "g-badge g-orange", "★"));
  if (item.check) {
    const chip = el("span", `g-badge g-${item.check[1]}`, item.check[0]);
    chip.title = item.check[2];
    meta.appendChild(chip);
  }
  meta.appendChild(el("span", "g-caption", item.when));
  card.appendChild(meta);
  card.appendChild(el("div", "g-prompt", item.prompt));
  if (item.by !== undefined) card.appendChild(byLine(item));

  const row = el("div", "g-actions");
  row.appendChild(button("Open", "g-open", () => open(state, item)));
  row.appendChild(
    button(item.fav ? "★" : "☆", "g-fav", () => state.trigger("favourite", { id: item.id, on: !item.fav }), {
      title: item.fav ? "Remove from favourites" : "Add to favourites",
    }),
  );
  row.appendChild(
    button("+", "g-ref", () => state.trigger("reference", { id: item.id }), {
      title: "Use as reference in the Studio",
      aria: "Use as reference",
    }),
  );
  const dl = el("a", "g-btn g-dl", "⤓");
  dl.href = state.base + item.download;
  dl.title = "Download the original";
  dl.setAttribute("aria-label", "Download");
  row.appendChild(dl);
  const sel = el("label", "g-select");
  const box = el("input");
  box.type = "checkbox";
  box.checked = state.selected.has(item.id);
  box.addEventListener("change", () => {
    // Outlined at the click; the script's answer (the bulk bar) follows.
    if (box.checked) state.selected.add(item.id);
    else state.selected.delete(item.id);
    card.classList.toggle("g-selected", box.checked);
    card.__sig = null;
    state.trigger("select", { id: item.id, on: box.checked });
  });
  sel.appendChild(box);
  sel.appendChild(el("span", "", "Select"));
  row.appendChild(sel);
  card.appendChild(row);
  return card;
}

function failedCard(state, item) {
  const card = el("div", `g-card g-failed st-key-failed_${item.key}`);
  card.appendChild(el("div", "g-alert", item.error));
  const meta = el("div", "g-meta");
  meta.appendChild(el("span", "g-badge g-blue", item.ratio));
  meta.appendChild(el("span", "g-caption", item.when));
  card.appendChild(meta);
  card.appendChild(el("div", "g-prompt", item.prompt));
  if (item.by !== undefined) card.appendChild(byLine(item));
  const row = el("div", "g-actions");
  row.appendChild(button("Edit in Studio", "", () => state.trigger("edit", { sid: item.sid })));
  card.appendChild(row);
  return card;
}

function placeholderCard() {
  const card = el("div", "g-card g-loading");
  card.appendChild(el("div", "g-thumb"));
  return card;
}

function cardFor(state, item) {
  const sig = JSON.stringify(item) + (state.selected.has(item.id) ? "+" : "");
  const key = keyOf(item);
  let node = state.nodes.get(key);
  if (!node || node.__sig !== sig) {
    node = item.kind === "failed" ? failedCard(state, item) : keptCard(state, item);
    node.__sig = sig;
  }
  return node;
}

// -- layout and windowing ---------------------------------------------------------------

function columns(state) {
  const w = state.root.clientWidth || 1000;
  return Math.max(1, Math.min(4, Math.floor((w + GAP) / (MIN_CARD + GAP))));
}

function range(state) {
  // [first, end) of the indices to draw.
  if (state.paged) return [state.offset, state.offset + state.count];
  const cols = state.cols;
  const rows = Math.ceil(state.total / cols);
  const top = state.list.getBoundingClientRect().top;
  const viewTop = Math.max(0, -top);
  const viewBottom = Math.max(0, window.innerHeight - top);
  const first = Math.max(0, Math.floor(viewTop / state.rowH) - OVERSCAN);
  const last = Math.min(rows - 1, Math.floor(viewBottom / state.rowH) + OVERSCAN);
  return [first * cols, Math.min(state.total, (last + 1) * cols)];
}

function render(state) {
  state.frame = 0;
  state.cols = columns(state);
  const cols = state.cols;
  state.grid.style.setProperty("--cols", String(cols));
  if (!state.paged) {
    const rows = Math.ceil(state.total / cols);
    state.list.style.height = rows ? `${rows * state.rowH - GAP}px` : "0px";
  }
  const [from, to] = range(state);
  const keep = new Map();
  const index = new Map();
  const order = [];
  const missing = new Set();
  for (let i = from; i < to; i++) {
    const item = state.items.get(i);
    if (!item) {
      order.push(placeholderCard());
      missing.add(Math.floor(i / state.size));
      continue;
    }
    const key = keyOf(item);
    if (keep.has(key)) continue; // never the same image twice, even mid-refresh
    const node = cardFor(state, item);
    keep.set(key, node);
    index.set(key, i);
    order.push(node);
  }
  state.nodes = keep;
  state.index = index;
  state.grid.style.transform = state.paged ? "" : `translateY(${Math.floor(from / cols) * state.rowH}px)`;
  const focused = state.grid.contains(document.activeElement) ? document.activeElement : null;
  state.grid.replaceChildren(...order);
  if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
  state.empty.hidden = state.total > 0;
  state.root.dataset.total = String(state.total);
  state.root.dataset.from = String(from);
  state.root.dataset.to = String(to);
  if (state.v) state.root.dataset.seq = String(state.v.seq);
  // The real row height, once a card is drawn (cards have a fixed layout).
  const card = state.grid.querySelector(".g-card:not(.g-loading)");
  if (card) {
    const h = card.offsetHeight + GAP;
    if (h > GAP && Math.abs(h - state.rowH) > 1) {
      state.rowH = h;
      schedule(state);
    }
  }
  for (const page of missing) load(state, page);
}

function schedule(state) {
  if (!state.frame) state.frame = requestAnimationFrame(() => render(state));
}

// -- data -------------------------------------------------------------------------------

function take(state, view, replace) {
  if (replace) state.items = new Map();
  view.items.forEach((item, i) => state.items.set(view.offset + i, item));
  state.total = view.total;
  showCount(state);
  if (state.paged) {
    state.offset = view.offset;
    state.count = view.items.length;
  }
  if (!state.v || newer(view.v, state.v)) state.v = view.v;
}

// The page's "N images" caption (app_pages/gallery.py, drawn by the script) follows the pushed
// views too, so it never reads fewer than the cards under it.
function showCount(state) {
  if (!state.noun) return;
  const line = document.querySelector(".st-key-g_count p");
  if (!line) return;
  const text = `${state.total.toLocaleString("en-US")} ${state.noun}${state.total === 1 ? "" : "s"}`;
  if (line.textContent !== text) line.textContent = text;
}

async function get(state, offset, limit) {
  const sep = state.source.includes("?") ? "&" : "?";
  const res = await fetch(`${state.source}${sep}offset=${offset}&limit=${limit}`, {
    credentials: "same-origin",
    cache: "no-store",
  });
  state.root.dataset.fetches = String((Number(state.root.dataset.fetches) || 0) + 1);
  return res.ok ? res.json() : null;
}

async function load(state, page) {
  // A page of the scroll view that came into sight.
  if (state.paged || state.loading.has(page)) return;
  state.loading.add(page);
  const gen = state.gen;
  try {
    const view = await get(state, page * state.size, state.size);
    if (view && gen === state.gen && !state.closed) {
      take(state, view, false);
      schedule(state);
    }
  } catch (_) {
    // The server is away: the feed's reconnect brings a refresh.
  } finally {
    if (gen === state.gen) state.loading.delete(page);
  }
}

function refresh(state) {
  // What is shown, fetched again in one answer; events meanwhile ask for one more afterwards.
  return feedSerial(state, async () => {
    state.gen += 1;
    state.loading = new Set();
    const gen = state.gen;
    let offset, limit;
    if (state.paged) {
      [offset, limit] = [state.offset, state.size];
    } else {
      const [from, to] = range(state);
      offset = Math.floor(from / state.size) * state.size;
      limit = Math.min(200, Math.max(state.size, to - offset));
    }
    const view = await get(state, offset, limit);
    if (view && gen === state.gen && !state.closed) {
      take(state, view, true); // offsets moved (a new image is first): drop what is not refetched
      render(state);
    }
  });
}

function onNews(state, msg) {
  if (feedOnlyKits(msg)) return;
  if (msg && state.v && !newer(msg, state.v)) return;
  refresh(state);
}

// -- keyboard ---------------------------------------------------------------------------

function scrollerOf(node) {
  for (let p = node.parentElement; p; p = p.parentElement) {
    const o = getComputedStyle(p).overflowY;
    if ((o === "auto" || o === "scroll") && p.scrollHeight > p.clientHeight) return p;
  }
  return document.scrollingElement || document.documentElement;
}

function focusIndex(state, i) {
  if (i < 0 || i >= state.total) return;
  if (state.paged && (i < state.offset || i >= state.offset + state.count)) return;
  const find = () => {
    const item = state.items.get(i);
    const node = item && state.nodes.get(keyOf(item));
    return node && node.querySelector(".g-thumb");
  };
  let thumb = find();
  if (!thumb && !state.paged) {
    // Not drawn: scroll its row into view, draw, then focus it.
    const top = state.list.getBoundingClientRect().top + Math.floor(i / state.cols) * state.rowH;
    scrollerOf(state.root).scrollBy(0, top - window.innerHeight / 3);
    render(state);
    thumb = find();
  }
  if (thumb) {
    thumb.focus();
    thumb.scrollIntoView({ block: "nearest" });
  }
}

function onKey(state, e) {
  const thumb = e.target.closest && e.target.closest(".g-thumb");
  if (!thumb) return;
  const card = thumb.closest(".g-card");
  const key = [...state.nodes.entries()].find(([, n]) => n === card)?.[0];
  const at = key === undefined ? undefined : state.index.get(key);
  if (at === undefined) return;
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    open(state, state.items.get(at));
    return;
  }
  const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -state.cols, ArrowDown: state.cols }[e.key];
  if (!step || e.altKey || e.ctrlKey || e.metaKey) return;
  e.preventDefault();
  focusIndex(state, at + step);
}

// -- mount ------------------------------------------------------------------------------

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let state = STATES.get(parentElement);
  if (!state) {
    const root = el("div", "studio-gallery");
    const empty = el("div", "g-empty");
    empty.setAttribute("role", "status");
    const list = el("div", "g-list");
    const grid = el("div", "g-grid");
    list.appendChild(grid);
    root.appendChild(empty);
    root.appendChild(list);
    parentElement.appendChild(root);
    state = {
      root, empty, list, grid, nodes: new Map(), index: new Map(), items: new Map(), loading: new Set(),
      gen: 0, total: 0, rowH: 400, cols: 4, v: null, closed: false, selected: new Set(),
    };
    STATES.set(parentElement, state);
    root.addEventListener("keydown", (e) => onKey(state, e));
    state.onScroll = () => schedule(state);
    document.addEventListener("scroll", state.onScroll, { capture: true, passive: true });
    window.addEventListener("resize", state.onScroll);
    state.resize = new ResizeObserver(state.onScroll);
    state.resize.observe(root);
    feedOnVisible(state, () => refresh(state));
  }
  state.trigger = setTriggerValue;
  state.base = data.base || "";
  state.selected = new Set(data.selected || []);
  state.size = data.size || 60;
  state.noun = data.noun || "";
  if (state.empty.textContent !== (data.empty || "")) state.empty.textContent = data.empty || "";
  const source = state.base + data.source;
  const paged = Boolean(data.paged);
  const view = data.view;
  if (source !== state.source || paged !== state.paged || (paged && view.offset !== state.offset)) {
    // Other filters or another page: start again from the script's window.
    state.source = source;
    state.paged = paged;
    state.gen += 1;
    state.loading = new Set();
    state.v = null;
    take(state, view, true);
    // Another page opens at the top (the pager sits below the grid); other filters at the grid's start.
    const top = state.list.getBoundingClientRect().top;
    if (paged && state.mounted) scrollerOf(state.root).scrollTo({ top: 0 });
    else if (top < 0) scrollerOf(state.root).scrollBy(0, top - 80);
  } else if (newer(view.v, state.v) || view.total !== state.total) {
    state.gen += 1;
    state.loading = new Set();
    take(state, view, true);
  }
  state.mounted = true;
  state.list.classList.toggle("g-paged", paged);
  render(state);
  const feed = state.base + data.feed;
  feedUse(state, feed, (msg) => onNews(state, msg));
  return () => {
    feedClose(state);
    cancelAnimationFrame(state.frame);
    document.removeEventListener("scroll", state.onScroll, { capture: true });
    window.removeEventListener("resize", state.onScroll);
    state.resize.disconnect();
    STATES.delete(parentElement);
    state.root.remove();
  };
}
