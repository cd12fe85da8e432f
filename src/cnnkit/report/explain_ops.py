"""Interactive explain pages for the decks' sliding-window operations.

:func:`write_operation_page` writes one self-contained HTML file (inline CSS and
JavaScript, nothing loaded from elsewhere, works from ``file://``) for a convolution,
pooling, unpooling, transposed convolution, dilated convolution or upsampling. The
page's controls (``<input>`` ids ``input``, ``kernel``, ``stride``, ``padding``,
``dilation``) change the example live and are also read from the URL's query string.
Its JavaScript mirrors :mod:`cnnkit.ops.arithmetic` (the text of
:func:`operation_text`, the same as ``cnnkit explain`` prints) and
:mod:`cnnkit.ops.reference` (the numbers in the grids); the tests run the page in
Chromium and compare both with Python.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cnnkit._core.errors import CnnkitError, ConfigError, did_you_mean
from cnnkit.ops.arithmetic import (
    effective_kernel_size,
    explain_conv_output_size,
    output_size_formula,
    pool_output_size,
    resolve_padding,
    transposed_conv_output_size,
)

__all__ = [
    "OPERATIONS",
    "PRESETS",
    "Operation",
    "asset",
    "operation_text",
    "write_operation_page",
]


@dataclass(frozen=True)
class Operation:
    """One page kind: its title, what the controls mean and the defaults it starts from."""

    title: str
    intro: str
    defaults: dict[str, Any]
    modes: tuple[str, ...] = ()
    preset: str = "generated"
    unused: tuple[str, ...] = ()  # controls that do not apply (shown disabled)


OPERATIONS: dict[str, Operation] = {
    "conv": Operation(
        "Convolution",
        "A kernel slides over the (zero-padded) input; each output is the sum of the "
        "products of the kernel with the window under it (cross-correlation, as in the decks "
        "and in PyTorch/Keras). Written as a matrix, y = K x.",
        {"input": 7, "kernel": 3, "stride": 1, "padding": "0", "dilation": 1},
    ),
    "pool": Operation(
        "Pooling",
        "A window slides over the input and keeps the maximum, the minimum or the average "
        "of what it covers; no parameters are learned. Max pooling remembers which element "
        "was the maximum (its index), so that unpooling can put it back.",
        {"input": 4, "kernel": 2, "stride": 2, "padding": "0", "dilation": 1},
        modes=("max", "min", "average"),
        preset="seed000-pool",
        unused=("dilation",),
    ),
    "unpool": Operation(
        "Max unpooling",
        "Max pooling with remembered indices, then unpooling: each value goes back to the "
        "position where its maximum was and every other position is zero (a bed of nails).",
        {"input": 4, "kernel": 2, "stride": 2, "padding": "0", "dilation": 1},
        preset="seed000-pool",
        unused=("dilation",),
    ),
    "transposed": Operation(
        "Transposed convolution",
        "A transposed convolution multiplies by K^T, the transpose of the matrix K of the "
        "convolution with the same kernel, stride and padding: every input value scatters a "
        "copy of the kernel, scaled by itself, into the larger output, and overlaps add up.",
        {"input": 3, "kernel": 3, "stride": 2, "padding": "1", "dilation": 1},
    ),
    "dilated": Operation(
        "Dilated convolution",
        "A dilated kernel leaves d - 1 holes between its taps: a kernel of size k covers "
        "d(k - 1) + 1 input elements with the same k x k weights, so the receptive field grows "
        "without more parameters.",
        {"input": 7, "kernel": 3, "stride": 1, "padding": "0", "dilation": 2},
    ),
    "upsample": Operation(
        "Upsampling",
        "Upsampling by an integer factor (the stride control): nearest neighbour repeats each "
        "value into a block, bilinear blends the nearest four (half-pixel centres, as PyTorch "
        "and Keras), bed of nails puts each value in the top-left of its block and zeros "
        "elsewhere.",
        {"input": 3, "kernel": 1, "stride": 2, "padding": "0", "dilation": 1},
        modes=("nearest", "bilinear", "bed of nails"),
        unused=("kernel", "padding", "dilation"),
    ),
}

#: numeric grids from the decks, offered by the page's animation
PRESETS: dict[str, dict[str, Any]] = {
    "seed000-pool": {
        "label": "seed 000: 4x4 max pooling that remembers the indices",
        "grid": [[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]],
        "unpool_values": [[1, 2], [3, 4]],
        "params": {"kernel": 2, "stride": 2, "padding": "0"},
    },
    "seed002-pool": {
        "label": "seed 002: 4x4 max pooling",
        "grid": [[7, 4, 6, 2], [3, 2, 3, 5], [1, 2, 1, 0], [5, 4, 2, 9]],
        "params": {"kernel": 2, "stride": 2, "padding": "0"},
    },
    "seed002-padded": {
        "label": "seed 002: the padded 10x12 grid (8x6 input, padding 2)",
        "grid": [
            [2, 2, 3, 4, 5, 6],
            [2, 2, 1, 2, 2, 7],
            [1, 2, 4, 6, 2, 1],
            [1, 2, 54, 54, 5, 4],
            [5, 3, 2, 8, 9, 0],
            [1, 2, 4, 6, 8, 0],
            [43, 213, 1, 54, 54, 8],
            [32, 2, 21, 34, 32, 1],
        ],
        "params": {"kernel": 3, "stride": 1, "padding": "2"},
    },
}


def _int_padding(op: str, padding: Any) -> int:
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    raise ConfigError(
        f"{op} takes an integer padding >= 0; received {padding!r} "
        "(use 0, 1, 2, ...; valid/same/full and pairs are for conv and dilated)."
    )


def _conv_lines(n: int, k: int, s: int, padding: Any, d: int) -> list[str]:
    return explain_conv_output_size(n, k, s, padding, d).split("\n")


def _pool_lines(n: int, k: int, s: int, padding: Any) -> tuple[list[str], int | None]:
    p = _int_padding("pooling", padding)
    lines = [
        f"N = {n}, F = {k}, S = {s}, P = ({p}, {p})",
        "(N - F + 2P)/S + 1 = " + output_size_formula(n, k, s, p),
    ]
    try:
        out = pool_output_size(n, k, s, p)
    except CnnkitError as err:
        lines.append(str(err))
        return lines, None
    lines.append(f"output size {out}")
    return lines, out


def _transposed_lines(n: int, k: int, s: int, padding: Any, d: int) -> list[str]:
    p = _int_padding("transposed", padding)
    f = effective_kernel_size(k, d)
    lines = [f"N = {n}, F = {k}, S = {s}, P = ({p}, {p}), d = {d}"]
    if d > 1:
        lines.append(f"F_eff = d(F - 1) + 1 = {d}*({k} - 1) + 1 = {f}")
    out = (n - 1) * s - 2 * p + f
    lines.append(f"(N - 1)*S - 2P + F_eff = ({n} - 1)*{s} - {2 * p} + {f} = {out}")
    try:
        out = transposed_conv_output_size(n, k, s, p, None, d)
    except CnnkitError as err:
        lines.append(str(err))
        return lines
    lines.append(f"output size {out}")
    lines.append(
        f"y = K^T x, K the convolution of a {out}-element input with the same kernel, "
        f"stride and padding ({out} -> {n} per dimension)"
    )
    return lines


def operation_text(
    op: str, n: int, kernel: int = 1, stride: int = 1, padding: Any = 0, dilation: int = 1
) -> str:
    """The arithmetic of one operation with the numbers filled in (per dimension).

    ``conv`` and ``dilated`` give exactly :func:`cnnkit.ops.arithmetic.explain_conv_output_size`;
    ``pool`` the same formula checked by :func:`~cnnkit.ops.arithmetic.pool_output_size`,
    ``unpool`` that plus the way back, ``transposed`` the size of ``K^T x``
    (:func:`~cnnkit.ops.arithmetic.transposed_conv_output_size`), ``upsample`` ``N * factor``
    with the stride as the factor. The explain pages' JavaScript produces the same text.
    """
    check_operation(op)
    if op in ("conv", "dilated"):
        return "\n".join(_conv_lines(n, kernel, stride, padding, dilation))
    if op == "pool":
        return "\n".join(_pool_lines(n, kernel, stride, padding)[0])
    if op == "unpool":
        lines, out = _pool_lines(n, kernel, stride, padding)
        if out is not None:
            lines.append(
                f"unpooling: {out} -> {n} per dimension, each value back where its maximum "
                "was, zeros elsewhere"
            )
        return "\n".join(lines)
    if op == "transposed":
        return "\n".join(_transposed_lines(n, kernel, stride, padding, dilation))
    return f"N = {n}, factor = {stride}\noutput size N*factor = {n}*{stride} = {n * stride}"


def check_operation(op: str) -> str:
    if op not in OPERATIONS:
        raise ConfigError(
            f"unknown operation {op!r}; expected one of {', '.join(OPERATIONS)}."
            f"{did_you_mean(op, OPERATIONS)}"
        )
    return op


def asset(name: str) -> str:
    """The text of a page asset shipped in ``cnnkit/report/explain_assets``."""
    return resources.files("cnnkit.report").joinpath("explain_assets", name).read_text("utf-8")


def _json_script(element_id: str, value: Any) -> str:
    text = json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _control(cid: str, label: str, value: Any, unused: bool, kind: str = "number") -> str:
    extra = ' min="1" max="64"' if kind == "number" else ' size="6"'
    if cid == "padding":
        extra = ' size="6" title="an int, before,after, valid, same or full"'
    disabled = ' disabled title="not used by this operation"' if unused else ""
    return (
        f'<label class="ctl">{html.escape(label)} <input id="{cid}" name="{cid}" '
        f'type="{kind}" value="{html.escape(str(value))}"{extra}{disabled}></label>'
    )


def _page(op: str, config: dict[str, Any]) -> str:
    info = OPERATIONS[op]
    labels = {
        "input": "input N",
        "kernel": "kernel F" if op != "pool" else "pool size F",
        "stride": "stride S" if op != "upsample" else "factor (stride)",
        "padding": "padding P",
        "dilation": "dilation d",
    }
    controls = "".join(
        _control(c, labels[c], config[c], c in info.unused, "text" if c == "padding" else "number")
        for c in ("input", "kernel", "stride", "padding", "dilation")
    )
    modes = ""
    if info.modes:
        options = "".join(
            f'<option value="{m}"{" selected" if m == config["mode"] else ""}>{m}</option>'
            for m in info.modes
        )
        modes = f'<label class="ctl">mode <select id="mode">{options}</select></label>'
    presets = '<option value="generated">generated from N</option>' + "".join(
        f'<option value="{k}">{html.escape(v["label"])}</option>' for k, v in PRESETS.items()
    )
    dims = "".join(
        f'<option value="{d}"{" selected" if d == config["dims"] else ""}>{d}D</option>'
        for d in (1, 2)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnkit explain: {html.escape(info.title)}</title>
<style>{asset("explain.css")}</style></head>
<body><main>
<h1>{html.escape(info.title)}</h1>
<p class="intro">{html.escape(info.intro)}</p>
<section id="controls">{controls}{modes}
<label class="ctl">dims <select id="dims">{dims}</select></label>
<label class="ctl">example <select id="preset">{presets}</select></label>
<p class="meta">Change a value and everything below follows. The page also reads its
values from the address, e.g. <code>?input=7&amp;kernel=3&amp;stride=2&amp;padding=1</code>.
Written by <code>cnnkit explain {op} --html</code>; the same arithmetic as
<code>cnnkit explain {op}</code> in a terminal.</p></section>
<section><h2>Output size</h2>
<p class="big">output size <b id="output-size"></b> <span id="output-shape"></span></p>
<pre id="formula"></pre><div id="notes"></div></section>
<section id="animation"><h2>Step by step</h2>
<p><button id="play" type="button">play</button> <button id="step" type="button">step</button>
<button id="reset" type="button">reset</button> <span id="step-label"></span></p>
<div id="stage"></div><p id="step-detail" class="meta"></p></section>
<section id="matrix-section"><h2 id="matrix-title">Convolution as matrix multiplication</h2>
<p id="matrix-caption" class="meta"></p><div class="scroll"><table id="conv-matrix"></table></div>
</section>
<p class="meta">Other pages: <code>cnnkit explain conv|pool|unpool|transposed|dilated|upsample
--html PAGE.html</code>; your own network: <code>cnnkit explain MODEL|RUN --html PAGE.html</code>.</p>
</main>
{_json_script("cnnkit-config", config)}
{_json_script("cnnkit-presets", PRESETS)}
<script>{asset("explain_ops.js")}</script>
<script>{asset("explain_view.js")}</script>
</body></html>
"""


