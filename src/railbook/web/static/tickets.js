/* railbook pages: the member's tickets — refund (the fee shown before confirming), change to another
   train of the same route (改签), change of destination on the same train (变更到站) — and the
   member's waitlist (候补) entries. */
"use strict";

const WAITLIST_TEXT = { WAITING: "候补中", FILLED: "已兑现", EXPIRED: "已过期", CANCELLED: "已取消" };
const FEE_BANDS = [[8 * 24, 0], [48, 0.05], [24, 0.1], [0, 0.2]]; /* hours before departure, rate */

/** The refund of a ticket of `priceFen` when its train leaves at `departsAt` (API.md's 12306 bands). */
function refundQuote(priceFen, departsAt, now = new Date()) {
  const hours = (departsAt - now) / 3600000;
  if (hours <= 0) return null;
  const rate = FEE_BANDS.find(([atLeast]) => hours >= atLeast)[1];
  const fee = rate === 0 ? 0 : Math.min(priceFen, Math.max(200, roundHalfYuan(priceFen * rate)));
  return { fee, refund: priceFen - fee, rate };
}

/** When the ticket's train leaves its boarding station: the ticket's date is the boarding date, the
    train's stop list gives the time there (Beijing time). */
async function departureOf(ticket) {
  const train = await api("GET", `/api/v1/trains/${encodeURIComponent(ticket.train_code)}/stops`);
  const stop = train.stops.find((s) => s.station === ticket.from);
  return stop && stop.departs ? new Date(`${ticket.date}T${stop.departs}:00+08:00`) : null;
}

pages.tickets = () => {
  if (!requireLogin()) return;
  const list = $("#tickets-list");

  /* ---- refund ---- */

  async function openRefund(ticket, panel) {
    panel.replaceChildren(el("p", { class: "muted" }, "正在计算退票手续费…"));
    let departsAt = null;
    try {
      departsAt = await departureOf(ticket);
    } catch (err) {
      departsAt = null;
    }
    const quote = departsAt ? refundQuote(fen(ticket.price), departsAt) : null;
    const lines = quote
      ? [el("p", { class: "quote" }, `票价 ¥${ticket.price}，手续费 `, el("strong", { class: "quote-fee" }, `¥${yuan(quote.fee)}`),
        `（${Math.round(quote.rate * 100)}%），应退 `, el("strong", { class: "quote-refund" }, `¥${yuan(quote.refund)}`)),
        el("p", { class: "muted small-print" }, `开车时间 ${localTime(departsAt.toISOString())}；以实际退款为准。`)]
      : [el("p", { class: "quote" }, `票价 ¥${ticket.price}。手续费按开车前时间计算：8天以上免收，48小时–8天 5%，`
        + "24–48小时 10%，24小时内 20%（最低 ¥2.00）；确认后显示实际金额。")];
    panel.replaceChildren(...lines, el("div", { class: "actions" },
      el("button", {
        type: "button", class: "primary confirm-refund", onclick: (e) => refund(ticket, panel, e.currentTarget),
      }, "确认退票"),
      el("button", { type: "button", onclick: () => panel.replaceChildren() }, "不退了")));
  }

  async function refund(ticket, panel, button) {
    clearMessages();
    button.disabled = true;
    try {
      const answer = await api("POST", `/api/v1/tickets/${encodeURIComponent(ticket.ticket_id)}/refund`);
      localStorage.setItem(REFUND_NOTE + ticket.ticket_id, JSON.stringify({ refund_amount: answer.refund_amount, fee: answer.fee }));
      notice(`已退票：退款 ¥${answer.refund_amount}，手续费 ¥${answer.fee}。`);
      await load();
    } catch (err) {
      fieldError(button, err.message);
      showError(err);
      button.disabled = false;
    }
  }

  /* ---- change: another train of the same route, or another destination on the same train ---- */

  function openChange(ticket, panel, newDestination) {
    const dateInput = el("input", { type: "date", name: "date", value: ticket.date, min: daysFromToday(0),
      max: daysFromToday(Number(document.body.dataset.saleDays || 15) - 1) });
    const toInput = el("input", { name: "to", id: `to-${ticket.ticket_id}`, maxlength: 32, required: true,
      placeholder: "新的到达站" });
    const offersBox = el("div", { class: "change-offers" });
    const form = el("form", { class: "row-form change-form", autocomplete: "off" },
      newDestination ? el("label", { class: "station-field" }, "新到站", toInput) : el("label", {}, "新日期", dateInput),
      el("button", { type: "submit" }, "查询车次"));
    panel.replaceChildren(el("p", { class: "muted" }, newDestination
      ? `变更到站：同一车次 ${ticket.train_code}，从 ${ticket.from} 出发，只补差价或退还差额。`
      : `改签：${ticket.from} → ${ticket.to}，可改乘其他日期或车次；每张票只能改签一次。`), form, offersBox);
    if (newDestination) autocomplete(toInput);
    onSubmit(form, async () => {
      const to = newDestination ? toInput.value.trim() : ticket.to;
      const date = newDestination ? ticket.date : dateInput.value;
      let offers = await api("GET", `/api/v1/trains/search?${new URLSearchParams({ from: ticket.from, to, date })}`);
      if (newDestination) offers = offers.filter((o) => o.train_code === ticket.train_code);
      else offers = offers.filter((o) => !(o.train_code === ticket.train_code && o.from.date === ticket.date));
      offersBox.replaceChildren(offers.length ? el("ul", { class: "change-list" }, offers.map((o) => el("li", {
        dataset: { train: o.train_code },
      }, el("span", { class: "train-code" }, o.train_code),
      el("span", {}, ` ${o.from.departs}–${o.to.arrives}`, dayMark(arrivalDayOffset(o)) ? el("sup", { class: "day-mark" },
        dayMark(arrivalDayOffset(o))) : ""),
      el("span", { class: "class-picks" }, SEAT_CLASSES.filter((c) => o.seats[c]).map((c) => el("button", {
        type: "button", class: "change-to", dataset: { seatClass: c }, disabled: o.seats[c].remaining <= 0,
        onclick: (e) => change(ticket, { date: o.from.date, train_code: o.train_code, seat_class: c,
          ...(newDestination ? { to: o.to.station } : {}) }, e.currentTarget),
      }, `${CLASS_NAMES[c]} ¥${o.seats[c].price} ${o.seats[c].remaining > 0 ? `余${o.seats[c].remaining}` : "无票"}`))))))
        : el("p", { class: "muted" }, newDestination ? "该车次不到达这个车站，或已无票。" : "这一天没有可改签的车次。"));
    });
  }

  async function change(ticket, body, button) {
    clearMessages();
    button.disabled = true;
    try {
      const answer = await api("POST", `/api/v1/tickets/${encodeURIComponent(ticket.ticket_id)}/change`, body);
      localStorage.setItem(CHANGE_NOTE + answer.change_of, answer.order_id);
      location.href = `/orders/${encodeURIComponent(answer.order_id)}`;
    } catch (err) {
      fieldError(button, err.message);
      showError(err);
      button.disabled = false;
    }
  }

  /* ---- the list ---- */

  function card(t) {
    const panel = el("div", { class: "ticket-panel" });
    const refunded = t.status === "REFUNDED" ? refundOf(t) : null;
    const next = t.status === "CHANGED" ? changedTo(t) : null;
    const actions = [];
    if (t.status === "PAID") {
      actions.push(
        el("button", { type: "button", class: "refund", onclick: () => openRefund(t, panel) }, "退票"),
        el("button", { type: "button", class: "change", onclick: () => openChange(t, panel, false) }, "改签"),
        el("button", { type: "button", class: "change-to-station", onclick: () => openChange(t, panel, true) }, "变更到站"));
    } else if (t.status === "UNPAID") {
      actions.push(el("a", { href: `/orders/${encodeURIComponent(t.order_id)}` }, "去支付"));
    }
    return el("article", { class: "ticket card", dataset: { ticketId: t.ticket_id, status: t.status } },
      el("div", { class: "ticket-head" },
        el("span", { class: "train-code" }, t.train_code),
        el("span", {}, t.date ? `${t.date} ${weekday(t.date)}` : ""),
        el("span", { class: "status", dataset: { status: t.status } }, TICKET_TEXT[t.status] || "处理中")),
      el("p", { class: "ticket-route" }, `${t.from} → ${t.to}`),
      el("p", {}, el("strong", {}, t.passenger_name), el("span", { class: "fare-type" }, ` ${FARE_TYPES[t.fare_type]} `),
        `${CLASS_NAMES[t.seat_class]} `, el("span", { class: "seat-name" }, seatLabel(t.seat, t.seat_class)),
        el("span", { class: "money" }, ` ¥${t.price}`)),
      refunded ? el("p", { class: "refund-line" }, `已退款 ¥${refunded.refund_amount}，手续费 ¥${refunded.fee}`) : null,
      next ? el("p", {}, el("a", { class: "new-order", href: `/orders/${encodeURIComponent(next)}` }, "已改签，查看新订单")) : null,
      el("div", { class: "actions" }, actions,
        el("a", { href: `/orders/${encodeURIComponent(t.order_id)}`, class: "muted" }, "订单详情")),
      panel);
  }

  async function load() {
    const items = await api("GET", "/api/v1/tickets");
    list.replaceChildren(...items.map(card));
    $("#tickets-empty").hidden = items.length > 0;
  }
  return load();
};

