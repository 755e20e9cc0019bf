// keyguard dashboard: the only script. It adds a "Copy" button behaviour to the one-time key
// page; every page works without it. Loaded from the package (CSP: script-src 'self').
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) { return; }
  var field = document.getElementById(button.getAttribute("data-copy"));
  var status = document.getElementById("copy-status");
  if (!field) { return; }
  function done(ok) {
    if (status) { status.textContent = ok ? "Copied to the clipboard." : "Select the key and copy it by hand."; }
  }
  field.focus();
  field.select();
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(function () { done(true); }, function () { done(false); });
  } else {
    try { done(document.execCommand("copy")); } catch (e) { done(false); }
  }
});
