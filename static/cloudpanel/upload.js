// Image uploads in resumable chunks through the API: create the image with its size, then
// PUT each chunk with Content-Range. A dropped connection is retried with back-off after
// asking the server where the upload stands; the detail page can resume with the same file.
(function () {
  "use strict";
  const form = document.getElementById("upload-form") || document.getElementById("resume-form");
  if (!form) return;
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  const chunkSize = Number(form.dataset.chunk);
  const bar = document.getElementById("upload-bar");
  const stateText = document.getElementById("upload-state");
  const errorBox = document.getElementById("upload-error");
  const button = form.querySelector("button[type=submit]");

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function showProgress(done, total, note) {
    document.getElementById("upload-progress").hidden = false;
    const percent = total ? Math.floor((100 * done) / total) : 0;
    bar.style.width = percent + "%";
    bar.textContent = percent + "%";
    bar.parentElement.setAttribute("aria-valuenow", percent);
    stateText.textContent = note || (formatBytes(done) + " of " + formatBytes(total));
  }

  function formatBytes(n) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  function detailOf(body) {
    if (!body) return "";
    if (typeof body.detail === "string") return body.detail;
    return Object.entries(body).map(function ([key, value]) {
      return (key === "non_field_errors" ? "" : key + ": ") + [].concat(value).join(" ");
    }).join("; ");
  }

  // One chunk; resolves with the image, rejects with {fatal, message}.
  function putChunk(imageId, blob, start, total, onProgress) {
    return new Promise(function (resolve, reject) {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", "/api/v1/images/" + imageId + "/data/");
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("Content-Range", "bytes " + start + "-" + (start + blob.size - 1) + "/" + total);
      xhr.upload.onprogress = function (event) { onProgress(start + event.loaded); };
      xhr.onload = function () {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status === 200) resolve(body);
        else if (xhr.status === 409 || xhr.status >= 500) reject({ fatal: false, message: detailOf(body) });
        else reject({ fatal: true, message: detailOf(body) || "The server refused the upload (" + xhr.status + ")." });
      };
      xhr.onerror = function () { reject({ fatal: false, message: "The connection dropped." }); };
      xhr.send(blob);
    });
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  async function where(imageId) {
    const response = await fetch("/api/v1/images/" + imageId + "/", { headers: { Accept: "application/json" } });
    if (!response.ok) throw { fatal: response.status === 404, message: "The image is gone." };
    return response.json();
  }

  async function send(image, file) {
    let offset = image.received_bytes;
    let failures = 0;
    while (offset < file.size) {
      const end = Math.min(offset + chunkSize, file.size);
      try {
        image = await putChunk(image.id, file.slice(offset, end), offset, file.size, function (done) {
          showProgress(done, file.size);
        });
        offset = image.received_bytes;
        failures = 0;
      } catch (error) {
        if (error.fatal) { showError(error.message); return null; }
        failures += 1;
        const wait = Math.min(2 ** failures, 30);
        showProgress(offset, file.size, (error.message || "Interrupted.") + " Resuming in " + wait + " s…");
        await sleep(wait * 1000);
        try {
          image = await where(image.id);
          offset = image.received_bytes;
          if (image.status !== "uploading") break;
        } catch (gone) {
          if (gone.fatal) { showError(gone.message); return null; }
        }
      }
    }
    showProgress(file.size, file.size, "Uploaded. A worker now inspects the image…");
    return image;
  }

  function values() {
    const data = {};
    new FormData(form).forEach(function (value, key) {
      if (key !== "csrfmiddlewaretoken" && key !== "file" && value !== "") data[key] = value;
    });
    if (!data.tenant && form.dataset.tenant && data.visibility !== "public") data.tenant = form.dataset.tenant;
    return data;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    showError("");
    form.querySelectorAll(".is-invalid").forEach(function (el) { el.classList.remove("is-invalid"); });
    const file = document.getElementById("id_file").files[0];
    if (!file) {
      document.getElementById("id_file").classList.add("is-invalid");
      document.getElementById("file-error").textContent = "Choose a file.";
      return;
    }
    button.disabled = true;
    let image;
    if (form.id === "resume-form") {
      image = await where(form.dataset.image).catch(function (e) { showError(e.message); });
      if (image && Number(form.dataset.expected) !== file.size) {
        showError("This file has " + file.size + " bytes; the upload was started with " + form.dataset.expected + ". Choose the same file.");
        image = null;
      }
    } else {
      const body = Object.assign(values(), { size: file.size, filename: file.name });
      const response = await fetch("/api/v1/images/", {
        method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      });
      const answer = await response.json().catch(function () { return null; });
      if (response.status === 201) {
        image = answer;
      } else {
        Object.keys(answer || {}).forEach(function (key) {
          const input = form.querySelector("[name=" + CSS.escape(key) + "]");
          if (input) input.classList.add("is-invalid");
        });
        showError(detailOf(answer) || "The upload was refused (" + response.status + ").");
      }
    }
    if (image) image = await send(image, file);
    if (image) {
      window.location.href = "/images/" + image.id + "/";
      return;
    }
    button.disabled = false;
  });
})();
