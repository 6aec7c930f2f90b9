// slavealloc UI: live filters, inline editing through the JSON API, the
// API token, keyboard shortcuts; selecting slaves and changing them in bulk
// (previewed with the bulk API's dry run, applied on confirmation), draining
// and undraining masters, a master's drain and its progress, why a slave
// gets its master. Plain JavaScript, no build step.
//
// Every value that comes from the server or from a person (names, notes)
// goes into the page as text (textContent, attributes set one by one),
// never as markup.
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
  // A message to show on the next page, for a change that navigates.
  const FLASH_KEY = 'slavealloc.flash';
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
    for (const hook of afterSwap) hook(fresh);
    return true;
  }
  // What has to follow new results: the selection's boxes, a drain panel.
  const afterSwap = [];

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
        ? el('button', { type: 'button', 'data-action': 'tac', text: 'Preview tac and why' })
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

  // ------------------------------------------------------ times as text
  // A time of the API (RFC 3339, UTC) as the pages write it, with how long
  // ago (or how far ahead) beside it.
  function timeEl(iso) {
    const t = el('time', { datetime: iso, text: String(iso).replace('T', ' ').replace('Z', ' UTC') });
    const d = new Date(iso);
    if (!Number.isNaN(d.getTime())) {
      t.title = d.toLocaleString();
      const ms = Date.now() - d.getTime();
      t.appendChild(el('span', { class: 'ago', text: ms >= 0 ? ago(ms) : ahead(-ms) }));
    }
    return t;
  }

  function ahead(ms) {
    const m = Math.round(ms / 60000);
    if (m < 1) return 'in under a minute';
    if (m < 60) return 'in ' + m + ' min';
    const h = Math.round(m / 60);
    if (h < 48) return 'in ' + h + ' h';
    return 'in ' + Math.round(h / 24) + ' days';
  }

  const txt = (t) => document.createTextNode(t);

  // ---------------------------------------------------- drain and undrain
  // `holder` is the element that names the master: its row in the masters
  // list, or the head of its own page (data-id, data-name, data-slaves).
  function openDrain(holder) {
    const d = $('#drain-dialog');
    if (!d) return;
    const form = $('#drain-form');
    form.reset();
    d.dataset.id = holder.dataset.id;
    d.dataset.name = holder.dataset.name;
    $('#drain-name').textContent = holder.dataset.name;
    $('#drain-count').textContent = holder.dataset.slaves || '0';
    $('#drain-ok').textContent = 'Drain ' + holder.dataset.name;
    showError($('#drain-error'), null);
    d.showModal();
    $('#drain-note-input').focus();
  }

  function showError(box, message) {
    box.hidden = !message;
    box.textContent = message || '';
  }

  async function submitDrain(e) {
    e.preventDefault();
    const d = $('#drain-dialog');
    const form = e.target;
    const name = d.dataset.name;
    const note = form.elements.note.value.trim();
    const until = form.elements.until.value.trim();
    if (!note) {
      showError($('#drain-error'), 'Say why in the note: whoever finds ' + name + ' drained reads it.');
      form.elements.note.focus();
      return;
    }
    const buttons = $$('button', form);
    buttons.forEach((b) => { b.disabled = true; });
    let answer;
    try {
      answer = await api('POST', '/masters/' + encodeURIComponent(d.dataset.id) + '/drain', {
        note,
        until: until || null,
        graceful: form.elements.graceful.checked,
      });
    } catch (err) {
      buttons.forEach((b) => { b.disabled = false; });
      showError($('#drain-error'), 'Not drained: ' + err.message);
      return;
    }
    const on = (answer.slaves || []).length;
    sessionStorage.setItem(FLASH_KEY, name + ' is drained; ' + on + ' slave' + (on === 1 ? '' : 's') +
      ' on it move when they reboot.');
    d.close('ok');
    location.assign(BASE + '/ui/masters/' + encodeURIComponent(name));
  }

  async function undrain(holder) {
    const name = holder.dataset.name;
    const ok = await confirmDialog(
      'Undrain ' + name + '?',
      'This enables ' + name + ' again and ends its drain: the allocator may give it slaves at their next boot.',
      'Undrain ' + name,
    );
    if (!ok) return;
    let answer;
    try {
      answer = await api('POST', '/masters/' + encodeURIComponent(holder.dataset.id) + '/undrain');
    } catch (e) {
      toast('Not undrained: ' + name + ': ' + e.message, 'error');
      return;
    }
    const ended = (answer.ended || []).length;
    let refreshed = false;
    try { refreshed = await refresh(location.href); } catch (_) { /* reloaded below */ }
    toast(name + ' is enabled again' + (ended ? ' (its drain ended).' : '.'));
    if (!refreshed) location.reload();
  }

  // ------------------------------------------- a master's drain, refreshed
  const DRAIN_EVERY = 5000;
  let drainTimer = null;
  let drainSeq = 0;

  async function loadDrain() {
    clearTimeout(drainTimer);
    const panel = $('#drain-panel');
    if (!panel) return;
    const seq = ++drainSeq;
    if (!document.hidden) {
      let data = null;
      let problem = null;
      try {
        data = await api('GET', '/masters/' + encodeURIComponent(panel.dataset.masterid) + '/drain');
      } catch (e) {
        problem = e.message;
      }
      if (seq !== drainSeq) return; // a newer read is under way
      // The results may have been swapped meanwhile: draw into the panel
      // there is now.
      const now = $('#drain-panel');
      if (!now) return;
      const head = $('#master');
      renderDrain($('#drain-body', now), data, problem, !head || head.dataset.enabled === 'true');
      $('#drain-refreshed', now).textContent =
        'Read ' + new Date().toLocaleTimeString() + ' from ' + API + '/masters/' + now.dataset.masterid +
        '/drain; again every ' + DRAIN_EVERY / 1000 + ' s.';
    }
    drainTimer = setTimeout(loadDrain, DRAIN_EVERY);
  }

  function fact(term, ...value) {
    return [el('dt', { text: term }), el('dd', {}, value.map((v) => (typeof v === 'string' ? txt(v) : v)))];
  }

  function renderDrain(box, data, problem, enabled) {
    box.replaceChildren();
    if (problem) {
      box.appendChild(el('p', { class: 'notice', text: 'The API did not say: ' + problem }));
      return;
    }
    const hold = data.hold;
    if (hold) {
      box.appendChild(el('p', { class: 'drain-state', id: 'drain-state' }, [
        el('span', { class: 'badge off', text: 'drained' }),
        txt(' since '), timeEl(hold.started),
        txt(' by '), el('strong', { id: 'drain-actor', text: hold.actor }),
        hold.graceful ? el('span', { class: 'live-tag', text: 'graceful' }) : null,
      ]));
      const until = el('dd', { id: 'drain-until-value' });
      if (hold.until) until.append(timeEl(hold.until), txt(': then it takes slaves again by itself'));
      else until.textContent = 'until someone undrains it';
      box.appendChild(el('dl', { class: 'facts' }, [
        el('dt', { text: 'note' }), el('dd', { id: 'drain-note', class: 'drain-note', text: hold.note }),
        ...fact('who', hold.actor),
        ...fact('since', timeEl(hold.started)),
        el('dt', { text: 'until' }), until,
        ...fact('graceful', hold.graceful
          ? 'yes: its Buildbot shuts the connected workers down after their builds'
          : 'no: its workers stay until they reboot'),
      ]));
    } else {
      box.appendChild(el('p', {
        class: 'drain-state',
        id: 'drain-state',
        text: enabled
          ? 'Not drained: it takes new slaves.'
          : 'Disabled without a drain (by hand): no note or end is recorded. Undrain enables it.',
      }));
    }
    const p = data.progress;
    box.appendChild(el('h3', { text: 'Workers still connected' }));
    if (!p) {
      box.appendChild(el('p', {
        class: 'muted',
        text: 'This daemon keeps no live fleet, so which workers are still connected is not known.',
      }));
      return;
    }
    const line = el('p', { id: 'drain-progress' }, [el('strong', { id: 'drain-connected', text: String(p.connected) })]);
    line.append(txt(p.connected === 1 ? ' worker connected' : ' workers connected'));
    if (p.last_poll) line.append(txt(' at its last poll, '), timeEl(p.last_poll));
    else line.append(txt(': it was never polled'));
    if (hold && p.connected === 0 && p.last_poll) line.append(txt('. The drain is complete.'));
    box.appendChild(line);
    if (p.reachable === false) {
      box.appendChild(el('p', { class: 'notice', text: 'Its data API does not answer its polls: this may be out of date.' }));
    }
    if (p.workers && p.workers.length) {
      box.appendChild(el('ul', { class: 'names mono', id: 'drain-workers' }, p.workers.map((n) => el('li', {}, el('a', {
        href: BASE + '/ui/slaves?q=' + encodeURIComponent(n) + '&decomm=1',
        text: n,
      })))));
    }
  }

  afterSwap.push(() => { if ($('#drain-panel')) loadDrain(); });

  // ----------------------------------------------- the tac, and why so
  const REASONS = {
    balanced: 'Of the enabled masters of its pool, the one with the fewest peers (slaves of the same pool and silo on it now); a tie goes to the lowest master id.',
    locked: 'It is locked to this master, which it gets whether that master is enabled or not.',
    disabled: 'The slave is disabled: it gets no master, and its tac prints SLAVE DISABLED and exits.',
  };

  function lookupName(lookups, table, id) {
    const c = ((lookups && lookups[table]) || []).find((x) => x.id === id);
    return c ? c.name : '#' + id;
  }

  function renderWhy(box, why, data) {
    const lookups = data.lookups;
    box.replaceChildren();
    const head = el('p', { class: 'why-head' }, [
      el('span', { class: 'reason reason-' + why.reason, id: 'why-reason', text: why.reason }),
      why.master ? txt(' → ') : null,
      why.master ? el('a', {
        id: 'why-master',
        class: 'mono',
        href: BASE + '/ui/masters/' + encodeURIComponent(why.master),
        text: why.master,
      }) : el('span', { id: 'why-master', class: 'muted', text: ' no master' }),
    ]);
    box.append(head, el('p', { class: 'muted', text: REASONS[why.reason] || '' }));
    // The silo's columns are the slave's references: named as the editor
    // names them (its fields say which table each comes from).
    const cols = (data.fields || []).map((f) => f.col).filter((c) => c in why.silo);
    const silo = (cols.length ? cols : Object.keys(why.silo)).map((col) => shown(col, why.silo[col], data));
    const siloLabel = (cols.length ? cols : Object.keys(why.silo)).map((col) => labelOf(col, data));
    box.appendChild(el('dl', { class: 'facts' }, [
      ...fact('pool', lookupName(lookups, 'pools', why.poolid)),
      el('dt', { text: 'silo' }), el('dd', { title: siloLabel.join(' · '), text: silo.join(' · ') }),
      ...fact('peers counted', why.count === 'live' ? 'from the live connections' : 'from the recorded current masters'),
    ]));
    const rows = why.masters.map((m) => el('tr', { class: m.chosen ? 'chosen' : (m.enabled ? '' : 'is-disabled'), 'data-master': m.nickname }, [
      el('td', { class: 'mono' }, el('a', { href: BASE + '/ui/masters/' + encodeURIComponent(m.nickname), text: m.nickname })),
      el('td', { text: m.enabled ? 'yes' : 'no' }),
      el('td', { class: 'num', text: String(m.peers) }),
      el('td', { class: 'why-text', text: m.why }),
    ]));
    box.appendChild(el('table', { class: 'grid compact', id: 'why-masters' }, [
      el('thead', {}, el('tr', {}, ['master', 'enabled', 'peers', 'why'].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows.length ? rows : el('tr', { class: 'empty' }, el('td', { colspan: 4, text: 'Its pool has no master.' }))),
    ]));
  }

  async function previewTac(name) {
    $('#tac-title').textContent = 'buildbot.tac for ' + name;
    const pre = $('#tac-text');
    const why = $('#why-body');
    pre.textContent = 'Loading…';
    why.replaceChildren(el('p', { class: 'muted', text: 'Loading…' }));
    const d = $('#tac-dialog');
    if (!d.open) d.showModal();
    const data = pageData();
    try {
      // With a token that may see secrets the preview shows the password;
      // without one the server shows it as ***.
      const headers = { Accept: 'application/json' };
      if (token.get()) headers.Authorization = 'Bearer ' + token.get();
      const res = await fetch(API + '/gettac/' + encodeURIComponent(name) + '?explain=1', { cache: 'no-store', headers });
      const answer = await res.json().catch(() => null);
      if (answer && answer.success && typeof answer.tac === 'string') {
        pre.textContent = answer.tac;
        if (answer.explain) renderWhy(why, answer.explain, data || { fields: [], lookups: {} });
        else why.replaceChildren(el('p', { class: 'muted', text: 'The server gave no explanation.' }));
      } else {
        const problem = 'No allocation available' + (answer && answer.error ? ': ' + answer.error : ' for ' + name + '.');
        pre.textContent = problem;
        why.replaceChildren(el('p', { class: 'notice', id: 'why-reason', text: problem }));
      }
    } catch (e) {
      pre.textContent = 'The server did not answer (' + e.message + ').';
      why.replaceChildren();
    }
  }

  // --------------------------------------------- selecting slaves in bulk
  // The selection is a set of names, kept while the results are swapped
  // (filters, sort, pages), so that it may span pages; the action bar says
  // how many of them are not on this page.
  const selection = { names: new Set(), anchor: null };

  function selectableRows() {
    return $$('#slaves-table tbody tr[data-name]');
  }

  function syncSelection() {
    const rows = selectableRows();
    let onPage = 0;
    for (const tr of rows) {
      const on = selection.names.has(tr.dataset.name);
      const box = $('.row-select', tr);
      if (box) box.checked = on;
      tr.classList.toggle('is-selected', on);
      if (on) onPage += 1;
    }
    const all = $('#select-page');
    if (all) {
      all.checked = rows.length > 0 && onPage === rows.length;
      all.indeterminate = onPage > 0 && onPage < rows.length;
    }
    const matching = $('#select-all');
    if (matching) {
      matching.hidden = false;
      const data = pageData();
      const names = data && data.all_names;
      if (names) matching.disabled = names.every((n) => selection.names.has(n));
    }
    const bar = $('#action-bar');
    if (!bar) return;
    const n = selection.names.size;
    bar.hidden = n === 0;
    body.classList.toggle('has-selection', n > 0);
    $('#selected-count').textContent = String(n);
    const off = n - onPage;
    $('#selected-offpage').textContent = off > 0 ? ' (' + off + ' not on this page)' : '';
  }

  afterSwap.push(syncSelection);

  // A click on a row's box (or beside it, in its cell) selects the row; with
  // shift, every row from the one clicked before to this one.
  document.addEventListener('click', (e) => {
    const cell = e.target.closest && e.target.closest('#slaves-table tbody td.select');
    if (!cell) return;
    const tr = cell.closest('tr[data-name]');
    const box = tr && $('.row-select', tr);
    if (!box) return;
    if (e.target !== box) box.checked = !box.checked;
    if (e.shiftKey) {
      const sel = window.getSelection && window.getSelection();
      if (sel) sel.removeAllRanges();
    }
    const names = selectableRows().map((r) => r.dataset.name);
    const here = names.indexOf(tr.dataset.name);
    const from = e.shiftKey && selection.anchor !== null ? names.indexOf(selection.anchor) : -1;
    const range = from >= 0 ? names.slice(Math.min(from, here), Math.max(from, here) + 1) : [tr.dataset.name];
    for (const n of range) {
      if (box.checked) selection.names.add(n);
      else selection.names.delete(n);
    }
    selection.anchor = tr.dataset.name;
    syncSelection();
  });

  document.addEventListener('change', (e) => {
    if (e.target.id !== 'select-page') return;
    for (const tr of selectableRows()) {
      if (e.target.checked) selection.names.add(tr.dataset.name);
      else selection.names.delete(tr.dataset.name);
    }
    syncSelection();
  });

  function toggleRow(tr) {
    const box = $('.row-select', tr);
    if (box) box.click();
  }

  // What each action of the bar sets, as the bulk API takes it (name keys:
  // the PUT's `pool`, `environment`, `locked_master`).
  const BULK = {
    enable: {
      title: 'Enable',
      intro: 'Enabled slaves get a master at their next boot; their open disables end.',
      set: () => ({ enabled: true }),
    },
    disable: {
      title: 'Disable',
      intro: 'Disabled slaves get a tac that starts no worker. The note and the end are kept with each one (a hold); at the end they are enabled again by themselves.',
      set: () => ({ enabled: false }),
    },
    lock: {
      title: 'Lock to a master',
      intro: 'A locked slave gets its master whatever the balance, enabled or not; “not locked” gives it back to the allocator.',
      set: (f) => ({ locked_master: f.elements.locked_master.value || null }),
    },
    pool: {
      title: 'Move to a pool',
      intro: 'At their next boot they get a master of the new pool.',
      set: (f) => ({ pool: f.elements.pool.value }),
    },
    environment: {
      title: 'Move to an environment',
      intro: 'The environment is part of the silo: their peers change with it.',
      set: (f) => ({ environment: f.elements.environment.value }),
    },
  };

  const bulk = { action: null, names: [], report: null };

  function openBulk(action) {
    const spec = BULK[action];
    const d = $('#bulk-dialog');
    if (!spec || !d || selection.names.size === 0) return;
    const form = $('#bulk-form');
    form.reset();
    bulk.action = action;
    bulk.names = Array.from(selection.names).sort();
    bulk.report = null;
    const n = bulk.names.length;
    $('#bulk-title').textContent = spec.title + ': ' + n + ' slave' + (n === 1 ? '' : 's');
    $('#bulk-intro').textContent = spec.intro;
    for (const f of $$('[data-for]', form)) f.hidden = !f.dataset.for.split(' ').includes(action);
    showError($('#bulk-error'), null);
    showPreview(false);
    d.showModal();
    const first = $$('[data-for]:not([hidden]) input, [data-for]:not([hidden]) select', form)[0];
    if (first) first.focus();
    else previewBulk(); // nothing to fill in: show what would change at once
  }

  function showPreview(on) {
    $('#bulk-preview').hidden = !on;
    $('#bulk-apply').hidden = !on;
    $('#bulk-back').hidden = !on;
    $('#bulk-preview-btn').hidden = on;
    for (const f of $$('#bulk-fields [data-for]')) {
      for (const input of $$('input, select', f)) input.disabled = on;
    }
  }

  function bulkBody(dryRun) {
    const form = $('#bulk-form');
    const spec = BULK[bulk.action];
    const request = { select: { names: dryRun ? bulk.names : bulk.report.matched }, set: spec.set(form), dry_run: dryRun };
    if (bulk.action === 'disable') {
      request.note = form.elements.note.value.trim();
      const until = form.elements.until.value.trim();
      if (until) request.until = until;
    } else if (bulk.action !== 'enable') {
      const note = form.elements.audit_note.value.trim();
      if (note) request.note = note;
    }
    return request;
  }

  // A column's value as the preview shows it: a reference by its name.
  function shown(col, value, data) {
    if (value === null || value === undefined) {
      const f = (data.fields || []).find((x) => x.col === col);
      return (f && f.none) || '∅';
    }
    if (typeof value === 'boolean') return value ? 'yes' : 'no';
    const f = (data.fields || []).find((x) => x.col === col);
    if (f && f.list) return lookupName(data.lookups, f.list, value);
    return String(value);
  }

  function labelOf(col, data) {
    const f = (data.fields || []).find((x) => x.col === col);
    return f ? f.label : col;
  }

  function renderPreview(report) {
    const data = pageData() || { fields: [], lookups: {} };
    const changes = new Map(report.changed.map((c) => [c.name, c]));
    const rows = report.matched.map((name) => {
      const c = changes.get(name);
      const what = el('td', { class: 'changes' });
      if (!c) {
        what.appendChild(el('span', { class: 'muted', text: 'no change' }));
      } else {
        for (const col of Object.keys(c.new)) {
          what.appendChild(el('span', { class: 'change' }, [
            el('span', { class: 'col', text: labelOf(col, data) }),
            el('del', { text: shown(col, c.old[col], data) }), txt(' → '), el('ins', { text: shown(col, c.new[col], data) }),
          ]));
        }
      }
      return el('tr', { 'data-name': name, class: c ? 'will-change' : '' }, [el('td', { class: 'mono', text: name }), what]);
    });
    $('#bulk-preview-rows').replaceChildren(...rows);
    const n = report.matched.length;
    let summary = n + ' slave' + (n === 1 ? '' : 's') + ' selected; ' + report.changed.length + ' would change';
    if (bulk.action === 'disable') summary += '; ' + report.holds + ' hold' + (report.holds === 1 ? '' : 's') + ' made, with this note';
    if (bulk.action === 'enable') summary += '; ' + report.holds + ' open hold' + (report.holds === 1 ? '' : 's') + ' ended';
    $('#bulk-preview-summary').textContent = summary + '. Nothing is written until you apply.';
    const apply = $('#bulk-apply');
    apply.textContent = BULK[bulk.action].title + ': apply to ' + n + ' slave' + (n === 1 ? '' : 's');
    showPreview(true);
    apply.focus();
  }

  async function previewBulk() {
    const form = $('#bulk-form');
    if (bulk.action === 'disable' && !form.elements.note.value.trim()) {
      showError($('#bulk-error'), 'Say why in the note: whoever finds these slaves disabled reads it.');
      form.elements.note.focus();
      return;
    }
    showError($('#bulk-error'), null);
    const button = $('#bulk-preview-btn');
    button.disabled = true;
    try {
      bulk.report = await api('POST', '/slaves/bulk', bulkBody(true));
    } catch (e) {
      showError($('#bulk-error'), 'No preview: ' + e.message);
      return;
    } finally {
      button.disabled = false;
    }
    renderPreview(bulk.report);
  }

  async function applyBulk() {
    if (!bulk.report) return;
    const d = $('#bulk-dialog');
    const buttons = $$('.dialog-actions button', d);
    buttons.forEach((b) => { b.disabled = true; });
    let report;
    try {
      report = await api('POST', '/slaves/bulk', bulkBody(false));
    } catch (e) {
      showError($('#bulk-error'), 'Not applied: ' + e.message);
      return;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
    d.close('ok');
    selection.names.clear();
    selection.anchor = null;
    let refreshed = false;
    try { refreshed = await refresh(location.href); } catch (_) { /* reloaded below */ }
    const n = report.changed.length;
    let message = BULK[bulk.action].title + ': ' + n + ' slave' + (n === 1 ? '' : 's') + ' changed';
    if (report.holds) message += ' (' + report.holds + ' hold' + (report.holds === 1 ? '' : 's') + ')';
    toast(message + '.');
    if (!refreshed) location.reload();
    else syncSelection();
  }

  document.addEventListener('click', (e) => {
    const b = e.target.closest && e.target.closest('#action-bar [data-bulk]');
    if (b) openBulk(b.dataset.bulk);
  });
  document.addEventListener('submit', (e) => {
    if (e.target.id === 'bulk-form') {
      e.preventDefault();
      if (!bulk.report) previewBulk();
    } else if (e.target.id === 'drain-form') {
      submitDrain(e);
    }
  });
  document.addEventListener('click', (e) => {
    if (!e.target.closest) return;
    if (e.target.closest('#bulk-apply')) applyBulk();
    else if (e.target.closest('#bulk-back')) {
      bulk.report = null;
      showPreview(false);
    }
  });

  document.addEventListener('click', (e) => {
    const b = e.target.closest('[data-action]');
    if (!b) return;
    const action = b.dataset.action;
    const tr = b.closest('tr[data-id]');
    // Who a drain or undrain is for: a row of the masters list, or the head
    // of a master's page.
    const holder = b.closest('[data-id][data-name]');
    if (action === 'edit' && tr) {
      if (tr.classList.contains('is-editing')) closeEditor();
      else openEditor(tr);
    } else if (action === 'cancel') {
      closeEditor();
    } else if (action === 'drain' && holder) {
      openDrain(holder);
    } else if (action === 'undrain' && holder) {
      undrain(holder);
    } else if (action === 'tac') {
      const editorRow = b.closest('tr.editor-row');
      const row = editorRow && editorRow.previousElementSibling;
      if (row) previewTac(row.dataset.name);
    } else if (action === 'select-all') {
      const data = pageData();
      for (const n of (data && data.all_names) || []) selection.names.add(n);
      syncSelection();
    } else if (action === 'select-none') {
      selection.names.clear();
      selection.anchor = null;
      syncSelection();
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
    if (tr && !e.target.closest('a, button, td.select') && !tr.classList.contains('is-editing')) openEditor(tr);
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
    const at = document.activeElement;
    const i = all.indexOf(at && at.closest ? at.closest('tr[data-id]') : at);
    const next = all[Math.max(0, Math.min(all.length - 1, i < 0 ? 0 : i + delta))];
    next.focus();
    next.scrollIntoView({ block: 'nearest' });
  }

  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    // A row's selection box keeps the shortcuts (j, k, x): it takes no text.
    const typing = t.matches && t.matches('input:not([type="checkbox"]), select, textarea, [contenteditable]');
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
    // A row, or a row's selection box, has the focus.
    const row = !t.matches ? null
      : t.matches('tr[data-id]') ? t
        : t.matches('.row-select') ? t.closest('tr[data-id]') : null;
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
        if (row && !t.matches('input')) { e.preventDefault(); openEditor(row); }
        break;
      case 'x':
        if (row && $('.row-select', row)) { e.preventDefault(); toggleRow(row); }
        break;
      case 'w':
        if (row && row.closest('#slaves-table')) { e.preventDefault(); previewTac(row.dataset.name); }
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
  syncSelection();
  loadDrain();
  const flash = sessionStorage.getItem(FLASH_KEY);
  if (flash) {
    sessionStorage.removeItem(FLASH_KEY);
    toast(flash);
  }
})();
