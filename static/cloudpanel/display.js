// Graphical console: noVNC over the panel's websocket; every connection asks for a single-use ticket first.
const box = document.getElementById("display");
const button = document.getElementById("display-connect");
const keys = document.getElementById("display-keys");
const stateLine = document.getElementById("display-state");
const reasons = { 4401: "sign in again", 4403: "your role only allows reading", 4404: "instance not found",
                  4409: "the display is unavailable", 4410: "the guest's display closed", 4419: "ticket refused" };
let rfb = null;

function disconnected(text) {
  stateLine.textContent = text;
  button.innerHTML = '<i class="bi bi-display" aria-hidden="true"></i> Connect';
  button.disabled = false;
  keys.disabled = true;
  rfb = null;
}

async function connect() {
  button.disabled = true;
  stateLine.textContent = "Connecting…";
  let response, body;
  try {
    response = await fetch(box.dataset.ticketUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": box.dataset.csrf, "Accept": "application/json" },
    });
    body = await response.json();
  } catch (error) {
    disconnected("Not connected: the panel did not answer.");
    return;
  }
  if (!response.ok) {
    disconnected("Not connected: " + (body.detail || response.statusText));
    return;
  }
  const { default: RFB } = await import(box.dataset.rfb);
  const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + window.location.host + body.url, ["binary"]);
  let closeCode = null;
  socket.addEventListener("close", function (event) { closeCode = event.code; });
  box.hidden = false;
  rfb = new RFB(box, socket, { shared: true });
  rfb.scaleViewport = true;
  rfb.background = "#000";
  rfb.addEventListener("connect", function () {
    stateLine.textContent = "Connected: click the screen, then type; keys go to the guest.";
    button.textContent = "Disconnect";
    button.disabled = false;
    keys.disabled = false;
    rfb.focus();
  });
  rfb.addEventListener("disconnect", function () {
    const reason = reasons[closeCode];
    disconnected("Disconnected" + (reason ? " (" + reason + ")" : "") + ".");
  });
}

button.addEventListener("click", function () {
  if (rfb) rfb.disconnect();
  else connect();
});
keys.addEventListener("click", function () {
  if (rfb) rfb.sendCtrlAltDel();
});
