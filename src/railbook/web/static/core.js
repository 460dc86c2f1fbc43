/* railbook pages, shared part: a thin client of the JSON API (/api/v1). No build step, no framework.
   The access token lives in localStorage; every failure is shown in Chinese, beside the field it
   concerns when there is one. The page scripts (search.js, book.js, orders.js, admin.js,
   account.js) add their start-up function to `pages`; the one named by <body data-page> runs. */
"use strict";

const TOKEN_KEY = "railbook.token";
const QUEUED_STATES = new Set(["INIT", "PENDING"]);
const SEAT_CLASSES = ["business", "first", "second", "soft_sleeper", "hard_sleeper", "hard_seat"];
const CLASS_NAMES = {
  business: "商务座", first: "一等座", second: "二等座",
  soft_sleeper: "软卧", hard_sleeper: "硬卧", hard_seat: "硬座",
};
const PASSENGER_TYPES = { adult: "成人", child: "儿童", student: "学生", disabled_military: "残疾军人" };
const FARE_TYPES = { adult: "成人票", child: "儿童票", student: "学生票", disabled_military: "残军票" };
/* A sleeper's "row" is a compartment and its "letter" the berth: lower, middle and upper on each side. */
const BERTHS = {
  soft_sleeper: { 1: "下铺", 2: "上铺", 3: "下铺", 4: "上铺" },
  hard_sleeper: { 1: "下铺", 2: "中铺", 3: "上铺", 4: "下铺", 5: "中铺", 6: "上铺" },
};

