/* railbook pages: administration — opening sale days inside the window, a train-day's inventory
   as a chart (seats left per station pair as a heat map, sold per segment as bars: readable for
   30 stops), the train editor (PUT, with the API's refusals beside the fields), trains and stations. */
"use strict";

/** A heat-map colour for `share` of the seats left: red (none) through amber to green (all). */
const heat = (share) => `hsl(${Math.round(120 * Math.max(0, Math.min(1, share)))}, 70%, ${share > 0 ? 82 - 22 * share : 88}%)`;

function soldBars(stations, info) {
  const seats = Math.max(1, info.seats);
  return el("div", { class: "bars", role: "list", "aria-label": "各区段已售" },
    (info.sold_per_segment || []).map((sold, k) => el("div", {
      class: "bar-row", role: "listitem", dataset: { segment: k }, title: `${stations[k]}→${stations[k + 1]} 已售 ${sold}`,
    }, el("span", { class: "bar-label" }, `${stations[k]}→${stations[k + 1]}`),
    el("span", { class: "bar-track" }, el("span", { class: "bar", style: `width:${(100 * sold) / seats}%` })),
    el("span", { class: "bar-value" }, `${sold}/${info.seats}`))));
}

function heatMap(stations, info) {
  const n = stations.length;
  const cells = [el("span", { class: "hm-corner" }, "从↓到→")];
  for (let j = 1; j < n; j += 1) cells.push(el("span", { class: "hm-col", title: stations[j] }, stations[j]));
  for (let i = 0; i < n - 1; i += 1) {
    cells.push(el("span", { class: "hm-row", title: stations[i] }, stations[i]));
    for (let j = 1; j < n; j += 1) {
      if (j <= i) { cells.push(el("span", { class: "hm-cell void" })); continue; }
      const left = info.remaining[`${i}-${j}`] ?? 0;
      cells.push(el("span", {
        class: "hm-cell", dataset: { pair: `${i}-${j}`, left }, style: `background:${heat(left / Math.max(1, info.seats))}`,
        title: `${stations[i]}→${stations[j]} 余 ${left}`,
      }, n <= 12 ? String(left) : ""));
    }
  }
  return el("div", { class: "heatmap", style: `--cols:${n - 1}`, role: "img",
    "aria-label": "各区间余票热力图" }, cells);
}

function renderInventory(inv) {
  const stations = inv.stations || [];
  const sections = Object.entries(inv.classes || {}).map(([seatClass, info]) => el("div", {
    class: "inventory-class", dataset: { seatClass },
  }, el("h3", {}, `${CLASS_NAMES[seatClass] || seatClass}：${info.seats} 座`),
  el("div", { class: "inventory-charts" },
    el("figure", {}, el("figcaption", {}, "区间余票（颜色越绿余票越多，悬停看数字）"), heatMap(stations, info)),
    el("figure", {}, el("figcaption", {}, "各区段已售"), soldBars(stations, info)))));
  $("#inventory").replaceChildren(
    el("p", { class: "muted" }, `${inv.train_code} ${inv.date}：${stations.length} 站，${stations[0] || ""} → ${stations[stations.length - 1] || ""}`),
    el("p", { class: "legend" }, el("span", { class: "swatch", style: `background:${heat(0)}` }), " 无票 ",
      el("span", { class: "swatch", style: `background:${heat(0.5)}` }), " 一半 ",
      el("span", { class: "swatch", style: `background:${heat(1)}` }), " 全部空闲"),
    ...sections);
}

/* ---------- the train editor ---------- */

function stopRow(stop = {}) {
  const input = (name, attrs = {}) => el("input", { name, value: stop[name] ?? "", ...attrs });
  return el("tr", { class: "stop" },
    el("td", { class: "stop-no" }),
    el("td", {}, input("station", { maxlength: 32, required: true, class: "w-station" })),
    el("td", {}, input("arrives", { placeholder: "HH:MM", maxlength: 5, class: "w-time" })),
    el("td", {}, input("departs", { placeholder: "HH:MM", maxlength: 5, class: "w-time" })),
    el("td", {}, input("day", { type: "number", min: 0, max: 7, class: "w-num", value: stop.day || 0 })),
    el("td", {}, input("km", { type: "number", min: 0, class: "w-num" })),
    el("td", {}, el("button", { type: "button", class: "link danger", onclick: (e) => { e.target.closest("tr").remove(); numberStops(); } }, "删除")));
}

