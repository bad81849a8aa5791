// The behest console: a runs list and a run page over the HTTP API, no dependencies.
// Routes (in the hash, so the server serves one page): #/ the runs list, #/runs/<id> a run.
// Live updates come from Server-Sent Events: GET /runs/watch and GET /runs/{id}/watch.

const PAGE = 25;
const STATUSES = ["pending", "session_loaded", "building_context", "calling_model",
  "waiting_for_tools", "persisting", "completed", "failed", "cancelled"];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);

const view = document.getElementById("view");
const conn = document.getElementById("conn");
let teardown = () => {};

// --- small helpers ----------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

const short = (id) => (id ? id.slice(0, 8) : "");
const num = (n) => (n ?? 0).toLocaleString("en-US");
const badge = (status) => h("span", { class: `badge s-${status}` }, status.replaceAll("_", " "));

function when(text) {
  if (!text) return "";
  const date = new Date(text);
  return date.toISOString().replace("T", " ").slice(0, 23);
}

function ago(text) {
  const seconds = Math.max(0, (Date.now() - new Date(text).getTime()) / 1000);
  if (seconds < 60) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(0)} min ago`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h ago`;
  return `${(seconds / 86400).toFixed(1)} d ago`;
}

function live(stream) {
  conn.classList.add("on");
  stream.addEventListener("error", () => conn.classList.toggle("on", stream.readyState === 1));
  stream.addEventListener("open", () => conn.classList.add("on"));
  return stream;
}

function pretty(value) {
  if (typeof value === "string") return value;
  const flat = JSON.stringify(value);
  return flat.length <= 90 ? flat : JSON.stringify(value, null, 2);
}

// --- the runs list ----------------------------------------------------------------------

function runsView(params) {
  const filters = {
    status: params.get("status") || "",
    session_id: params.get("session_id") || "",
    active: params.get("active") || "",
  };
  const cursors = (params.get("pages") || "").split(",").filter(Boolean);
  const cursor = cursors.at(-1) || "";
  const query = new URLSearchParams({ limit: PAGE });
  for (const [key, value] of Object.entries(filters)) if (value) query.set(key, value);
  if (cursor) query.set("cursor", cursor);

  const go = (changes) => {
    const next = new URLSearchParams();
    const merged = { ...filters, pages: cursors.join(","), ...changes };
    for (const [key, value] of Object.entries(merged)) if (value) next.set(key, value);
    location.hash = `#/?${next}`;
  };

  const statusSelect = h("select", { name: "status", onchange: (e) => go({ status: e.target.value, pages: "" }) },
    h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s.replaceAll("_", " "))));
  const activeSelect = h("select", { name: "active", onchange: (e) => go({ active: e.target.value, pages: "" }) },
    h("option", { value: "" }, "active and finished"),
    h("option", { value: "true", selected: filters.active === "true" }, "active only"),
    h("option", { value: "false", selected: filters.active === "false" }, "finished only"));
  const sessionInput = h("input", {
    name: "session_id", placeholder: "session id", value: filters.session_id, size: 38,
    onchange: (e) => go({ session_id: e.target.value.trim(), pages: "" }),
  });
  const tbody = h("tbody");
  const pager = h("div", { class: "pager" });
  const note = h("span", { class: "muted" });
  view.replaceChildren(
    h("section", { class: "panel" },
      h("div", { class: "toolbar" }, h("h1", {}, "Runs"), statusSelect, activeSelect, sessionInput, note),
      h("table", { class: "runs" },
        h("thead", {}, h("tr", {},
          ["run", "status", "model", "iteration", "tokens", "events", "created", "updated"].map((c) => h("th", {}, c)))),
        tbody),
      pager));

  const rows = new Map();
  const row = (state) => {
    const tr = h("tr", { "data-run": state.run_id, onclick: () => { location.hash = `#/runs/${state.run_id}`; } },
      h("td", { class: "mono" }, h("a", { href: `#/runs/${state.run_id}` }, short(state.run_id))),
      h("td", {}, badge(state.status)),
      h("td", {}, `${state.provider}/${state.model}`),
      h("td", { class: "num" }, state.iteration),
      h("td", { class: "num" }, num(state.total_usage.total_tokens)),
      h("td", { class: "num" }, num(state.event_count)),
      h("td", { title: when(state.created_at) }, ago(state.created_at)),
      h("td", { title: when(state.updated_at) }, ago(state.updated_at)));
    return tr;
  };

  let stream = null;
  let newest = null;  // created_at of the newest run listed: an older one changing is not new
  const isNewest = (state) => newest === null || Date.parse(state.created_at) >= newest;
  getJSON(`/runs?${query}`).then((page) => {
    if (page.runs.length) newest = Date.parse(page.runs[0].created_at);
    for (const state of page.runs) {
      const tr = row(state);
      rows.set(state.run_id, tr);
      tbody.append(tr);
    }
    if (!page.runs.length) tbody.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No runs match.")));
    if (cursors.length) pager.append(h("button", { onclick: () => go({ pages: cursors.slice(0, -1).join(",") }) }, "← newer"));
    if (page.next_cursor) pager.append(h("button", { onclick: () => go({ pages: [...cursors, page.next_cursor].join(",") }) }, "older →"));
    note.textContent = cursors.length ? `page ${cursors.length + 1}` : "newest first · live";
    const feed = new URLSearchParams();
    for (const [key, value] of Object.entries(filters)) if (value) feed.set(key, value);
    stream = live(new EventSource(`/runs/watch?${feed}`));
    stream.addEventListener("state", (message) => {
      const state = JSON.parse(message.data);
      const old = rows.get(state.run_id);
      if (old) {
        const tr = row(state);
        old.replaceWith(tr);
        rows.set(state.run_id, tr);
        tr.classList.add("flash");
      } else if (!cursors.length && isNewest(state)) {  // a new run: it belongs on the first page
        const tr = row(state);
        tr.classList.add("flash");
        tbody.prepend(tr);
        newest = Date.parse(state.created_at);
        rows.set(state.run_id, tr);
        while (tbody.children.length > PAGE) {
          const last = tbody.lastElementChild;
          rows.delete(last.dataset.run);
          last.remove();
        }
      }
    });
    stream.addEventListener("deleted", (message) => {
      const id = JSON.parse(message.data).run_id;
      if (rows.has(id)) rows.get(id).remove();
      rows.delete(id);
    });
  }).catch((error) => tbody.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "error" }, error.message))));
  return () => stream && stream.close();
}

