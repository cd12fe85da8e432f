"use strict";
// cnnkit explain pages: controls, query string, grids, animation and the conv matrix.
(function () {
  const X = window.cnnkitExplain;
  const $ = (id) => document.getElementById(id);
  const CFG = JSON.parse($("cnnkit-config").textContent);
  const PRESETS = JSON.parse($("cnnkit-presets").textContent);
  const OP = CFG.op;
  const KEYS = ["input", "kernel", "stride", "padding", "dilation"];
  const MATRIX_CELLS = 40000;  // larger conv matrices are described, not drawn
  const S = { t: 0, timer: null, m: null, marked: [] };

  function readQuery() {
    const q = new URLSearchParams(window.location.search);
    let user = false;
    if (q.has("preset") && PRESETS[q.get("preset")]) {
      const p = PRESETS[q.get("preset")];
      Object.assign(CFG, p.params, { input: p.grid.length, dims: 2 });
    }
    for (const k of KEYS) {
      if (!q.has(k)) continue;
      CFG[k] = k === "padding" ? q.get(k) : parseInt(q.get(k), 10);
      user = true;
    }
    if (q.has("dims")) CFG.dims = parseInt(q.get("dims"), 10) === 1 ? 1 : 2;
    if (q.has("mode")) CFG.mode = q.get("mode");
    if (q.has("preset")) CFG.preset = q.get("preset");
    else if (user) CFG.preset = "generated";
  }
  function writeControls() {
    for (const k of KEYS) $(k).value = CFG[k];
    $("dims").value = String(CFG.dims);
    $("preset").value = PRESETS[CFG.preset] ? CFG.preset : "generated";
    if ($("mode")) $("mode").value = CFG.mode;
  }
  function readControls() {
    for (const k of KEYS) CFG[k] = k === "padding" ? $(k).value : parseInt($(k).value, 10);
    CFG.dims = parseInt($("dims").value, 10);
    if ($("mode")) CFG.mode = $("mode").value;
  }

  // ------------------------------------------------------------------ the example
  const kernelValues = (kh, kw) =>
    Array.from({ length: kh }, (_, u) => Array.from({ length: kw }, (_, v) => ((u * kw + v) % 3) - 1));
  function generated(n, dims) {
    const h = dims === 1 ? 1 : n;
    const f = OP === "transposed" || OP === "upsample" ? (r, c) => ((r * 2 + c) % 3) + 1
      : (r, c) => (r * 7 + c * 3 + 1) % 10;
    return Array.from({ length: h }, (_, r) => Array.from({ length: n }, (_, c) => f(r, c)));
  }
  const zeros = (h, w) => Array.from({ length: h }, () => new Array(w).fill(0));

  function build() {
    const k = CFG.kernel, s = CFG.stride, d = CFG.dilation, dims = CFG.dims;
    for (const key of ["input", "kernel", "stride", "dilation"]) {
      if (!Number.isInteger(CFG[key]) || CFG[key] < 1) {
        return { error: `${key} must be a positive integer; received ${JSON.stringify($(key).value)}.` };
      }
    }
    let pad;
    try { pad = X.parsePadding(CFG.padding); } catch (e) { return { error: e.message }; }
    const preset = dims === 2 ? PRESETS[CFG.preset] : null;
    const x = preset ? preset.grid : generated(CFG.input, dims);
    const H = x.length, W = x[0].length;
    const one = dims === 1 || H === W;
    let text;
    try {
      text = one ? X.opText(OP, W, k, s, pad, d)
        : `height ${H}:\n${X.opText(OP, H, k, s, pad, d)}\n\nwidth ${W}:\n${X.opText(OP, W, k, s, pad, d)}`;
    } catch (e) { return { error: e.message }; }
    const sw = X.opSize(OP, W, k, s, pad, d), sh = dims === 1 ? { used: 1 } : X.opSize(OP, H, k, s, pad, d);
    const m = { x, H, W, text, dims, k, s, d, pad, preset, one, sizeW: sw, sizeH: sh };
    if (!sw || !sh) return m;
    const intPad = (n) => (typeof pad === "number" ? [pad, pad] : X.resolvePadding(pad, n, k, s, d));
    const g = {
      kh: dims === 1 ? 1 : k, kw: k, sh: dims === 1 ? 1 : s, sw: s, dh: dims === 1 ? 1 : d, dw: d,
      pads: [dims === 1 ? [0, 0] : intPad(H), intPad(W)],
    };
    m.g = g;
    m.w = kernelValues(g.kh, g.kw);
    if (OP === "conv" || OP === "dilated") {
      m.y = X.conv2d(x, m.w, g);
      m.matrix = { rows: X.convMatrix(H, W, g), transposed: false };
    } else if (OP === "pool" || OP === "unpool") {
      g.dh = 1; g.dw = 1;
      const r = X.pool2d(x, g, OP === "unpool" ? "max" : CFG.mode);
      m.y = r.y; m.idx = r.idx;
      if (OP === "unpool") {
        const v = preset && preset.unpool_values;
        m.v = v && v.length === r.y.length && v[0].length === r.y[0].length ? v : r.y;
        m.out = X.unpool2d(m.v, r.idx, H, W);
      }
    } else if (OP === "transposed") {
      m.outH = dims === 1 ? 1 : sh.used; m.outW = sw.used;
      m.y = X.transposed2d(x, m.w, g, m.outH, m.outW);
      m.matrix = { rows: X.convMatrix(m.outH, m.outW, g), transposed: true };
    } else {
      g.sh = dims === 1 ? 1 : s;
      m.y = X.upsample2d(x, g.sh, g.sw, CFG.mode);
    }
    return m;
  }

  // ------------------------------------------------------------------ drawing
  const show = (v) => (v === "" || v === null || v === undefined ? "" : X.fmt(Math.round(v * 100) / 100));
  function grid(title, values, opts = {}) {
    const pads = opts.pads || [[0, 0], [0, 0]];
    const h = values.length + pads[0][0] + pads[0][1], w = values[0].length + pads[1][0] + pads[1][1];
    const fig = document.createElement("figure");
    const table = document.createElement("table");
    table.className = "grid" + (opts.cls ? " " + opts.cls : "");
    const cells = [];
    for (let r = 0; r < h; r++) {
      const tr = table.insertRow(), row = [];
      for (let c = 0; c < w; c++) {
        const td = tr.insertCell(), rr = r - pads[0][0], cc = c - pads[1][0];
        const inside = rr >= 0 && rr < values.length && cc >= 0 && cc < values[0].length;
        td.textContent = inside ? (opts.raw ? values[rr][cc] : show(values[rr][cc])) : "0";
        if (!inside) td.className = "pad";
        row.push(td);
      }
      cells.push(row);
    }
    const cap = document.createElement("figcaption");
    cap.textContent = title;
    fig.append(table, cap);
    return { fig, cells, pads, values };
  }
  const arrow = (t) => { const s = document.createElement("span"); s.className = "arrow"; s.textContent = t || "\u2192"; return s; };

  function spreadKernel(w, d) {
    const kh = w.length, kw = w[0].length, fh = d.h * (kh - 1) + 1, fw = d.w * (kw - 1) + 1;
    const out = Array.from({ length: fh }, () => new Array(fw).fill("\u00b7"));
    for (let u = 0; u < kh; u++) for (let v = 0; v < kw; v++) out[u * d.h][v * d.w] = String(w[u][v]);
    return out;
  }

  function render(m) {
    const stage = $("stage");
    stage.innerHTML = "";
    S.m = m;
    S.t = 0;
    const notes = [];
    const msec = $("matrix-section");
    msec.style.display = m.matrix ? "" : "none";
    $("conv-matrix").innerHTML = "";
    if (m.error) {
      $("output-size").textContent = "\u2013";
      $("output-shape").textContent = "";
      $("formula").textContent = m.error;
      $("notes").innerHTML = "";
      S.steps = [];
      return;
    }
    $("formula").textContent = m.text;
    const sz = (o) => (o ? o.value : "none");
    $("output-size").textContent = m.dims === 1 || m.one ? sz(m.sizeW) : `${sz(m.sizeH)} x ${sz(m.sizeW)}`;
    if (!m.g) {
      $("output-shape").textContent = "(no output: see below)";
      $("notes").innerHTML = "";
      S.steps = [];
      $("step-label").textContent = "";
      return;
    }
    const oh = m.y.length, ow = m.y[0].length;
    $("output-shape").textContent = m.dims === 1 ? `(${ow} elements)` : `(a ${oh} x ${ow} map)`;
    if (!(m.sizeW.exact && m.sizeH.exact !== false)) {
      notes.push("Not a whole number: the grids below use the floored size that PyTorch and " +
        "Keras compute; the last input rows/columns are never covered.");
    }
    if (OP === "dilated" || m.d > 1) {
      notes.push(`<span id="effective-size">effective kernel size d(k - 1) + 1 = ${m.d}*(${m.k} - 1) + 1 = ` +
        `${m.d * (m.k - 1) + 1}</span>: the ${m.k} x ${m.k} weights spread over ` +
        `${m.d * (m.k - 1) + 1} x ${m.d * (m.k - 1) + 1} inputs.`);
    }
    if (m.preset) notes.push(`Example: ${m.preset.label}.`);
    $("notes").innerHTML = notes.map((t) => `<p class="note">${t}</p>`).join("");

    const parts = [];
    if (OP === "conv" || OP === "dilated" || OP === "transposed") {
      const padded = m.g.pads.some(([a, b]) => a || b);
      const inp = grid(OP === "transposed" ? `input x (${m.H} x ${m.W})` : padded ? "input x, zero-padded" : "input x",
        m.x, { pads: OP === "transposed" ? undefined : m.g.pads });
      const kern = m.d > 1 ? grid(`kernel, dilated by ${m.d}`, spreadKernel(m.w, { h: m.g.dh, w: m.g.dw }), { raw: true, cls: "kernel" })
        : grid("kernel w", m.w, { cls: "kernel" });
      const outv = zeros(m.y.length, m.y[0].length).map((r) => r.map(() => ""));
      const out = grid(OP === "transposed" ? "output y = K^T x" : "output y = K x", outv);
      parts.push(inp, "\u2217", kern, "=", out);
      S.inp = inp; S.out = out; S.kern = kern;
    } else if (OP === "pool" || OP === "unpool") {
      const inp = grid("input x", m.x, { pads: m.g.pads });
      const out = grid(OP === "pool" ? `${CFG.mode} pooled` : "max pooled", m.y.map((r) => r.map(() => "")));
      parts.push(inp, "\u2192", out);
      if (OP === "unpool" || CFG.mode !== "average") {
        const idx = grid("remembered indices (row-major)", m.idx.map((r) => r.map(() => "")), { raw: true, cls: "idx" });
        parts.push(idx);
        S.idx = idx;
      }
      if (OP === "unpool") {
        if (m.v !== m.y) parts.push("\u2192", grid("decoder values to unpool", m.v));
        S.un = grid(`unpooled (${m.H} x ${m.W}, bed of nails)`, m.out.map((r) => r.map(() => "")));
        parts.push("\u2192", S.un);
      }
      S.inp = inp; S.out = out;
    } else {
      const inp = grid("input x", m.x);
      const out = grid(`${CFG.mode} x${m.s}`, m.y.map((r) => r.map(() => "")));
      parts.push(inp, "\u2192", out);
      S.inp = inp; S.out = out;
    }
    for (const p of parts) stage.append(typeof p === "string" ? arrow(p) : p.fig);
    S.steps = steps(m);
    drawMatrix(m);
    apply(0);
  }

  function steps(m) {  // one entry per animation step: cells to light and what to write
    const out = [], g = m.g, oh = m.y.length, ow = m.y[0].length;
    if (OP === "transposed") {
      for (let i = 0; i < m.H; i++) for (let j = 0; j < m.W; j++) {
        const dst = [];
        for (let u = 0; u < g.kh; u++) for (let v = 0; v < g.kw; v++) {
          const r = i * g.sh - g.pads[0][0] + u * g.dh, c = j * g.sw - g.pads[1][0] + v * g.dw;
          if (r >= 0 && r < m.outH && c >= 0 && c < m.outW) dst.push([r, c]);
        }
        out.push({ src: [[i, j]], dst, col: i * m.W + j,
          text: `x(${i}, ${j}) = ${m.x[i][j]} adds x times the kernel to ${dst.length} output cells` });
      }
      return out;
    }
    if (OP === "upsample") {
      for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) {
        const si = Math.floor(i / g.sh), sj = Math.floor(j / g.sw);
        let src = [[si, sj]];
        if (CFG.mode === "bed of nails" && (i % g.sh || j % g.sw)) src = [];
        if (CFG.mode === "bilinear") {
          const a = (n, s, t) => { const f = Math.max((t + 0.5) / s - 0.5, 0), t0 = Math.floor(f); return [t0, Math.min(t0 + 1, n - 1)]; };
          const [r0, r1] = a(m.H, g.sh, i), [c0, c1] = a(m.W, g.sw, j);
          src = [[r0, c0], [r0, c1], [r1, c0], [r1, c1]];
        }
        out.push({ src, dst: [[i, j]], text: `y(${i}, ${j}) = ${show(m.y[i][j])}` });
      }
      return out;
    }
    for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) {
      const src = [], terms = [];
      const pool = OP === "pool" || OP === "unpool";
      for (let u = 0; u < g.kh; u++) for (let v = 0; v < g.kw; v++) {
        const r = i * g.sh + u * g.dh, c = j * g.sw + v * g.dw;  // padded coordinates
        src.push([r, c]);
        if (!pool) {
          const rr = r - g.pads[0][0], cc = c - g.pads[1][0];
          const xv = rr >= 0 && rr < m.H && cc >= 0 && cc < m.W ? m.x[rr][cc] : 0;
          terms.push(`${xv}\u00b7${m.w[u][v]}`);
        }
      }
      const st = { src, dst: [[i, j]], row: i * ow + j };
      if (pool && m.idx[i][j] >= 0) {
        const at = m.idx[i][j], r = Math.floor(at / m.W), c = at % m.W;
        st.best = [r + g.pads[0][0], c + g.pads[1][0]];
        st.at = [r, c];
      }
      st.text = pool ? `window (${i}, ${j}): ${CFG.mode === "average" && OP === "pool" ? "average" : OP === "pool" ? CFG.mode : "max"} = ${show(m.y[i][j])}` +
        (st.at ? `, index ${m.idx[i][j]} = row ${st.at[0]}, column ${st.at[1]}` : "")
        : `y(${i}, ${j}) = ` + (terms.length <= 9 ? terms.join(" + ") + " = " : "") + show(m.y[i][j]);
      out.push(st);
    }
    return out;
  }

  function drawMatrix(m) {
    if (!m.matrix) return;
    const K = m.matrix.rows, T = m.matrix.transposed;
    const nr = T ? K[0].length : K.length, nc = T ? K.length : K[0].length;
    const table = $("conv-matrix");
    $("matrix-title").textContent = T ? "Transposed convolution as K^T" : "Convolution as matrix multiplication";
    const what = T ? `K^T: ${nr} output pixels (rows) x ${nc} input pixels (columns); K is the ` +
      `convolution of the ${m.outH} x ${m.outW} output back to the ${m.H} x ${m.W} input`
      : `K: ${nr} output pixels (rows) x ${nc} input pixels (columns), both row-major; ` +
      "padded positions are zeros and drop out";
    $("matrix-caption").textContent = `${what}. Entry k_i is kernel weight i (row-major), blank is 0; y = ${T ? "K^T" : "K"} x.`;
    S.rows = [];
    if (nr * nc > MATRIX_CELLS) {
      $("matrix-caption").textContent += ` Too large to draw here (${nr} x ${nc}); try a smaller input.`;
      return;
    }
    const frag = document.createDocumentFragment();
    for (let r = 0; r < nr; r++) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = `y${r + 1}`;
      tr.append(th);
      for (let c = 0; c < nc; c++) {
        const e = T ? K[c][r] : K[r][c], td = document.createElement("td");
        td.textContent = e ? `k${e}` : "";
        if (e) td.className = "nz";
        tr.append(td);
      }
      frag.append(tr);
      S.rows.push(tr);
    }
    table.append(frag);
  }

  // ------------------------------------------------------------------ animation
  function mark(cells, cls) { for (const c of cells) { if (c) { c.classList.add(cls); S.marked.push([c, cls]); } } }
  function apply(t) {
    const m = S.m;
    for (const [c, cls] of S.marked) c.classList.remove(cls);
    S.marked = [];
    S.t = t;
    const n = S.steps.length;
    $("step-label").textContent = n ? `step ${t} of ${n}` : "";
    if (!n) return;
    const cell = (gr, [r, c]) => gr.cells[r] && gr.cells[r][c];
    if (OP === "transposed") {
      const part = zeros(m.outH, m.outW);
      for (let s = 0; s < t; s++) {
        const [i, j] = S.steps[s].src[0];
        for (const [r, c] of S.steps[s].dst) {
          const u = (r + m.g.pads[0][0] - i * m.g.sh) / m.g.dh, v = (c + m.g.pads[1][0] - j * m.g.sw) / m.g.dw;
          part[r][c] += m.x[i][j] * m.w[u][v];
        }
      }
      const touched = new Set();
      for (let s = 0; s < t; s++) for (const [r, c] of S.steps[s].dst) touched.add(r * m.outW + c);
      S.out.cells.forEach((row, r) => row.forEach((td, c) => {
        td.textContent = t === n || touched.has(r * m.outW + c) ? show(part[r][c]) : "";
      }));
    } else {
      const done = (gr, vals) => gr.cells.forEach((row, r) => row.forEach((td, c) => {
        td.textContent = r * row.length + c < t ? show(vals[r][c]) : "";
      }));
      done(S.out, m.y);
      if (S.idx) S.idx.cells.forEach((row, r) => row.forEach((td, c) => { td.textContent = r * row.length + c < t ? m.idx[r][c] : ""; }));
      if (S.un) {
        const placed = new Set();
        for (let s = 0; s < t; s++) placed.add(S.steps[s].at ? S.steps[s].at.join(",") : "");
        S.un.cells.forEach((row, r) => row.forEach((td, c) => {
          td.textContent = t === n || placed.has(`${r},${c}`) ? show(m.out[r][c]) : "";
        }));
      }
    }
    if (t === 0) { $("step-detail").textContent = "Press play or step."; return; }
    const st = S.steps[t - 1];
    mark(st.src.map((p) => cell(S.inp, p)), "win");
    mark(st.dst.map((p) => cell(S.out, p)), "cur");
    if (st.best) mark([cell(S.inp, st.best)], "best");
    if (st.at && S.un) mark([cell(S.un, st.at)], "cur");
    if (S.idx) mark(st.dst.map((p) => cell(S.idx, p)), "cur");
    if (st.row !== undefined && S.rows && S.rows[st.row]) mark([S.rows[st.row]], "cur");
    if (st.col !== undefined && S.rows) mark(S.rows.map((tr) => tr.cells[st.col + 1]), "cur");
    $("step-detail").textContent = st.text;
  }
  function stop() { if (S.timer) { clearInterval(S.timer); S.timer = null; $("play").textContent = "play"; } }
  $("play").addEventListener("click", () => {
    if (S.timer) { stop(); return; }
    if (S.t >= S.steps.length) apply(0);
    $("play").textContent = "pause";
    S.timer = setInterval(() => { if (S.t >= S.steps.length) stop(); else apply(S.t + 1); }, 450);
  });
  $("step").addEventListener("click", () => { stop(); apply(S.t >= S.steps.length ? 0 : S.t + 1); });
  $("reset").addEventListener("click", () => { stop(); apply(0); });

  function update() { stop(); render(build()); }
  for (const k of KEYS) {
    $(k).addEventListener("input", () => {
      readControls();
      if (k === "input") { CFG.preset = "generated"; $("preset").value = "generated"; }
      update();
    });
  }
  for (const id of ["dims", "mode"]) if ($(id)) $(id).addEventListener("change", () => { readControls(); update(); });
  $("preset").addEventListener("change", () => {
    CFG.preset = $("preset").value;
    const p = PRESETS[CFG.preset];
    if (p) {
      Object.assign(CFG, p.params, { input: p.grid.length, dims: 2 });
      if (OP === "upsample") CFG.stride = 2;
      writeControls();
    }
    update();
  });
  window.cnnkitExplain.state = S;
  readQuery();
  writeControls();
  update();
})();