function carriageRow(c = {}) {
  return el("tr", { class: "carriage-edit" },
    el("td", {}, el("input", { name: "carriage", type: "number", min: 1, value: c.carriage ?? "", class: "w-num" })),
    el("td", {}, el("select", { name: "seat_class" }, SEAT_CLASSES.map((s) => el("option", { value: s, selected: s === c.seat_class }, CLASS_NAMES[s])))),
    el("td", {}, el("input", { name: "rows", type: "number", min: 1, value: c.rows ?? "", class: "w-num" })),
    el("td", {}, el("button", { type: "button", class: "link danger", onclick: (e) => e.target.closest("tr").remove() }, "删除")));
}

function numberStops() {
  $$("#tf-stops tbody tr").forEach((tr, i) => { $(".stop-no", tr).textContent = String(i + 1); });
}

function fillTrain(train) {
  $("#tf-code").value = train.code;
  $("#tf-kind").value = train.kind;
  $("#tf-stops tbody").replaceChildren(...(train.stops || []).map(stopRow));
  $("#tf-carriages tbody").replaceChildren(...(train.carriages || []).map(carriageRow));
  numberStops();
  $("#train-form").hidden = false;
}

function readTrain() {
  const value = (tr, name) => $(`[name="${name}"]`, tr).value.trim();
  const stops = $$("#tf-stops tbody tr").map((tr) => {
    const stop = { station: value(tr, "station"), km: Number(value(tr, "km") || 0) };
    if (value(tr, "arrives")) stop.arrives = value(tr, "arrives");
    if (value(tr, "departs")) stop.departs = value(tr, "departs");
    if (Number(value(tr, "day"))) stop.day = Number(value(tr, "day"));
    return stop;
  });
  const carriages = $$("#tf-carriages tbody tr").map((tr) => ({
    carriage: Number(value(tr, "carriage")), seat_class: value(tr, "seat_class"), rows: Number(value(tr, "rows")),
  }));
  return { code: $("#tf-code").value, kind: $("#tf-kind").value.trim(), stops, carriages };
}

/** The input an API refusal names: a `stops.2.km` path, or `{stop: 2, field: "km"}` / `{carriage, position}`. */
function editorInput(problem, details, body) {
  const path = problem.path || [];
  const form = $("#train-form");
  const index = path.find((p) => /^\d+$/.test(p));
  if (path[0] === "stops" && index !== undefined) return $(`#tf-stops tbody tr:nth-child(${Number(index) + 1}) [name="${problem.field}"]`) || $(`#tf-stops tbody tr:nth-child(${Number(index) + 1}) input`);
  if (path[0] === "carriages" && index !== undefined) return $(`#tf-carriages tbody tr:nth-child(${Number(index) + 1}) [name="${problem.field}"]`);
  if (details.stop !== undefined) {
    const row = $(`#tf-stops tbody tr:nth-child(${Number(details.stop) + 1})`);
    return row && ($(`[name="${details.field}"]`, row) || $("[name=station]", row));
  }
  if (details.carriage !== undefined) {
    const position = details.position ?? body.carriages.findIndex((c) => c.carriage === details.carriage);
    const row = $(`#tf-carriages tbody tr:nth-child(${Number(position) + 1})`);
    return row && ($(`[name="${details.field}"]`, row) || $("[name=carriage]", row));
  }
  if (problem.field === "stops") return $("#tf-add-stop");
  if (problem.field === "carriages") return $("#tf-add-carriage");
  return form.querySelector(`[name="${problem.field}"]`);
}

/* ---------- the page ---------- */

