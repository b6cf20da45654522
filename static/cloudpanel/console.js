// Serial console: xterm.js over a websocket; guest output is written as terminal text.
(function () {
  "use strict";
  const box = document.getElementById("terminal");
  const button = document.getElementById("console-connect");
  const stateLine = document.getElementById("console-state");
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  window.addEventListener("resize", function () { fit.fit(); });
  let socket = null;
  let auto = true;  // connect by itself while the guest runs, until the user or the server closes the console

  term.onData(function (data) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
  });

  function connect() {
    if (socket && socket.readyState <= WebSocket.OPEN) return;
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + box.dataset.url);
    stateLine.textContent = "Connecting…";
    socket.onopen = function () {
      stateLine.textContent = "Connected. Press Enter for a prompt.";
      button.textContent = "Disconnect";
      term.focus();
    };
    socket.onmessage = function (message) { term.write(message.data); };
    socket.onclose = function (close) {
      const reasons = { 4401: "sign in again", 4404: "instance not found", 4409: "console unavailable",
                        4410: "console ended" };
      stateLine.textContent = "Disconnected" + (reasons[close.code] ? " (" + reasons[close.code] + ")" : "") + ".";
      button.textContent = "Connect";
      socket = null;
      if (reasons[close.code]) auto = false;  // refused or ended by the server: not again until the guest restarts
    };
  }

  button.addEventListener("click", function () {
    if (socket) {
      auto = false;
      socket.close();
    } else connect();
  });
  // Connect by itself once the guest runs, however the page learns it: on load, from an event, or from a
  // refresh of the header (the live socket refreshes it when it opens, which may carry news an event never did).
  function connectIfRunning() {
    const status = document.getElementById("instance-status");
    if (!status) return;
    if (status.dataset.value !== "running") auto = true;  // the next boot connects again
    else if (!socket && auto) connect();
  }
  connectIfRunning();
  document.addEventListener("panel:event", connectIfRunning);
  document.addEventListener("panel:refreshed", connectIfRunning);
})();
