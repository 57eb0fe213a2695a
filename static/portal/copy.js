/* Backup Portal: "Copy" buttons for commands. <button data-copy="#id" hidden> copies the text of #id.
   Loaded only by the pages that show such commands; without JavaScript the buttons stay hidden. */
(function () {
  "use strict";

  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copied(button, label) {
    var original = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", original);
    button.textContent = label;
    window.setTimeout(function () { button.textContent = original; }, 2000);
  }

  Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (button) {
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (!target) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = target.textContent.trim();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { copied(button, "Copied"); },
          function () { select(target); copied(button, "Press Ctrl+C"); }
        );
      } else {
        // Plain http (a test portal): select the command so that Ctrl+C copies it.
        select(target);
        copied(button, "Press Ctrl+C");
      }
    });
  });
})();
