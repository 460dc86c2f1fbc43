/* railbook pages: a thin client of the JSON API (/api/v1). No build step, no framework.
   The access token lives in localStorage; every failure shows the API's error message. */
"use strict";

const TOKEN_KEY = "railbook.token";
const FINAL_STATES = new Set(["SUCCESS", "FAILURE", "EMPTY", "CANCEL"]);
const SEAT_CLASSES = ["business", "first", "second", "soft_sleeper", "hard_sleeper", "hard_seat"];
const CLASS_NAMES = {
  business: "商务座", first: "一等座", second: "二等座",
  soft_sleeper: "软卧", hard_sleeper: "硬卧", hard_seat: "硬座",
};
const SEAT_LETTERS = {
  business: ["A", "C", "F"], first: ["A", "C", "D", "F"], second: ["A", "B", "C", "D", "F"],
  soft_sleeper: ["1", "2", "3", "4"], hard_sleeper: ["1", "2", "3", "4", "5", "6"],
  hard_seat: ["A", "B", "C", "D", "F"],
};
const PASSENGER_TYPES = { adult: "成人", child: "儿童", student: "学生", disabled_military: "残疾军人" };
const ORDER_STATES = {
  INIT: "排队中", PENDING: "排队中", SUCCESS: "已占座，待支付", FAILURE: "失败",
  EMPTY: "已售完", CANCEL: "已取消",
};
const PAYMENT_STATES = {
  UNPAID: "未支付", PAID: "已支付", REFUNDED: "已退款", PARTLY_REFUNDED: "部分退款",
};
const TICKET_STATES = { UNPAID: "待支付", PAID: "已支付", REFUNDED: "已退票", CHANGED: "已改签", CANCELLED: "已取消" };

/* ---------- small DOM and API helpers ---------- */

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

const token = {
  get: () => localStorage.getItem(TOKEN_KEY),
  set: (value) => localStorage.setItem(TOKEN_KEY, value),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "NETWORK", "无法连接服务器，请稍后再试。");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const e = (data && data.error) || {};
    if (response.status === 401 && t) token.clear();
    let message = e.message || `请求失败（${response.status}）`;
    if (response.status === 429 || response.status === 503) {
      const wait = response.headers.get("Retry-After");
      if (wait) message += `（${wait} 秒后重试）`;
    }
    throw new ApiError(response.status, e.code || `HTTP_${response.status}`, message, e.details);
  }
  return data;
}

function showError(err) {
  const box = $("#error");
  if (!box) return;
  let text = err instanceof ApiError || err instanceof Error ? err.message : String(err);
  const fields = err && err.details && Array.isArray(err.details.fields) ? err.details.fields : [];
  if (fields.length) text += " " + fields.map((f) => `${f.field}: ${f.message}`).join("；");
  box.textContent = text;
  box.dataset.code = (err && err.code) || "";
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

function clearMessages() {
  for (const id of ["#error", "#notice"]) {
    const box = $(id);
    if (box) { box.hidden = true; box.textContent = ""; delete box.dataset.code; }
  }
}

function notice(text) {
  const box = $("#notice");
  if (!box) return;
  box.textContent = text;
  box.hidden = false;
}

/** Run an async form action with the button disabled and errors shown. */
function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await action(new FormData(form));
    } catch (err) {
      showError(err);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
}

function isoDate(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function daysFromToday(n) {
  const d = new Date();
  d.setDate(d.getDate() + n);
  return isoDate(d);
}

function minutesText(total) {
  const h = Math.floor(total / 60);
  const m = total % 60;
  return h ? `${h}小时${m}分` : `${m}分`;
}

function localTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString("zh-CN", { hour12: false });
}

function requireLogin() {
  if (token.get()) return true;
  const next = location.pathname + location.search;
  location.replace(`/login?next=${encodeURIComponent(next)}`);
  return false;
}

function safeNext(value) {
  return value && value.startsWith("/") && !value.startsWith("//") ? value : null;
}

/* ---------- header: who is logged in ---------- */

