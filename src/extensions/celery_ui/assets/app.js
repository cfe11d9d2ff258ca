// The live dashboard: renders each `dashboard` server-sent event. Every value from the server
// (task names, args, kwargs, exceptions, tracebacks) is untrusted and is only ever assigned
// with textContent, never parsed as HTML.
'use strict';
(function () {
  const $ = (sel) => document.querySelector(sel);
  const RATE_WINDOW = 60; // seconds
  // The dashboard's `url_prefix` (empty at the root): every URL this script builds starts with it.
  const PREFIX = ($('meta[name="url-prefix"]') || {}).content || '';
  const history = []; // [{now, counts: Map}] within RATE_WINDOW

  function text(v) {
    return v === null || v === undefined ? '' : String(v);
  }
  function cell(tr, value, cls) {
    const td = document.createElement('td');
    td.textContent = text(value);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function time(ts) {
    if (!ts) return '';
    return new Date(ts * 1000).toISOString().replace('T', ' ').slice(0, 23);
  }
  function taskLink(td, uuid, label) {
    const a = document.createElement('a');
    a.href = PREFIX + '/task/' + encodeURIComponent(uuid);
    a.textContent = text(label);
    td.appendChild(a);
  }
  function fill(tbody, rows, build) {
    const frag = document.createDocumentFragment();
    for (const r of rows) frag.appendChild(build(r));
    tbody.replaceChildren(frag);
  }

  function renderWorkers(d) {
    fill($('#workers tbody'), d.workers, (w) => {
      const tr = document.createElement('tr');
      tr.dataset.hostname = w.hostname;
      const name = cell(tr, '');
      const a = document.createElement('a');
      a.href = PREFIX + '/worker/' + encodeURIComponent(w.hostname);
      a.textContent = text(w.hostname);
      name.appendChild(a);
      cell(tr, w.alive ? 'online' : 'offline', w.alive ? 'ok' : 'bad');
      cell(tr, w.active);
      cell(tr, w.processed);
      cell(tr, w.loadavg ? w.loadavg.map((x) => x.toFixed(2)).join(' ') : '');
      cell(tr, w.last_heartbeat ? Math.max(0, d.now - w.last_heartbeat).toFixed(1) + ' s ago' : '');
      const procs = Array.isArray(w.pool_processes) ? ' (' + w.pool_processes.join(', ') + ')' : '';
      cell(tr, w.pool_size === null || w.pool_size === undefined ? '' : w.pool_size + procs);
      cell(tr, w.prefetch_count);
      cell(tr, Array.isArray(w.queues) ? w.queues.join(', ') : '');
      cell(tr, w.reserved_tasks);
      cell(tr, w.scheduled_tasks);
      const actions = cell(tr, d.read_only ? 'read-only' : '', 'muted');
      if (!d.read_only) {
        const enc = encodeURIComponent(w.hostname);
        const button = (label, path, confirm, prompt, param) => {
          const b = document.createElement('button');
          b.textContent = label;
          b.dataset.post = path;
          b.dataset.confirm = confirm;
          if (prompt) { b.dataset.prompt = prompt; b.dataset.param = param; }
          actions.appendChild(b);
        };
        button('Grow', PREFIX + '/api/worker/pool/grow/' + enc + '?n=1', 'Add one pool process to ' + w.hostname + '?');
        button('Shrink', PREFIX + '/api/worker/pool/shrink/' + enc + '?n=1', 'Remove one pool process from ' + w.hostname + '?');
        button('Restart pool', PREFIX + '/api/worker/pool/restart/' + enc, 'Restart the pool of ' + w.hostname + '? (needs worker_pool_restarts)');
        button('Add consumer', PREFIX + '/api/worker/queue/add-consumer/' + enc, 'Make ' + w.hostname + ' consume this queue?', 'Queue to consume', 'queue');
        button('Cancel consumer', PREFIX + '/api/worker/queue/cancel-consumer/' + enc, 'Make ' + w.hostname + ' stop consuming this queue?', 'Queue to stop consuming', 'queue');
      }
      return tr;
    });
  }

  function renderRates(d) {
    const counts = new Map(d.counts.map((c) => [c.name + '\u0000' + c.event, c.count]));
    history.push({ now: d.now, counts });
    while (history.length > 1 && d.now - history[0].now > RATE_WINDOW) history.shift();
    const base = history[0];
    const span = d.now - base.now;
    fill($('#rates tbody'), d.counts, (c) => {
      const tr = document.createElement('tr');
      cell(tr, c.name);
      cell(tr, c.event, 'ev-' + c.event);
      cell(tr, c.count);
      const before = base.counts.get(c.name + '\u0000' + c.event) || 0;
      cell(tr, span > 0 ? ((c.count - before) / span).toFixed(2) : '');
      return tr;
    });
  }

  function renderQueues(d) {
    fill($('#queues tbody'), d.queues, (q) => {
      const tr = document.createElement('tr');
      cell(tr, q.name);
      cell(tr, q.messages);
      return tr;
    });
  }

  function renderTasks(d) {
    fill($('#tasks tbody'), d.tasks, (t) => {
      const tr = document.createElement('tr');
      tr.dataset.uuid = t.uuid;
      cell(tr, t.state, 'state state-' + t.state);
      taskLink(cell(tr, ''), t.uuid, t.name || '(unknown)');
      cell(tr, t.uuid, 'mono');
      cell(tr, t.worker);
      cell(tr, time(t.received));
      cell(tr, t.runtime === null || t.runtime === undefined ? '' : t.runtime.toFixed(3));
      cell(tr, t.args, 'mono args');
      cell(tr, t.kwargs, 'mono kwargs');
      return tr;
    });
    fill($('#failed tbody'), d.failed, (t) => {
      const tr = document.createElement('tr');
      tr.dataset.uuid = t.uuid;
      taskLink(cell(tr, ''), t.uuid, t.name || '(unknown)');
      cell(tr, t.uuid, 'mono');
      cell(tr, t.worker);
      cell(tr, time(t.timestamp));
      cell(tr, t.exception, 'mono');
      const td = cell(tr, '');
      if (t.traceback) {
        const det = document.createElement('details');
        const sum = document.createElement('summary');
        sum.textContent = 'traceback';
        const pre = document.createElement('pre');
        pre.textContent = t.traceback;
        det.append(sum, pre);
        td.appendChild(det);
      }
      return tr;
    });
  }

  function render(d) {
    renderWorkers(d);
    renderRates(d);
    renderQueues(d);
    renderTasks(d);
    $('#tracked').textContent = d.tasks_tracked + ' tasks tracked';
    document.body.dataset.updated = String(d.now);
  }

  function connect() {
    const es = new EventSource(PREFIX + '/api/stream');
    es.addEventListener('dashboard', (e) => {
      $('#conn').textContent = 'live';
      $('#conn').className = 'conn ok';
      render(JSON.parse(e.data));
    });
    es.onerror = () => {
      $('#conn').textContent = 'reconnecting…';
      $('#conn').className = 'conn bad';
    };
  }
  connect();
})();
