"""The page's inline stylesheet and scripts (constant text: nothing from a campaign goes in here).

`ERROR_CAPTURE` runs first, in the head: it records script errors, failed resource loads, blocked
requests (CSP), `console.error` calls and `alert` calls into the `#nf-errors` element, which the
page shows as a red banner and the browser test reads back from the DOM. `APP` makes tables
sortable and filterable, and with the URL fragment `#nf-selftest` exercises both and writes the
result into `<html data-nf-selftest>`. Both are allowed by the page's Content-Security-Policy
through their sha256 hashes, so no other script can run even if markup got in.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["CSS", "ERROR_CAPTURE", "APP", "csp_hash"]


def csp_hash(script: str) -> str:
    """The CSP source expression allowing exactly this inline script text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


CSS = """
:root { --fg:#1d1d1f; --muted:#666; --line:#ddd; --bg:#fff; --soft:#f6f7f9; --accent:#1f5fa8;
  --c-agree:#cfe9d2; --c-precision:#ffe0a3; --c-mismatch:#f4a3a3; --c-nan_pattern:#d7b8f2; --c-raised:#ffc78f;
  --c-crash:#b71c1c; --c-timeout:#8d6e63; --c-bad_output:#f48fb1; --c-accepted_invalid:#9fd9d6; --c-none:#fafafa;
  --c-unsupported:#e6e6e6; }
* { box-sizing: border-box; }
html { scroll-padding-top: 48px; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
nav.top { position:sticky; top:0; z-index:5; background:#20252c; color:#fff; padding:8px 24px; display:flex; gap:18px;
  align-items:center; flex-wrap:wrap; }
nav.top a { color:#d8e6ff; text-decoration:none; font-weight:500; }
nav.top a:hover { text-decoration:underline; }
nav.top .brand { font-weight:700; color:#fff; margin-right:8px; }
main { max-width:1320px; margin:0 auto; padding:12px 24px 60px; }
h1 { font-size:22px; margin:14px 0 4px; }
h2 { font-size:18px; margin:30px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:15px; margin:18px 0 6px; }
h4 { font-size:13px; margin:12px 0 4px; color:#333; text-transform:uppercase; letter-spacing:.03em; }
p.note, .muted { color:var(--muted); }
p.note { margin:4px 0 10px; max-width:1000px; }
code, pre, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
pre { background:var(--soft); border:1px solid var(--line); padding:8px 10px; overflow:auto; max-height:420px;
  white-space:pre-wrap; word-break:break-word; margin:4px 0; }
pre.script { white-space:pre; max-height:520px; }
table { border-collapse:collapse; margin:6px 0 12px; font-size:13px; }
th, td { border:1px solid var(--line); padding:3px 7px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
table.kv th { width:190px; } table.kv2 th { width:auto; min-width:120px; } table.kv2 td { min-width:200px; }
table.sortable th { cursor:pointer; user-select:none; }
table.sortable th::after { content:" \\2195"; color:#aaa; font-weight:400; }
table.sortable th[aria-sort=ascending]::after { content:" \\2191"; color:#333; }
table.sortable th[aria-sort=descending]::after { content:" \\2193"; color:#333; }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(380px,1fr)); gap:4px 28px; }
.cards { display:flex; gap:12px; flex-wrap:wrap; margin:10px 0 14px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 14px; min-width:130px; background:var(--soft); }
.card .v { font-size:22px; font-weight:650; }
.card .k { color:var(--muted); font-size:12px; }
.badge { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; font-weight:600; line-height:19px;
  border:1px solid rgba(0,0,0,.12); white-space:nowrap; }
.cat-agree { background:var(--c-agree); } .cat-precision { background:var(--c-precision); }
.cat-mismatch { background:var(--c-mismatch); } .cat-nan_pattern { background:var(--c-nan_pattern); }
.cat-raised { background:var(--c-raised); } .cat-crash { background:var(--c-crash); color:#fff; }
.cat-timeout { background:var(--c-timeout); color:#fff; } .cat-bad_output { background:var(--c-bad_output); }
.cat-accepted_invalid { background:var(--c-accepted_invalid); } .cat-none { background:var(--c-none); }
.cat-unsupported { background:var(--c-unsupported); color:#777; }
.st-new { background:#ffecb3; } .st-known { background:#e1f5fe; } .st-recurring { background:#ffe0b2; }
.st-fixed { background:#dcedc8; }
table.matrix td { padding:4px; min-width:120px; }
table.matrix th.op { text-align:right; }
.chips { display:flex; gap:3px; flex-wrap:wrap; }
.chip { display:inline-block; min-width:54px; padding:2px 5px; border-radius:4px; font-size:11.5px; line-height:16px;
  border:1px solid rgba(0,0,0,.15); color:#222; text-decoration:none; }
.chip b { font-weight:650; }
.chip a { color:inherit; }
.chip.cat-crash a, .chip.cat-timeout a { color:#fff; }
.chip .n { color:#444; font-size:10.5px; }
.legend { display:flex; gap:6px; flex-wrap:wrap; align-items:center; margin:6px 0; font-size:12px; }
table.conv td { font-size:12.5px; }
table.conv td.agrees { background:#eef8ef; } table.conv td.differs { background:#ffe3e0; outline:2px solid #d32f2f; outline-offset:-2px; }
table.conv td.unobserved { background:#fafafa; color:#777; } table.conv td.na { background:#f1f1f1; color:#aaa; }
table.conv td.unknown { background:#fff8e1; } table.conv td.undeclared { background:#eef3fb; }
table.conv th { white-space:normal; }
.conv .d, .conv .o { display:block; } .conv .d { color:#555; font-size:11.5px; } .conv .o { font-weight:600; }
.conv .e { display:block; color:#777; font-size:11px; }
table.conv td.prop { min-width:120px; max-width:200px; } table.conv td.prop.na { min-width:30px; text-align:center; }
ul.evidence { font-size:12px; color:#444; columns:2; column-gap:28px; } ul.evidence li { break-inside:avoid; margin-bottom:3px; }
.filters { display:flex; gap:10px; align-items:center; flex-wrap:wrap; margin:6px 0; padding:6px 8px; background:var(--soft);
  border:1px solid var(--line); border-radius:5px; }
.filters label { font-size:12.5px; color:#333; }
.filters select, .filters input { font-size:12.5px; padding:2px 4px; }
.filters .shown { margin-left:auto; color:var(--muted); font-size:12.5px; }
section.bucket { border:1px solid var(--line); border-left:6px solid #999; border-radius:6px; padding:4px 16px 12px;
  margin:18px 0; }
section.bucket.cat-crash, section.bucket.cat-mismatch { border-left-color:#c62828; }
section.bucket.cat-nan_pattern { border-left-color:#8e24aa; } section.bucket.cat-precision { border-left-color:#f0a400; }
section.bucket.cat-raised { border-left-color:#ef6c00; } section.bucket.cat-bad_output { border-left-color:#d81b60; }
section.bucket.cat-timeout { border-left-color:#6d4c41; } section.bucket.cat-accepted_invalid { border-left-color:#00897b; }
section.bucket { background:#fff; }
section.bucket h3 { display:flex; gap:8px; align-items:center; flex-wrap:wrap; font-size:15.5px; }
section.bucket .key { font-size:12px; color:var(--muted); }
.explain { font-size:13.5px; background:#fbfbfd; border:1px solid #eceef2; padding:6px 10px; border-radius:4px;
  white-space:pre-wrap; word-break:break-word; }
.figs { display:flex; gap:18px; flex-wrap:wrap; align-items:flex-start; }
.figs figure { margin:0; width:min-content; }
.figs figcaption { font-size:12px; color:var(--muted); min-width:260px; }
svg.fig { background:#fff; border:1px solid #eee; max-width:100%; height:auto; }
details { margin:6px 0; } details > summary { cursor:pointer; color:var(--accent); font-weight:500; }
.cmd { display:inline-block; background:#20252c; color:#e8f0ff; padding:4px 10px; border-radius:4px; }
#nf-errors { background:#b71c1c; color:#fff; padding:8px 24px; margin:0; white-space:pre-wrap; max-height:none; }
#nf-errors:empty { display:none; }
.two { display:flex; gap:12px 36px; flex-wrap:wrap; align-items:flex-start; }
a { color:var(--accent); }
.scroll { overflow-x:auto; max-width:100%; }
td.case { min-width:300px; }
"""

