/**
 * The page at `/`: pick or drop an image, run a task, watch the text stream in and the boxes and
 * masks drawn over the image. One self-contained document (no external scripts, styles or fonts:
 * it works offline), kept as a string so that it ships inside dist/ with the compiled code. Its
 * script uses no template literals, so that this file needs no escaping.
 */

const STYLE = `
:root { color-scheme: light dark; --accent: #2f6fdf; --muted: #888; --line: #8884; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; align-items: center; gap: 12px; padding: 10px 18px; border-bottom: 1px solid var(--line); }
header h1 { font-size: 17px; margin: 0; }
#status { font-size: 13px; padding: 2px 10px; border-radius: 10px; background: #8882; }
#status.ok { background: #2a2; color: #fff; }
#status.loading { background: #d90; color: #fff; }
#status.error { background: #c33; color: #fff; }
main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(280px, 2fr); gap: 18px; padding: 18px; }
@media (max-width: 760px) { main { grid-template-columns: 1fr; } }
#drop { border: 2px dashed var(--line); border-radius: 10px; min-height: 320px; display: flex; align-items: center;
  justify-content: center; flex-direction: column; gap: 8px; padding: 10px; position: relative; }
#drop.over { border-color: var(--accent); background: #2f6fdf11; }
#canvas { display: none; }
/* Small images are shown larger; object-fit keeps the proportions when the height is capped. */
#canvas.shown { display: block; width: min(100%, 560px); height: auto; max-height: 72vh; object-fit: contain; }
#hint { color: var(--muted); text-align: center; }
label.button, button { font: inherit; padding: 6px 14px; border-radius: 6px; border: 1px solid var(--line); background: #8881; cursor: pointer; }
button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
button:disabled { opacity: .5; cursor: default; }
form { display: grid; gap: 10px; align-content: start; }
form .row { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
select, input[type=text], input[type=number], input[type=password] { font: inherit; padding: 5px 8px; border-radius: 6px; border: 1px solid var(--line); background: transparent; color: inherit; }
input[type=text] { flex: 1; min-width: 120px; }
input[type=number] { width: 6em; }
#output { white-space: pre-wrap; word-break: break-word; min-height: 3em; padding: 10px; border-radius: 6px; background: #8881; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
#items { margin: 0; padding-left: 18px; font-size: 14px; }
#timings { color: var(--muted); font-size: 13px; }
#error { color: #c33; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
`;

