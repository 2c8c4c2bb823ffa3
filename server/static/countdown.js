// Safehand: counts down the undo window where a page shows it. An element with
// data-seconds-left="N" has its "N s" or "N seconds" counted down each second. When the time
// is up, the element named by data-hide (the Undo form) is hidden and the element's text
// becomes data-done-text: the server has taken over and is emailing the link. Without this
// script the pages still show the seconds left when they were loaded, and the Undo button
// still works until the window closes (the server decides, not this script).
(function () {
  'use strict';
  var items = Array.prototype.slice.call(document.querySelectorAll('[data-seconds-left]'));
  if (!items.length) return;
  var start = Date.now();
  function setSeconds(el, left) {
    var walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (var node = walker.nextNode(); node; node = walker.nextNode()) {
      node.nodeValue = node.nodeValue.replace(/\b\d+( s\b| seconds?\b)/g, function (_, unit) {
        return left + (unit === ' s' ? unit : left === 1 ? ' second' : ' seconds');
      });
    }
  }
  function tick() {
    var gone = (Date.now() - start) / 1000;
    var running = false;
    items.forEach(function (el) {
      if (el.getAttribute('data-done') === 'yes') return;
      var left = Math.ceil(Number(el.getAttribute('data-seconds-left')) - gone);
      if (left > 0) {
        setSeconds(el, left);
        running = true;
        return;
      }
      el.setAttribute('data-done', 'yes');
      el.textContent = el.getAttribute('data-done-text') || '';
      var hide = el.getAttribute('data-hide');
      var form = hide && document.getElementById(hide);
      if (form) form.hidden = true;
    });
    if (running) setTimeout(tick, 250);
  }
  tick();
})();