// --- the run page -----------------------------------------------------------------------

function stateCard(state, label) {
  const usage = state.total_usage;
  const finish = state.last_finish && typeof state.last_finish === "object" ? state.last_finish.unknown : state.last_finish;
  const field = (name, value, cls = "") => h("div", { class: `field ${cls}` }, h("dt", {}, name), h("dd", { "data-field": name }, value));
  return h("div", { class: "card", id: "state-card" },
    h("div", { class: "card-head", "data-status": state.status }, badge(state.status), h("span", { class: "point", id: "point" }, label)),
    h("dl", {},
      field("model", `${state.provider}/${state.model}`),
      field("iteration", state.iteration),
      field("sequence", state.sequence, "mono"),
      field("events", num(state.event_count)),
      field("input tokens", num(usage.input_tokens)),
      field("output tokens", num(usage.output_tokens)),
      field("total tokens", num(usage.total_tokens), "strong"),
      field("session", h("a", { class: "mono", href: `#/?session_id=${state.session_id}` }, short(state.session_id))),
      field("created", when(state.created_at)),
      field("updated", when(state.updated_at)),
      finish ? field("finish", finish) : null,
      state.last_error ? field("error", state.last_error, "error") : null));
}

// Timeline items: one per model turn (text assembled, tool calls inside), one per other event.
class Timeline {
  constructor(root) {
    this.root = root;
    this.turn = null;
    this.calls = new Map();
    this.usage = [];  // [sequence, cumulative input, cumulative output]
    this.totals = { input: 0, output: 0 };
  }

  // `head`: what goes on the item's first line (a node or a list); `body`: below it.
  item(cls, seq, head, ...body) {
    const node = h("li", { class: `item ${cls}`, "data-from": seq, "data-to": seq },
      h("div", { class: "item-head" }, h("span", { class: "seq" }, `#${seq}`), head, this.at), ...body);
    this.root.append(node);
    return node;
  }

