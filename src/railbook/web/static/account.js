/* railbook pages: logging in, registering, and the member's passengers. */
"use strict";

pages.login = () => {
  const form = $("#login-form");
  const captcha = captchaField($("button[type=submit]", form));
  onSubmit(form, async (data) => {
    let answer;
    try {
      answer = await api("POST", "/api/v1/auth/login", {
        mobile: data.get("mobile").trim(), password: data.get("password"), ...captcha.body(),
      });
    } catch (err) {
      await captcha.after(err);
      throw err;
    }
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
        onclick: async (e) => {
          const button = e.currentTarget;
          if (!confirm(`删除乘车人 ${p.name}？`)) return;
          clearMessages();
          try {
            await api("DELETE", `/api/v1/passengers/${p.passenger_id}`);
            await load();
          } catch (err) {
            const journeys = err.code === "PASSENGER_HAS_TICKETS" && err.details.journeys;
            fieldError(button, journeys ? `${err.message}（${journeys} 段行程未完成）` : err.message);
            showError(err);
          }
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
