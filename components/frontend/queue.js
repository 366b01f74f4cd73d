// The live queue, drawn in the browser from a JSON view model (components/queue.py).
//
// Data in: { view, resent, feed, source }. The push channel's functions (feed*) are
// components/frontend/feed.js, put in front of this file by components/scripts.py. `view` is the queue as the script saw it;
// afterwards the page listens to the push channel (`feed`, an EventSource) and, when
// told something changed, fetches a fresh view model from `source`. It also fetches on
// (re)connect (the server may have restarted, the tab may have slept) and when the tab
// becomes visible again. Views are ordered by (boot, seq): an older one never replaces
// a newer one. Cards are keyed by creative and task id, so nothing is ever drawn twice.
//
// Clicks go back to Python as trigger events: open, favourite, retry, resubmit,
// reference, kit. Every string from outside (prompts, HiAPI's messages, authors) is put in
// the DOM with textContent, never innerHTML.

const STATES = new WeakMap();

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function elapsedText(secs) {
  const s = Math.max(0, Math.floor(secs));
  return s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function newer(a, b) {
  // Is view `a` newer than `b`? A different boot means the server restarted: take it.
  if (!b) return true;
  if (a.v.boot !== b.v.boot) return true;
  return a.v.seq >= b.v.seq;
}

function button(label, cls, onClick, opts = {}) {
  const b = el("button", `q-btn ${cls || ""}`.trim(), label);
  b.type = "button";
  if (opts.title) b.title = opts.title;
  if (opts.disabled) b.disabled = true;
  b.addEventListener("click", (e) => {
    e.preventDefault();
    onClick(b);
  });
  return b;
}

function textCheck(output) {
  const box = el("div", `q-check st-key-textcheck_${output.id}`);
  for (const line of output.check || []) {
    const row = el("div", "q-check-line");
    if (line.mark) {
      row.appendChild(el("span", line.mark === "✓" ? "q-ok" : "q-bad", line.mark));
      row.appendChild(document.createTextNode(" " + line.text));
    } else {
      row.classList.add("q-caption");
      row.textContent = line.text;
    }
    box.appendChild(row);
    if (line.note) box.appendChild(el("div", "q-caption", line.note));
  }
  return box;
}

function placeholder(task) {
  const box = el("div", "q-shape");
  const inner = el("div", "q-shape-inner");
  const [w, h] = task.shape;
  inner.style.width = `${w}px`;
  inner.style.height = `${h}px`;
  box.appendChild(inner);
  return box;
}

function drawTask(state, task, creative) {
  const card = el("div", `q-task st-key-task_${task.id}`);
  card.dataset.sid = String(task.id);
  const top = el("div", "q-top");
  top.appendChild(el("span", `q-badge q-${task.color}`, task.label));
  const meta = el("span", "q-caption q-meta");
  meta.appendChild(document.createTextNode(`${task.ratio} · ${task.res} · `));
  const clock = el("span", "q-elapsed", elapsedText(task.elapsed));
  if (task.running) {
    clock.dataset.base = String(task.elapsed);
    clock.dataset.at = String(state.drawnAt);
  }
  meta.appendChild(clock);
  top.appendChild(meta);
  card.appendChild(top);

  for (const o of task.outputs) {
    if (o.kind === "kept") {
      const thumb = el("button", "q-thumb");
      thumb.type = "button";
      thumb.title = "Open";
      thumb.setAttribute("aria-label", `Open image ${o.size}`);
      const img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = "";
      img.src = state.base + o.thumb;
      thumb.appendChild(img);
      thumb.addEventListener("click", () => state.trigger("open", { id: o.id, sequence: state.view.sequence }));
      card.appendChild(thumb);
      card.appendChild(el("div", "q-caption", o.size));
      card.appendChild(textCheck(o));
      const row = el("div", `q-actions st-key-qact_${o.id}`);
      row.appendChild(
        button("Open", "q-open", () => state.trigger("open", { id: o.id, sequence: state.view.sequence })),
      );
      const dl = el("a", "q-btn", "Download");
      dl.href = state.base + o.download;
      dl.title = "The original PNG, with its recipe inside";
      row.appendChild(dl);
      row.appendChild(
        button(o.fav ? "★" : "☆", "q-fav", () => state.trigger("favourite", { id: o.id, on: !o.fav }), {
          title: o.fav ? "Remove from favourites" : "Add to favourites",
        }),
      );
      row.appendChild(
        button("Use as reference", "q-ref", () => state.trigger("reference", { id: o.id }), {
          title: "Use as reference: build the next image on this one",
        }),
      );
      if (o.final) {
        row.appendChild(
          button(o.final, "q-final", () => state.trigger("final", { task: task.id }), {
            title: "Send this recipe again at Final quality (one image is charged at the Final price).",
            disabled: Array.isArray(state.resent[String(task.id)]),
          }),
        );
      }
      card.appendChild(row);
    } else if (o.kind === "trashed") {
      card.appendChild(el("div", "q-caption", "Deleted from the Gallery (Undo while the bar shows)."));
    } else if (o.kind === "failed") {
      card.appendChild(el("div", "q-alert q-warn", `Image could not be kept: ${o.error}`));
    }
  }
  if (task.warning) card.appendChild(el("div", "q-alert q-warn", task.warning));
  if (task.error) {
    const box = el("div", "q-alert q-error");
    box.appendChild(el("strong", "", task.error.code));
    box.appendChild(document.createTextNode(` — ${task.error.message}`));
    card.appendChild(box);
  }
  if (task.shape) card.appendChild(placeholder(task));
  if (task.note) card.appendChild(el("div", "q-caption", task.note));
  if (task.retry) {
    const outcome = state.resent[String(task.id)];
    const row = el("div", "q-actions");
    row.appendChild(
      button("Retry", "q-primary", (b) => {
        b.disabled = true; // one click, one creative (the token makes a second one a no-op anyway)
        state.trigger("retry", { id: task.id });
      }, {
        disabled: Array.isArray(outcome),
        title: "Send the same prompt, ratio and resolution again, as a new creative (one image is charged).",
      }),
    );
    row.appendChild(button("Edit and resubmit", "", () => state.trigger("resubmit", { id: task.id })));
    card.appendChild(row);
    if (Array.isArray(outcome)) card.appendChild(el("div", "q-caption", "Sent again: it is at the top of the queue."));
    else if (outcome) card.appendChild(el("div", "q-alert q-error", outcome));
  }
  return card;
}

function drawCreative(state, creative) {
  const node = el("div", `q-creative st-key-creative_${creative.id}`);
  node.dataset.cid = creative.id;
  const head = el("div", "q-head");
  head.appendChild(el("div", "q-prompt", creative.prompt));
  head.appendChild(el("div", "q-caption q-time", creative.time));
  node.appendChild(head);
  // Who asked for it (the team login is on): the identity provider's text, set as text only.
  if (creative.by !== undefined) node.appendChild(el("div", "q-caption q-by", `by ${creative.by}`));
  const grid = el("div", "q-grid");
  grid.style.setProperty("--cols", String(Math.min(4, creative.tasks.length)));
  for (const task of creative.tasks) grid.appendChild(drawTask(state, task, creative));
  node.appendChild(grid);
  if (creative.kit) {
    const row = el("div", "q-actions");
    row.appendChild(button("Delivery kit", "q-kit", () => state.trigger("kit", { creative: creative.id })));
    node.appendChild(row);
  }
  return node;
}

function render(state) {
  const view = state.view;
  state.drawnAt = performance.now();
  const list = state.list;
  if (!view.creatives.length) {
    list.replaceChildren(el("div", "q-caption q-empty", "Nothing generated yet. Write a prompt, pick ratios and press Generate."));
    state.nodes.clear();
    return;
  }
  const resent = JSON.stringify(state.resent);
  const keep = new Map();
  const order = [];
  for (const c of view.creatives) {
    // Redraw a creative only when what it shows changed: its images are not reloaded otherwise.
    const sig = JSON.stringify(c) + resent;
    let node = state.nodes.get(c.id);
    if (!node || node.__sig !== sig) {
      node = drawCreative(state, c);
      node.__sig = sig;
    }
    keep.set(c.id, node);
    order.push(node);
  }
  state.nodes = keep;
  list.replaceChildren(...order);
  state.root.dataset.seq = String(view.v.seq);
  state.root.dataset.boot = view.v.boot;
}

function accept(state, view) {
  if (!view || !Array.isArray(view.creatives) || !newer(view, state.view)) return;
  state.view = view;
  render(state);
}

function refresh(state) {
  return feedSerial(state, async () => {
    try {
      const res = await fetch(state.source, { credentials: "same-origin", cache: "no-store" });
      if (res.ok) accept(state, await res.json());
    } finally {
      state.root.dataset.fetches = String((Number(state.root.dataset.fetches) || 0) + 1);
    }
  });
}

function onNews(state, msg) {
  if (feedOnlyKits(msg)) return;
  if (msg && state.view && msg.boot === state.view.v.boot && msg.seq <= state.view.v.seq) return;
  refresh(state);
}

function tick(state) {
  const now = performance.now();
  for (const span of state.root.querySelectorAll(".q-elapsed[data-base]")) {
    const secs = Number(span.dataset.base) + (now - Number(span.dataset.at)) / 1000;
    const text = elapsedText(secs);
    if (span.textContent !== text) span.textContent = text;
  }
}

function onKey(state, e) {
  if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
  const thumbs = [...state.root.querySelectorAll(".q-thumb")];
  const at = thumbs.indexOf(e.target);
  if (at < 0) return;
  const next = thumbs[at + (e.key === "ArrowRight" ? 1 : -1)];
  if (next) {
    e.preventDefault();
    next.focus();
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let state = STATES.get(parentElement);
  if (!state) {
    const root = el("div", "studio-queue");
    const list = el("div", "q-list");
    root.appendChild(list);
    parentElement.appendChild(root);
    state = { root, list, nodes: new Map(), view: null, resent: {}, closed: false };
    STATES.set(parentElement, state);
    root.addEventListener("keydown", (e) => onKey(state, e));
    feedOnVisible(state, () => refresh(state));
    state.ticker = setInterval(() => tick(state), 1000);
  }
  state.trigger = setTriggerValue;
  state.base = data.base || "";
  state.source = state.base + data.source;
  const feed = state.base + data.feed;
  state.resent = data.resent || {};
  if (newer(data.view, state.view)) state.view = data.view;
  render(state); // also when only `resent` changed; unchanged creatives are kept as they are
  feedUse(state, feed, (msg) => onNews(state, msg));
  return () => {
    feedClose(state);
    clearInterval(state.ticker);
    STATES.delete(parentElement);
    state.root.remove();
  };
}
