"""Explain pages of a whole network: any registered model, or a trained run.

:func:`write_model_page` writes one self-contained HTML file: a table with id ``layers``
(type, output shape, parameters, MACs and receptive field of every layer: the numbers
of :func:`cnnkit.layers.summary.summary`, i.e. ``cnnkit summary``), a drawing of the
network as stacked feature-map blocks (spatial sizes to scale), and the receptive field
of a chosen output unit drawn on the input. Given :class:`RunExamples` it adds, for a
few test inputs, their feature maps layer by layer (click a layer), the CAM (or
Grad-CAM) of the predicted class (:mod:`cnnkit.interpret`), the confusion matrix and
misclassified examples. Images are embedded as PNG data URIs, downsampled.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.layers.summary import summary
from cnnkit.report._images import (
    array_to_data_uri,
    colormap,
    downsample,
    plane,
    tile,
    to_display,
)
from cnnkit.report.explain_ops import _json_script, asset

__all__ = ["RunExamples", "layer_geometry", "write_model_page"]

#: the longest side of an embedded feature map, input or CAM (pixels)
MAP_SIDE = 48
IMAGE_SIDE = 128
MAX_CHANNELS = 16
MAX_MAP_LAYERS = 24
BATCH = 32  # test inputs per forward pass when searching for misclassified ones


@dataclass
class RunExamples:
    """What a run page shows besides the architecture.

    Attributes:
        x: test inputs ``[N, C, *spatial]`` (the first few are shown with their maps; all
            are searched for misclassified examples, so keep N to a few hundred).
        y: their integer labels (or ``None``).
        classes: class names (or ``None``: indices are shown).
        confusion: the test confusion matrix (rows true, columns predicted), e.g. from
            the run's ``metrics.json``.
        report: a link to the run's ``report.html`` (relative to the page).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    classes: list[str] | None = None
    confusion: list[list[int]] | None = None
    report: str | None = None
    examples: int = 4


def _module(model: Any) -> nn.Module:
    net = getattr(model, "module", model)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"expected a torch.nn.Module or cnnkit.Model; received {type(model)}.")
    return net


def _spatial(shape: Any, nd: int) -> tuple[int, ...] | None:
    if (
        isinstance(shape, tuple)
        and len(shape) == nd + 2
        and all(isinstance(s, int) for s in shape[1:])
    ):
        return tuple(shape[2:])
    return None


def _per_dim(value: Any, nd: int) -> list[int] | None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, int):
        return [value] * nd
    if isinstance(value, tuple) and len(value) == nd and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def _explicit_padding(module: nn.Module | None, nd: int) -> list[int] | None:
    """The padding before each dim when the module states it as ints, else ``None``."""
    pad = getattr(module, "padding", None)
    if isinstance(pad, bool) or pad is None or isinstance(pad, str):
        return None
    if isinstance(pad, int):
        return [pad] * nd
    if isinstance(pad, (tuple, list)) and len(pad) == nd:
        if all(isinstance(p, int) for p in pad):
            return list(pad)
        if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pad):
            return [int(p[0]) for p in pad]
    return None


def layer_geometry(model: Any, rows: list[Any], input_shape: tuple[int, ...]) -> list[Any]:
    """Per summary row: ``{'r', 'j', 'o'}`` lists per spatial dim (receptive field, jump,
    input coordinate where the first output's field starts), ``'global'`` or ``None``.

    ``r`` and ``j`` are the summary's; ``o`` follows ``o_l = o_{l-1} - p_l j_{l-1}`` with
    each layer's kernel and stride recovered from consecutive ``r`` and ``j`` and its
    padding ``p_l`` read from the module when stated as ints, else from the shapes
    (Keras 'same'/'valid'). ``o`` is ``None`` where the chain breaks (a branch).
    """
    net = _module(model)
    modules = dict(net.named_modules())
    nd = len(input_shape) - 1
    prev: dict[str, Any] | None = {"r": [1] * nd, "j": [1] * nd, "o": [0] * nd,
                                   "n": list(input_shape[1:])}  # fmt: skip
    out: list[Any] = []
    for row in rows:
        if row.receptive_field == "global":
            out.append("global")
            continue
        r, j = _per_dim(row.receptive_field, nd), _per_dim(row.jump, nd)
        spatial = _spatial(row.output_shape, nd)
        if r is None or j is None or spatial is None:
            out.append(None)
            continue
        o = None
        if prev is not None and prev["o"] is not None:
            o = []
            for i in range(nd):
                pr, pj = prev["r"][i], prev["j"][i]
                if r[i] < pr or (r[i] - pr) % pj or j[i] % pj:
                    o = None
                    break
                f_eff, s = (r[i] - pr) // pj + 1, j[i] // pj
                if f_eff == 1 and s == 1:
                    o.append(prev["o"][i])
                    continue
                pads = _explicit_padding(modules.get(row.path), nd)
                if pads is None:
                    total = (spatial[i] - 1) * s + f_eff - prev["n"][i]
                    pad = max(total, 0) // 2
                else:
                    pad = pads[i]
                o.append(prev["o"][i] - pad * pj)
        geom = {"r": r, "j": j, "o": o}
        out.append(geom)
        prev = {**geom, "n": list(spatial)}
    return out


