/* railbook pages: booking one journey — the train's classes, passengers with their fares, and a
   seat map of the chosen class (carriages, rows, letters; sleepers by berth). A sold-out class
   books a waitlist (候补) entry instead. */
"use strict";

const AISLE_AFTER = { business: "C", first: "C", second: "C", hard_seat: "C", soft_sleeper: "2", hard_sleeper: "3" };
const SEAT_NAME = /^(\d+)-(\d+)(\w)$/;

pages.book = async () => {
  if (!requireLogin()) return;
  const params = new URLSearchParams(location.search);
  const trip = {
    train_code: (params.get("train_code") || "").toUpperCase(), date: params.get("date") || "",
    from: params.get("from") || "", to: params.get("to") || "",
  };
  const waitlist = params.get("waitlist") === "1";
  const form = $("#book-form");
  const captcha = captchaField($("#book-submit"));
  const state = { offer: null, seatClass: "", passengers: [], picked: new Set(), seats: new Map(), active: null,
    carriage: null, map: null };

  $("#trip-train").textContent = trip.train_code;
  $("#trip-date").textContent = trip.date ? `${trip.date} ${weekday(trip.date)}` : "";
  $("#trip-from").textContent = trip.from;
  $("#trip-to").textContent = trip.to;
  if (waitlist) {
    $("#waitlist-note").hidden = false;
    $("#seat-map-box").hidden = true;
    $("#deadline-field").hidden = false;
    $("#book-submit").textContent = "提交候补订单";
  }

  /* ---- the offer: classes, fares and seats left, from the same search the passenger ran ---- */

  async function loadOffer() {
    const offers = await api("GET", `/api/v1/trains/search?${new URLSearchParams({
      from: trip.from, to: trip.to, date: trip.date })}`);
    const offer = offers.find((o) => o.train_code.toUpperCase() === trip.train_code);
    if (!offer) throw new ApiError(404, "TRAIN_DEPARTED", "该车次在这个区间已停止售票或不存在，请重新查询。");
    state.offer = offer;
    trip.from = offer.from.station;
    trip.to = offer.to.station;
    $("#trip-from").textContent = trip.from;
    $("#trip-to").textContent = trip.to;
    $("#trip-departs").textContent = offer.from.departs;
    const offset = arrivalDayOffset(offer);
    $("#trip-arrives").replaceChildren(offer.to.arrives,
      offset ? el("sup", { class: "day-mark" }, dayMark(offset)) : "");
    $("#trip-duration").textContent = `历时 ${minutesText(offer.duration_minutes)}`;
    const classes = SEAT_CLASSES.filter((c) => offer.seats[c]);
    const wanted = params.get("seat_class");
    state.seatClass = classes.includes(wanted) ? wanted : classes.find((c) => offer.seats[c].remaining > 0) || classes[0];
    $("#class-tabs").replaceChildren(...classes.map((c) => {
      const s = offer.seats[c];
      return el("button", {
        type: "button", class: "class-tab", role: "radio", dataset: { seatClass: c },
        onclick: () => chooseClass(c),
      }, el("strong", {}, CLASS_NAMES[c]), el("span", { class: "price" }, `¥${s.price}`),
      el("span", { class: s.remaining > 0 ? "count" : "count none" }, s.remaining > 0 ? `余${s.remaining}张` : "无票"));
    }));
  }

  function chooseClass(c) {
    state.seatClass = c;
    $("#seat-class").value = c;
    state.seats.clear();
    state.active = null;
    $$("#class-tabs .class-tab").forEach((b) => b.setAttribute("aria-checked", String(b.dataset.seatClass === c)));
    renderPassengers();
    if (!waitlist) loadSeatMap().catch((err) => showSeatMapProblem(err));
  }

  /* ---- passengers, each with the fare of their type ---- */

  function fare(p) {
    const seat = state.offer && state.offer.seats[state.seatClass];
    return seat ? fareFor(seat, p.type) : null;
  }

  function renderPassengers() {
    const tbody = $("#book-passengers tbody");
    tbody.replaceChildren(...state.passengers.map((p) => {
      const chosen = state.seats.get(p.passenger_id);
      const price = fare(p);
      return el("tr", { dataset: { passengerId: p.passenger_id }, class: state.active === p.passenger_id ? "active" : "" },
        el("td", {}, el("input", {
          type: "checkbox", class: "pick", value: p.passenger_id, checked: state.picked.has(p.passenger_id),
          "aria-label": `选择 ${p.name}`, onchange: (e) => {
            if (e.target.checked) state.picked.add(p.passenger_id);
            else { state.picked.delete(p.passenger_id); state.seats.delete(p.passenger_id); }
            renderPassengers();
            renderMap();
          },
        })),
        el("td", { class: "p-name" }, p.name),
        el("td", { class: "p-type" }, FARE_TYPES[p.type] || PASSENGER_TYPES[p.type] || p.type),
        el("td", { class: "p-seat" }, chosen ? seatLabel(chosen, state.seatClass) : "系统分配",
          waitlist ? null : el("button", {
            type: "button", class: "link choose-seat", onclick: () => {
              state.picked.add(p.passenger_id);
              state.active = state.active === p.passenger_id ? null : p.passenger_id;
              renderPassengers();
              renderMap();
            },
          }, state.active === p.passenger_id ? "选座中…" : "选座")),
        el("td", { class: "p-price" }, price ? `¥${price}` : "—"));
    }));
    $("#book-no-passengers").hidden = state.passengers.length > 0;
    renderTotal();
  }

  function renderTotal() {
    const picked = state.passengers.filter((p) => state.picked.has(p.passenger_id));
    const total = picked.reduce((sum, p) => sum + fen(fare(p) || 0), 0);
    $("#book-count").textContent = `共 ${picked.length} 人，合计`;
    $("#book-total").textContent = `¥${yuan(total)}`;
    const seat = state.offer && state.offer.seats[state.seatClass];
    const left = state.map ? countFree(state.map) : seat ? seat.remaining : null;
    $("#book-left").textContent = left === null ? "" : `${CLASS_NAMES[state.seatClass]}余 ${left} 张`;
  }

  /* ---- the seat map of the chosen class ---- */

  const countFree = (map) => map.carriages.reduce((n, c) => n + c.rows.reduce(
    (m, r) => m + r.seats.filter((s) => s.free).length, 0), 0);

  async function loadSeatMap() {
    $("#seat-map").replaceChildren(el("p", { class: "muted" }, "正在加载座位图…"));
    const query = new URLSearchParams({ date: trip.date, from: trip.from, to: trip.to, seat_class: state.seatClass });
    state.map = await api("GET", `/api/v1/trains/${encodeURIComponent(trip.train_code)}/seat-map?${query}`);
    const carriages = state.map.carriages || [];
    const keep = carriages.find((c) => c.carriage === state.carriage);
    const roomy = carriages.slice().sort((a, b) => countFreeIn(b) - countFreeIn(a))[0];
    state.carriage = keep ? keep.carriage : roomy ? roomy.carriage : null;
    renderMap();
    renderTotal();
  }

  const countFreeIn = (c) => c.rows.reduce((m, r) => m + r.seats.filter((s) => s.free).length, 0);

  function showSeatMapProblem(err) {
    state.map = null;
    $("#carriage-tabs").replaceChildren();
    $("#seat-map").replaceChildren(el("p", { class: "muted" }, `座位图暂不可用（${err.message}），提交后由系统分配座位。`));
  }

  function holderOf(seat) {
    for (const [pid, name] of state.seats) if (name === seat) return pid;
    return null;
  }

  function clickSeat(seat) {
    const holder = holderOf(seat);
    if (holder !== null) {
      state.seats.delete(holder);
    } else {
      let pid = state.active;
      if (pid === null) {
        const waiting = state.passengers.find((p) => state.picked.has(p.passenger_id) && !state.seats.has(p.passenger_id));
        pid = waiting ? waiting.passenger_id : null;
      }
      if (pid === null) {
        const unpicked = state.passengers.find((p) => !state.picked.has(p.passenger_id));
        pid = unpicked ? unpicked.passenger_id : null;
      }
      if (pid === null) { fieldError($("#seat-map"), "每位乘车人只能选一个座位：点已选座位可取消。"); return; }
      state.picked.add(pid);
      state.seats.set(pid, seat);
      const next = state.passengers.find((p) => state.picked.has(p.passenger_id) && !state.seats.has(p.passenger_id));
      state.active = next ? next.passenger_id : null;
    }
    clearFieldErrors($("#seat-map-box"));
    renderPassengers();
    renderMap();
  }

  function seatButton(cell, letter) {
    const holder = holderOf(cell.seat);
    const person = holder !== null ? state.passengers.find((p) => p.passenger_id === holder) : null;
    const berth = BERTHS[state.seatClass];
    const label = seatLabel(cell.seat, state.seatClass);
    const text = berth ? label.replace(/^\d+车/, "").replace("号", " ") : letter;
    return el("button", {
      type: "button", class: `seat ${person ? "chosen" : cell.free ? "free" : "taken"}`,
      dataset: { seat: cell.seat }, disabled: !cell.free && !person,
      title: `${label}${cell.free ? "" : "（已售）"}${person ? ` · ${person.name}` : ""}`,
      "aria-label": label, onclick: () => clickSeat(cell.seat),
    }, person ? person.name.slice(0, 1) : text);
  }

  function renderMap() {
    if (!state.map || waitlist) return;
    const carriages = state.map.carriages || [];
    $("#carriage-tabs").replaceChildren(...carriages.map((c) => el("button", {
      type: "button", class: c.carriage === state.carriage ? "carriage-tab active" : "carriage-tab",
      dataset: { carriage: c.carriage }, "aria-pressed": String(c.carriage === state.carriage),
      onclick: () => { state.carriage = c.carriage; renderMap(); },
    }, `${c.carriage}车`, el("span", { class: "muted" }, ` 余${countFreeIn(c)}`))));
    const carriage = carriages.find((c) => c.carriage === state.carriage);
    if (!carriage) { $("#seat-map").replaceChildren(el("p", { class: "muted" }, "该席别没有座位。")); return; }
    const sleeper = Boolean(BERTHS[state.seatClass]);
    const aisle = AISLE_AFTER[state.seatClass];
    $("#seat-map").replaceChildren(el("div", {
      class: sleeper ? "carriage sleeper" : "carriage", dataset: { carriage: carriage.carriage },
    }, el("p", { class: "carriage-name" }, `${carriage.carriage}车 ${CLASS_NAMES[state.seatClass]}`),
    carriage.rows.map((row) => el("div", { class: "seat-row", dataset: { row: row.row } },
      el("span", { class: "row-no" }, sleeper ? `${row.row}隔` : pad2(row.row)),
      row.seats.map((cell) => {
        const letter = (SEAT_NAME.exec(cell.seat) || [])[3] || "";
        const button = seatButton(cell, letter);
        return letter === aisle ? [button, el("span", { class: "aisle", "aria-hidden": "true" })] : button;
      })))));
  }

  /** The passenger rows a refusal concerns: the one it names (TRIP_CONFLICT), else, for NOT_A_CHILD,
      the child fares of the order (their birth dates are not shown to the page). */
  function rowsConcerned(err, chosen) {
    const named = err.details && err.details.passenger_id;
    const ids = named ? [named] : chosen.map((c) => c.passenger_id).filter((id) =>
      err.code !== "NOT_A_CHILD" || state.passengers.find((p) => p.passenger_id === id).type === "child");
    const rows = ids.map((id) => $(`#book-passengers tbody tr[data-passenger-id="${id}"]`)).filter(Boolean);
    return rows.length ? rows : [$("#book-passengers")];
  }

  /* ---- submit: an order (seat names as preferences), or a waitlist entry ---- */

  onSubmit(form, async (data) => {
    const passengers = state.passengers.filter((p) => state.picked.has(p.passenger_id)).map((p) => {
      const item = { passenger_id: p.passenger_id, seat_class: state.seatClass };
      if (state.seats.has(p.passenger_id)) item.seat_pref = state.seats.get(p.passenger_id);
      return item;
    });
    if (!passengers.length) {
      fieldError($("#book-passengers"), "请至少选择一位乘车人。");
      throw new ApiError(0, "NO_PASSENGER", "请至少选择一位乘车人。");
    }
    if (waitlist) {
      const body = { ...trip, passengers };
      const deadline = beijingInput(data.get("deadline"));
      if (deadline) body.deadline = deadline.toISOString();
      await api("POST", "/api/v1/waitlist", body);
      location.href = "/waitlist";
      return;
    }
    try {
      const answer = await api("POST", "/api/v1/orders", { ...trip, passengers, ...captcha.body() },
        { "Idempotency-Key": newKey() });
      location.href = `/orders/${encodeURIComponent(answer.order_id)}`;
    } catch (err) {
      await captcha.after(err);
      if (["SEAT_TAKEN", "BAD_SEAT_PREF", "BAD_SEAT"].includes(err.code)) {
        state.seats.clear();
        await loadSeatMap().catch(() => {});
        renderPassengers();
        fieldError($("#seat-map"), err.message);
      } else if (err.code === "NOT_A_CHILD" || err.code === "TRIP_CONFLICT") {
        for (const row of rowsConcerned(err, passengers)) fieldError($(".p-name", row), err.message);
      } else if (err.code === "SOLD_OUT") {
        fieldError($("#book-submit"), `${err.message} 可返回查询页提交候补。`);
      }
      throw err;
    }
  });

  const [list] = await Promise.all([api("GET", "/api/v1/passengers"), loadOffer()]);
  state.passengers = list;
  if (list.length) state.picked.add(list[0].passenger_id);
  chooseClass(state.seatClass);
};
