/* railbook pages: one order (queue → seats held → paid, with a running payment countdown) and
   the member's order list. Every state is shown in one Chinese word (core.js orderState). */
"use strict";

const REFUND_NOTE = "railbook.refund.";
const CHANGE_NOTE = "railbook.change.";
const CHANGE_ORDER_NOTE = "railbook.change-order.";

/** What a refund returned, as the API tells it, or as this browser noted it when it asked. */
function refundOf(ticket) {
  const amount = ticket.refund_amount ?? ticket.refunded;
  const fee = ticket.refund_fee ?? ticket.fee;
  if (amount !== undefined && amount !== null) return { refund_amount: amount, fee: fee ?? "0.00" };
  try {
    return JSON.parse(localStorage.getItem(REFUND_NOTE + ticket.ticket_id) || "null");
  } catch (err) {
    return null;
  }
}

/** The order a changed ticket moved to: from the API when it says, else from this browser's note. */
function changedTo(ticket) {
  return ticket.changed_to_order_id || ticket.new_order_id || ticket.changed_to
    || localStorage.getItem(CHANGE_NOTE + ticket.ticket_id) || null;
}

/** Orders that came from a change, by the ticket they replaced (one look at the newest orders). */
async function changeOrders() {
  const found = new Map();
  try {
    const page = await api("GET", "/api/v1/orders?limit=50");
    for (const o of page.items || []) if (o.change_of) found.set(o.change_of, o.order_id);
  } catch (err) {
    /* the links are a convenience; the tickets are shown without them */
  }
  return found;
}

pages.order = () => {
  if (!requireLogin()) return;
  const orderId = document.body.dataset.orderId;
  const names = new Map();
  let changes = null;
  let stopCountdown = null;
  let current = null;

  function renderTickets(order) {
    const tickets = order.tickets || [];
    $("#tickets-table").hidden = tickets.length === 0;
    let refunded = 0;
    let fees = 0;
    $("#tickets-table tbody").replaceChildren(...tickets.map((t) => {
      const refund = t.status === "REFUNDED" ? refundOf(t) : null;
      if (refund) { refunded += fen(refund.refund_amount); fees += fen(refund.fee); }
      const next = t.status === "CHANGED" ? changedTo(t) || (changes && changes.get(t.ticket_id)) : null;
      return el("tr", { dataset: { ticketId: t.ticket_id } },
        el("td", {}, t.passenger_name || names.get(t.passenger_id) || "乘车人"),
        el("td", {}, `${CLASS_NAMES[t.seat_class] || t.seat_class}${t.fare_type ? ` · ${FARE_TYPES[t.fare_type] || ""}` : ""}`),
        el("td", { class: "seat", dataset: { seat: t.seat } }, seatLabel(t.seat, t.seat_class)),
        el("td", {}, `¥${t.price}`),
        el("td", { class: "ticket-state", dataset: { status: t.status } }, ticketText(t, order),
          refund ? el("span", { class: "refund-line" }, `退款 ¥${refund.refund_amount}，手续费 ¥${refund.fee}`) : null,
          next ? el("a", { class: "new-order", href: `/orders/${encodeURIComponent(next)}` }, "查看新订单") : null));
    }));
    const box = $("#order-refund");
    box.hidden = refunded + fees === 0;
    box.textContent = `已退款 ¥${yuan(refunded)}（手续费 ¥${yuan(fees)}）`;
    if (tickets.some((t) => t.status === "CHANGED" && !changedTo(t)) && changes === null) {
      changeOrders().then((found) => { changes = found; renderTickets(order); });
    }
  }

  function render(order) {
    current = order;
    const fromChange = Boolean(order.change_of || localStorage.getItem(CHANGE_ORDER_NOTE + order.order_id));
    $("#order-train").textContent = order.train_code || "";
    $("#order-date").textContent = order.date ? `${order.date} ${weekday(order.date)}` : "";
    $("#order-from").textContent = order.from || "";
    $("#order-to").textContent = order.to || "";
    let state = orderState(order);
    /* A change's new order is settled with the old fare after its seats hold: until then only a
       difference the API names (change_of and a total above zero) is paid here, never the whole fare. */
    const owes = Boolean(order.change_of) && fen(order.total || 0) > 0;
    if (fromChange && state === "unpaid" && !owes) state = "changing";
    const status = $("#order-status");
    status.dataset.state = state;
    status.dataset.status = order.status;
    status.textContent = STATE_TEXT[state];
    const queued = state === "queued";
    $("#order-queue").textContent = queued
      ? order.queue_position ? `前方还有 ${order.queue_position} 人，请稍候…` : "正在为您分配座位…" : "";
    $("#queue-box").hidden = !queued;
    $("#order-total-label").textContent = fromChange ? "应补差价" : "金额";
    $("#order-total").textContent = order.total ? `¥${order.total}` : "—";
    $("#order-origin").hidden = !fromChange;
    const payable = state === "unpaid" && order.status === "SUCCESS";
    $$(".deadline-row").forEach((n) => { n.hidden = !payable; });
    if (stopCountdown) { stopCountdown(); stopCountdown = null; }
    if (payable && order.pay_deadline) {
      $("#order-deadline").textContent = localTime(order.pay_deadline);
      stopCountdown = countdown($("#order-countdown"), order.pay_deadline, () => setTimeout(poll, 1500));
    }
    const errorBox = $("#order-error");
    errorBox.hidden = !order.error;
    errorBox.textContent = order.error ? chineseMessage(order.error.code, order.error.message, "") : "";
    renderTickets(order);
    $("#pay").hidden = !payable;
    $("#cancel").hidden = !payable;
    $("#to-tickets").hidden = !["paid", "partly_refunded", "partly_changed"].includes(state);
  }

  /* A queued order is read every second until it is placed; the page turns into the result by itself. */
  async function poll() {
    try {
      const order = await api("GET", `/api/v1/orders/${encodeURIComponent(orderId)}`);
      render(order);
      if (QUEUED_STATES.has(order.status) || $("#order-status").dataset.state === "changing") setTimeout(poll, 1000);
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
      await poll();
    } finally {
      button.disabled = false;
    }
  }

  const payKey = newKey();
  $("#pay").addEventListener("click", (e) => act(e.currentTarget, "POST",
    `/api/v1/orders/${encodeURIComponent(orderId)}/pay`, { method: "mock" }, { "Idempotency-Key": payKey }));
  $("#cancel").addEventListener("click", (e) => {
    if (!confirm("取消这个订单？座位将重新发售。")) return;
    act(e.currentTarget, "POST", `/api/v1/orders/${encodeURIComponent(orderId)}/cancel`);
  });
  window.addEventListener("pageshow", () => { if (current && !QUEUED_STATES.has(current.status)) poll(); });

  return api("GET", "/api/v1/passengers")
    .then((list) => list.forEach((p) => names.set(p.passenger_id, p.name)))
    .catch(() => {})
    .finally(poll);
};

