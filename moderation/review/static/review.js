// Keyboard shortcuts for the review pages. No build step, no dependencies.
(function () {
  "use strict";
  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) &&
      !(target.type === "checkbox" || target.type === "radio"));
  }
  function click(id) { var el = document.getElementById(id); if (el) { el.click(); return true; } return false; }
  function correcting() { var f = document.getElementById("correct"); return f && !f.hidden; }
  function openCorrection() {
    var f = document.getElementById("correct");
    if (!f) return;
    f.hidden = false;
    var first = f.querySelector("input[type=radio]:checked") || f.querySelector("input");
    if (first) first.focus();
  }
  // Pointing at a reason outlines its evidence where it stands in the item's text.
  function outline(reason, on) {
    var quote = (reason.getAttribute("data-evidence") || "").toLowerCase();
    document.querySelectorAll("#item mark").forEach(function (mark) {
      if (mark.textContent.toLowerCase() === quote) mark.classList.toggle("focus", on);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var open = document.getElementById("open-correct");
    if (open) open.addEventListener("click", openCorrection);
    document.querySelectorAll("#why .reason").forEach(function (reason) {
      reason.addEventListener("mouseenter", function () { outline(reason, true); });
      reason.addEventListener("mouseleave", function () { outline(reason, false); });
    });
  });
  document.addEventListener("keydown", function (ev) {
    var key = ev.key;
    // Enter anywhere in the correction saves the correction (never the form's first button, accept).
    if (key === "Enter" && correcting() && ev.target.closest && ev.target.closest("#correct")) {
      click("submit-correct"); ev.preventDefault(); return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
    if (correcting()) {
      var box = document.querySelector('#correct input[data-key="' + CSS.escape(key) + '"]');
      if (box) { box.type === "radio" ? (box.checked = true) : (box.checked = !box.checked); ev.preventDefault(); return; }
      if (key === "Enter") { click("submit-correct"); ev.preventDefault(); return; }
      if (key === "Escape") { document.getElementById("correct").hidden = true; ev.preventDefault(); }
      return;  // while correcting, a/s/e are not shortcuts
    }
    // A finished check changes only once its "change this finished review" box is ticked.
    var redecide = document.getElementById("redecide");
    if (redecide && !redecide.checked && "acse".indexOf(key) >= 0) return;
    var actions = { a: "accept", s: "skip", e: "escalate", n: "start" };
    if (key === "c") { openCorrection(); ev.preventDefault(); return; }
    if (actions[key] && click(actions[key])) ev.preventDefault();
  });
})();