pages.admin = async (me) => {
  if (!requireLogin()) return;
  if (!me || me.role !== "admin") {
    $("#admin-denied").hidden = false;
    return;
  }
  $("#admin").hidden = false;
  const saleDays = Number(document.body.dataset.saleDays || 15);
  const first = daysFromToday(0);
  const last = daysFromToday(saleDays - 1);
  for (const id of ["#open-from", "#open-to"]) { $(id).min = first; $(id).max = last; }
  $("#open-from").value = first;
  $("#open-to").value = last;
  $("#open-window").textContent = `预售期 ${saleDays} 天：可开放 ${first} 至 ${last}。`;
  $("#inv-date").value = daysFromToday(Math.min(1, saleDays - 1));

  const openForm = $("#open-sales-form");
  onSubmit(openForm, async () => {
    const from = $("#open-from").value;
    const to = $("#open-to").value;
    const outside = [["#open-from", from], ["#open-to", to]].filter(([, d]) => d < first || d > last);
    for (const [id] of outside) fieldError($(id), `超出预售期：只能开放 ${first} 至 ${last}。`);
    if (to < from) fieldError($("#open-to"), "结束日期早于开始日期。");
    if (outside.length || to < from) throw new ApiError(422, "DATE_NOT_ON_SALE", `只能开放预售期内的日期（${first} 至 ${last}）。`);
    let answer;
    try {
      answer = await api("POST", "/api/v1/admin/sales/open", from === to ? { date: from } : { from, to });
    } catch (err) {
      if (err.code === "DATE_NOT_ON_SALE") fieldError($("#open-from"), err.message);
      throw err;
    }
    const opened = answer.opened || [];
    const already = (answer.already_open || []).length;
    const days = [...new Set(opened.map((o) => o.date))].sort();
    $("#open-result").textContent = `新开放 ${opened.length} 个车次日${days.length ? `（${days.join("、")}）` : ""}，之前已开放 ${already} 个。`;
    notice(opened.length ? "售票已开放。" : "这些日期已经全部开放，无需重复操作。");
  });

  async function showInventory(code, date) {
    const query = new URLSearchParams({ date });
    renderInventory(await api("GET", `/api/v1/admin/trains/${encodeURIComponent(code)}/inventory?${query}`));
    $("#inventory").scrollIntoView({ block: "nearest" });
  }
  onSubmit($("#inventory-form"), () => showInventory($("#inv-train").value.trim().toUpperCase(), $("#inv-date").value));

  async function loadTrain(code) {
    clearFieldErrors($("#editor-card"));
    fillTrain(await api("GET", `/api/v1/admin/trains/${encodeURIComponent(code)}`));
  }
  onSubmit($("#load-train-form"), () => loadTrain($("#edit-code").value.trim().toUpperCase()));
  $("#tf-add-stop").addEventListener("click", () => {
    const body = $("#tf-stops tbody");
    body.insertBefore(stopRow(), body.lastElementChild);
    numberStops();
  });
  $("#tf-add-carriage").addEventListener("click", () => {
    const count = $$("#tf-carriages tbody tr").length;
    $("#tf-carriages tbody").append(carriageRow({ carriage: count + 1, seat_class: "second", rows: 18 }));
  });
  onSubmit($("#train-form"), async () => {
    const body = readTrain();
    try {
      fillTrain(await api("PUT", `/api/v1/admin/trains/${encodeURIComponent(body.code)}`, body));
      notice(`车次 ${body.code} 已保存：之后开放的日期按新安排发售。`);
    } catch (err) {
      const problems = fieldProblems(err);
      for (const p of problems) {
        const input = editorInput(p, err.details || {}, body);
        fieldError(input || $("#tf-save"), p.text || err.message);
      }
      if (!problems.length) fieldError($("#tf-save"), err.message);
      throw err;
    }
  });

  async function loadStations(q) {
    const query = q ? `?${new URLSearchParams({ q })}` : "";
    const list = await api("GET", `/api/v1/admin/stations${query}`);
    $("#stations-table tbody").replaceChildren(...list.map((s) => el("tr", {},
      el("td", {}, s.name), el("td", {}, el("code", {}, s.code)), el("td", {}, s.pinyin || ""), el("td", {}, s.city || ""))));
  }
  onSubmit($("#stations-form"), () => loadStations($("#stations-q").value.trim()));

  async function loadTrains() {
    const list = await api("GET", "/api/v1/admin/trains");
    $("#trains-table tbody").replaceChildren(...list.map((t) => el("tr", { dataset: { train: t.code } },
      el("td", { class: "train-code" }, t.code), el("td", {}, t.kind), el("td", {}, t.from), el("td", {}, t.to),
      el("td", { class: "stop-count" }, `${t.stops} 站`),
      el("td", {}, el("button", {
        type: "button", class: "link show-inventory",
        onclick: () => { $("#inv-train").value = t.code; clearMessages(); showInventory(t.code, $("#inv-date").value).catch(showError); },
      }, "余票"), " ", el("button", {
        type: "button", class: "link edit-train",
        onclick: () => { $("#edit-code").value = t.code; clearMessages(); loadTrain(t.code).then(() => $("#editor-card").scrollIntoView()).catch(showError); },
      }, "编辑")))));
  }

  await Promise.all([loadStations("").catch(showError), loadTrains().catch(showError)]);
};