pages.orders = () => {
  if (!requireLogin()) return;
  const list = $("#orders-list");
  let cursor = null;

  function card(o) {
    const state = orderState(o);
    const passengers = (o.tickets || []).map((t) => t.passenger_name).filter(Boolean).join("、");
    return el("article", { class: "order-card card", dataset: { orderId: o.order_id } },
      el("div", { class: "order-head" },
        el("span", { class: "train-code" }, o.train_code || ""),
        el("span", {}, o.date ? `${o.date} ${weekday(o.date)}` : ""),
        statusBadge(state, { status: o.status })),
      el("p", { class: "order-route" }, `${o.from || ""} → ${o.to || ""}`,
        passengers ? el("span", { class: "muted" }, ` · ${passengers}`) : null),
      el("p", { class: "order-foot" },
        el("span", { class: "muted" }, `下单 ${localTime(o.created_at)}`),
        el("strong", { class: "money" }, o.total ? `¥${o.total}` : ""),
        el("a", { href: `/orders/${encodeURIComponent(o.order_id)}` }, state === "unpaid" ? "去支付" : "详情")));
  }

  async function load() {
    const query = new URLSearchParams({ limit: "20" });
    if (cursor) query.set("cursor", cursor);
    const page = await api("GET", `/api/v1/orders?${query}`);
    list.append(...(page.items || []).map(card));
    cursor = page.next_cursor || null;
    $("#orders-more").hidden = !cursor;
    $("#orders-empty").hidden = list.children.length > 0;
  }

  $("#orders-more").addEventListener("click", () => load().catch(showError));
  return load().catch(showError);
};