const SCRIPT = `
(function () {
  var COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45'];
  var TASKS = {
    caption: { field: null },
    describe: { field: null },
    answer: { field: 'question', placeholder: 'what is in the picture?' },
    ocr: { field: null },
    detect: { field: 'labels', placeholder: 'cat ; dog' },
    segment: { field: 'label', placeholder: 'cat' },
    prompt: { field: 'prompt', placeholder: 'any PaliGemma prompt, e.g. caption es' }
  };
  var $ = function (id) { return document.getElementById(id); };
  var canvas = $('canvas'), g = canvas.getContext('2d');
  var file = null, bitmap = null, found = [], masks = [], controller = null, authNeeded = false;

  function setState(s) { document.body.dataset.state = s; }
  function key() { return $('key').value.trim(); }
  function headers(extra) {
    var h = extra || {};
    if (key()) h.authorization = 'Bearer ' + key();
    return h;
  }

  function health() {
    fetch('/health').then(function (r) { return r.json(); }).then(function (h) {
      var s = $('status');
      s.className = h.status === 'ok' ? 'ok' : h.status === 'loading' ? 'loading' : 'error';
      if (h.status === 'ok') {
        s.textContent = h.model + ' \\u00b7 ' + h.backend;
        authNeeded = h.auth;
        $('keyrow').hidden = !h.auth;
        if (!h.segmentation) $('task').querySelector('option[value=segment]').disabled = true;
        updateButtons();
      } else if (h.status === 'loading') {
        s.textContent = 'loading model ' + Math.floor(h.progress * 100) + '%';
        setTimeout(health, 700);
      } else {
        s.textContent = h.status + (h.error ? ': ' + h.error : '');
      }
    }).catch(function () { $('status').textContent = 'server unreachable'; setTimeout(health, 2000); });
  }

  function updateButtons() {
    var ready = $('status').className === 'ok';
    $('run').disabled = !(ready && bitmap && !controller);
    $('stop').disabled = !controller;
  }

  function onTask() {
    var t = TASKS[$('task').value];
    $('text').hidden = !t.field;
    $('text').placeholder = t.placeholder || '';
  }

  function useFile(f) {
    if (!f) return;
    if (f.type && f.type.indexOf('image/') !== 0) { showError(f.name + ' is not an image'); return; }
    createImageBitmap(f).then(function (b) {
      file = f; bitmap = b; found = []; masks = [];
      canvas.width = b.width; canvas.height = b.height;
      canvas.className = 'shown';
      $('hint').hidden = true;
      draw(); updateButtons();
    }).catch(function () { showError(f.name + ': this browser cannot read it as an image'); });
  }

  function draw() {
    if (!bitmap) return;
    g.drawImage(bitmap, 0, 0);
    masks.forEach(function (m) { g.drawImage(m, 0, 0); });
    var lw = Math.max(2, Math.round(Math.max(bitmap.width, bitmap.height) / 200));
    g.lineWidth = lw;
    g.font = 'bold ' + Math.max(12, lw * 6) + 'px system-ui, sans-serif';
    g.textBaseline = 'top';
    found.forEach(function (d, i) {
      var c = COLORS[i % COLORS.length], b = d.box;
      g.strokeStyle = c;
      g.strokeRect(b.x1 + lw / 2, b.y1 + lw / 2, Math.max(1, b.x2 - b.x1 - lw), Math.max(1, b.y2 - b.y1 - lw));
      if (d.label) {
        var w = g.measureText(d.label).width + 8, h = Math.max(12, lw * 6) + 6;
        var y = b.y1 >= h ? b.y1 - h : b.y1, x = Math.max(0, Math.min(b.x1, bitmap.width - w));
        g.fillStyle = c; g.fillRect(x, y, w, h);
        g.fillStyle = '#fff'; g.fillText(d.label, x + 4, y + 3);
      }
    });
  }

  /** A 0/255 mask PNG as a tinted, half-transparent layer. */
  function maskLayer(url, color) {
    return new Promise(function (resolve) {
      var img = new Image();
      img.onload = function () {
        var c = document.createElement('canvas');
        c.width = img.width; c.height = img.height;
        var x = c.getContext('2d');
        x.drawImage(img, 0, 0);
        var px = x.getImageData(0, 0, c.width, c.height);
        var r = parseInt(color.slice(1, 3), 16), gg = parseInt(color.slice(3, 5), 16), b = parseInt(color.slice(5, 7), 16);
        for (var i = 0; i < px.data.length; i += 4) {
          var on = px.data[i] > 127;
          px.data[i] = r; px.data[i + 1] = gg; px.data[i + 2] = b; px.data[i + 3] = on ? 110 : 0;
        }
        x.putImageData(px, 0, 0);
        resolve(c);
      };
      img.onerror = function () { resolve(null); };
      img.src = url;
    });
  }

  /** <loc> groups in raw text (the prompt task), as boxes in image pixels. */
  function parseBoxes(text) {
    var out = [], re = /((?:<loc\\d{4}>){4})\\s*([^<;]*)/g, m;
    while ((m = re.exec(text))) {
      var v = m[1].match(/\\d{4}/g).map(Number);
      if (v.some(function (n) { return n > 1023; })) continue;
      out.push({ label: m[2].trim(), box: {
        y1: v[0] / 1024 * bitmap.height, x1: v[1] / 1024 * bitmap.width,
        y2: v[2] / 1024 * bitmap.height, x2: v[3] / 1024 * bitmap.width } });
    }
    return out;
  }

  function showError(msg) { $('error').textContent = msg; setState('error'); }

  function listItems() {
    var ul = $('items');
    ul.textContent = '';
    found.forEach(function (d, i) {
      var li = document.createElement('li'), sw = document.createElement('span');
      sw.className = 'swatch'; sw.style.background = COLORS[i % COLORS.length];
      var b = d.box;
      li.appendChild(sw);
      li.appendChild(document.createTextNode((d.label || '(no label)') + ': ' + [b.x1, b.y1, b.x2, b.y2].map(Math.round).join(', ')));
      ul.appendChild(li);
    });
  }

  /** Reads server-sent events from a fetch response; calls on(event, data) for each. */
  function readEvents(res, on) {
    var reader = res.body.getReader(), dec = new TextDecoder(), buf = '';
    function pump() {
      return reader.read().then(function (r) {
        if (r.done) return;
        buf += dec.decode(r.value, { stream: true });
        var i;
        while ((i = buf.indexOf('\\n\\n')) >= 0) {
          var block = buf.slice(0, i), ev = 'message', data = '';
          buf = buf.slice(i + 2);
          block.split('\\n').forEach(function (line) {
            if (line.indexOf('event: ') === 0) ev = line.slice(7);
            else if (line.indexOf('data: ') === 0) data += line.slice(6);
          });
          on(ev, data);
        }
        return pump();
      });
    }
    return pump();
  }

  function dataUrl(f) {
    return new Promise(function (resolve, reject) {
      var r = new FileReader();
      r.onload = function () { resolve(r.result); };
      r.onerror = reject;
      r.readAsDataURL(f);
    });
  }

  function run(ev) {
    ev.preventDefault();
    if (!bitmap || controller) return;
    var task = $('task').value, t = TASKS[task], text = $('text').value.trim();
    if (t.field && !text) { showError('enter the ' + t.field); return; }
    found = []; masks = []; draw(); listItems();
    $('output').textContent = ''; $('error').textContent = ''; $('timings').textContent = '';
    controller = new AbortController(); updateButtons(); setState('running');
    var started = performance.now(), first = null;
    var sampling = { max_tokens: $('max').value, temperature: $('temperature').value, seed: $('seed').value };
    function onText(s) { if (first === null) first = performance.now(); $('output').textContent += s; }
    function finish(server) {
      var parts = [];
      if (first !== null) parts.push('first text ' + Math.round(first - started) + ' ms');
      parts.push('done ' + Math.round(performance.now() - started) + ' ms');
      if (server) {
        parts.push('server: queue ' + Math.round(server.queueMs) + ' ms');
        if (server.encodeMs) parts.push('vision ' + Math.round(server.encodeMs) + ' ms');
        if (server.firstTokenMs !== null) parts.push('first token ' + Math.round(server.firstTokenMs) + ' ms');
        parts.push(server.tokens + ' tokens in ' + Math.round(server.totalMs) + ' ms');
      }
      $('timings').textContent = parts.join(' \\u00b7 ');
    }
    var request;
    if (task === 'prompt') {
      request = dataUrl(file).then(function (url) {
        var body = { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: url } }, { type: 'text', text: text }] }], stream: true };
        Object.keys(sampling).forEach(function (k) { if (sampling[k] !== '') body[k] = Number(sampling[k]); });
        return fetch('/v1/chat/completions', { method: 'POST', headers: headers({ 'content-type': 'application/json' }), body: JSON.stringify(body), signal: controller.signal });
      });
    } else {
      var form = new FormData();
      form.append('stream', 'true');
      Object.keys(sampling).forEach(function (k) { if (sampling[k] !== '') form.append(k, sampling[k]); });
      if (task === 'describe') form.append('detail', 'long');
      if (t.field) form.append(t.field, text);
      form.append('image', file, file.name || 'image');
      request = fetch('/v1/' + (task === 'describe' ? 'caption' : task), { method: 'POST', headers: headers(), body: form, signal: controller.signal });
    }
    var all = '', failed = false;
    request.then(function (res) {
      if (!res.ok) return res.json().then(function (e) { throw new Error(e.error ? e.error.message : res.statusText); });
      return readEvents(res, function (ev, data) {
        if (data === '[DONE]') return;
        var d = JSON.parse(data);
        if (d.error) { failed = true; showError(d.error.message); return; }
        if (task === 'prompt') {
          var c = d.choices[0] && d.choices[0].delta.content;
          if (c) { all += c; onText(c); }
        } else if (ev === 'text') onText(d.text);
        else if (ev === 'result') {
          finish(d.timings);
          found = d.detections || d.segments || [];
          listItems();
          return Promise.all((d.segments || []).map(function (s, i) { return maskLayer(s.mask, COLORS[i % COLORS.length]); })).then(function (layers) {
            masks = layers.filter(Boolean); draw();
            if (!failed) setState('done');
          });
        }
      });
    }).then(function () {
      if (task === 'prompt') { finish(null); found = parseBoxes(all); listItems(); draw(); if (!failed) setState('done'); }
    }).catch(function (e) {
      if (e.name === 'AbortError') { $('error').textContent = 'stopped'; setState('idle'); }
      else showError(e.message);
    }).then(function () { controller = null; updateButtons(); });
  }

  var drop = $('drop');
  drop.addEventListener('dragover', function (e) { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', function () { drop.classList.remove('over'); });
  drop.addEventListener('drop', function (e) { e.preventDefault(); drop.classList.remove('over'); useFile(e.dataTransfer.files[0]); });
  $('file').addEventListener('change', function () { useFile($('file').files[0]); });
  $('task').addEventListener('change', onTask);
  $('form').addEventListener('submit', run);
  $('stop').addEventListener('click', function () { if (controller) controller.abort(); });
  $('key').addEventListener('change', function () { sessionStorage.setItem('paligemma-key', key()); });
  $('key').value = sessionStorage.getItem('paligemma-key') || '';
  onTask(); setState('idle'); health();
})();
`;

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PaliGemma</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header><h1>PaliGemma</h1><span id="status">connecting...</span></header>
<main>
  <section id="drop">
    <canvas id="canvas"></canvas>
    <div id="hint">Drop an image here, or<br><label class="button" for="file">choose one</label></div>
    <input id="file" type="file" accept="image/*" hidden>
  </section>
  <form id="form">
    <div class="row" id="keyrow" hidden><input id="key" type="password" placeholder="API key" autocomplete="off"></div>
    <div class="row">
      <select id="task" aria-label="task">
        <option value="caption">caption</option>
        <option value="describe">describe (long caption)</option>
        <option value="answer">answer a question</option>
        <option value="ocr">read text (ocr)</option>
        <option value="detect">detect</option>
        <option value="segment">segment</option>
        <option value="prompt">any prompt (chat completions)</option>
      </select>
      <input id="text" type="text" aria-label="task input">
    </div>
    <div class="row">
      <label>max tokens <input id="max" type="number" min="1" max="4096" placeholder="task's"></label>
      <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" placeholder="0"></label>
      <label>seed <input id="seed" type="number" min="0" step="1" placeholder="-"></label>
    </div>
    <div class="row">
      <button id="run" class="primary" type="submit" disabled>Run</button>
      <button id="stop" type="button" disabled>Stop</button>
      <label class="button" for="file">Other image</label>
    </div>
    <div id="output" aria-live="polite"></div>
    <ul id="items"></ul>
    <div id="timings"></div>
    <div id="error"></div>
  </form>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