ERROR_CAPTURE = """
(function () {
  var errs = [];
  function show() {
    var box = document.getElementById('nf-errors');
    if (box) { box.textContent = errs.join('\\n'); }
  }
  function put(msg) { errs.push(String(msg)); show(); }
  window.__nfErrors = errs;
  window.addEventListener('error', function (ev) {
    if (ev && ev.target && ev.target !== window && ev.target.tagName) {
      put('resource error: <' + ev.target.tagName.toLowerCase() + '> ' + (ev.target.src || ev.target.href || ''));
    } else {
      put('script error: ' + (ev.message || 'unknown') + ' at ' + (ev.filename || '?') + ':' + (ev.lineno || '?'));
    }
  }, true);
  window.addEventListener('unhandledrejection', function (ev) { put('unhandled rejection: ' + ev.reason); });
  document.addEventListener('securitypolicyviolation', function (ev) {
    put('blocked by the content security policy: ' + ev.violatedDirective + ' ' + (ev.blockedURI || ''));
  });
  var origError = console.error;
  console.error = function () {
    put('console.error: ' + Array.prototype.map.call(arguments, String).join(' '));
    return origError.apply(console, arguments);
  };
  window.alert = function (m) { put('alert called: ' + m); };
  document.addEventListener('DOMContentLoaded', show);
})();
"""