  extend(node, seq) {
    node.dataset.to = seq;
  }

  add(event) {
    const p = event.payload;
    const seq = event.sequence;
    this.at = h("span", { class: "time" }, when(event.timestamp).slice(11));
    switch (p.type) {
      case "RunStarted":
        this.item("start", seq, h("b", {}, "run started"),
          h("div", { class: "detail" }, `${p.provider}/${p.model} · session ${short(p.session_id)}`,
            p.metadata ? h("pre", {}, pretty(p.metadata)) : null));
        break;
      case "ContextBuilt":
        this.item("minor", seq, `context built: ${p.message_count} messages`);
        break;
      case "ModelStarted": {
        const text = h("div", { class: "text" });
        const usage = h("span", { class: "usage" });
        const node = this.item("turn", seq, [h("b", {}, `model turn ${p.iteration}`), h("span", { class: "muted" }, `${p.provider}/${p.model}`), usage], text);
        this.turn = { node, text, usage, tools: h("div", { class: "tools" }) };
        node.append(this.turn.tools);
        break;
      }
      case "TextDelta":
        if (this.turn) { this.turn.text.textContent += p.delta; this.extend(this.turn.node, seq); }
        else this.item("minor", seq, "text", h("div", { class: "text" }, p.delta));
        break;
      case "ToolCallStarted":
      case "ToolCallDelta":
      case "ToolCallCompleted":
      case "ToolExecutionStarted":
      case "ToolExecutionFinished":
        this.tool(p, seq);
        break;
      case "UsageRecorded": {
        this.totals.input += p.usage.input_tokens;
        this.totals.output += p.usage.output_tokens;
        this.usage.push([seq, this.totals.input, this.totals.output]);
        const label = `${num(p.usage.input_tokens)} in · ${num(p.usage.output_tokens)} out`;
        if (this.turn) { this.turn.usage.textContent = label; this.extend(this.turn.node, seq); }
        else this.item("minor", seq, `usage: ${label}`);
        break;
      }
      case "AssistantMessageCommitted":
      case "ToolMessageCommitted":
        if (this.turn) this.extend(this.turn.node, seq);
        else this.item("minor", seq, p.type === "AssistantMessageCommitted" ? "assistant message committed" : "tool message committed");
        break;
      case "RunCompleted": {
        const reason = typeof p.finish_reason === "object" ? p.finish_reason.unknown : p.finish_reason;
        this.item("end ok", seq, [h("b", {}, "completed"), `${reason} after ${p.iterations} iterations`]);
        this.turn = null;
        break;
      }
      case "RunFailed":
        this.item("end bad", seq, h("b", {}, "failed"), h("div", { class: "detail error" }, p.error));
        this.turn = null;
        break;
      case "RunCancelled":
        this.item("end bad", seq, h("b", {}, "cancelled"));
        this.turn = null;
        break;
      case "DoomLoopDetected":
        this.item("alert", seq, h("b", {}, "doom loop detected"), h("div", { class: "detail" }, p.description));
        break;
      case "CompactionCircuitOpened":
        this.item("alert", seq, [h("b", {}, "compaction circuit opened"), `after ${p.consecutive_failures} failures`]);
        break;
      default:
        this.item("minor", seq, p.type);
    }
  }

  tool(p, seq) {
    let call = this.calls.get(p.call_id || p.call?.id);
    if (!call) {
      const args = h("pre", { class: "args" });
      const result = h("div", { class: "result" });
      const meta = h("span", { class: "meta" }, "called");
      const node = h("div", { class: "tool", "data-from": seq, "data-to": seq },
        h("div", { class: "tool-head" }, h("span", { class: "tool-name" }, p.tool_name || p.call?.name || "tool"), meta), args, result);
      call = { node, args, result, meta, raw: "" };
      this.calls.set(p.call_id || p.call?.id, call);
      if (this.turn) this.turn.tools.append(node);
      else this.item("minor", seq, "tool call", node);
    }
    call.node.dataset.to = seq;
    if (this.turn) this.extend(this.turn.node, seq);
    if (p.type === "ToolCallDelta") { call.raw += p.delta; call.args.textContent = call.raw; }
    if (p.type === "ToolCallCompleted") call.args.textContent = pretty(p.call.arguments);
    if (p.type === "ToolExecutionStarted") call.meta.textContent = "running…";
    if (p.type === "ToolExecutionFinished") {
      const failed = "error" in p.result;
      call.meta.textContent = `${failed ? "failed" : "ok"} · ${num(p.duration_ms)} ms`;
      call.node.classList.add(failed ? "failed" : "ok");
      call.result.replaceChildren(h("pre", { class: failed ? "error" : "" }, failed ? p.result.error : pretty(p.result.output)));
    }
  }

