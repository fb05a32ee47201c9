/* optin embed: upgrades every <form data-optin> (see `optin lists show SLUG --embed`)
   to submit with fetch() and answer in place: the success text, or each field's
   error next to the field. Without this script, or without fetch(), the form is
   a plain form post and the visitor sees the service's thank-you page instead.
   All wording comes from the form's data-optin-* attributes, so this file knows
   no language. No cookies are sent, nothing is stored in the browser. */
(function () {
  "use strict";
  if (!window.fetch || !window.FormData || !window.URLSearchParams) {
    return;
  }

  function setStatus(form, text, kind) {
    var status = form.querySelector(".optin-status");
    if (!status) {
      return null;
    }
    status.textContent = text || "";
    status.className = "optin-status" + (kind ? " optin-status-" + kind : "");
    return status;
  }

  function clearErrors(form) {
    var slots = form.querySelectorAll("[data-optin-error-for]");
    for (var i = 0; i < slots.length; i++) {
      slots[i].textContent = "";
      slots[i].hidden = true;
      var input = form.elements[slots[i].getAttribute("data-optin-error-for")];
      if (input && input.removeAttribute) {
        input.removeAttribute("aria-invalid");
      }
    }
  }

  function messagesOf(value) {
    if (value === null || value === undefined) {
      return [];
    }
    if (Array.isArray(value)) {
      return value.map(String);
    }
    if (typeof value === "object") {
      return Object.keys(value).map(function (k) { return messagesOf(value[k]).join(" "); });
    }
    return [String(value)];
  }

  // The 422 problem document's "errors": {"email": ["…"], "list": ["…"]}.
  function showErrors(form, errors) {
    var first = null;
    var general = [];
    Object.keys(errors || {}).forEach(function (name) {
      var text = messagesOf(errors[name]).join(" ");
      var slot = form.querySelector('[data-optin-error-for="' + name + '"]');
      var input = form.elements[name];
      if (slot && input && input.type !== "hidden") {
        // The service's messages are English; the form has the visitor's language.
        slot.textContent = (name === "email" && form.getAttribute("data-optin-invalid-email")) || text;
        slot.hidden = false;
        input.setAttribute("aria-invalid", "true");
        first = first || input;
      } else {
        general.push(text); // a hidden field: the snippet is outdated or misconfigured
      }
    });
    var summary = form.getAttribute("data-optin-invalid") || "";
    setStatus(form, general.length ? summary + " " + general.join(" ") : summary, "error");
    if (first) {
      first.focus();
    }
  }

  function succeed(form) {
    var body = form.querySelector(".optin-body");
    if (body) {
      body.style.display = "none";
    }
    form.classList.add("optin-done");
    var status = setStatus(form, form.getAttribute("data-optin-success"), "success");
    if (status) {
      status.focus();
    }
  }

  function fail(form) {
    setStatus(form, form.getAttribute("data-optin-failed"), "error");
  }

  function busy(form, on) {
    var button = form.querySelector('[type="submit"]');
    form.toggleAttribute("data-optin-busy", on);
    form.setAttribute("aria-busy", on ? "true" : "false");
    if (button) {
      button.disabled = on;
    }
    if (on) {
      setStatus(form, form.getAttribute("data-optin-sending"), "");
    }
  }

  function submit(event) {
    var form = event.currentTarget;
    event.preventDefault();
    if (form.hasAttribute("data-optin-busy")) {
      return;
    }
    clearErrors(form);
    busy(form, true);
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { Accept: "application/json" },
      credentials: "omit",
      mode: "cors"
    }).then(function (response) {
      busy(form, false);
      if (response.status === 202) {
        succeed(form);
      } else if (response.status === 422) {
        response.json().then(function (problem) { showErrors(form, problem.errors); },
                             function () { fail(form); });
      } else {
        fail(form);
      }
    }, function () {
      // No answer we may read: the network failed, or the service does not allow
      // this page's origin (CORS). The plain form post still works: send it that way.
      busy(form, false);
      HTMLFormElement.prototype.submit.call(form);
    });
  }

  function enhance(form) {
    if (form.hasAttribute("data-optin-ready")) {
      return;
    }
    form.setAttribute("data-optin-ready", "");
    var source = form.elements.source_url;
    if (source && !source.value) {
      source.value = location.href.split("#")[0];
    }
    form.addEventListener("submit", submit);
  }

  function init() {
    var forms = document.querySelectorAll("form[data-optin]");
    for (var i = 0; i < forms.length; i++) {
      enhance(forms[i]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
