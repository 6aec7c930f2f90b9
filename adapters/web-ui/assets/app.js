// slavealloc UI: live filters, inline editing through the JSON API, the
// API token, keyboard shortcuts. Plain JavaScript, no build step.
//
// The pages are rendered by the server; after a save the current page is
// fetched again and its results swapped in, so what is shown after a change
// is exactly what the server renders, never a client-side guess.
'use strict';

(() => {
  const body = document.body;
  const BASE = body.dataset.base || '';
  const API = BASE + '/api';
  const WRITE_AUTH = body.dataset.writeAuth === 'true';
  const TOKEN_KEY = 'slavealloc.api-token';
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  body.classList.add('js');

  // ---------------------------------------------------------------- toasts
  function toast(message, kind = 'ok') {
    const box = $('#toasts');
    const t = document.createElement('div');
    t.className = 'toast ' + kind;
    t.textContent = message;
    t.addEventListener('click', () => t.remove());
    box.appendChild(t);
    setTimeout(() => t.remove(), kind === 'error' ? 12000 : 4000);
  }

  // ------------------------------------------------------------- dialogs
  function openDialog(dialog) {
    return new Promise((resolve) => {
      const done = () => {
        dialog.removeEventListener('close', done);
        resolve(dialog.returnValue);
      };
      dialog.returnValue = '';
      dialog.addEventListener('close', done);
      dialog.showModal();
    });
  }

  async function confirmDialog(title, text, ok) {
    const d = $('#confirm-dialog');
    $('#confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    $('#confirm-ok').textContent = ok;
    return (await openDialog(d)) === 'ok';
  }

  // --------------------------------------------------------------- token
  const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY),
    set: (t) => { sessionStorage.setItem(TOKEN_KEY, t); showTokenState(); },
    forget: () => { sessionStorage.removeItem(TOKEN_KEY); showTokenState(); },
  };

  function showTokenState() {
    const s = $('#token-state');
    if (s) s.textContent = token.get() ? 'set' : 'not set';
  }

  // Asks for a token; resolves to it, or null when the user cancels.
  async function askToken(problem) {
    const d = $('#token-dialog');
    const err = $('#token-error');
    err.hidden = !problem;
    err.textContent = problem || '';
    $('#token-forget').hidden = !token.get();
    const input = $('#token-input');
    input.value = '';
    const answer = await openDialog(d);
    const value = input.value.trim();
    if (answer === 'ok' && value) {
      token.set(value);
      return value;
    }
    return null;
  }

  // ----------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // Calls the JSON API. Throws an ApiError carrying the server's own
  // message when the answer is not a success.
  async function api(method, path, payload) {
    const writes = method !== 'GET';
    let problem = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      const headers = { Accept: 'application/json' };
      if (payload !== undefined) headers['Content-Type'] = 'application/json';
      if (writes && WRITE_AUTH) {
        let t = problem ? null : token.get();
        if (!t) t = await askToken(problem);
        if (!t) throw new ApiError('Not saved: this server needs an API token for changes.', 401);
        headers.Authorization = 'Bearer ' + t;
      }
      let res;
      try {
        res = await fetch(API + path, {
          method,
          headers,
          body: payload === undefined ? undefined : JSON.stringify(payload),
          cache: 'no-store',
          credentials: 'same-origin',
        });
      } catch (e) {
        throw new ApiError('The server did not answer (' + e.message + ').', 0);
      }
      const text = await res.text();
      let data = null;
      try { data = JSON.parse(text); } catch (_) { /* not JSON: use the text */ }
      const message = (data && typeof data.error === 'string' && data.error)
        || text.trim().slice(0, 400) || (res.status + ' ' + res.statusText);
      if (res.status === 401 && writes && WRITE_AUTH) {
        token.forget();
        problem = 'The server refused the token: ' + message;
        continue;
      }
      if (!res.ok || (data && data.success === false)) throw new ApiError(message, res.status);
      return data;
    }
    throw new ApiError('The server refused the token.', 401);
  }

  // ------------------------------------------------- results: fetch & swap
  let swapSeq = 0;
  // Fetches `url` and replaces #results (and the filter form's summary)
  // with the new page's, keeping focus and scroll where they make sense.
  async function refresh(url, { push = false } = {}) {
    const seq = ++swapSeq;
    const res = await fetch(url, { headers: { Accept: 'text/html' }, cache: 'no-store' });
    const html = await res.text();
    if (seq !== swapSeq) return false; // a newer request won
    const doc = new DOMParser().parseFromString(html, 'text/html');
    const fresh = $('#results', doc);
    const old = $('#results');
    if (!fresh || !old) {
      location.assign(url);
      return false;
    }
    const wrap = $('.table-wrap', old);
    const scroll = wrap ? wrap.scrollTop : 0;
    old.replaceWith(fresh);
    const newWrap = $('.table-wrap', fresh);
    if (newWrap && !push) newWrap.scrollTop = scroll;
    if (push) history.pushState(null, '', url);
    else history.replaceState(null, '', url);
    enhanceTimes(fresh);
    return true;
  }

  function formUrl(form) {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (String(v).trim() !== '') params.append(k, v);
    }
    const q = params.toString();
    return form.action + (q ? '?' + q : '');
  }

  function initFilters() {
    const form = $('#filters[data-live]');
    if (!form) return;
    let timer = null;
    const go = () => {
      clearTimeout(timer);
      refresh(formUrl(form)).catch(() => location.assign(formUrl(form)));
    };
    form.addEventListener('input', (e) => {
      if (e.target.matches('input[type="search"], input[type="text"]')) {
        clearTimeout(timer);
        timer = setTimeout(go, 250);
      }
    });
    form.addEventListener('change', (e) => {
      if (e.target.matches('select, input[type="checkbox"]')) go();
    });
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      go();
    });
  }

  // Pager and sort links inside the results are swapped in place too.
  document.addEventListener('click', (e) => {
    const a = e.target.closest('#results .pager a, #results thead a, #results a.chip');
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    refresh(a.href, { push: true }).then(() => syncForm(a.href)).catch(() => location.assign(a.href));
  });

  // After a chip was removed, the hidden inputs of the form must follow.
  function syncForm(url) {
    const form = $('#filters');
    if (!form) return;
    const params = new URL(url, location.href).searchParams;
    $$('input[type="hidden"]', form).forEach((i) => i.remove());
    for (const [k, v] of params) {
      const field = form.elements.namedItem(k);
      if (!field) {
        const h = document.createElement('input');
        h.type = 'hidden';
        h.name = k;
        h.value = v;
        form.appendChild(h);
      }
    }
  }

  window.addEventListener('popstate', () => location.reload());

  // ------------------------------------------------------------- editors
  // The editor's fields come with the page (its "fields", made from the
  // domain's schema on the server): no copy of the columns here.
  const KINDS = {
    slaves: { id: 'slaveid', name: 'name' },
    masters: { id: 'masterid', name: 'nickname' },
  };

  function pageData() {
    const el = $('#page-data');
    return el ? JSON.parse(el.textContent) : null;
  }

  function el(tag, attrs = {}, children = []) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === false || v === null || v === undefined) continue;
      if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of [].concat(children)) if (c) e.appendChild(c);
    return e;
  }

  function optionsFor(field, row, lookups) {
    const choices = lookups[field.list] || [];
    const opts = [];
    if (field.none) opts.push(el('option', { value: '', text: '— ' + field.none + ' —' }));
    if (field.list === 'masters') {
      // The slave's own pool's masters first: those are the ones it can use.
      const pools = new Map((lookups.pools || []).map((p) => [p.id, p.name]));
      const groups = new Map();
      for (const m of choices) {
        const g = m.poolid === row.poolid ? 0 : 1;
        const label = (g === 0 ? 'this pool: ' : '') + (pools.get(m.poolid) || 'pool ' + m.poolid);
        const key = g + '\u0000' + label;
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push(m);
      }
      for (const key of Array.from(groups.keys()).sort()) {
        const og = el('optgroup', { label: key.split('\u0000')[1] });
        for (const m of groups.get(key)) {
          og.appendChild(el('option', { value: m.id, text: m.name + (m.enabled ? '' : ' (disabled)') }));
        }
        opts.push(og);
      }
    } else {
      for (const c of choices) opts.push(el('option', { value: c.id, text: c.name }));
    }
    return opts;
  }

  function buildField(field, row, lookups) {
    const value = row[field.col];
    const wrap = el('label', { class: 'field' + (field.size ? ' ' + field.size : '') + (field.type === 'bool' ? ' check' : '') });
    let input;
    if (field.type === 'bool') {
      input = el('input', { type: 'checkbox', name: field.col, checked: !!value });
      wrap.append(input, el('span', { text: field.label }));
    } else {
      const title = el('span', { text: field.label });
      if (field.list) {
        input = el('select', { name: field.col, disabled: !!field.readonly, title: field.readonly || false });
        input.append(...optionsFor(field, row, lookups));
        input.value = value === null || value === undefined ? '' : String(value);
        if (field.readonly) title.appendChild(el('span', { class: 'why', text: ' · read-only' }));
      } else {
        input = el('input', {
          type: 'text',
          name: field.col,
          value: value === null || value === undefined ? '' : String(value),
          inputmode: field.type === 'int' ? 'numeric' : false,
          autocomplete: 'off',
          spellcheck: 'false',
        });
      }
      wrap.append(title, input);
    }
    input.dataset.initial = fieldValueKey(field, input);
    return wrap;
  }

  // The value to send for a field, as the API takes it.
  function fieldValue(field, input) {
    if (field.type === 'bool') return input.checked;
    if (field.list) return input.value === '' ? null : Number(input.value);
    const v = input.value;
    if (field.type === 'int') {
      // Not a number? Send it anyway: the server says what is wrong.
      return /^\s*-?\d+\s*$/.test(v) ? Number(v) : v;
    }
    if (field.nullable && v.trim() === '') return null;
    return v;
  }

  function fieldValueKey(field, input) {
    return JSON.stringify(fieldValue(field, input));
  }

  function closeEditor({ focusRow = true } = {}) {
    const open = $('tr.editor-row');
    if (!open) return;
    const row = open.previousElementSibling;
    open.remove();
    if (row) {
      row.classList.remove('is-editing');
      if (focusRow) row.focus();
    }
  }

  function openEditor(tr) {
    const table = tr.closest('table[data-kind]');
    const kind = KINDS[table && table.dataset.kind];
    const data = pageData();
    if (!kind || !data) return;
    const row = data.rows.find((r) => String(r[kind.id]) === tr.dataset.id);
    if (!row) return;
    closeEditor({ focusRow: false });

    const fields = el('div', { class: 'fields' }, data.fields.map((f) => buildField(f, row, data.lookups)));
    const status = el('output', { class: 'status', role: 'status', 'aria-live': 'polite' });
    const actions = el('div', { class: 'editor-actions' }, [
      el('button', { type: 'submit', class: 'primary', text: 'Save' }),
      el('button', { type: 'button', 'data-action': 'cancel', text: 'Cancel' }),
      el('span', { class: 'hint', text: 'Enter saves · Esc cancels' }),
      table.dataset.kind === 'slaves'
        ? el('button', { type: 'button', 'data-action': 'tac', text: 'Preview tac' })
        : null,
      el('a', {
        href: BASE + '/ui/audit?table=' + table.dataset.kind + '&row=' + row[kind.id],
        text: 'History',
      }),
      status,
    ]);
    const form = el('form', { class: 'editor', novalidate: true, 'aria-label': 'Edit ' + row[kind.name] }, [fields, actions]);
    const cell = el('td', { colspan: tr.children.length }, form);
    const editorRow = el('tr', { class: 'editor-row' }, cell);
    tr.after(editorRow);
    tr.classList.add('is-editing');

    form.addEventListener('input', (e) => markChanged(e.target));
    form.addEventListener('change', (e) => markChanged(e.target));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      save(form, data.fields, kind, table.dataset.kind, row, status);
    });
    // The form, not its first field, takes the focus: a stray key must not
    // change a slave's distro. Tab goes to the fields.
    form.tabIndex = -1;
    form.focus();
  }

  // Whether the open editor holds a change that was not saved.
  function unsaved() {
    return !!$('tr.editor-row .field.changed');
  }

  // Leaving the page with an unsaved edit asks first: a link of the page
  // (a tab, a filter) with the page's own dialog, a reload or a closed tab
  // with the browser's.
  document.addEventListener('click', async (e) => {
    const a = e.target.closest && e.target.closest('a[href]');
    if (!a || !unsaved() || e.defaultPrevented || a.target === '_blank') return;
    if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    const name = ($('tr.is-editing') || {}).dataset?.name || 'this row';
    const asked = confirmDialog(
      'Discard your changes to ' + name + '?',
      'They are not saved. Cancel goes back to them (then Enter saves); or discard them and go on.',
      'Discard and leave'
    );
    // Staying is the safe answer, so it is the one Enter or a stray key picks.
    $('#confirm-dialog button[value="cancel"]').focus();
    const leave = await asked;
    if (leave) {
      closeEditor({ focusRow: false });
      location.assign(a.href);
    }
  });
  window.addEventListener('beforeunload', (e) => {
    if (unsaved()) {
      e.preventDefault();
      e.returnValue = '';
    }
  });

  function markChanged(input) {
    const label = input.closest('.field');
    if (label && input.dataset.initial !== undefined) {
      const field = currentFields(input).find((f) => f.col === input.name);
      if (field) label.classList.toggle('changed', fieldValueKey(field, input) !== input.dataset.initial);
    }
  }

  function currentFields() {
    const data = pageData();
    return (data && data.fields) || [];
  }

  async function save(form, fieldList, kind, tableName, row, status) {
    const changes = {};
    for (const f of fieldList) {
      const input = form.elements.namedItem(f.col);
      if (!input || input.disabled) continue;
      if (fieldValueKey(f, input) !== input.dataset.initial) changes[f.col] = fieldValue(f, input);
    }
    const name = row[kind.name];
    if (Object.keys(changes).length === 0) {
      status.className = 'status';
      status.textContent = 'Nothing changed.';
      return;
    }
    const buttons = $$('button', form);
    buttons.forEach((b) => { b.disabled = true; });
    status.className = 'status';
    status.textContent = 'Saving…';
    try {
      await api('PUT', '/' + tableName + '/' + row[kind.id], changes);
    } catch (e) {
      buttons.forEach((b) => { b.disabled = false; });
      status.className = 'status error';
      status.textContent = 'Not saved: ' + e.message;
      // Disabling the buttons dropped the focus: give it back to the form.
      const first = $('.changed select, .changed input', form) || $('button[type="submit"]', form);
      if (first) first.focus();
      toast('Not saved: ' + name + ': ' + e.message, 'error');
      return;
    }
    // Show what the server now has, then say so: the toast means "done".
    const id = String(row[kind.id]);
    let refreshed = false;
    try {
      refreshed = await refresh(location.href);
    } catch (_) { /* shown below */ }
    toast('Saved ' + name + ' (' + Object.keys(changes).join(', ') + ')');
    if (!refreshed) {
      location.reload();
      return;
    }
    const tr = $('tr[data-id="' + CSS.escape(id) + '"]');
    if (tr) {
      tr.classList.add('saved');
      tr.focus();
    }
  }

  async function drain(tr) {
    const name = tr.dataset.name;
    const slaves = tr.dataset.slaves;
    const target = BASE + '/ui/slaves?master=' + encodeURIComponent(name) + '&decomm=1';
    if (tr.dataset.enabled === 'true') {
      const ok = await confirmDialog(
        'Drain ' + name + '?',
        'This disables ' + name + ', so the allocator gives it no more slaves. The ' + slaves +
          ' slaves on it now stay until they reboot; then each gets another master of its pool. ' +
          'You will see the list of them next.',
        'Disable ' + name,
      );
      if (!ok) return;
      try {
        await api('PUT', '/masters/' + tr.dataset.id, { enabled: false });
      } catch (e) {
        toast('Not drained: ' + name + ': ' + e.message, 'error');
        return;
      }
      toast(name + ' is disabled.');
    }
    location.assign(target);
  }

  async function previewTac(button) {
    const editorRow = button.closest('tr.editor-row');
    const tr = editorRow && editorRow.previousElementSibling;
    if (!tr) return;
    const name = tr.dataset.name;
    $('#tac-title').textContent = 'buildbot.tac for ' + name;
    const pre = $('#tac-text');
    pre.textContent = 'Loading…';
    const d = $('#tac-dialog');
    d.showModal();
    try {
      // With a token that may see secrets the preview shows the password;
      // without one the server shows it as ***.
      const headers = { Accept: 'application/json' };
      if (token.get()) headers.Authorization = 'Bearer ' + token.get();
      const res = await fetch(API + '/gettac/' + encodeURIComponent(name), { cache: 'no-store', headers });
      const data = await res.json().catch(() => null);
      if (data && data.success && typeof data.tac === 'string') pre.textContent = data.tac;
      else pre.textContent = 'No allocation available' + (data && data.error ? ': ' + data.error : ' for ' + name + '.');
    } catch (e) {
      pre.textContent = 'The server did not answer (' + e.message + ').';
    }
  }

  document.addEventListener('click', (e) => {
    const b = e.target.closest('[data-action]');
    if (!b) return;
    const action = b.dataset.action;
    const tr = b.closest('tr[data-id]');
    if (action === 'edit' && tr) {
      if (tr.classList.contains('is-editing')) closeEditor();
      else openEditor(tr);
    } else if (action === 'cancel') {
      closeEditor();
    } else if (action === 'drain' && tr) {
      drain(tr);
    } else if (action === 'tac') {
      previewTac(b);
    } else if (action === 'help') {
      $('#help-dialog').showModal();
    } else if (action === 'token') {
      askToken(null);
    } else if (action === 'token-forget') {
      token.forget();
      b.closest('dialog').close('forget');
      toast('Token forgotten for this session.');
    } else if (action === 'dialog-cancel') {
      b.closest('dialog').close('cancel');
    }
  });

  // A double click on a row edits it too.
  document.addEventListener('dblclick', (e) => {
    const tr = e.target.closest('#results tbody tr[data-id]');
    if (tr && !e.target.closest('a, button') && !tr.classList.contains('is-editing')) openEditor(tr);
  });

  // ------------------------------------------------------------ keyboard
  let pendingG = false;
  const GOTO = { d: '', s: 'slaves', m: 'masters', i: 'silos', a: 'audit' };
  // The drift page exists only when the daemon keeps the live fleet.
  if (document.querySelector('.tabs a[data-key="r"]')) GOTO.r = 'drift';

  function rows() {
    return $$('#results tbody tr[data-id]');
  }

  function moveFocus(delta) {
    const all = rows();
    if (!all.length) return;
    const i = all.indexOf(document.activeElement);
    const next = all[Math.max(0, Math.min(all.length - 1, i < 0 ? 0 : i + delta))];
    next.focus();
    next.scrollIntoView({ block: 'nearest' });
  }

  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t.matches && t.matches('input, select, textarea, [contenteditable]');
    if (e.key === 'Escape' && $('tr.editor-row') && !document.querySelector('dialog[open]')) {
      e.preventDefault();
      closeEditor();
      return;
    }
    // Inside the editor, keys are for the form (Tab, Enter, Esc), never
    // shortcuts that move away from it.
    if (typing || document.querySelector('dialog[open]') || (t.closest && t.closest('form.editor'))) return;
    if (pendingG) {
      pendingG = false;
      if (e.key in GOTO) {
        e.preventDefault();
        location.assign(BASE + '/ui/' + GOTO[e.key]);
      }
      return;
    }
    const row = t.matches && t.matches('tr[data-id]') ? t : null;
    switch (e.key) {
      case '/': {
        const q = $('#q');
        if (q) { e.preventDefault(); q.focus(); q.select(); }
        break;
      }
      case '?':
        e.preventDefault();
        $('#help-dialog').showModal();
        break;
      case 'g':
        pendingG = true;
        setTimeout(() => { pendingG = false; }, 1500);
        break;
      case 'j': case 'ArrowDown':
        if (e.key === 'j' || row) { e.preventDefault(); moveFocus(1); }
        break;
      case 'k': case 'ArrowUp':
        if (e.key === 'k' || row) { e.preventDefault(); moveFocus(-1); }
        break;
      case 'Enter': case 'e':
        if (row) { e.preventDefault(); openEditor(row); }
        break;
      case 'n': case 'p': {
        const a = $('#results .pager a[rel="' + (e.key === 'n' ? 'next' : 'prev') + '"]');
        if (a) { e.preventDefault(); a.click(); }
        break;
      }
      default:
    }
  });

  // In the filter box, ↓ goes to the first row.
  document.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown' && e.target.id === 'q') {
      const first = rows()[0];
      if (first) { e.preventDefault(); first.focus(); }
    }
  });

  // --------------------------------------------------------------- times
  function ago(ms) {
    const s = Math.round(ms / 1000);
    if (s < 60) return 'just now';
    const m = Math.round(s / 60);
    if (m < 60) return m + ' min ago';
    const h = Math.round(m / 60);
    if (h < 48) return h + ' h ago';
    return Math.round(h / 24) + ' days ago';
  }

  function enhanceTimes(root = document) {
    // Times the server already wrote relative (data-ago) are left alone.
    for (const t of $$('time[datetime]:not([data-ago])', root)) {
      const d = new Date(t.getAttribute('datetime'));
      if (Number.isNaN(d.getTime()) || $('.ago', t)) continue;
      t.title = d.toLocaleString();
      t.appendChild(el('span', { class: 'ago', text: ago(Date.now() - d.getTime()) }));
    }
  }

  showTokenState();
  initFilters();
  enhanceTimes();
})();