def write_operation_page(
    path: str | os.PathLike,
    op: str = "conv",
    *,
    input_size: int | None = None,
    kernel: int | None = None,
    stride: int | None = None,
    padding: int | str | tuple[int, int] | None = None,
    dilation: int | None = None,
    dims: int = 2,
    mode: str | None = None,
) -> Path:
    """Write the interactive page of ``op`` (``conv``, ``pool``, ``unpool``,
    ``transposed``, ``dilated``, ``upsample``) to ``path`` and return it.

    Values left ``None`` take the operation's defaults (:data:`OPERATIONS`); the page
    starts from these and its query string overrides them. ``mode`` picks ``max``/``min``/
    ``average`` pooling or ``nearest``/``bilinear``/``bed of nails`` upsampling.
    """
    info = OPERATIONS[check_operation(op)]
    if dims not in (1, 2):
        raise ConfigError(f"dims must be 1 or 2; received {dims!r}.")
    if mode is not None and mode not in info.modes:
        raise ConfigError(
            f"mode {mode!r} does not apply to {op}; expected one of "
            f"{', '.join(info.modes) or '(none)'}."
        )
    given = {"input": input_size, "kernel": kernel, "stride": stride, "dilation": dilation}
    config: dict[str, Any] = dict(info.defaults)
    for key, value in given.items():
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer; received {value!r}.")
            config[key] = value
    if op == "pool" and stride is None and kernel is not None:
        config["stride"] = kernel  # pooling: the stride defaults to the window
    if padding is not None:
        if isinstance(padding, tuple):
            padding = ",".join(str(int(v)) for v in padding)
        config["padding"] = str(padding)
    # check the padding spec once, as the terminal reads it
    text = config["padding"]
    if text not in ("valid", "same", "full"):
        try:
            spec: Any = tuple(int(v) for v in text.split(",")) if "," in text else int(text)
        except ValueError:
            raise ConfigError(
                f"padding {text!r} is not a padding; expected an int, (before, after), "
                "'valid', 'same' or 'full'."
            ) from None
        resolve_padding(spec, config["input"], 1)
    user_values = any(v is not None for v in (input_size, kernel, stride, padding))
    config.update(
        op=op,
        dims=dims,
        mode=mode or (info.modes[0] if info.modes else ""),
        preset="generated" if user_values else info.preset,
    )
    out = Path(path)
    out.write_text(_page(op, config), encoding="utf-8")
    return out
