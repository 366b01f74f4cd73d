// The push channel as every live component uses it (queue, gallery, watch).
//
// Streamlit's components v2 take a component's JavaScript as one inline string (run as
// an ES module from a blob, so it cannot import a sibling file by a relative path):
// components/scripts.py puts this file in front of each component's own, and these
// functions are that component's from then on. What they keep lives on the component's
// `state` object, and the page's open channels on `window.__studioFeeds`.
//
// - feedUse(state, url, onMessage): listens to the push channel at `url` and calls
//   onMessage(msg, name) for `hello` (on every (re)connect, and once on joining) and
//   `change` messages; `state.root.dataset.connected` says whether it is open. One page
//   holds ONE EventSource per URL, shared by all its components (`window`'s registry):
//   a browser keeps at most six connections to a server over HTTP/1.1, and each open
//   EventSource holds one for good. The browser reconnects by itself, except after an
//   answer that was not an event stream (a 401 or 503): then it is reopened here after
//   two seconds.
// - feedClose(state): leaves the channel (closed when its last listener leaves).
// - feedOnVisible(state, fn): fn() whenever the tab becomes visible again (it may have
//   slept through messages).
// - feedSerial(state, fn): runs the async fn one at a time; calls made meanwhile ask for
//   one more run afterwards (a burst of events becomes at most two fetches).
// - feedNewer(a, b): is (boot, seq) `a` newer than `b`? A different boot means the server
//   restarted: take it.

function feedNewer(a, b) {
  if (!b) return true;
  if (a.boot !== b.boot) return true;
  return a.seq > b.seq;
}

function feedChannels() {
  if (!window.__studioFeeds) window.__studioFeeds = new Map();
  return window.__studioFeeds;
}

function feedTell(channel, msg, name) {
  for (const sub of [...channel.subs]) {
    sub.state.root.dataset.connected = "1";
    try {
      sub.onMessage(msg, name);
    } catch (_) {} // one component's trouble is not the others'
  }
}

function feedOpen(channel) {
  if (!channel.subs.size) return;
  const es = new EventSource(channel.url, { withCredentials: true });
  channel.es = es;
  const on = (name) => (e) => {
    let msg = null;
    try {
      msg = JSON.parse(e.data);
    } catch (_) {}
    channel.open = true;
    // What a component joining the open channel is told first: the latest (boot, seq) and outage.
    if (msg) channel.last = { boot: msg.boot, seq: msg.seq, outage: msg.outage, problem: msg.problem };
    feedTell(channel, msg, name);
  };
  es.addEventListener("hello", on("hello"));
  es.addEventListener("change", on("change"));
  es.onerror = () => {
    channel.open = false;
    for (const sub of channel.subs) sub.state.root.dataset.connected = "0";
    if (es.readyState === EventSource.CLOSED && channel.subs.size) {
      channel.retryTimer = setTimeout(() => feedOpen(channel), 2000);
    }
  };
}

function feedUse(state, url, onMessage) {
  // Join the page's channel at `url` (leaving another one first); a no-op if already in it.
  if (state.sub && state.sub.channel.url === url) {
    state.sub.onMessage = onMessage;
    return;
  }
  feedLeave(state);
  const channels = feedChannels();
  let channel = channels.get(url);
  const fresh = !channel;
  if (fresh) {
    channel = { url, subs: new Set(), es: null, open: false, last: null, retryTimer: null };
    channels.set(url, channel);
  }
  const sub = { state, onMessage, channel };
  channel.subs.add(sub);
  state.sub = sub;
  if (fresh) {
    feedOpen(channel);
  } else if (channel.open && channel.last) {
    // Joining an open channel: the hello this component missed, with the latest (boot, seq).
    state.root.dataset.connected = "1";
    onMessage({ ...channel.last }, "hello");
  }
}

function feedLeave(state) {
  const sub = state.sub;
  if (!sub) return;
  state.sub = null;
  const channel = sub.channel;
  channel.subs.delete(sub);
  if (!channel.subs.size) {
    if (channel.es) channel.es.close();
    clearTimeout(channel.retryTimer);
    feedChannels().delete(channel.url);
  }
}

function feedClose(state) {
  state.closed = true;
  feedLeave(state);
  if (state.onVisible) document.removeEventListener("visibilitychange", state.onVisible);
}

function feedOnVisible(state, fn) {
  state.onVisible = () => {
    if (document.visibilityState === "visible") fn();
  };
  document.addEventListener("visibilitychange", state.onVisible);
}

async function feedSerial(state, fn) {
  if (state.fetching) {
    state.again = true;
    return;
  }
  state.fetching = true;
  try {
    do {
      state.again = false;
      await fn();
    } while (state.again && !state.closed);
  } catch (_) {
    // The server is away: the feed's reconnect brings a fresh run.
  } finally {
    state.fetching = false;
  }
}

function feedOnlyKits(msg) {
  // A message that tells only of delivery kits' progress: nothing a queue or gallery shows.
  return Boolean(msg && Array.isArray(msg.events) && msg.events.length && msg.events.every((e) => e.kind === "kit"));
}