  // Marks where the slider is: items after it are dimmed, the one holding it is outlined.
  mark(sequence) {
    let current = null;
    for (const node of this.root.querySelectorAll("[data-from]")) {
      const from = Number(node.dataset.from);
      const to = Number(node.dataset.to);
      node.classList.toggle("future", from > sequence);
      const here = from <= sequence && sequence <= to;
      node.classList.toggle("here", here && node.classList.contains("item"));
      if (here && node.classList.contains("item")) current = node;
    }
    return current;
  }
}

function usageChart(points, last, at) {
  const width = 560, height = 150, pad = 34;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  const el = (tag, attrs) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    svg.append(node);
    return node;
  };
  const maxX = Math.max(1, last);
  const maxY = Math.max(1, ...points.map(([, i, o]) => i + o));
  const x = (s) => pad + (s / maxX) * (width - pad - 8);
  const y = (v) => height - 18 - (v / maxY) * (height - 30);
  el("line", { x1: pad, y1: y(0), x2: width - 8, y2: y(0), class: "axis" });
  el("text", { x: pad - 4, y: y(maxY) + 4, class: "tick", "text-anchor": "end" }).textContent = num(maxY);
  el("text", { x: pad - 4, y: y(0) + 4, class: "tick", "text-anchor": "end" }).textContent = "0";
  el("text", { x: width - 8, y: height - 4, class: "tick", "text-anchor": "end" }).textContent = `sequence ${last}`;
  const steps = (pick) => {
    let d = `M ${x(0)} ${y(0)}`;
    let prev = 0;
    for (const point of points) { d += ` L ${x(point[0])} ${y(prev)} L ${x(point[0])} ${y(pick(point))}`; prev = pick(point); }
    return `${d} L ${x(maxX)} ${y(prev)}`;
  };
  el("path", { d: `${steps(([, i, o]) => i + o)} L ${x(maxX)} ${y(0)} Z`, class: "area" });
  el("path", { d: steps(([, i, o]) => i + o), class: "total" });
  el("path", { d: steps(([, , o]) => o), class: "output" });
  el("line", { x1: x(at), y1: 8, x2: x(at), y2: y(0), class: "cursor" });
  return h("figure", { class: "chart-box" }, svg,
    h("figcaption", {}, h("span", { class: "key total" }, "total tokens"), h("span", { class: "key output" }, "output tokens")));
}