pages.waitlist = () => {
  if (!requireLogin()) return;
  const list = $("#waitlist-list");

  function card(w) {
    const { status } = w;
    const classes = [...new Set(w.passengers.map((p) => CLASS_NAMES[p.seat_class]))].join("、");
    return el("article", { class: "waitlist-entry card", dataset: { waitlistId: w.waitlist_id, status } },
      el("div", { class: "ticket-head" },
        el("span", { class: "train-code" }, w.train_code),
        el("span", {}, w.date ? `${w.date} ${weekday(w.date)}` : ""),
        el("span", { class: "status", dataset: { status } }, WAITLIST_TEXT[status])),
      el("p", {}, `${w.from} → ${w.to}`, el("span", { class: "muted" }, ` · ${w.passengers.length} 人 ${classes}`)),
      el("p", { class: "muted waitlist-deadline" }, w.deadline ? `截止 ${localTime(w.deadline)}` : "截止：开车前",
        ` · 提交于 ${localTime(w.created_at)}`),
      el("div", { class: "actions" },
        w.order_id ? el("a", { href: `/orders/${encodeURIComponent(w.order_id)}` }, "查看订单") : null,
        status === "WAITING" ? el("button", {
          type: "button", class: "danger cancel-waitlist", onclick: async (e) => {
            if (!confirm("取消这个候补订单？")) return;
            clearMessages();
            e.currentTarget.disabled = true;
            try {
              await api("DELETE", `/api/v1/waitlist/${encodeURIComponent(w.waitlist_id)}`);
              notice("候补订单已取消。");
              await load();
            } catch (err) {
              showError(err);
              e.target.disabled = false;
            }
          },
        }, "取消候补") : null));
  }

  async function load() {
    const items = await api("GET", "/api/v1/waitlist");
    list.replaceChildren(...items.map(card));
    $("#waitlist-empty").hidden = items.length > 0;
  }
  return load();
};
