/* optin embed: upgrades every <form data-optin> (see `optin lists show SLUG --embed`)
   to submit with fetch() and answer in place: the success text, or each field's
   error next to the field. Without this script, or without fetch(), the form is
   a plain form post and the visitor sees the service's thank-you page instead.
   All wording comes from the form's data-optin-* attributes, so this file knows
   no language. No cookies are sent, nothing is stored in the browser.

   When fetch() fails the visitor is never sent to a browser or proxy error page:
   the service's /healthz (readable from any origin) tells a CORS refusal (the
   service is up but does not list this page's origin: post the form the plain
   way, and warn in the console how to fix it) from an outage (the inline
   failure message). A Content-Security-Policy of the landing page that blocks the
   fetch (connect-src) or the post (form-action) is caught by its
   securitypolicyviolation event and said in place too. */
(function () {
  "use strict";
  if (!window.fetch || !window.FormData || !window.URLSearchParams) {
    return;
  }

  // A compound whose first part is one or two letters ("E-Mail"): a line break after
  // its hyphen would strand "E-" at a line's end, so each goes in a no-wrap span.
  var SHORT_COMPOUND = /(^|[\s(\u201e\u201c"])([A-Za-z]{1,2}-[^\s,.;:!?)\u201c\u201d"-]+)/g;

  function fillText(element, text) {
    element.textContent = "";
    var last = 0;
    text.replace(SHORT_COMPOUND, function (match, before, word, at) {
      var start = at + before.length;
      element.appendChild(document.createTextNode(text.slice(last, start)));
      var span = document.createElement("span");
      span.style.whiteSpace = "nowrap";
      span.textContent = word;
      element.appendChild(span);
      last = start + word.length;
      return match;
    });
    element.appendChild(document.createTextNode(text.slice(last)));
  }

  function setStatus(form, text, kind) {
    var status = form.querySelector(".optin-status");
    if (!status) {
      return null;
    }
    fillText(status, text || "");
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
        fillText(slot, (name === "email" && form.getAttribute("data-optin-invalid-email")) || text);
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

  function originOf(url) {
    var a = document.createElement("a");
    a.href = url;
    return a.protocol + "//" + a.host;
  }

  function slugOf(form) {
    return (form.elements.list && form.elements.list.value) || "SLUG";
  }

  // This page's CSP refused a request to the service: say so in place, and in the
  // console what the policy needs.
  function blocked(form, directive) {
    var service = originOf(form.action);
    form.setAttribute("data-optin-csp", directive);
    if (directive === "form-action") {
      busy(form, false);
      setStatus(form, form.getAttribute("data-optin-blocked") ||
                form.getAttribute("data-optin-failed"), "error");
    }
    if (window.console && console.warn) {
      console.warn("optin: this page's Content-Security-Policy (" + directive + ") blocks " +
                   service + ". The signup form needs script-src " + service +
                   "; connect-src " + service + "; form-action " + service + ".");
    }
  }

  function watchPolicy() {
    document.addEventListener("securitypolicyviolation", function (event) {
      var directive = (event.effectiveDirective || event.violatedDirective || "").split(" ")[0];
      if (directive !== "form-action" && directive !== "connect-src") {
        return;
      }
      var forms = document.querySelectorAll("form[data-optin-ready]");
      for (var i = 0; i < forms.length; i++) {
        if (event.blockedURI && event.blockedURI.indexOf(originOf(forms[i].action)) === 0) {
          blocked(forms[i], directive);
        }
      }
    });
  }

  // After a failed fetch(): is the service up (then this page's origin is not allowed:
  // CORS), or down (or a proxy in front of it answers errors without CORS headers)?
  function diagnose(form) {
    return new Promise(function (resolve) {
      // A CSP refusal's event may come after the fetch failed: give it a moment.
      setTimeout(function () {
        if (form.getAttribute("data-optin-csp") === "connect-src") {
          resolve("csp");
          return;
        }
        fetch(originOf(form.action) + "/healthz", {
          method: "GET", mode: "cors", credentials: "omit", cache: "no-store"
        }).then(function (response) {
          resolve(response.ok ? "cors" : "down");
        }, function () {
          resolve(form.getAttribute("data-optin-csp") === "connect-src" ? "csp" : "down");
        });
      }, 50);
    });
  }

  function plainPost(form) {
    HTMLFormElement.prototype.submit.call(form);
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
      // No answer we may read: the network failed, a proxy answered without CORS
      // headers, this page's CSP refused the request, or the service does not allow
      // this page's origin (CORS). Only the last two leave the plain post working.
      diagnose(form).then(function (cause) {
        busy(form, false);
        if (cause === "cors") {
          if (window.console && console.warn) {
            console.warn("optin: the service does not accept fetch() from " + location.origin +
                         "; the form was posted without JavaScript instead. Fix: " +
                         "optin lists update " + slugOf(form) + " --origin " + location.origin +
                         " (keep the list's other origins: --origin is repeatable).");
          }
          plainPost(form);
        } else if (cause === "csp") {
          plainPost(form); // form-action may still allow it; if not, blocked() says so
        } else {
          fail(form);
        }
      });
    });
  }

  function enhance(form) {
    if (form.hasAttribute("data-optin-ready")) {
      return;
    }
    form.setAttribute("data-optin-ready", "");
    // The page the form is really on (a value written into the snippet is for browsers
    // without JavaScript, and may have been pasted onto another page too).
    var source = form.elements.source_url;
    if (source) {
      source.value = location.href.split("#")[0];
    }
    form.addEventListener("submit", submit);
  }

  function init() {
    watchPolicy();
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