# ------------------------------------------------------------------ page parts


def _shape_text(shape: Any) -> str:
    if isinstance(shape, list):
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    return "?" if shape is None else str(tuple(shape))


def _maps_text(shape: Any, nd: int) -> str:
    sp = _spatial(shape, nd)
    if sp is None:
        if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[1], int):
            return f"{shape[1]:,} features"
        return ""
    return f"{shape[1]:,} maps of {'x'.join(map(str, sp))}"


def _rf_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value)


def _layers_table(rows: list[Any], nd: int) -> str:
    head = ("#", "layer", "type", "output shape", "feature maps", "params", "MACs",
            "receptive field")  # fmt: skip
    out = ['<table id="layers" class="layers"><thead><tr>']
    out += [f"<th>{h}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(rows):
        cells = [
            f'<td class="num">{i}</td>',
            f"<td>{html.escape(r.name)}</td>",
            f"<td>{html.escape(r.layer_type)}</td>",
            f"<td>{html.escape(_shape_text(r.output_shape))}</td>",
            f"<td>{html.escape(_maps_text(r.output_shape, nd))}</td>",
            f'<td class="num">{r.params:,}</td>',
            f'<td class="num">{r.macs:,}</td>',
            f'<td class="num">{html.escape(_rf_text(r.receptive_field))}</td>',
        ]
        out.append(f'<tr data-row="{i}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _blocks_svg(rows: list[Any], input_shape: tuple[int, ...]) -> str:
    """The network as stacked blocks: height and depth to scale with the spatial size,
    thickness growing with log2 of the channels; dense layers as thin bars."""
    nd = len(input_shape) - 1
    items: list[tuple[int, tuple[int, ...], int | None]] = [(-1, tuple(input_shape), None)]
    for i, r in enumerate(rows):
        shape = r.output_shape
        if not isinstance(shape, tuple) or not all(isinstance(s, int) for s in shape[1:]):
            continue
        key = tuple(shape[1:])
        if key != items[-1][1]:
            items.append((i, key, i))
    big = max(input_shape[1:]) if nd else 1
    scale = 150.0 / big
    max_c = max((s[0] for _, s, _ in items if len(s) >= 2), default=1)
    max_f = max((s[0] for _, s, _ in items if len(s) == 1), default=1)
    parts, x = [], 10.0
    height = 260
    base = 200
    for idx, shape, row in items:
        if len(shape) >= 2:
            h_sp = shape[1]
            w_sp = shape[2] if len(shape) > 2 else 1
            h = max(3.0, h_sp * scale)
            dep = max(2.0, w_sp * scale * 0.45)
            t = 4 + 28 * math.log2(max(shape[0], 1)) / max(math.log2(max(max_c, 2)), 1)
            label = f"{shape[0]}@{'x'.join(map(str, shape[1:]))}"
        else:
            h = 20 + 120 * math.log10(max(shape[0], 1)) / max(math.log10(max(max_f, 10)), 1)
            dep, t = 0.0, 6.0
            label = f"{shape[0]:,}"
        y = base - h
        fill = "#cfe3ff" if idx >= 0 else "#e9ecf2"
        poly = (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{t:.1f}" height="{h:.1f}" fill="{fill}" '
            f'stroke="#456"/>'
        )
        if dep:
            poly += (
                f'<polygon points="{x:.1f},{y:.1f} {x + dep:.1f},{y - dep:.1f} '
                f'{x + dep + t:.1f},{y - dep:.1f} {x + t:.1f},{y:.1f}" fill="#e4efff" stroke="#456"/>'
                f'<polygon points="{x + t:.1f},{y:.1f} {x + t + dep:.1f},{y - dep:.1f} '
                f'{x + t + dep:.1f},{base - dep:.1f} {x + t:.1f},{base:.1f}" fill="#b3cdf0" '
                f'stroke="#456"/>'
            )
        name = "input" if idx < 0 else rows[idx].name
        attr = f' data-row="{row}"' if row is not None else ""
        parts.append(
            f'<g class="block"{attr}><title>{html.escape(name)}: {html.escape(label)}</title>'
            f"{poly}"
            f'<text x="{x:.1f}" y="{base + 16}" font-size="10" transform="rotate(40 {x:.1f} '
            f'{base + 16})">{html.escape(label)}</text></g>'
        )
        x += t + dep + 14
    width = int(x + 60)
    return (
        f'<svg id="network" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height + 40}" viewBox="0 -40 {width} {height + 40}">' + "".join(parts) + "</svg>"
    )


def _probabilities(out: torch.Tensor) -> torch.Tensor:
    if out.dim() != 2:
        raise ConfigError(
            f"a run page needs class scores [N, K]; the model gave {tuple(out.shape)}."
        )
    s = out.sum(dim=1)
    if out.min() >= 0 and torch.allclose(s, torch.ones_like(s), atol=1e-3):
        return out
    return torch.softmax(out.float(), dim=1)


def _class_maps(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    from cnnkit.interpret import cam, grad_cam

    try:
        return cam(net, x), "CAM"
    except CnnkitError:
        return grad_cam(net, x), "Grad-CAM"


def _overlay(img: np.ndarray, heat: np.ndarray) -> np.ndarray:
    rgb = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
    jet = colormap(heat, "jet", normalize=False).astype(np.float64)
    return (0.5 * rgb + 0.5 * jet).round().astype(np.uint8)


def _run_data(net: nn.Module, run: RunExamples, rows: list[Any], nd: int) -> dict[str, Any]:
    from cnnkit.interpret import feature_maps

    ref = next(net.parameters(), None)
    x = run.x.float().to(ref.device if ref is not None else "cpu")
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = torch.cat([net(x[i : i + BATCH]).float() for i in range(0, len(x), BATCH)])
    finally:
        net.train(was)
    probs = _probabilities(out).cpu()
    pred = probs.argmax(dim=1)
    names = run.classes or [str(i) for i in range(probs.shape[1])]
    shown = x[: run.examples]
    heat, kind = _class_maps(net, shown)
    paths, map_rows = [], []
    for i, r in enumerate(rows):
        if r.path and _spatial(r.output_shape, nd) and r.path not in paths:
            paths.append(r.path)
            map_rows.append(i)
        if len(paths) >= MAX_MAP_LAYERS:
            break
    maps = feature_maps(net, shown, paths) if paths else {}
    examples = []
    for k in range(shown.shape[0]):
        img = to_display(shown[k])
        h = plane(heat[k])
        entry = {
            "img": array_to_data_uri(downsample(img, IMAGE_SIDE).round().astype(np.uint8)),
            "pred": int(pred[k]),
            "pred_name": names[int(pred[k])],
            "prob": round(float(probs[k, pred[k]]), 4),
            "label": None if run.y is None else int(run.y[k]),
            "cam": array_to_data_uri((np.clip(h, 0, 1) * 255).round().astype(np.uint8)),
            "overlay": array_to_data_uri(_overlay(img, h)) if img.shape[:2] == h.shape else None,
            "maps": {},
        }
        for row_idx, path in zip(map_rows, paths):
            m = maps[path][k][:MAX_CHANNELS]
            grid = tile([colormap(downsample(plane(c), MAP_SIDE)) for c in m])
            entry["maps"][str(row_idx)] = array_to_data_uri(grid)
        examples.append(entry)
    wrong = []
    if run.y is not None:
        y = run.y.reshape(-1).long()
        for k in torch.nonzero(pred != y).flatten().tolist()[:8]:
            img = downsample(to_display(x[k]), IMAGE_SIDE).round().astype(np.uint8)
            wrong.append({"img": array_to_data_uri(img), "label": names[int(y[k])],
                          "pred": names[int(pred[k])], "index": k})  # fmt: skip
    return {"examples": examples, "cam_kind": kind, "classes": names, "wrong": wrong,
            "searched": int(x.shape[0])}  # fmt: skip


def _confusion_table(cm: list[list[int]], names: list[str]) -> str:
    peak = max((max(r) for r in cm if r), default=1) or 1
    out = ['<table id="confusion" class="layers"><tr><th>true \\ predicted</th>']
    out += [f"<th>{html.escape(n)}</th>" for n in names[: len(cm)]]
    out.append("</tr>")
    for i, row in enumerate(cm):
        out.append(f"<tr><th>{html.escape(names[i] if i < len(names) else str(i))}</th>")
        for j, v in enumerate(row):
            a = 0.08 + 0.8 * v / peak if v else 0
            colour = "46,158,85" if i == j else "214,69,65"
            out.append(f'<td class="num" style="background:rgba({colour},{a:.2f})">{v}</td>')
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _run_sections(data: dict[str, Any], run: RunExamples) -> str:
    n = len(data["examples"])
    parts = [
        '<section id="run"><h2>Test inputs, feature maps and the '
        f"{html.escape(data['cam_kind'])} of the predicted class</h2>"
        f'<p class="meta">{n} test inputs; click one, then click a layer (table or drawing) to '
        f"see its feature maps (the first {MAX_CHANNELS} channels, each downsampled to at most "
        f"{MAP_SIDE} px, colour = that map's own min..max). Inputs are downsampled to at most "
        f"{IMAGE_SIDE} px.</p>",
        '<div id="examples" class="thumbs"></div>',
        '<div class="row"><figure><img id="cam" alt="class map"><figcaption id="cam-caption">'
        '</figcaption></figure><figure><img id="cam-overlay" alt="overlay"><figcaption>'
        "on the input (red = high)</figcaption></figure>"
        '<figure class="maps"><img id="maps" alt="feature maps"><figcaption id="maps-caption">'
        "</figcaption></figure></div></section>",
    ]
    if run.confusion:
        parts.append(
            "<section><h2>Confusion matrix (test set)</h2>"
            + _confusion_table(run.confusion, data["classes"])
            + "</section>"
        )
    wrong = "".join(
        f'<figure><img src="{w["img"]}" alt="example {w["index"]}"><figcaption>true '
        f"{html.escape(w['label'])}, predicted {html.escape(w['pred'])}</figcaption></figure>"
        for w in data["wrong"]
    )
    parts.append(
        f'<section id="misclassified"><h2>Misclassified examples</h2><p class="meta">Among the '
        f"first {data['searched']} test inputs: {len(data['wrong'])} shown.</p>"
        f'<div class="thumbs">{wrong or "<p>none</p>"}</div></section>'
    )
    return "\n".join(parts)


def write_model_page(
    path: str | os.PathLike,
    model: Any,
    input_shape: tuple[int, ...] | None = None,
    *,
    title: str | None = None,
    run: RunExamples | None = None,
) -> Path:
    """Write the explain page of ``model`` (an ``nn.Module`` or ``cnnkit.Model``) to
    ``path`` and return it.

    ``input_shape`` is the per-sample shape (channels first); by default the model's
    own. With ``run`` the page also shows test inputs with their feature maps and class
    maps, the confusion matrix and misclassified examples.
    """
    net = _module(model)
    if input_shape is None:
        input_shape = getattr(net, "default_input_shape", None) or getattr(
            model, "input_shape", None
        )
    if input_shape is None and run is not None:
        input_shape = tuple(run.x.shape[1:])
    if input_shape is None:
        raise ConfigError("write_model_page needs input_shape, e.g. (3, 32, 32).")
    input_shape = tuple(int(v) for v in input_shape)
    rows = summary(net, input_shape=input_shape, print_fn=lambda line: None)
    nd = len(input_shape) - 1
    geometry = layer_geometry(net, rows, input_shape)
    title = title or f"cnnkit explain: {type(net).__name__}"
    data: dict[str, Any] = {
        "input_shape": list(input_shape),
        "rows": [
            {
                "name": r.name,
                "type": r.layer_type,
                "spatial": _spatial(r.output_shape, nd),
                "rf": geometry[i],
            }  # fmt: skip
            for i, r in enumerate(rows)
        ],
    }
    run_html = ""
    if run is not None:
        data.update(_run_data(net, run, rows, nd))
        run_html = _run_sections(data, run)
    link = ""
    if run is not None and run.report:
        link = f' &middot; <a href="{html.escape(run.report)}">run report</a>'
    totals = (
        f"input {' x '.join(map(str, input_shape))} &middot; {len(rows)} layers &middot; "
        f"{rows.total_params:,} parameters &middot; {rows.total_macs:,} MACs per sample{link}"
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{asset("explain.css")}</style></head>
<body><main>
<h1>{html.escape(title)}</h1><p class="meta">{totals}</p>
<section><h2>The network</h2><p class="meta">Each block is a layer's output: height and depth
to scale with its spatial size, thickness growing with the log of its channels; dense layers
are thin bars. Click a block or a table row to choose a layer.</p>
<div class="scroll">{_blocks_svg(rows, input_shape)}</div></section>
<section id="rf-section"><h2>Receptive field</h2>
<p>layer <select id="rf-layer"></select> unit row <input id="rf-i" type="number" min="0" value="0">
column <input id="rf-j" type="number" min="0" value="0"></p>
<div class="row"><canvas id="rf-canvas" width="240" height="240"></canvas>
<p id="rf-text"></p></div></section>
{run_html}
<section><h2>Layers</h2><p class="meta">The numbers of <code>cnnkit summary</code>: output
shape with the batch dimension None, parameters, multiply-accumulates per sample, and the
receptive field (input elements one output sees).</p>{_layers_table(rows, nd)}</section>
</main>
{_json_script("cnnkit-model", data)}
<script>{asset("explain_model.js")}</script>
</body></html>
"""
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out