/* Chinese for every stable error code, used when the server's message is not Chinese already. */
const ERROR_TEXT = {
  NOT_FOUND: "没有找到。", CONFLICT: "操作冲突，请刷新后重试。", VALIDATION_ERROR: "填写的内容有误。",
  UNAUTHORIZED: "请先登录。", FORBIDDEN: "没有权限。", RATE_LIMITED: "操作太频繁，请稍后再试。",
  UNAVAILABLE: "系统繁忙，请稍后再试。", STATION_NOT_FOUND: "没有这个车站。", TRAIN_NOT_FOUND: "没有这个车次。",
  TRAIN_DAY_NOT_FOUND: "该车次当日未开售。", DAY_NOT_LOADED: "该日车票尚未开售。",
  STOP_NOT_FOUND: "该车次不经停这个车站。", PASSENGER_NOT_FOUND: "没有这位乘车人。",
  ORDER_NOT_FOUND: "没有这个订单。", TICKET_NOT_FOUND: "没有这张车票。", SOLD_OUT: "余票不足，已售完。",
  SEAT_TAKEN: "所选座位已被占用，请另选。", NOT_SOLD_OUT: "该车次还有余票，请直接购买。",
  DUPLICATE_ORDER: "已有包含这些乘车人的同车次订单。", MOBILE_TAKEN: "该手机号已注册。",
  PASSENGER_EXISTS: "该乘车人已添加。", PASSENGER_LIMIT: "乘车人数量已达上限。",
  STATION_EXISTS: "车站名称或电报码已存在。", TRAIN_EXISTS: "车次已存在。",
  TRAIN_ON_SALE: "该车次仍有开售的日期，不能删除。", NOT_PAYABLE: "该订单不能支付。",
  PAY_DEADLINE_PASSED: "已超过支付期限，订单已取消。", NOT_CANCELLABLE: "该订单不能取消。",
  NOT_REFUNDABLE: "该车票不能退票。", NOT_CHANGEABLE: "该车票不能改签。",
  CHANGE_IN_PROGRESS: "该车票正在改签中。", CHANGE_AFTER_DEPARTURE: "列车已开车，不能改签。",
  WAITLIST_LIMIT: "候补订单数量已达上限。", TRAIN_DEPARTED: "该车次已停止售票（已开车或临近开车）。",
  TRIP_CONFLICT: "乘车人在该时段已有行程。", ALREADY_CHANGED: "该车票已改签过一次，不能再改签。",
  PASSENGER_HAS_TICKETS: "该乘车人还有未出行的车票，不能删除。", BAD_JOURNEY: "区间不正确。",
  SAME_STATION: "出发站和到达站不能相同。", STATION_NOT_ON_TRAIN: "该车次不经停这个车站。",
  DATE_NOT_ON_SALE: "该日期不在预售期内。", BAD_SEAT_CLASS: "席别不正确。",
  SEAT_CLASS_NOT_ON_TRAIN: "该车次没有这个席别。", BAD_SEAT_PREF: "选座不正确。", BAD_SEAT: "座位不正确。",
  BAD_PASSENGERS: "乘车人不正确。", BAD_PAYMENT_METHOD: "支付方式不正确。", NOT_A_CHILD: "儿童票乘车人须未满14周岁。",
  BAD_CURSOR: "翻页参数不正确。", IDEMPOTENCY_KEY_REUSED: "重复提交，请刷新页面。",
  BAD_CREDENTIALS: "手机号或密码不正确。", SALE_BUSY: "购票人数过多，请稍后再试。",
  LOGIN_BUSY: "登录人数过多，请稍后再试。", BLOCKED: "账号或网络已被限制。", CAPTCHA_REQUIRED: "请先完成验证码。",
  BLOCK_NOT_FOUND: "没有这条黑名单记录。",
  NETWORK: "无法连接服务器，请稍后再试。", LOST_IN_FAILOVER: "系统切换时订单未能保留，请重新下单。",
};
const FIELD_NAMES = {
  mobile: "手机号", password: "密码", name: "姓名", id_card: "身份证号", type: "类型", from: "出发站",
  to: "到达站", date: "日期", code: "代码", kind: "类型", station: "车站", arrives: "到达", departs: "出发",
  km: "里程", day: "天数", carriage: "车厢号", seat_class: "席别", rows: "排数", seat_pref: "选座",
  ip: "IP 地址", reason: "原因", until: "截止时间",
};
const VALIDATION_TEXT = {
  missing: "必填", string_too_short: "太短", string_too_long: "太长", string_pattern_mismatch: "格式不正确",
  int_parsing: "须为整数", date_from_datetime_parsing: "日期格式不正确", date_parsing: "日期格式不正确",
  greater_than_equal: "太小", less_than_equal: "太大", value_error: "不正确", literal_error: "不是可选的值",
};
const hasChinese = (text) => /[\u4e00-\u9fff]/.test(text || "");

/* ---------- DOM and API ---------- */

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") {
      /* Through the CSSOM: the pages' Content-Security-Policy refuses style attributes. */
      for (const rule of String(value).split(";")) {
        const at = rule.indexOf(":");
        if (at > 0) node.style.setProperty(rule.slice(0, at).trim(), rule.slice(at + 1).trim());
      }
    }
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
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

function chineseMessage(code, message, status) {
  if (hasChinese(message)) return message;
  return ERROR_TEXT[code] || (status ? `请求失败（${status}）` : "未能完成，请重试。");
}

/** One API call; the pages always ask for Chinese messages. Errors become ApiError. */
async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", "Accept-Language": "zh-CN", ...extraHeaders };
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "NETWORK", ERROR_TEXT.NETWORK);
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
    const code = e.code || `HTTP_${response.status}`;
    let message = chineseMessage(code, e.message, response.status);
    if (response.status === 429 || response.status === 503) {
      const wait = response.headers.get("Retry-After");
      if (wait) message += `（${wait} 秒后重试）`;
    }
    throw new ApiError(response.status, code, message, e.details);
  }
  return data;
}

const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);

/* ---------- messages: at the top of the page, and beside the field they concern ---------- */

