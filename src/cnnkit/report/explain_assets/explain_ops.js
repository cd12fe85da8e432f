"use strict";
// cnnkit explain pages: the arithmetic of cnnkit.ops.arithmetic and the reference
// operations of cnnkit.ops.reference, mirrored in JavaScript (tests compare them with
// Python in Chromium), plus the controls, the animation and the conv matrix.
(function () {
  // ------------------------------------------------------------- arithmetic
  class ShapeErr extends Error {}

  function fixed2(x) { // Python's f"{x:.2f}": round half to even on the binary value
    const a = Math.abs(x);
    let s;
    const e = a * 8;
    if (Number.isInteger(e) && e % 2 === 1) {  // a = j/8, j odd: an exact tie at 3 decimals
      let n = Math.floor(a * 100);
      if (n % 2 === 1) n += 1;
      s = Math.floor(n / 100) + "." + String(n % 100).padStart(2, "0");
    } else {
      s = a.toFixed(2);
    }
    return (x < 0 ? "-" : "") + s;
  }
  const fmt = (x) => (x === Math.trunc(x) ? String(x) : fixed2(x));
  const mod = (a, b) => ((a % b) + b) % b;
  const effK = (k, d) => d * (k - 1) + 1;

  function parsePadding(text) {
    text = String(text).trim().toLowerCase();
    if (text === "valid" || text === "same" || text === "full") return text;
    if (/^\d+\s*,\s*\d+$/.test(text)) return text.split(",").map((t) => parseInt(t, 10));
    if (/^\d+$/.test(text)) return parseInt(text, 10);
    throw new ShapeErr(`padding ${JSON.stringify(text)} is not a padding; expected an int, ` +
      "'before,after' (e.g. 1,2), valid, same or full.");
  }
  function samePadding(n, k, s, d) {
    const f = effK(k, d), out = Math.ceil(n / s);
    const total = Math.max((out - 1) * s + f - n, 0);
    return [Math.floor(total / 2), total - Math.floor(total / 2)];
  }
  function resolvePadding(p, n, k, s, d) {
    if (p === "valid") return [0, 0];
    if (p === "same") return samePadding(n, k, s, d);
    if (p === "full") return [effK(k, d) - 1, effK(k, d) - 1];
    if (Array.isArray(p)) return [p[0], p[1]];
    return [p, p];
  }
  function formula(n, f, b, a, s) {
    let inner;
    if (b === 0 && a === 0) inner = `${n} - ${f} + 0`;
    else if (b === a) inner = `${n} - ${f} + 2*${b}`;
    else inner = `${n} - ${f} + ${b} + ${a}`;
    return `(${inner})/${s} + 1 = ${fmt((n - f + b + a) / s + 1)}`;
  }
  function suggestion(n, f, b, a, s) {
    const num = n - f + b + a, extra = mod(-num, s), total = b + a + extra;
    const fits = Math.floor((num + extra) / s) + 1;
    const half = Math.floor(total / 2);
    const pad = total % 2 === 0 ? `padding=${half}` : `padding=(${half}, ${total - half})`;
    const drop = mod(num, s), floored = Math.floor(num / s) + 1;
    const strides = [];
    for (let x = 1; x <= num && strides.length < 6; x++) if (num % x === 0) strides.push(x);
    const st = strides.length > 1 ? strides.slice(0, -1).join(", ") + " or " : "";
    return `Use ${pad} (output ${fits}), padding='same' (output ceil(${n}/${s}) = ` +
      `${Math.ceil(n / s)}), a stride of ${st}${strides[strides.length - 1]}, an input of ` +
      `${n - drop} or ${n + extra}, or floor=True for the floored size ${floored} that ` +
      `PyTorch and Keras compute (the last ${drop} input element(s) are then never covered).`;
  }
  function outputSize(n, k, s, p, d, floor, what) {  // arithmetic._one_output_size
    const f = effK(k, d);
    if (p === "same") return Math.ceil(n / s);
    const [b, a] = resolvePadding(p, n, k, s, d), num = n - f + b + a;
    const dil = d > 1 ? ` (dilated: F_eff = ${d}*(${k} - 1) + 1 = ${f})` : "";
    if (num < 0) {
      throw new ShapeErr(`The ${what} of size ${f}${dil} is larger than the padded input ` +
        `${n} + ${b + a} = ${n + b + a}: output size ${formula(n, f, b, a, s)} is below 1. ` +
        `Use a larger input, a smaller ${what}, or padding='same'.`);
    }
    if (num % s && !floor) {
      throw new ShapeErr(`Output size is not an integer: (N - F + 2P)/S + 1 = ` +
        `${formula(n, f, b, a, s)}${dil}. A stride of ${s} does not fit an input of ${n}. ` +
        suggestion(n, f, b, a, s));
    }
    return Math.floor(num / s) + 1;
  }
  function poolOutputSize(n, k, s, p, floor) {
    if (p === "full") throw new ShapeErr("padding='full' is not defined for pooling; use 'valid', 'same' or an int.");
    if (typeof p === "number" && p > Math.floor(k / 2)) {
      throw new ShapeErr(`pooling padding ${p} is more than half the pool window ${k}; a ` +
        `window could then cover only padding. Use padding <= ${Math.floor(k / 2)}.`);
    }
    return outputSize(n, k, s, p, 1, floor, "pool window");
  }
  function intPadding(op, p) {
    if (typeof p === "number") return p;
    throw new ShapeErr(`${op} takes an integer padding >= 0; received ${JSON.stringify(p)} ` +
      "(use 0, 1, 2, ...; valid/same/full and pairs are for conv and dilated).");
  }
  function explainConv(n, k, s, p, d) {  // arithmetic.explain_conv_output_size
    const f = effK(k, d), [b, a] = resolvePadding(p, n, k, s, d);
    const lines = [`N = ${n}, F = ${k}, S = ${s}, P = (${b}, ${a}), d = ${d}`];
    if (d > 1) lines.push(`F_eff = d(F - 1) + 1 = ${d}*(${k} - 1) + 1 = ${f}`);
    lines.push("(N - F + 2P)/S + 1 = " + formula(n, f, b, a, s));
    try { lines.push(`output size ${outputSize(n, k, s, [b, a], d, false, "kernel")}`); }
    catch (e) { if (!(e instanceof ShapeErr)) throw e; lines.push(e.message); }
    return lines;
  }
  function poolLines(n, k, s, pad) {
    const p = intPadding("pooling", pad);
    const lines = [`N = ${n}, F = ${k}, S = ${s}, P = (${p}, ${p})`,
      "(N - F + 2P)/S + 1 = " + formula(n, k, p, p, s)];
    try { const out = poolOutputSize(n, k, s, p, false); lines.push(`output size ${out}`); return [lines, out]; }
    catch (e) { if (!(e instanceof ShapeErr)) throw e; lines.push(e.message); return [lines, null]; }
  }
  function transposedSize(n, k, s, p, d) { return (n - 1) * s - 2 * p + effK(k, d); }
  // operation_text of cnnkit.report.explain_ops
  function opText(op, n, k, s, pad, d) {
    if (op === "conv" || op === "dilated") return explainConv(n, k, s, pad, d).join("\n");
    if (op === "pool" || op === "unpool") {
      const [lines, out] = poolLines(n, k, s, pad);
      if (op === "unpool" && out !== null) {
        lines.push(`unpooling: ${out} -> ${n} per dimension, each value back where its ` +
          "maximum was, zeros elsewhere");
      }
      return lines.join("\n");
    }
    if (op === "transposed") {
      const p = intPadding("transposed", pad), f = effK(k, d);
      const lines = [`N = ${n}, F = ${k}, S = ${s}, P = (${p}, ${p}), d = ${d}`];
      if (d > 1) lines.push(`F_eff = d(F - 1) + 1 = ${d}*(${k} - 1) + 1 = ${f}`);
      const out = transposedSize(n, k, s, p, d);
      lines.push(`(N - 1)*S - 2P + F_eff = (${n} - 1)*${s} - ${2 * p} + ${f} = ${out}`);
      if (out < 1) {
        lines.push(`Transposed convolution output size is ${out} ((${n} - 1)*${s} - ${2 * p} + ` +
          `${f} + 0 = ${out}); it must be positive. Reduce the padding or use a larger input.`);
      } else {
        lines.push(`output size ${out}`);
        lines.push(`y = K^T x, K the convolution of a ${out}-element input with the same ` +
          `kernel, stride and padding (${out} -> ${n} per dimension)`);
      }
      return lines.join("\n");
    }
    return `N = ${n}, factor = ${s}\noutput size N*factor = ${n}*${s} = ${n * s}`;
  }
  // {value: shown size, used: the size the grids use (floored), exact: whole?}
  function opSize(op, n, k, s, pad, d) {
    try {
      if (op === "conv" || op === "dilated") {
        const [b, a] = resolvePadding(pad, n, k, s, d), f = effK(k, d);
        const used = outputSize(n, k, s, [b, a], d, true, "kernel");
        return { value: fmt((n - f + b + a) / s + 1), used, exact: (n - f + b + a) % s === 0 };
      }
      if (op === "pool" || op === "unpool") {
        const p = intPadding("pooling", pad), used = poolOutputSize(n, k, s, p, true);
        const exact = (n - k + 2 * p) % s === 0, value = fmt((n - k + 2 * p) / s + 1);
        return op === "pool" ? { value, used, exact } : { value: exact ? String(n) : value, used, exact, pooled: used };
      }
      if (op === "transposed") {
        const out = transposedSize(n, k, s, intPadding("transposed", pad), d);
        return out < 1 ? null : { value: String(out), used: out, exact: true };
      }
      return { value: String(n * s), used: n * s, exact: true };
    } catch (e) { if (e instanceof ShapeErr) return null; throw e; }
  }

  // ------------------------------------------------- reference operations (2D; 1D: H = 1)
  // g: {kh, kw, sh, sw, dh, dw, pads: [[top, bottom], [left, right]]}
  function outShape(H, W, g) {
    const fh = effK(g.kh, g.dh), fw = effK(g.kw, g.dw);
    return [Math.floor((H + g.pads[0][0] + g.pads[0][1] - fh) / g.sh) + 1,
      Math.floor((W + g.pads[1][0] + g.pads[1][1] - fw) / g.sw) + 1];
  }
  // entries (1-based kernel index) of the conv matrix: rows outputs, columns inputs
  function convMatrix(H, W, g) {
    const [mh, mw] = outShape(H, W, g), rows = [];
    for (let i = 0; i < mh; i++) for (let j = 0; j < mw; j++) {
      const row = new Array(H * W).fill(0);
      for (let u = 0; u < g.kh; u++) for (let v = 0; v < g.kw; v++) {
        const r = i * g.sh - g.pads[0][0] + u * g.dh, c = j * g.sw - g.pads[1][0] + v * g.dw;
        if (r >= 0 && r < H && c >= 0 && c < W) row[r * W + c] = u * g.kw + v + 1;
      }
      rows.push(row);
    }
    return rows;
  }
  function conv2d(x, w, g) {  // reference.conv_nd, one channel
    const H = x.length, W = x[0].length, [mh, mw] = outShape(H, W, g), y = [];
    for (let i = 0; i < mh; i++) {
      const row = [];
      for (let j = 0; j < mw; j++) {
        let acc = 0;
        for (let u = 0; u < g.kh; u++) for (let v = 0; v < g.kw; v++) {
          const r = i * g.sh - g.pads[0][0] + u * g.dh, c = j * g.sw - g.pads[1][0] + v * g.dw;
          if (r >= 0 && r < H && c >= 0 && c < W) acc += x[r][c] * w[u][v];
        }
        row.push(acc);
      }
      y.push(row);
    }
    return y;
  }
  // reference.pool_nd / max_pool_with_indices: padded positions are ignored
  function pool2d(x, g, mode) {
    const H = x.length, W = x[0].length, [mh, mw] = outShape(H, W, g), y = [], idx = [];
    for (let i = 0; i < mh; i++) {
      const yr = [], ir = [];
      for (let j = 0; j < mw; j++) {
        let best = null, at = -1, sum = 0, count = 0;
        for (let u = 0; u < g.kh; u++) for (let v = 0; v < g.kw; v++) {
          const r = i * g.sh - g.pads[0][0] + u, c = j * g.sw - g.pads[1][0] + v;
          if (r < 0 || r >= H || c < 0 || c >= W) continue;
          const val = x[r][c];
          sum += val; count += 1;
          if (best === null || (mode === "min" ? val < best : val > best)) { best = val; at = r * W + c; }
        }
        yr.push(mode === "average" ? sum / count : best);
        ir.push(at);
      }
      y.push(yr); idx.push(ir);
    }
    return { y, idx };
  }
  function unpool2d(v, idx, H, W) {  // reference.max_unpool_nd
    const out = Array.from({ length: H }, () => new Array(W).fill(0));
    for (let i = 0; i < v.length; i++) for (let j = 0; j < v[0].length; j++) {
      const at = idx[i][j];
      out[Math.floor(at / W)][at % W] = v[i][j];
    }
    return out;
  }
  function transposed2d(x, w, g, outH, outW) {  // y = K^T x (reference.conv_transpose_nd)
    const y = Array.from({ length: outH }, () => new Array(outW).fill(0));
    for (let i = 0; i < x.length; i++) for (let j = 0; j < x[0].length; j++) {
      for (let u = 0; u < g.kh; u++) for (let v = 0; v < g.kw; v++) {
        const r = i * g.sh - g.pads[0][0] + u * g.dh, c = j * g.sw - g.pads[1][0] + v * g.dw;
        if (r >= 0 && r < outH && c >= 0 && c < outW) y[r][c] += x[i][j] * w[u][v];
      }
    }
    return y;
  }
  function linearAxis(n, s) {  // reference.upsample_linear along one axis
    const out = [];
    for (let i = 0; i < n * s; i++) {
      const src = Math.max((i + 0.5) / s - 0.5, 0), i0 = Math.floor(src);
      out.push([i0, Math.min(i0 + 1, n - 1), src - i0]);
    }
    return out;
  }
  function upsample2d(x, sh, sw, mode) {
    const H = x.length, W = x[0].length;
    if (mode === "bilinear") {
      const ah = linearAxis(H, sh), aw = linearAxis(W, sw);
      const t = ah.map(([a, b, l]) => x[a].map((_, c) => (1 - l) * x[a][c] + l * x[b][c]));
      return t.map((row) => aw.map(([a, b, l]) => (1 - l) * row[a] + l * row[b]));
    }
    const y = [];
    for (let i = 0; i < H * sh; i++) {
      const row = [];
      for (let j = 0; j < W * sw; j++) {
        const src = x[Math.floor(i / sh)][Math.floor(j / sw)];
        row.push(mode === "nearest" ? src : (i % sh === 0 && j % sw === 0 ? src : 0));
      }
      y.push(row);
    }
    return y;
  }

  window.cnnkitExplain = {
    fmt, parsePadding, resolvePadding, outputSize, poolOutputSize, opText, opSize,
    convMatrix, conv2d, pool2d, unpool2d, transposed2d, upsample2d, ShapeErr,
  };
})();