async function initHeader(page) {
  const link = document.querySelector(`[data-nav="${page}"]`);
  if (link) link.classList.add("active");
  $("#nav-logout").addEventListener("click", () => {
    token.clear();
    location.href = "/";
  });
  if (!token.get()) return null;
  try {
    const me = await api("GET", "/api/v1/me");
    $("#whoami").textContent = `${me.name}（${me.mobile}）`;
    $("#nav-login").hidden = true;
    $("#nav-register").hidden = true;
    $("#nav-logout").hidden = false;
    document.querySelectorAll(".admin-only").forEach((n) => { n.hidden = me.role !== "admin"; });
    return me;
  } catch (err) {
    return null;
  }
}

/* ---------- pages ---------- */

const pages = {};

pages.login = () => {
  onSubmit($("#login-form"), async (data) => {
    const answer = await api("POST", "/api/v1/auth/login", {
      mobile: data.get("mobile").trim(), password: data.get("password"),
    });
    token.set(answer.access_token);
    const next = safeNext(new URLSearchParams(location.search).get("next"));
    location.href = next || "/";
  });
};

pages.register = () => {
  onSubmit($("#register-form"), async (data) => {
    const body = { mobile: data.get("mobile").trim(), password: data.get("password"), name: data.get("name").trim() };
    await api("POST", "/api/v1/auth/register", body);
    const answer = await api("POST", "/api/v1/auth/login", { mobile: body.mobile, password: body.password });
    token.set(answer.access_token);
    location.href = "/passengers";
  });
};

pages.passengers = () => {
  if (!requireLogin()) return;
  const tbody = $("#passengers-table tbody");

  async function load() {
    const list = await api("GET", "/api/v1/passengers");
    tbody.replaceChildren(...list.map((p) => el("tr", { dataset: { passengerId: p.passenger_id } },
      el("td", {}, p.name),
      el("td", {}, el("code", {}, p.id_card_masked)),
      el("td", {}, PASSENGER_TYPES[p.type] || p.type),
      el("td", {}, el("button", {
        type: "button", class: "link danger",
        onclick: async () => {
          if (!confirm(`删除乘车人 ${p.name}？`)) return;
          clearMessages();
          try {
            await api("DELETE", `/api/v1/passengers/${p.passenger_id}`);
            await load();
          } catch (err) { showError(err); }
        },
      }, "删除")))));
    $("#passengers-empty").hidden = list.length > 0;
  }

  onSubmit($("#passenger-form"), async (data) => {
    const p = await api("POST", "/api/v1/passengers", {
      name: data.get("name").trim(), id_card: data.get("id_card").trim(), type: data.get("type"),
    });
    $("#passenger-form").reset();
    notice(`已添加乘车人 ${p.name}`);
    await load();
  });
  return load().catch(showError);
};

pages.search = () => {
  const form = $("#search-form");
  const params = new URLSearchParams(location.search);
  $("#from").value = params.get("from") || "";
  $("#to").value = params.get("to") || "";
  $("#date").value = params.get("date") || daysFromToday(1);
  $("#date").min = daysFromToday(0);
  $("#swap").addEventListener("click", () => {
    [$("#from").value, $("#to").value] = [$("#to").value, $("#from").value];
  });

  function seatCell(train, seatClass) {
    const seat = train.seats && train.seats[seatClass];
    if (!seat) return el("td", { class: "seat-cell" }, el("span", { class: "none" }, "--"));
    const remaining = Number(seat.remaining);
    const book = new URLSearchParams({
      train_code: train.train_code, date: train.date, from: train.from.station, to: train.to.station,
      seat_class: seatClass,
    });
    return el("td", { class: "seat-cell", dataset: { seatClass } },
      el("span", { class: remaining > 0 ? "count" : "count none" }, remaining > 0 ? `余 ${remaining}` : "无"),
      el("span", { class: "price" }, `¥${seat.price}`),
      remaining > 0 ? el("a", { href: `/book?${book}`, class: "book-link" }, "预订") : null);
  }

  async function search(from, to, date) {
    const query = new URLSearchParams({ from, to, date });
    const trains = await api("GET", `/api/v1/trains/search?${query}`);
    const tbody = $("#results-table tbody");
    tbody.replaceChildren(...trains.map((t) => el("tr", { dataset: { train: t.train_code } },
      el("td", {}, el("span", { class: "train-code" }, t.train_code)),
      el("td", {}, el("span", { class: "time" }, t.from.departs), el("br"), t.from.station),
      el("td", {}, el("span", { class: "time" }, t.to.arrives), el("br"), t.to.station),
      el("td", {}, minutesText(t.duration_minutes)),
      SEAT_CLASSES.map((c) => seatCell(t, c)))));
    $("#results-summary").textContent = trains.length
      ? `${date} ${from} → ${to}：共 ${trains.length} 个车次`
      : `${date} ${from} → ${to}：没有直达车次`;
    $("#results").hidden = false;
  }

  onSubmit(form, async (data) => {
    const from = data.get("from").trim();
    const to = data.get("to").trim();
    const date = data.get("date");
    history.replaceState(null, "", `/?${new URLSearchParams({ from, to, date })}`);
    $("#results").hidden = true;
    await search(from, to, date);
  });
  if (params.get("from") && params.get("to")) form.requestSubmit();
};

