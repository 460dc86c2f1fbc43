/* railbook pages: station autocomplete (shared) and the search page — a date strip over the sale
   window, filters and sorting done in the page on the day's answer, a train's stops on demand,
   and journeys with one change of train when there is no direct one (or when asked). */
"use strict";

const KIND_NAMES = { G: "高铁", D: "动车", C: "城际", Z: "直达", T: "特快", K: "快速" };
const TIME_RANGES = [["", "全天"], ["0-6", "00:00–06:00"], ["6-12", "06:00–12:00"], ["12-18", "12:00–18:00"],
  ["18-24", "18:00–24:00"]];

/* ---------- station autocomplete ---------- */

const stationCache = new Map();

/** Stations whose name, pinyin, initials or telegraph code start with `q` (at most 20). */
async function findStations(q) {
  const key = q.toLowerCase();
  if (!key) return [];
  if (!stationCache.has(key)) stationCache.set(key, await api("GET", `/api/v1/stations?${new URLSearchParams({ q })}`));
  return stationCache.get(key);
}

/** Suggestions under a station input: typed name, pinyin (beijingnan), initials (bjn) or code (VNP). */
function autocomplete(input, onPick) {
  const list = el("ul", { class: "suggest", role: "listbox", id: `${input.id}-suggest`, hidden: true });
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", list.id);
  input.after(list);
  let items = [];
  let active = -1;
  let seq = 0;

  function close() { list.hidden = true; active = -1; input.setAttribute("aria-expanded", "false"); }
  function highlight(i) {
    active = i;
    $$("li", list).forEach((li, k) => li.setAttribute("aria-selected", String(k === i)));
  }
  function pick(i) {
    const s = items[i];
    if (!s) return;
    input.value = s.name;
    close();
    input.dispatchEvent(new Event("change"));
    if (onPick) onPick(s);
  }
  function render() {
    list.replaceChildren(...items.map((s, i) => el("li", {
      role: "option", dataset: { name: s.name },
      onmousedown: (e) => { e.preventDefault(); pick(i); },
    }, el("strong", {}, s.name), el("span", { class: "muted" }, ` ${s.code} ${s.pinyin}`))));
    list.hidden = items.length === 0;
    input.setAttribute("aria-expanded", String(!list.hidden));
    highlight(items.length ? 0 : -1);
  }
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    const q = input.value.trim();
    if (!q) { items = []; close(); return; }
    timer = setTimeout(async () => {
      const mine = ++seq;
      let found = [];
      try {
        found = await findStations(q);
      } catch (err) {
        found = []; /* suggestions are a help: the typed name still searches */
      }
      if (mine !== seq || input.value.trim() !== q) return;
      items = found.slice(0, 20);
      render();
    }, 120);
  });
  input.addEventListener("keydown", (e) => {
    if (list.hidden) return;
    if (e.key === "ArrowDown") { e.preventDefault(); highlight((active + 1) % items.length); }
    else if (e.key === "ArrowUp") { e.preventDefault(); highlight((active - 1 + items.length) % items.length); }
    else if (e.key === "Enter" && active >= 0) { e.preventDefault(); pick(active); }
    else if (e.key === "Escape") close();
  });
  input.addEventListener("blur", () => close());
}

/* ---------- one offer's pieces, shared by direct and transfer results ---------- */

function bookParams(offer, seatClass, extra = {}) {
  return new URLSearchParams({
    train_code: offer.train_code, date: offer.from.date, from: offer.from.station,
    to: offer.to.station, seat_class: seatClass, ...extra,
  });
}

function arrivalCell(offer) {
  const offset = arrivalDayOffset(offer);
  return el("td", { class: "c-arr" },
    el("span", { class: "time" }, offer.to.arrives),
    offset ? el("sup", { class: "day-mark", title: offer.to.date }, dayMark(offset)) : null,
    el("span", { class: "station" }, offer.to.station));
}

