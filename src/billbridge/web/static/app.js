// Billbridge dashboard: small progressive enhancements; every page works without this.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  ready(function () {
    // Phone menu: the toggle opens and closes the main navigation.
    var toggle = document.querySelector(".nav-toggle");
    var nav = document.getElementById("site-nav");
    if (toggle && nav) {
      toggle.addEventListener("click", function () {
        var open = nav.classList.toggle("is-open");
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      });
    }

    // Long search panels start closed on a phone unless a search is applied.
    if (window.matchMedia("(max-width: 48rem)").matches) {
      document.querySelectorAll("details[data-collapse-on-phone='yes']").forEach(function (details) {
        details.open = false;
      });
    }

    // Forms marked data-confirm ask before submitting (e.g. "send for real", "replay all").
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });

    // Switches that submit their form as soon as they change (workflow on/off).
    document.querySelectorAll("input[data-autosubmit]").forEach(function (input) {
      input.addEventListener("change", function () {
        if (input.form) { input.form.requestSubmit ? input.form.requestSubmit() : input.form.submit(); }
      });
    });

    // Field pickers: choosing a suggested path fills the linked input.
    document.querySelectorAll("select[data-fills]").forEach(function (select) {
      select.addEventListener("change", function () {
        var target = document.getElementById(select.getAttribute("data-fills"));
        if (target && select.value) { target.value = select.value; target.focus(); }
      });
    });

    // Selects marked data-submit reload the page with the new choice (e.g. trigger picker).
    document.querySelectorAll("select[data-submit]").forEach(function (select) {
      select.addEventListener("change", function () {
        var button = document.getElementById(select.getAttribute("data-submit"));
        if (button) { button.click(); }
      });
    });
  });
})();
