// Safehand: the send page. Streams the chosen files to the server with a progress bar; the
// server encrypts them as they arrive. Loaded as a file (the CSP allows no inline script).
(function () {
  "use strict";
  var form = document.getElementById("send-form");
  if (!form) { return; }
  var input = document.getElementById("files");
  var zone = document.getElementById("drop-zone");
  var list = document.getElementById("file-list");
  var chosen = [];
  var maxSize = Number(form.getAttribute("data-max-size"));

  function sizeText(n) {
    var units = [["GiB", 1073741824], ["MiB", 1048576], ["KiB", 1024]];
    for (var i = 0; i < units.length; i++) {
      if (n >= units[i][1]) { return (n / units[i][1]).toFixed(1).replace(/\.0$/, "") + " " + units[i][0]; }
    }
    return n + " bytes";
  }

  function render() {
    list.textContent = "";
    chosen.forEach(function (f, i) {
      var li = document.createElement("li");
      var name = document.createElement("span");
      name.textContent = f.name + " (" + sizeText(f.size) + ")";
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button-link";
      remove.textContent = "Remove";
      var hidden = document.createElement("span");
      hidden.className = "visually-hidden";
      hidden.textContent = " " + f.name;
      remove.appendChild(hidden);
      remove.addEventListener("click", function () { chosen.splice(i, 1); render(); });
      li.appendChild(name);
      li.appendChild(remove);
      list.appendChild(li);
    });
  }

  function add(files) {
    for (var i = 0; i < files.length; i++) { chosen.push(files[i]); }
    render();
  }

  input.addEventListener("change", function () { add(input.files); input.value = ""; });
  zone.addEventListener("dragover", function (e) { e.preventDefault(); zone.classList.add("active"); });
  zone.addEventListener("dragleave", function () { zone.classList.remove("active"); });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    zone.classList.remove("active");
    if (e.dataTransfer && e.dataTransfer.files) { add(e.dataTransfer.files); }
  });

  function clearErrors() {
    document.getElementById("error-summary").hidden = true;
    document.getElementById("error-list").textContent = "";
    var messages = form.querySelectorAll(".error-message");
    for (var i = 0; i < messages.length; i++) { messages[i].hidden = true; messages[i].textContent = ""; }
    var fields = form.querySelectorAll(".field-error");
    for (var j = 0; j < fields.length; j++) { fields[j].classList.remove("field-error"); }
  }

  function showErrors(problems) {
    var summary = document.getElementById("error-summary");
    var ul = document.getElementById("error-list");
    problems.forEach(function (p) {
      var target = document.getElementById(p.field === "files" ? "files" : p.field) ? p.field : "files";
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = "#" + target;
      a.textContent = p.message;
      li.appendChild(a);
      ul.appendChild(li);
      var msg = document.getElementById(target + "-error");
      if (msg) { msg.textContent = p.message; msg.hidden = false; }
      var field = document.getElementById("field-" + target);
      if (field) { field.classList.add("field-error"); }
    });
    summary.hidden = false;
    summary.focus();
  }

  function value(name) {
    var el = form.elements[name];
    return el ? el.value : "";
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    clearErrors();
    var total = chosen.reduce(function (s, f) { return s + f.size; }, 0);
    if (chosen.length === 0) { showErrors([{ field: "files", message: "Add at least one file." }]); return; }
    if (total > maxSize) {
      showErrors([{ field: "files", message: "The files add up to " + sizeText(total) + "; the most you can send is " + form.getAttribute("data-max-size-text") + "." }]);
      return;
    }
    var checked = form.querySelector("input[name=classification]:checked");
    var details = {
      contact_id: Number(value("contact")),
      purpose: value("purpose"),
      classification: checked ? checked.value : "",
      expires_in_days: Number(value("expiry")) || -1,
      download_limit: Number(value("download_limit")) || -1,
      attestation: value("attestation") || null,
      files: chosen.map(function (f) { return { name: f.name, size: f.size }; })
    };
    var body = new FormData();
    body.append("details", JSON.stringify(details));
    chosen.forEach(function (f) { body.append("file", f, f.name); });
    var button = document.getElementById("send-button");
    var area = document.getElementById("progress-area");
    var bar = document.getElementById("progress");
    var text = document.getElementById("progress-text");
    button.disabled = true;
    area.hidden = false;
    bar.value = 0;
    text.textContent = "Starting…";
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/transfers/new");
    xhr.setRequestHeader("X-CSRF-Token", form.getAttribute("data-csrf"));
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (ev) {
      if (ev.lengthComputable) {
        var pct = Math.floor((ev.loaded / ev.total) * 100);
        bar.value = pct;
        text.textContent = pct + "% (" + sizeText(ev.loaded) + " of " + sizeText(ev.total) + ")";
      }
    });
    xhr.upload.addEventListener("load", function () { text.textContent = "Finishing encryption…"; });
    xhr.addEventListener("load", function () {
      var reply = null;
      try { reply = JSON.parse(xhr.responseText); } catch (err) { reply = null; }
      if (xhr.status === 201 && reply) {
        document.getElementById("sending").hidden = true;
        document.getElementById("passphrase").textContent = reply.passphrase;
        document.getElementById("contact-name").textContent = reply.recipient.name;
        document.getElementById("contact-phone").textContent = reply.recipient.phone;
        document.getElementById("release-form").action = "/transfers/" + reply.id + "/release";
        document.getElementById("passphrase-step").hidden = false;
        document.getElementById("passphrase-h").focus();
        return;
      }
      button.disabled = false;
      area.hidden = true;
      var problems = reply && reply.problems ? reply.problems : [{ field: "files", message: (reply && reply.message) || "The upload failed. Try again." }];
      showErrors(problems);
    });
    xhr.addEventListener("error", function () {
      button.disabled = false;
      area.hidden = true;
      showErrors([{ field: "files", message: "The upload was interrupted. Check your connection and try again; nothing was sent." }]);
    });
    xhr.send(body);
  });
})();