function runView(runId) {
  const timelineRoot = h("ol", { class: "timeline" });
  let timeline = new Timeline(timelineRoot);
  const cardBox = h("div", { class: "card-box" });
  const chartBox = h("div");
  const slider = h("input", { type: "range", min: 0, max: 0, value: 0, id: "slider", disabled: true });
  const sliderLabel = h("span", { class: "slider-label", id: "slider-label" });
  const liveButton = h("button", { id: "live", onclick: () => follow() }, "live");
  const head = h("h1", {}, "Run ", h("span", { class: "mono" }, runId));
  view.replaceChildren(
    h("section", { class: "panel" }, h("a", { href: "#/", class: "back" }, "← runs"), head),
    h("div", { class: "run" },
      h("div", { class: "side" }, cardBox,
        h("div", { class: "scrub" }, h("label", { for: "slider" }, "time"), slider, sliderLabel, liveButton),
        chartBox),
      h("div", { class: "main" }, h("h2", {}, "Timeline"), timelineRoot)));

  let current = null;       // the latest state
  let last = -1;            // the latest sequence in the timeline
  let following = true;     // the slider sits at the live end
  let stream = null;
  let request = 0;
  const times = new Map();  // sequence -> timestamp

  const drawChart = () => chartBox.replaceChildren(usageChart(timeline.usage, Math.max(last, 0), following ? last : Number(slider.value)));

  const show = (state, label) => cardBox.replaceChildren(stateCard(state, label));
  const liveLabel = () => (current && TERMINAL.has(current.status) ? "final state" : "live");

  function follow() {
    following = true;
    slider.value = last;
    sliderLabel.textContent = `sequence ${last} of ${last}`;
    if (current) show(current, liveLabel());
    timeline.mark(last);
    drawChart();
  }

  async function scrub() {
    const at = Number(slider.value);
    following = at >= last && !!current;
    sliderLabel.textContent = `sequence ${at} of ${last}` + (times.has(at) ? ` · ${when(times.get(at)).slice(11)}` : "");
    const here = timeline.mark(at);
    if (here) here.scrollIntoView({ block: "nearest" });
    drawChart();
    if (following) { show(current, liveLabel()); return; }
    const mine = ++request;
    try {
      const state = await getJSON(`/runs/${runId}?at_sequence=${at}`);
      if (mine === request) show(state, `at sequence ${at}`);
    } catch (error) {
      if (mine === request) cardBox.replaceChildren(h("div", { class: "card error" }, error.message));
    }
  }
  slider.addEventListener("input", scrub);

  let pending = null;  // live events that came while the timeline is drawn again
  let redrawnFor = -1;  // the event count the last redraw for a missed late event was for

  // A live event; a late one (below the latest, folded in its place) draws the run again.
  const took = (event) => {
    if (pending) pending.push(event);
    else if (times.has(event.sequence)) return;
    else if (event.sequence < last) redraw();
    else add(event);
  };

  async function redraw() {
    pending = [];
    timelineRoot.replaceChildren();
    timeline = new Timeline(timelineRoot);
    times.clear();
    last = -1;
    try {
      await load();
    } finally {
      const waiting = pending;
      pending = null;
      waiting.forEach(took);
      if (following) follow(); else drawChart();
    }
  }

  const add = (event) => {
    times.set(event.sequence, event.timestamp);
    timeline.add(event);
    last = Math.max(last, event.sequence);
    slider.max = Math.max(last, 0);
    slider.disabled = last < 1;
  };

  async function load() {
    let from = 0;
    for (;;) {
      const page = await getJSON(`/runs/${runId}/events?from_sequence=${from}&limit=1000`);
      page.events.forEach(add);
      if (page.events.length < 1000) break;
      from = page.events.at(-1).sequence + 1;
    }
  }

  (async () => {
    try {
      current = await getJSON(`/runs/${runId}`);
      await load();
    } catch (error) {
      current = null;
      cardBox.replaceChildren(h("div", { class: "card muted" }, "No event of this run yet: waiting for its first one."));
    }
    if (current) follow();
    if (current && TERMINAL.has(current.status) && current.sequence <= last) return;
    // Live: the stored events after the ones shown, then each new one as it is folded.
    stream = live(new EventSource(`/runs/${runId}/watch?from_sequence=${last + 1}`));
    stream.addEventListener("event", (message) => {
      took(JSON.parse(message.data));
      if (following) { slider.value = last; timeline.mark(last); }
    });
    stream.addEventListener("state", (message) => {
      current = JSON.parse(message.data);
      // A late event the stream could not send (folded while it was away): draw again.
      const count = current.event_count;
      if (!pending && current.sequence === last && count > times.size && count !== redrawnFor) {
        redrawnFor = count;  // once per count, should the events page disagree for good
        redraw();
      }
      if (following) follow(); else drawChart();
      sliderLabel.textContent = `sequence ${slider.value} of ${last}`;
      if (TERMINAL.has(current.status)) stream.close();
    });
    stream.addEventListener("deleted", () => {
      stream.close();
      cardBox.replaceChildren(h("div", { class: "card error" }, "This run was deleted."));
    });
  })();
  return () => stream && stream.close();
}

// --- routing ----------------------------------------------------------------------------

function route() {
  teardown();
  conn.classList.remove("on");
  const hash = location.hash.slice(1) || "/";
  const [path, search] = hash.split("?");
  const match = path.match(/^\/runs\/([0-9a-fA-F-]{36})$/);
  teardown = match ? runView(match[1].toLowerCase()) : runsView(new URLSearchParams(search || ""));
}

window.addEventListener("hashchange", route);
route();