/** The validation problems of an error as [{field, text}] with Chinese text. */
function fieldProblems(err) {
  const details = (err && err.details) || {};
  const list = [];
  const fields = Array.isArray(details.fields) ? details.fields.filter((f) => f && typeof f === "object") : [];
  for (const f of fields) {
    const path = String(f.field || "").split(".").filter((p) => !["body", "query", "path"].includes(p));
    const name = path.filter((p) => !/^\d+$/.test(p)).pop() || "";
    const text = hasChinese(f.message) ? f.message : VALIDATION_TEXT[f.type] || "格式不正确";
    list.push({ field: name, path, text: `${FIELD_NAMES[name] || name}${name ? "：" : ""}${text}` });
  }
  if (!list.length && details.field) list.push({ field: details.field, path: [details.field], text: err.message });
  return list;
}

function clearFieldErrors(root = document) {
  $$(".field-error", root).forEach((n) => n.remove());
  $$("[aria-invalid]", root).forEach((n) => n.removeAttribute("aria-invalid"));
}

/** Put `text` under `input` (inside its label when it has one). */
function fieldError(input, text) {
  if (!input) return null;
  input.setAttribute("aria-invalid", "true");
  const holder = input.closest("label, td, .field") || input.parentElement;
  let box = $(".field-error", holder);
  if (!box) {
    box = el("span", { class: "field-error", role: "alert" });
    holder.append(box);
  }
  box.textContent = text;
  return box;
}

/** Show an error: at the top of the page, and beside the fields of `form` it names. */
function showError(err, form = null) {
  const box = $("#error");
  const text = err instanceof Error ? err.message : String(err);
  const problems = fieldProblems(err);
  let placed = 0;
  if (form) {
    for (const p of problems) {
      const input = form.querySelector(`[name="${p.field}"]`);
      if (input && fieldError(input, p.text)) placed += 1;
    }
  }
  if (!box) return;
  const unplaced = problems.length > placed ? problems.map((p) => p.text).join("；") : "";
  box.textContent = unplaced && !hasChinese(unplaced) ? text : [text, unplaced].filter(Boolean).join(" ");
  box.dataset.code = (err && err.code) || "";
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

function clearMessages() {
  for (const id of ["#error", "#notice"]) {
    const box = $(id);
    if (box) { box.hidden = true; box.textContent = ""; delete box.dataset.code; }
  }
  clearFieldErrors();
}

function notice(text) {
  const box = $("#notice");
  if (!box) return;
  box.textContent = text;
  box.hidden = false;
}

/** Run an async form action with its buttons disabled and errors shown beside its fields. */
function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const buttons = $$("button", form);
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await action(new FormData(form));
    } catch (err) {
      showError(err, form);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
}

/* ---------- captcha: asked for by a 403 CAPTCHA_REQUIRED, answered in the same form ---------- */

const CAPTCHA_REASONS = {
  failed_logins: "登录失败次数过多，请输入图中的验证码后再登录。",
  orders_too_fast: "下单过于频繁，请输入图中的验证码后再提交。",
  wrong_answer: "验证码不正确或已失效，请输入新的验证码。",
};

/** A captcha field placed before `anchor`, hidden until the API asks for one. Each captcha is good
    for one attempt, right or wrong: every retry after a refusal gets a new picture. */