function seatCell(offer, seatClass) {
  const seat = offer.seats && offer.seats[seatClass];
  if (!seat) return el("td", { class: "seat-cell absent" }, el("span", { class: "none" }, "--"));
  const remaining = Number(seat.remaining);
  const link = remaining > 0
    ? el("a", { href: `/book?${bookParams(offer, seatClass)}`, class: "book-link" }, "预订")
    : el("a", { href: `/book?${bookParams(offer, seatClass, { waitlist: "1" })}`, class: "waitlist-link" }, "候补");
  return el("td", { class: "seat-cell", dataset: { seatClass } },
    el("span", { class: "cls" }, CLASS_NAMES[seatClass]),
    el("span", { class: remaining > 0 ? "count" : "count none" }, remaining > 0 ? `余${remaining}` : "无票"),
    el("span", { class: "price" }, `¥${seat.price}`), link);
}

function offerRow(offer, onStops) {
  return el("tr", { class: "offer", dataset: { train: offer.train_code } },
    el("td", { class: "c-train" }, el("button", {
      type: "button", class: "link train-code", "aria-expanded": "false", title: "查看停站",
      onclick: (e) => onStops(e.currentTarget),
    }, offer.train_code), el("span", { class: "stops-hint" }, "经停 ▾")),
    el("td", { class: "c-dep" }, el("span", { class: "time" }, offer.from.departs),
      el("span", { class: "station" }, offer.from.station)),
    el("td", { class: "c-dur" }, minutesText(offer.duration_minutes)),
    arrivalCell(offer),
    SEAT_CLASSES.map((c) => seatCell(offer, c)));
}

