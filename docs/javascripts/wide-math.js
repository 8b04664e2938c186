// Inline math wider than the text column (long worked-example equations) cannot be
// line-broken by MathJax 3, and would stick out of the page.  Each such formula gets the
// class "wide-inline-math" (docs/stylesheets/extra.css): a line of its own that scrolls
// sideways, as display math does.  Re-checked when the window is resized.
(function () {
  "use strict";
  var FORMULAS = 'mjx-container[jax="CHTML"]:not([display="true"])';

  function mark() {
    var formulas = Array.prototype.slice.call(document.querySelectorAll(FORMULAS));
    formulas.forEach(function (math) { math.classList.remove("wide-inline-math"); });
    formulas.forEach(function (math) {
      var block = math.parentElement && math.parentElement.closest("p, li, dd, td, th, div, article");
      if (block && math.getBoundingClientRect().width > block.clientWidth) {
        math.classList.add("wide-inline-math");
      }
    });
  }

  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(mark, 150);
  });
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(mark);
  }
})();
