// celeriac · control buttons (task page and dashboard). Every button asks for confirmation,
// then POSTs to Flower's write API on this origin; the answer is shown in #control-result.
(function () {
  'use strict';
  function show(msg, ok) {
    let el = document.getElementById('control-result');
    if (!el) {
      el = document.createElement('p');
      el.id = 'control-result';
      el.setAttribute('role', 'status');
      document.body.prepend(el);
    }
    el.textContent = msg;
    el.className = ok ? 'ok' : 'bad';
  }
  document.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-post]');
    if (!b) return;
    let url = b.dataset.post;
    if (b.dataset.prompt) {
      const v = window.prompt(b.dataset.prompt);
      if (!v) return;
      url += (url.includes('?') ? '&' : '?') + b.dataset.param + '=' + encodeURIComponent(v);
    }
    if (!window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    fetch(url, { method: 'POST', credentials: 'same-origin' })
      .then(async (r) => {
        const t = await r.text();
        let msg = t;
        try { msg = JSON.parse(t).message || t; } catch (_) { /* Flower answers text on errors */ }
        show(r.ok ? msg : 'Refused (' + r.status + '): ' + msg, r.ok);
      })
      .catch((err) => show('Request failed: ' + err, false))
      .finally(() => { b.disabled = false; });
  });
})();