function captchaField(anchor) {
  const image = el("img", { class: "captcha-image", alt: "验证码图片", width: 160, height: 60 });
  const input = el("input", {
    name: "captcha_answer", id: "captcha-answer", maxlength: 8, autocomplete: "off", autocapitalize: "characters",
    spellcheck: "false", placeholder: "图中字符",
  });
  const refresh = el("button", { type: "button", class: "link captcha-refresh" }, "换一张");
  const box = el("div", { class: "captcha", id: "captcha-box", hidden: true },
    el("label", { for: "captcha-answer" }, "验证码", el("span", { class: "captcha-line" }, input, image, refresh)));
  anchor.before(box);
  let captchaId = null;

  async function load() {
    captchaId = null;
    input.value = "";
    const challenge = await api("GET", "/api/v1/captcha");
    captchaId = challenge.captcha_id;
    image.src = challenge.image;
    box.dataset.captchaId = captchaId;
  }
  refresh.addEventListener("click", () => {
    clearFieldErrors(box);
    load().then(() => input.focus()).catch((err) => fieldError(input, err.message));
  });

  return {
    /** What to add to the request body: the captcha's id and answer once one is shown. */
    body: () => (box.hidden || !captchaId ? {} : { captcha_id: captchaId, captcha_answer: input.value.trim() }),
    /** After a refusal: show a new captcha; for CAPTCHA_REQUIRED also say why beside it. */
    async after(err) {
      const asked = err && err.code === "CAPTCHA_REQUIRED";
      if (!asked && box.hidden) return;
      box.hidden = false;
      await load().catch((e) => fieldError(input, e.message));
      if (asked) fieldError(input, CAPTCHA_REASONS[(err.details || {}).reason] || err.message);
      input.focus();
    },
  };
}

/* ---------- dates, times, money, seats ---------- */

/* Calendar days are Beijing days, as the server counts them (the sale window opens a day at midnight
   in Beijing): "today" is the Beijing date of this instant, whatever zone the browser is in, and a
   day is held as midnight UTC of that date, so no zone of the browser moves it. */