pages.book = () => {
  if (!requireLogin()) return;
  const params = new URLSearchParams(location.search);
  const trip = {
    train_code: params.get("train_code") || "", date: params.get("date") || "",
    from: params.get("from") || "", to: params.get("to") || "",
  };
  $("#trip-train").textContent = trip.train_code;
  $("#trip-date").textContent = trip.date;
  $("#trip-from").textContent = trip.from;
  $("#trip-to").textContent = trip.to;
  const classSelect = $("#seat-class");
  if (SEAT_CLASSES.includes(params.get("seat_class"))) classSelect.value = params.get("seat_class");

  function letterSelect() {
    const letters = SEAT_LETTERS[classSelect.value] || [];
    return el("select", { class: "seat-pref" }, el("option", { value: "" }, "不选"),
      letters.map((l) => el("option", { value: l }, l)));
  }

  classSelect.addEventListener("change", () => {
    document.querySelectorAll("#book-passengers .pref-cell").forEach((cell) => cell.replaceChildren(letterSelect()));
  });

  const loaded = api("GET", "/api/v1/passengers").then((list) => {
    $("#book-passengers tbody").replaceChildren(...list.map((p, i) => el("tr", { dataset: { passengerId: p.passenger_id } },
      el("td", {}, el("input", { type: "checkbox", class: "pick", value: p.passenger_id, checked: i === 0 })),
      el("td", {}, p.name),
      el("td", {}, el("code", {}, p.id_card_masked)),
      el("td", { class: "pref-cell" }, letterSelect()))));
    $("#book-no-passengers").hidden = list.length > 0;
  }).catch(showError);

  onSubmit($("#book-form"), async () => {
    const passengers = [];
    document.querySelectorAll("#book-passengers tbody tr").forEach((row) => {
      if (!$(".pick", row).checked) return;
      const item = { passenger_id: Number(row.dataset.passengerId), seat_class: classSelect.value };
      const pref = $(".seat-pref", row).value;
      if (pref) item.seat_pref = pref;
      passengers.push(item);
    });
    if (!passengers.length) throw new Error("请至少选择一位乘车人。");
    const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
    const answer = await api("POST", "/api/v1/orders", { ...trip, passengers }, { "Idempotency-Key": key });
    location.href = `/orders/${encodeURIComponent(answer.order_id)}`;
  });
  return loaded;
};