/* ---------- the blocklist ---------- */

/** Chinese for the API's refusals of a blocklist entry, by field and kind of problem. */
const BLOCK_FIELD_TEXT = {
  mobile: "须为 13–19 开头的 11 位手机号",
  ip: "不是有效的 IPv4/IPv6 地址或网段",
  reason: "请填写原因（不超过 200 字）",
  until: "时间格式不正确",
};

pages.blocklist = async (me) => {
  if (!requireLogin()) return;
  if (!me || me.role !== "admin") {
    $("#admin-denied").hidden = false;
    return;
  }
  $("#admin").hidden = false;
  const form = $("#block-form");
  const kind = $("#block-kind");
  const target = $("#block-target");

  function chooseKind() {
    const ip = kind.value === "ip";
    target.name = kind.value;
    $("#block-target-name").textContent = ip ? "IP 地址" : "手机号";
    target.placeholder = ip ? "如 203.0.113.7 或 198.51.100.0/24" : "11 位手机号";
    target.inputMode = ip ? "text" : "numeric";
    clearFieldErrors(form);
  }
  kind.addEventListener("change", chooseKind);
  chooseKind();

  async function load() {
    const list = await api("GET", "/api/v1/admin/blocklist");
    $("#blocks-table tbody").replaceChildren(...list.map((b) => el("tr", { dataset: { blockId: b.block_id } },
      el("td", { class: "block-target" }, b.mobile ? `手机号 ${b.mobile}` : `IP ${b.ip}`),
      el("td", { class: "block-reason" }, b.reason),
      el("td", { class: "block-until" }, b.until ? `至 ${localTime(b.until)}` : "永久"),
      el("td", { class: "muted" }, localTime(b.created_at)),
      el("td", {}, el("span", { class: "status", dataset: { state: b.active ? "blocked" : "lapsed" } },
        b.active ? "生效中" : "已过期")),
      el("td", {}, el("button", {
        type: "button", class: "link danger remove-block", onclick: async (e) => {
          if (!confirm(`解除对 ${b.mobile || b.ip} 的限制？`)) return;
          clearMessages();
          e.currentTarget.disabled = true;
          try {
            await api("DELETE", `/api/v1/admin/blocklist/${b.block_id}`);
            notice(`已解除对 ${b.mobile || b.ip} 的限制。`);
            await load();
          } catch (err) {
            showError(err);
          }
        },
      }, "解除")))));
    $("#blocks-empty").hidden = list.length > 0;
  }

  onSubmit(form, async (data) => {
    const body = { [kind.value]: String(data.get(kind.value) || "").trim(), reason: String(data.get("reason")).trim() };
    const until = beijingInput(data.get("until"));
    if (!body[kind.value]) fieldError(target, `请填写${kind.value === "ip" ? " IP 地址" : "手机号"}`);
    if (!body.reason) fieldError($("#block-reason"), "请填写原因");
    if (until && until <= new Date()) fieldError($("#block-until"), "截止时间须晚于现在");
    if ($$("[aria-invalid]", form).length) throw new ApiError(422, "VALIDATION_ERROR", ERROR_TEXT.VALIDATION_ERROR);
    if (until) body.until = until.toISOString();
    let added;
    try {
      added = await api("POST", "/api/v1/admin/blocklist", body);
    } catch (err) {
      /* The API names the field; say what is wrong with it in Chinese. */
      for (const f of (err.details && Array.isArray(err.details.fields) ? err.details.fields : [])) {
        if (f && BLOCK_FIELD_TEXT[f.field] && !hasChinese(f.message)) f.message = BLOCK_FIELD_TEXT[f.field];
      }
      throw err;
    }
    form.reset();
    chooseKind();
    notice(`已添加：${added.mobile ? `手机号 ${added.mobile}` : `IP ${added.ip}`}。`);
    await load();
  });
  await load();
};
