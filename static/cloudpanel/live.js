// Live status: one websocket per page; events update badges in place and refresh
// the page's [data-live-refresh] sections from the server (no full reload).
(function () {
  "use strict";
  const script = document.currentScript;
  const path = script.dataset.socket;
  const indicator = document.getElementById("live-indicator");
  const BADGES = {
    running: "success", online: "success", succeeded: "success", stopped: "secondary", new: "info",
    pending: "info", paused: "warning", suspended: "warning", offline: "warning", crashed: "danger",
    error: "danger", missing: "danger", unknown: "dark", failed: "danger", deleted: "dark", available: "success", uploading: "info", importing: "info",
    inspecting: "primary",
  };
  let delay = 500;
  let refreshTimer = null;
  let fetched = 0;

  function setIndicator(state, text) {
    if (!indicator) return;
    indicator.querySelector("i").className = "bi bi-circle-fill text-" + state;
    indicator.querySelector("span").textContent = text;
  }

  function setBadge(el, value, label) {
    el.textContent = label;
    el.className = el.className.replace(/\btext-bg-\w+/g, "").trim() + " text-bg-" + (BADGES[value] || "secondary");
    el.dataset.value = value;
  }

  function refreshSections() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(async function () {
      const sections = document.querySelectorAll("[data-live-refresh]");
      if (!sections.length) return;
      const mine = ++fetched;  // a slower, older answer must not undo a newer one
      const response = await fetch(window.location.href, { headers: { "X-Requested-With": "live" } });
      if (!response.ok || mine !== fetched) return;
      const text = await response.text();
      if (mine !== fetched) return;
      const fresh = new DOMParser().parseFromString(text, "text/html");
      sections.forEach(function (section) {
        const replacement = fresh.getElementById(section.id);
        if (!replacement) return;
        // What someone is typing into a form of the section, and where, survives the refresh.
        const typed = new Map();
        section.querySelectorAll("form[id] input, form[id] textarea").forEach(function (field) {
          if (field.name && field.value !== field.defaultValue) typed.set(field.form.id + ":" + field.name, field.value);
        });
        const active = document.activeElement;
        const focused = active && section.contains(active) && active.form && active.form.id
          ? active.form.id + ":" + active.name : null;
        section.replaceWith(replacement);
        replacement.querySelectorAll("form[id] input, form[id] textarea").forEach(function (field) {
          const key = field.form.id + ":" + field.name;
          if (typed.has(key)) field.value = typed.get(key);
          if (key === focused) field.focus();
        });
      });
      document.dispatchEvent(new CustomEvent("panel:refreshed"));
    }, 250);
  }

  function applyInstance(event) {
    document.querySelectorAll('[data-instance-id="' + event.id + '"]').forEach(function (root) {
      root.querySelectorAll('[data-field="status"]').forEach(function (el) {
        setBadge(el, event.status, event.status_display);
      });
      root.querySelectorAll('[data-field="task_state"]').forEach(function (el) {
        el.textContent = event.task_state_display;
        el.hidden = !event.task_state;
      });
      root.querySelectorAll('[data-field="status_reason"]').forEach(function (el) {
        el.textContent = event.status_reason;
        el.hidden = !event.status_reason;
      });
      root.querySelectorAll("[data-operation]").forEach(function (button) {
        button.disabled = !event.operations.includes(button.dataset.operation);
      });
    });
  }

  function applyHost(event) {
    document.querySelectorAll('[data-host-id="' + event.id + '"]').forEach(function (root) {
      root.querySelectorAll('[data-field="host_state"]').forEach(function (el) {
        setBadge(el, event.state, event.state_display);
      });
      root.querySelectorAll('[data-field="last_error"]').forEach(function (el) {
        el.textContent = event.last_error;
        el.hidden = !event.last_error;
      });
    });
  }

  const bell = document.getElementById("notification-bell");
  function showUnread(count) {
    if (!bell) return;
    const badge = bell.querySelector('[data-field="unread"]');
    badge.textContent = count > 99 ? "99+" : String(count);
    badge.hidden = count === 0;
    bell.setAttribute("aria-label", count ? "Notifications, " + count + " unread" : "Notifications");
  }
  let unread = 0;
  async function loadUnread() {
    if (!bell) return;
    const response = await fetch(bell.dataset.unreadUrl, { headers: { Accept: "application/json" } });
    if (response.ok) { unread = (await response.json()).count; showUnread(unread); }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + path);
    socket.onopen = function () {
      delay = 500;
      setIndicator("success", "live");
      refreshSections();  // catch up on anything that changed while the page loaded or the socket was down
    };
    socket.onmessage = function (message) {
      const event = JSON.parse(message.data);
      if (event.type === "instance") applyInstance(event);
      if (event.type === "host") applyHost(event);
      if (event.type === "notification") showUnread(++unread);
      // a new chart point or notification changes nothing else on the page
      if (event.type !== "metrics" && event.type !== "notification") refreshSections();
      document.dispatchEvent(new CustomEvent("panel:event", { detail: event }));
    };
    socket.onclose = function (close) {
      setIndicator("danger", close.code === 4401 ? "signed out" : "reconnecting");
      if (close.code === 4401 || close.code === 4404) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  loadUnread();
  connect();
})();