pages.order = () => {
  if (!requireLogin()) return;
  const orderId = document.body.dataset.orderId;
  const names = new Map();
  let delay = 300;

  function render(order) {
    $("#order-train").textContent = order.train_code;
    $("#order-date").textContent = order.date;
    $("#order-from").textContent = order.from;
    $("#order-to").textContent = order.to;
    const status = $("#order-status");
    status.dataset.status = order.status;
    status.textContent = `${ORDER_STATES[order.status] || ""} ${order.status}`;
    $("#order-queue").textContent = !FINAL_STATES.has(order.status) && order.queue_position
      ? `前方约 ${order.queue_position} 单` : "";
    const payment = $("#order-payment");
    payment.dataset.status = order.payment_status || "";
    payment.textContent = order.payment_status ? `${PAYMENT_STATES[order.payment_status] || ""} ${order.payment_status}` : "—";
    $("#order-total").textContent = order.total ? `¥${order.total}` : "—";
    $("#order-deadline").textContent = order.status === "SUCCESS" && order.payment_status === "UNPAID"
      ? localTime(order.pay_deadline) : "—";
    const errorBox = $("#order-error");
    errorBox.hidden = !order.error;
    errorBox.textContent = order.error ? `${order.error.message}（${order.error.code}）` : "";
    const tickets = order.tickets || [];
    $("#tickets-table").hidden = tickets.length === 0;
    $("#tickets-table tbody").replaceChildren(...tickets.map((t) => el("tr", { dataset: { ticketId: t.ticket_id } },
      el("td", {}, names.get(t.passenger_id) || t.passenger_name || `#${t.passenger_id}`),
      el("td", {}, CLASS_NAMES[t.seat_class] || t.seat_class),
      el("td", { class: "seat" }, t.seat),
      el("td", {}, `¥${t.price}`),
      el("td", { dataset: { status: t.status } }, TICKET_STATES[t.status] || t.status))));
    const payable = order.status === "SUCCESS" && order.payment_status === "UNPAID";
    $("#pay").hidden = !payable;
    $("#cancel").hidden = !payable;
  }

  async function poll() {
    try {
      const order = await api("GET", `/api/v1/orders/${encodeURIComponent(orderId)}`);
      render(order);
      if (!FINAL_STATES.has(order.status)) {
        delay = Math.min(delay * 1.5, 2000);
        setTimeout(poll, delay);
      }
    } catch (err) {
      showError(err);
      if (err.status === 0 || err.status >= 500 || err.status === 429) setTimeout(poll, 2000);
    }
  }

  async function act(button, method, path, body, headers) {
    clearMessages();
    button.disabled = true;
    try {
      const order = await api(method, path, body, headers);
      if (order && order.order_id) render(order);
      else await poll();
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  }

  const payKey = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  $("#pay").addEventListener("click", (e) => act(e.currentTarget, "POST",
    `/api/v1/orders/${encodeURIComponent(orderId)}/pay`, { method: "mock" }, { "Idempotency-Key": payKey }));
  $("#cancel").addEventListener("click", (e) => {
    if (!confirm("取消这个订单？座位将重新发售。")) return;
    act(e.currentTarget, "POST", `/api/v1/orders/${encodeURIComponent(orderId)}/cancel`);
  });

  return api("GET", "/api/v1/passengers")
    .then((list) => list.forEach((p) => names.set(p.passenger_id, p.name)))
    .catch(() => {})
    .finally(poll);
};

pages.orders = () => {
  if (!requireLogin()) return;
  const tbody = $("#orders-table tbody");
  let cursor = null;

  async function load() {
    const query = new URLSearchParams({ limit: "20" });
    if (cursor) query.set("cursor", cursor);
    const page = await api("GET", `/api/v1/orders?${query}`);
    const items = page.items || [];
    tbody.append(...items.map((o) => el("tr", { dataset: { orderId: o.order_id } },
      el("td", {}, localTime(o.created_at)),
      el("td", { class: "train-code" }, o.train_code),
      el("td", {}, o.date),
      el("td", {}, `${o.from} → ${o.to}`),
      el("td", { class: "status", dataset: { status: o.status } }, ORDER_STATES[o.status] || o.status),
      el("td", {}, PAYMENT_STATES[o.payment_status] || "—"),
      el("td", {}, o.total ? `¥${o.total}` : "—"),
      el("td", {}, el("a", { href: `/orders/${encodeURIComponent(o.order_id)}` }, "详情")))));
    cursor = page.next_cursor || null;
    $("#orders-more").hidden = !cursor;
    $("#orders-empty").hidden = tbody.children.length > 0;
  }

  $("#orders-more").addEventListener("click", () => load().catch(showError));
  return load().catch(showError);
};

pages.admin = async (me) => {
  if (!requireLogin()) return;
  if (!me || me.role !== "admin") {
    $("#admin-denied").hidden = false;
    return;
  }
  $("#admin").hidden = false;
  $("#open-from").value = daysFromToday(0);
  $("#open-to").value = daysFromToday(1);
  $("#inv-date").value = daysFromToday(1);

  onSubmit($("#open-sales-form"), async () => {
    const from = $("#open-from").value;
    const to = $("#open-to").value;
    const body = from === to ? { date: from } : { from, to };
    const answer = await api("POST", "/api/v1/admin/sales/open", body);
    const opened = (answer.opened || []).length;
    const already = (answer.already_open || []).length;
    $("#open-result").textContent = `新开放 ${opened} 个车次日，之前已开放 ${already} 个。`;
    notice("售票已开放");
  });

  function renderInventory(inv) {
    const box = $("#inventory");
    const stations = inv.stations || [];
    const sections = Object.entries(inv.classes || {}).map(([seatClass, info]) => {
      const sold = info.sold_per_segment || [];
      const segments = el("table", { class: "matrix" },
        el("thead", {}, el("tr", {}, el("th", {}, "区段"), sold.map((_, k) => el("th", {}, `${stations[k] || k}→${stations[k + 1] || k + 1}`)))),
        el("tbody", {}, el("tr", {}, el("th", {}, "已售"), sold.map((n) => el("td", {}, n)))));
      const rows = stations.slice(0, -1).map((name, i) => el("tr", {}, el("th", {}, name),
        stations.slice(1).map((_, jj) => {
          const j = jj + 1;
          const value = j > i ? info.remaining[`${i}-${j}`] : "";
          return el("td", { dataset: { pair: j > i ? `${i}-${j}` : "" } }, value ?? "");
        })));
      const remaining = el("table", { class: "matrix remaining" },
        el("thead", {}, el("tr", {}, el("th", {}, "余票 从↓ 到→"), stations.slice(1).map((s) => el("th", {}, s)))),
        el("tbody", {}, rows));
      return el("div", { class: "inventory-class", dataset: { seatClass } },
        el("h3", {}, `${CLASS_NAMES[seatClass] || seatClass}：${info.seats} 座`),
        el("div", { class: "table-wrap" }, segments), el("div", { class: "table-wrap" }, remaining));
    });
    box.replaceChildren(el("p", { class: "muted" }, `${inv.train_code} ${inv.date}：${stations.join(" – ")}`), ...sections);
  }

  async function showInventory(code, date) {
    const query = new URLSearchParams({ date });
    renderInventory(await api("GET", `/api/v1/admin/trains/${encodeURIComponent(code)}/inventory?${query}`));
  }

  onSubmit($("#inventory-form"), () => showInventory($("#inv-train").value.trim(), $("#inv-date").value));

  async function loadStations(q) {
    const query = q ? `?${new URLSearchParams({ q })}` : "";
    const answer = await api("GET", `/api/v1/admin/stations${query}`);
    const list = Array.isArray(answer) ? answer : answer.items || [];
    $("#stations-table tbody").replaceChildren(...list.map((s) => el("tr", {},
      el("td", {}, s.name), el("td", {}, el("code", {}, s.code)), el("td", {}, s.pinyin || ""), el("td", {}, s.city || ""))));
  }

  onSubmit($("#stations-form"), () => loadStations($("#stations-q").value.trim()));

  async function loadTrains() {
    let list;
    try {
      const answer = await api("GET", "/api/v1/admin/trains");
      list = Array.isArray(answer) ? answer : answer.items || [];
    } catch (err) {
      if (err.status === 404 || err.status === 405) {
        $("#trains-note").textContent = "车次列表不可用：请在上方按车次代码查看。";
        $("#trains-note").hidden = false;
        return;
      }
      throw err;
    }
    $("#trains-table tbody").replaceChildren(...list.map((t) => {
      const stops = t.stops || [];
      const first = stops.length ? stops[0].station : t.from || "";
      const last = stops.length ? stops[stops.length - 1].station : t.to || "";
      return el("tr", { dataset: { train: t.code } },
        el("td", { class: "train-code" }, t.code), el("td", {}, t.kind || ""), el("td", {}, first),
        el("td", {}, last), el("td", {}, stops.length || t.n_stops || ""),
        el("td", {}, el("button", {
          type: "button", class: "link",
          onclick: () => {
            $("#inv-train").value = t.code;
            clearMessages();
            showInventory(t.code, $("#inv-date").value).catch(showError);
          },
        }, "余票")));
    }));
  }

  await Promise.all([loadStations("").catch(showError), loadTrains().catch(showError)]);
};

document.addEventListener("DOMContentLoaded", async () => {
  const page = document.body.dataset.page;
  const me = await initHeader(page);
  const init = pages[page];
  if (init) {
    try {
      await init(me);
    } catch (err) {
      showError(err);
    }
  }
  document.body.dataset.ready = "1";
});
