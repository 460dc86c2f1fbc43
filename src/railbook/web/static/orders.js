/* railbook pages: one order (queue → seats held → paid, with a running payment countdown) and
   the member's order list. Every state is shown in one Chinese word (core.js orderState). */
"use strict";

/* What the API answers once and never repeats, kept in this browser: a refund's amount and fee (the
   refund's answer), and the order a change created (the change's answer, by its `change_of`). */
const REFUND_NOTE = "railbook.refund.";
const CHANGE_NOTE = "railbook.change.";

/** The refund answer `{refund_amount, fee}` of a refunded ticket, when this browser asked for it. */
function refundOf(ticket) {
  try {
    return JSON.parse(localStorage.getItem(REFUND_NOTE + ticket.ticket_id) || "null");
  } catch (err) {
    return null;
  }
}

/** The order a changed ticket moved to, when the change was asked from this browser. */
const changedTo = (ticket) => localStorage.getItem(CHANGE_NOTE + ticket.ticket_id);

/** A change's new order: its total is what is still owed, not the sum of its tickets' fares. */
function isChangeOrder(order) {
  const tickets = order.tickets || [];
  if (order.change_of) return true;
  return tickets.length > 0 && tickets.reduce((sum, t) => sum + fen(t.price), 0) !== fen(order.total);
}

pages.order = () => {
  if (!requireLogin()) return;
  const orderId = document.body.dataset.orderId;
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
      const next = t.status === "CHANGED" ? changedTo(t) : null;
      return el("tr", { dataset: { ticketId: t.ticket_id } },
        el("td", { class: "p-name" }, t.passenger_name),
        el("td", { class: "fare-type" }, `${CLASS_NAMES[t.seat_class]} · ${FARE_TYPES[t.fare_type]}`),
        el("td", { class: "seat", dataset: { seat: t.seat } }, seatLabel(t.seat, t.seat_class)),
        el("td", {}, `¥${t.price}`),
        el("td", { class: "ticket-state", dataset: { status: t.status } }, ticketText(t, order),
          refund ? el("span", { class: "refund-line" }, `退款 ¥${refund.refund_amount}，手续费 ¥${refund.fee}`) : null,
          next ? el("a", { class: "new-order", href: `/orders/${encodeURIComponent(next)}` }, "查看新订单") : null));
    }));
    const box = $("#order-refund");
    box.hidden = refunded + fees === 0;
    box.textContent = `已退款 ¥${yuan(refunded)}（手续费 ¥${yuan(fees)}）`;
  }

  function render(order) {
    current = order;
    const fromChange = isChangeOrder(order);
    $("#order-train").textContent = order.train_code || "";
    $("#order-date").textContent = order.date ? `${order.date} ${weekday(order.date)}` : "";
    $("#order-from").textContent = order.from || "";
    $("#order-to").textContent = order.to || "";
    let state = orderState(order);
    /* Only a total above zero is ever paid here. A change's new order that owes nothing is paid with
       the old fare right after its seats hold; until then it reads "changing", never "unpaid". */
    const owes = fen(order.total) > 0;
    if (state === "unpaid" && !owes) state = "changing";
    const status = $("#order-status");
    status.dataset.state = state;
    status.dataset.status = order.status;
    status.textContent = STATE_TEXT[state];
    const queued = state === "queued";
    $("#order-queue").textContent = queued
      ? order.queue_position ? `前方还有 ${order.queue_position} 人，请稍候…` : "正在为您分配座位…" : "";
    $("#queue-box").hidden = !queued;
    $("#order-total-label").textContent = fromChange ? "应补差价" : "金额";
    $("#order-total").textContent = `¥${order.total}`;
    $("#order-origin").hidden = !fromChange;
    const payable = state === "unpaid" && order.status === "SUCCESS" && owes;
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

  return poll();
};

pages.orders = () => {
  if (!requireLogin()) return;
  const list = $("#orders-list");
  let cursor = null;

  function card(o) {
    const state = orderState(o);
    const passengers = o.tickets.map((t) => t.passenger_name).join("、");
    return el("article", { class: "order-card card", dataset: { orderId: o.order_id } },
      el("div", { class: "order-head" },
        el("span", { class: "train-code" }, o.train_code || ""),
        el("span", {}, o.date ? `${o.date} ${weekday(o.date)}` : ""),
        statusBadge(state, { status: o.status })),
      el("p", { class: "order-route" }, `${o.from || ""} → ${o.to || ""}`,
        passengers ? el("span", { class: "muted" }, ` · ${passengers}`) : null),
      el("p", { class: "order-foot" },
        el("span", { class: "muted" }, `下单 ${localTime(o.created_at)}`),
        el("strong", { class: "money" }, `¥${o.total}`),
        el("a", { href: `/orders/${encodeURIComponent(o.order_id)}` }, state === "unpaid" ? "去支付" : "详情")));
  }

  async function load() {
    const query = new URLSearchParams({ limit: "20" });
    if (cursor) query.set("cursor", cursor);
    const page = await api("GET", `/api/v1/orders?${query}`);
    list.append(...page.items.map(card));
    cursor = page.next_cursor || null;
    $("#orders-more").hidden = !cursor;
    $("#orders-empty").hidden = list.children.length > 0;
  }

  $("#orders-more").addEventListener("click", () => load().catch(showError));
  return load().catch(showError);
};
