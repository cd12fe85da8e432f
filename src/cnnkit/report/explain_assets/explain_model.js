"use strict";
// cnnkit model explain page: choose a layer (table row or block), see the receptive field
// of one of its output units on the input, and, for a run, its feature maps and the class map.
(function () {
  const $ = (id) => document.getElementById(id);
  const D = JSON.parse($("cnnkit-model").textContent);
  const S = { row: null, ex: 0, img: null };
  const shape = D.input_shape, nd = shape.length - 1;
  const H = nd >= 2 ? shape[shape.length - 2] : 1, W = shape[shape.length - 1];

  // the input rows/columns [start, end) one output unit sees (clipped to the input)
  function rfBox(rowIndex, i, j) {
    const g = D.rows[rowIndex].rf;
    if (!g || g === "global") return null;
    const units = nd >= 2 ? [i, j] : [j];
    const size = nd >= 2 ? [H, W] : [W];
    const off = g.r.length - units.length;  // a volume: its last two dims
    return units.map((u, e) => {
      const d = e + off, span = g.r[d];
      const start = g.o ? g.o[d] + u * g.j[d]
        : Math.round((u + 0.5) * g.j[d] - span / 2);  // branch: centred on the unit
      return [Math.max(start, 0), Math.min(start + span, size[e]), start, start + span];
    });
  }
  window.cnnkitModel = { rfBox, data: D, state: S };

  const sel = $("rf-layer");
  D.rows.forEach((r, k) => {
    if (!r.spatial && r.rf !== "global") return;
    const o = document.createElement("option");
    o.value = String(k);
    o.textContent = `${k}: ${r.name} (${r.type})`;
    sel.append(o);
  });

  function drawRF() {
    const c = $("rf-canvas"), ctx = c.getContext("2d");
    const k = S.row === null ? null : S.row;
    const scale = Math.min(c.width / W, c.height / H);
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.fillStyle = "#eef0f4";
    ctx.fillRect(0, 0, W * scale, H * scale);
    if (S.img && S.img.complete) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(S.img, 0, 0, W * scale, H * scale);
    }
    if (k === null || !D.rows[k]) { $("rf-text").textContent = "Choose a layer."; return; }
    const r = D.rows[k];
    if (r.rf === "global") {
      ctx.fillStyle = "rgba(214,69,65,0.35)";
      ctx.fillRect(0, 0, W * scale, H * scale);
      $("rf-text").textContent = `${r.name}: every output sees the whole input (global).`;
      return;
    }
    const sp = r.spatial || [1, 1];
    const mi = nd >= 2 ? sp[sp.length - 2] : 1, mj = sp[sp.length - 1];
    $("rf-i").max = mi - 1; $("rf-j").max = mj - 1;
    const i = Math.min(Math.max(parseInt($("rf-i").value, 10) || 0, 0), mi - 1);
    const j = Math.min(Math.max(parseInt($("rf-j").value, 10) || 0, 0), mj - 1);
    const box = rfBox(k, i, j);
    if (!box) { $("rf-text").textContent = `${r.name}: no receptive field (not a spatial map).`; return; }
    const [ry, rx] = nd >= 2 ? box : [[0, 1, 0, 1], box[0]];
    ctx.fillStyle = "rgba(214,69,65,0.35)";
    ctx.strokeStyle = "#c0392b";
    ctx.lineWidth = 2;
    ctx.fillRect(rx[0] * scale, ry[0] * scale, (rx[1] - rx[0]) * scale, (ry[1] - ry[0]) * scale);
    ctx.strokeRect(rx[0] * scale, ry[0] * scale, (rx[1] - rx[0]) * scale, (ry[1] - ry[0]) * scale);
    const g = r.rf;
    const unit = nd >= 2 ? `(${i}, ${j})` : `${j}`;
    const where = nd >= 2 ? `rows ${ry[0]}..${ry[1] - 1}, columns ${rx[0]}..${rx[1] - 1}` : `elements ${rx[0]}..${rx[1] - 1}`;
    const clip = ry[2] < 0 || rx[2] < 0 || ry[3] > H || rx[3] > W ? " (part of it falls on the padding)" : "";
    $("rf-text").textContent = `Unit ${unit} of ${r.name} (a ${sp.join(" x ")} map) sees ` +
      `${g.r.join(" x ")} input elements: ${where}${clip}. Neighbouring units are ` +
      `${g.j.join(" x ")} apart in the input.` + (g.o ? "" : " (Position approximate: the layer is on a branch.)");
  }

  function showMaps() {
    if (!D.examples || !$("maps")) return;
    const ex = D.examples[S.ex];
    const uri = S.row !== null ? ex.maps[String(S.row)] : null;
    $("maps").style.display = uri ? "" : "none";
    if (uri) $("maps").src = uri;
    const r = S.row !== null ? D.rows[S.row] : null;
    $("maps-caption").textContent = uri ? `feature maps of ${r.name} (${r.type}) for input ${S.ex}`
      : r ? `${r.name}: no maps stored for this layer (click a conv, pooling or activation layer)` : "click a layer";
  }
  function showExample(k) {
    if (!D.examples) return;
    S.ex = k;
    const ex = D.examples[k];
    document.querySelectorAll("#examples img").forEach((im, n) => im.classList.toggle("chosen", n === k));
    $("cam").src = ex.cam;
    $("cam").dataset.classIndex = String(ex.pred);
    if (ex.overlay) $("cam-overlay").src = ex.overlay;
    const truth = ex.label === null ? "" : `, true class ${D.classes[ex.label]}`;
    $("cam-caption").textContent = `${D.cam_kind} of the predicted class ${ex.pred_name} ` +
      `(p = ${ex.prob.toFixed(3)})${truth}`;
    S.img = new Image();
    S.img.onload = drawRF;
    S.img.src = ex.img;
    showMaps();
  }
  function choose(k) {
    S.row = k;
    document.querySelectorAll("#layers tr[data-row]").forEach((tr) => tr.classList.toggle("sel", Number(tr.dataset.row) === k));
    document.querySelectorAll("#network g.block").forEach((g) => g.classList.toggle("sel", Number(g.dataset.row) === k));
    if ([...sel.options].some((o) => Number(o.value) === k)) sel.value = String(k);
    drawRF();
    showMaps();
  }
  document.querySelectorAll("#layers tr[data-row]").forEach((tr) => tr.addEventListener("click", () => choose(Number(tr.dataset.row))));
  document.querySelectorAll("#network g.block[data-row]").forEach((g) => g.addEventListener("click", () => choose(Number(g.dataset.row))));
  sel.addEventListener("change", () => choose(Number(sel.value)));
  $("rf-i").addEventListener("input", drawRF);
  $("rf-j").addEventListener("input", drawRF);
  if (D.examples) {
    D.examples.forEach((ex, k) => {
      const im = document.createElement("img");
      im.src = ex.img;
      im.width = 64;
      im.title = `input ${k}: predicted ${ex.pred_name}`;
      im.addEventListener("click", () => showExample(k));
      $("examples").append(im);
    });
    showExample(0);
  }
  // start on the last layer with a spatial map (the deepest field)
  let start = null;
  D.rows.forEach((r, k) => {
    if (r.spatial && r.rf && r.rf !== "global" && r.spatial.reduce((a, b) => a * b, 1) > 1) start = k;
  });
  if (start === null && sel.options.length) start = Number(sel.options[0].value);
  if (start !== null) {
    const r = D.rows[start];
    if (r.spatial) { $("rf-i").value = Math.floor(r.spatial[0] / 2); $("rf-j").value = Math.floor(r.spatial[r.spatial.length - 1] / 2); }
    choose(start);
  }
})();