const pad2 = (n) => String(n).padStart(2, "0");
const BEIJING_OFFSET_MS = 8 * 3600000;
const isoDate = (d) => `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;

function parseDate(text) {
  const [y, m, d] = String(text).split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d));
}

function addDays(text, n) {
  const d = parseDate(text);
  d.setUTCDate(d.getUTCDate() + n);
  return isoDate(d);
}

const beijingToday = () => isoDate(new Date(Date.now() + BEIJING_OFFSET_MS));
const daysFromToday = (n) => addDays(beijingToday(), n);
const dayDiff = (a, b) => Math.round((parseDate(b) - parseDate(a)) / 86400000);
const WEEKDAYS = "日一二三四五六";
const shortDate = (text) => { const d = parseDate(text); return `${d.getUTCMonth() + 1}月${d.getUTCDate()}日`; };
const weekday = (text) => `周${WEEKDAYS[parseDate(text).getUTCDay()]}`;
const clockMinutes = (hhmm) => { const [h, m] = String(hhmm || "0:0").split(":").map(Number); return h * 60 + m; };

function minutesText(total) {
  const h = Math.floor(total / 60);
  const m = total % 60;
  return h ? `${h}小时${m}分` : `${m}分`;
}

/** A moment as Beijing time (the railway's clock, whatever the browser's zone). */
function localTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString("zh-CN", { hour12: false, timeZone: "Asia/Shanghai" });
}

/** A datetime-local field's value ("2026-12-08T09:30") read as Beijing time; null when empty or bad. */
function beijingInput(value) {
  if (!value) return null;
  const d = new Date(`${String(value).slice(0, 16)}:00+08:00`);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** Days between boarding and arrival, from the offer's boarding and arrival dates. */
const arrivalDayOffset = (offer) => dayDiff(offer.from.date, offer.to.date);

const dayMark = (offset) => (offset === 1 ? "次日" : offset > 1 ? `第${offset + 1}日` : "");

const fen = (yuan) => Math.round(Number(yuan) * 100);
const yuan = (f) => (f / 100).toFixed(2);
const roundHalfYuan = (f) => Math.round(f / 50) * 50;

/** A passenger type's fare in one class of an offer: the API's `prices` by passenger type. */
const fareFor = (seatOffer, type) => seatOffer.prices[type];

/** `05-12F` → 05车12F号; a sleeper berth `05-031` → 05车13号下铺 (numbered through the carriage). */
function seatLabel(seat, seatClass) {
  const m = /^(\d+)-(\d+)(\w)$/.exec(seat || "");
  if (!m) return seat || "";
  const [, carriage, row, letter] = m;
  const berths = BERTHS[seatClass];
  if (berths && berths[letter]) {
    const perRow = Object.keys(berths).length;
    const number = (Number(row) - 1) * perRow + Number(letter);
    return `${carriage}车${pad2(number)}号${berths[letter]}`;
  }
  return `${carriage}车${row}${letter}号`;
}

/* ---------- one Chinese status per order and ticket ---------- */

const STATE_TEXT = {
  queued: "排队中", unpaid: "已占座待支付", paid: "已支付", refunded: "已退票", partly_refunded: "部分退票",
  changed: "已改签", partly_changed: "部分改签", cancelled: "已取消", expired: "超时未支付，已取消",
  sold_out: "已售完", failed: "失败", changing: "改签中",
};

/** The one state a passenger sees for an order (a key of STATE_TEXT). */
function orderState(order) {
  const s = order.status;
  if (QUEUED_STATES.has(s)) return "queued";
  if (s === "EMPTY") return "sold_out";
  if (s === "FAILURE") return "failed";
  if (s === "CANCEL") return order.payment_status === "UNPAID" && order.pay_deadline
    && new Date(order.pay_deadline) < new Date() ? "expired" : "cancelled";
  const tickets = order.tickets || [];
  const count = (st) => tickets.filter((t) => t.status === st).length;
  const paid = count("PAID");
  if (order.payment_status === "UNPAID" || (!order.payment_status && !paid)) return "unpaid";
  if (tickets.length && !paid && !count("UNPAID")) {
    if (count("CHANGED") === tickets.length) return "changed";
    return count("REFUNDED") ? "refunded" : "changed";
  }
  if (count("REFUNDED") || order.payment_status === "PARTLY_REFUNDED") return "partly_refunded";
  if (count("CHANGED")) return "partly_changed";
  if (order.payment_status === "REFUNDED") return "refunded";
  return "paid";
}

const TICKET_TEXT = { UNPAID: "待支付", PAID: "已支付", REFUNDED: "已退票", CHANGED: "已改签", CANCELLED: "已取消" };

/** A ticket's state, read together with its order's (an unpaid ticket of a cancelled order is cancelled). */
function ticketText(ticket, order) {
  if (order && ticket.status === "UNPAID") {
    const state = orderState(order);
    if (state === "cancelled" || state === "expired") return STATE_TEXT.cancelled;
    if (state === "failed" || state === "sold_out") return STATE_TEXT[state];
  }
  return TICKET_TEXT[ticket.status] || "处理中";
}

function statusBadge(state, extra = {}) {
  return el("span", { class: "status", dataset: { state, ...extra } }, STATE_TEXT[state] || state);
}

/** A text node's countdown to `deadline`, refreshed every second; calls `done` once it runs out. */
function countdown(node, deadline, done) {
  const end = new Date(deadline).getTime();
  function tick() {
    const left = Math.max(0, Math.round((end - Date.now()) / 1000));
    node.textContent = left ? `剩余 ${Math.floor(left / 60)}分${pad2(left % 60)}秒` : "已超时";
    node.dataset.seconds = String(left);
    if (!left) { clearInterval(timer); if (done) done(); }
  }
  const timer = setInterval(tick, 1000);
  tick();
  return () => clearInterval(timer);
}

/* ---------- session ---------- */

function requireLogin() {
  if (token.get()) return true;
  const next = location.pathname + location.search;
  location.replace(`/login?next=${encodeURIComponent(next)}`);
  return false;
}

function safeNext(value) {
  return value && value.startsWith("/") && !value.startsWith("//") ? value : null;
}

async function initHeader(page) {
  const link = document.querySelector(`header [data-nav="${document.body.dataset.nav || page}"]`);
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
    $$(".admin-only").forEach((n) => { n.hidden = me.role !== "admin"; });
    return me;
  } catch (err) {
    return null;
  }
}

const pages = {};

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