APP = """
(function () {
  'use strict';
  function cellValue(row, idx) {
    var c = row.cells[idx];
    if (!c) { return ''; }
    var v = c.getAttribute('data-sort');
    return v === null ? c.textContent.trim() : v;
  }
  function asNumber(s) {
    if (s === 'inf' || s === 'Infinity') { return Infinity; }
    if (s === '-inf' || s === '-Infinity') { return -Infinity; }
    if (!/^[-+]?(\\d[\\d,]*\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?$/.test(s)) { return null; }
    return parseFloat(s.replace(/,/g, ''));
  }
  function sortTable(table, idx, dir) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (r, i) {
      var s = cellValue(r, idx);
      return { row: r, s: s, n: asNumber(s), i: i };
    });
    keyed.sort(function (a, b) {
      var r;
      if (a.n !== null && b.n !== null) { r = a.n < b.n ? -1 : (a.n > b.n ? 1 : 0); }
      else if (a.n !== null) { r = -1; }
      else if (b.n !== null) { r = 1; }
      else { r = a.s.localeCompare(b.s); }
      return (dir === 'descending' ? -r : r) || (a.i - b.i);
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, j) {
      if (j === idx) { th.setAttribute('aria-sort', dir); } else { th.removeAttribute('aria-sort'); }
    });
  }
  function makeSortable(table) {
    if (!table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, idx) {
      th.setAttribute('tabindex', '0');
      th.setAttribute('title', 'sort by ' + th.textContent.trim());
      var go = function () {
        var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
        sortTable(table, idx, dir);
      };
      th.addEventListener('click', go);
      th.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') { go(); } });
    });
  }
  function applyFilter(bar) {
    var table = document.getElementById(bar.getAttribute('data-for'));
    if (!table) { return; }
    var wants = {};
    Array.prototype.forEach.call(bar.querySelectorAll('select[data-field]'), function (s) {
      if (s.value) { wants[s.getAttribute('data-field')] = s.value; }
    });
    var text = bar.querySelector('input[type=search]');
    var needle = text ? text.value.trim().toLowerCase() : '';
    var rows = table.tBodies[0] ? table.tBodies[0].rows : [];
    var shown = 0, hiddenKeys = {};
    Array.prototype.forEach.call(rows, function (r) {
      var ok = true;
      for (var f in wants) {
        if (Object.prototype.hasOwnProperty.call(wants, f) && r.getAttribute('data-' + f) !== wants[f]) { ok = false; }
      }
      if (ok && needle && r.textContent.toLowerCase().indexOf(needle) < 0) { ok = false; }
      r.hidden = !ok;
      if (ok) { shown += 1; }
      var k = r.getAttribute('data-target');
      if (k) { hiddenKeys[k] = !ok; }
    });
    var linked = bar.getAttribute('data-linked');
    if (linked) {
      Array.prototype.forEach.call(document.querySelectorAll(linked), function (el) {
        var id = el.getAttribute('id');
        if (id && Object.prototype.hasOwnProperty.call(hiddenKeys, id)) { el.hidden = hiddenKeys[id]; }
      });
    }
    var out = bar.querySelector('.shown');
    if (out) { out.textContent = shown + ' of ' + rows.length + ' shown'; }
  }
  function setupFilters(bar) {
    Array.prototype.forEach.call(bar.querySelectorAll('select, input'), function (c) {
      c.addEventListener('input', function () { applyFilter(bar); });
      c.addEventListener('change', function () { applyFilter(bar); });
    });
    var reset = bar.querySelector('button.reset');
    if (reset) {
      reset.addEventListener('click', function () {
        Array.prototype.forEach.call(bar.querySelectorAll('select, input'), function (c) { c.value = ''; });
        applyFilter(bar);
      });
    }
    applyFilter(bar);
  }
  function selftest() {
    var problems = [];
    var table = document.getElementById('bucket-table');
    var bar = document.querySelector('.filters[data-for=bucket-table]');
    if (!table || !bar) { return 'no bucket table'; }
    var head = table.tHead.rows[0].cells, col = -1;
    for (var j = 0; j < head.length; j++) { if (head[j].getAttribute('data-col') === 'findings') { col = j; } }
    if (col < 0) { return 'no findings column'; }
    head[col].click(); head[col].click();  // ascending, then descending
    var rows = table.tBodies[0].rows, prev = Infinity;
    for (var i = 0; i < rows.length; i++) {
      var v = asNumber(cellValue(rows[i], col));
      if (v === null || v > prev) { problems.push('descending sort broken at row ' + i); break; }
      prev = v;
    }
    var sel = bar.querySelector('select[data-field=category]');
    if (sel && sel.options.length > 1) {
      sel.value = sel.options[1].value;
      sel.dispatchEvent(new Event('change'));
      var visible = 0;
      Array.prototype.forEach.call(rows, function (r) {
        if (!r.hidden) {
          visible += 1;
          if (r.getAttribute('data-category') !== sel.value) { problems.push('filter let through ' + r.getAttribute('data-category')); }
        } else {
          var sec = document.getElementById(r.getAttribute('data-target'));
          if (sec && !sec.hidden) { problems.push('section of a filtered row still shown'); }
        }
      });
      if (!visible) { problems.push('filter shows no row'); }
      sel.value = ''; sel.dispatchEvent(new Event('change'));
    }
    return problems.length ? 'fail: ' + problems.join('; ') : 'pass';
  }
  function init() {
    Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), makeSortable);
    Array.prototype.forEach.call(document.querySelectorAll('.filters[data-for]'), setupFilters);
    if (location.hash === '#nf-selftest') {
      document.documentElement.setAttribute('data-nf-selftest', selftest());
    }
    document.documentElement.setAttribute('data-nf-ready', '1');
  }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', init); } else { init(); }
})();
"""