/** The stop list of a train under its row, boarding to alighting highlighted. */
async function toggleStops(button, offer, columns) {
  const row = button.closest("tr");
  const next = row.nextElementSibling;
  if (next && next.classList.contains("stops-row")) {
    next.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  button.setAttribute("aria-expanded", "true");
  const cell = el("td", { colspan: columns }, el("span", { class: "muted" }, "正在加载停站…"));
  row.after(el("tr", { class: "stops-row", dataset: { train: offer.train_code } }, cell));
  try {
    const train = await api("GET", `/api/v1/trains/${encodeURIComponent(offer.train_code)}/stops`);
    const { stops } = train;
    cell.replaceChildren(el("ol", { class: "stops" }, stops.map((s, i) => el("li", {
      class: i >= offer.from.index && i <= offer.to.index ? "on-journey" : "",
    },
    el("span", { class: "stop-name" }, s.station),
    el("span", { class: "muted" }, i === 0 ? `${s.departs} 始发`
      : i === stops.length - 1 ? `${s.arrives} 终到` : `${s.arrives}–${s.departs}`),
    s.day ? el("sup", { class: "day-mark" }, dayMark(s.day)) : null))));
  } catch (err) {
    cell.replaceChildren(el("span", { class: "muted" }, `停站信息暂不可用：${err.message}`));
  }
}

/* ---------- the search page ---------- */

pages.search = () => {
  const form = $("#search-form");
  const params = new URLSearchParams(location.search);
  const saleDays = Number(document.body.dataset.saleDays || 15);
  const first = daysFromToday(0);
  const last = daysFromToday(saleDays - 1);
  const dateInput = $("#date");
  $("#from").value = params.get("from") || "";
  $("#to").value = params.get("to") || "";
  dateInput.value = params.get("date") || daysFromToday(Math.min(1, saleDays - 1));
  dateInput.min = first;
  dateInput.max = last;
  autocomplete($("#from"));
  autocomplete($("#to"));
  $("#swap").addEventListener("click", () => {
    [$("#from").value, $("#to").value] = [$("#to").value, $("#from").value];
  });

  let offers = [];
  let query = null;

  /* The date strip: every day of the sale window, the chosen one marked; prev/next step one day. */
  function renderStrip() {
    const strip = $("#date-strip");
    const days = [];
    for (let i = 0; i < saleDays; i += 1) days.push(addDays(first, i));
    const current = dateInput.value;
    $("#day-prev").disabled = current <= first;
    $("#day-next").disabled = current >= last;
    strip.replaceChildren(...days.map((d) => el("button", {
      type: "button", class: d === current ? "day active" : "day", dataset: { date: d },
      "aria-pressed": String(d === current), onclick: () => goToDay(d),
    }, el("span", {}, shortDate(d)), el("span", { class: "wd" }, weekday(d)))));
    const active = $(".day.active", strip);
    if (active) strip.scrollLeft = active.offsetLeft - strip.clientWidth / 2 + active.clientWidth / 2;
  }

  function goToDay(d) {
    if (d < first || d > last) return;
    dateInput.value = d;
    renderStrip();
    if ($("#from").value.trim() && $("#to").value.trim()) form.requestSubmit();
  }
  $("#day-prev").addEventListener("click", () => goToDay(addDays(dateInput.value, -1)));
  $("#day-next").addEventListener("click", () => goToDay(addDays(dateInput.value, 1)));
  dateInput.addEventListener("change", renderStrip);
  renderStrip();

  function renderKinds() {
    const kinds = [...new Set(offers.map((o) => o.train_code[0]))].sort();
    const box = $("#f-kinds");
    const checked = new Set($$("input:checked", box).map((i) => i.value));
    box.replaceChildren(...kinds.map((k) => el("label", { class: "chip" },
      el("input", { type: "checkbox", value: k, checked: checked.has(k), onchange: renderResults }),
      `${k} ${KIND_NAMES[k] || ""}`)));
  }

  function visibleOffers() {
    const kinds = new Set($$("#f-kinds input:checked").map((i) => i.value));
    const range = $("#f-time").value;
    const seatClass = $("#f-class").value;
    const [lo, hi] = range ? range.split("-").map((h) => Number(h) * 60) : [0, 1440];
    const list = offers.filter((o) => (!kinds.size || kinds.has(o.train_code[0]))
      && clockMinutes(o.from.departs) >= lo && clockMinutes(o.from.departs) < hi
      && (!seatClass || (o.seats[seatClass] && o.seats[seatClass].remaining > 0)));
    const key = {
      departs: (o) => clockMinutes(o.from.departs),
      arrives: (o) => clockMinutes(o.from.departs) + o.duration_minutes,
      duration: (o) => o.duration_minutes,
    }[$("#f-sort").value];
    return list.sort((a, b) => key(a) - key(b) || a.train_code.localeCompare(b.train_code));
  }

  function renderResults() {
    const list = visibleOffers();
    const tbody = $("#results-table tbody");
    tbody.replaceChildren(...list.map((o) => offerRow(o, (b) => toggleStops(b, o, 10))));
    const { from, to, date } = query;
    const head = `${shortDate(date)} ${weekday(date)} ${from} → ${to}：`;
    $("#results-summary").textContent = offers.length
      ? `${head}共 ${offers.length} 个车次${list.length !== offers.length ? `，显示 ${list.length} 个` : ""}`
      : `${head}没有直达车次`;
    $("#results-table").hidden = list.length === 0;
    $("#filters").hidden = offers.length === 0;
  }

  async function showTransfers() {
    const box = $("#transfers");
    const want = offers.length === 0 || $("#f-transfers").checked;
    if (!want) { box.hidden = true; return; }
    const journeys = await api("GET", `/api/v1/trains/transfers?${new URLSearchParams(query)}`);
    const list = $("#transfers-list");
    list.replaceChildren(...journeys.map((j, n) => el("article", { class: "transfer card", dataset: { n } },
      el("p", { class: "transfer-head" },
        el("strong", {}, `${j.transfer_station} 换乘`),
        el("span", { class: "muted" }, ` · 等候 ${minutesText(j.wait_minutes)} · 全程 ${minutesText(j.duration_minutes)}`)),
      el("div", { class: "table-wrap" }, el("table", { class: "results transfer-legs" },
        el("tbody", {}, j.legs.map((leg) => offerRow(leg, (b) => toggleStops(b, leg, 10)))))))));
    $("#transfers-empty").hidden = journeys.length > 0;
    box.hidden = false;
  }

  for (const id of ["#f-time", "#f-class", "#f-sort"]) $(id).addEventListener("change", renderResults);
  $("#f-transfers").addEventListener("change", () => showTransfers().catch(showError));

  onSubmit(form, async (data) => {
    const from = data.get("from").trim();
    const to = data.get("to").trim();
    const date = data.get("date");
    history.replaceState(null, "", `/?${new URLSearchParams({ from, to, date })}`);
    renderStrip();
    $("#results").hidden = true;
    $("#transfers").hidden = true;
    query = { from, to, date };
    offers = await api("GET", `/api/v1/trains/search?${new URLSearchParams(query)}`);
    renderKinds();
    renderResults();
    $("#results").hidden = false;
    await showTransfers();
  });
  if (params.get("from") && params.get("to")) form.requestSubmit();
};
