"""The explain pages in real headless Chromium (Playwright): controls, query string,
formula text, conv matrix, the JavaScript mirror of cnnkit's arithmetic and reference
operations, model and run pages, and that nothing is loaded from the network."""

from __future__ import annotations

import base64
import io
import itertools
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnkit._core.errors import CnnkitError
from cnnkit.cli.main import main
from cnnkit.ops import reference as R
from cnnkit.ops.arithmetic import conv_output_size, explain_conv_output_size
from cnnkit.report.explain_model import RunExamples, write_model_page
from cnnkit.report.explain_ops import OPERATIONS, operation_text, write_operation_page

CHROMIUM = os.environ.get("CNNKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium, or set CNNKIT_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A Playwright page that records every request and every script error."""

    def __init__(self, browser):
        self.page = browser.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: Path, query: str = ""):
        self.page.goto(path.resolve().as_uri() + query)
        return self.page

    def check_offline(self):
        assert not self.errors
        remote = [u for u in self.requests if not u.startswith(("file:", "data:"))]
        assert not remote, remote


@pytest.fixture()
def page(browser):
    p = Page(browser)
    yield p
    p.page.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    return {op: write_operation_page(root / f"{op}.html", op) for op in OPERATIONS}


def _matrix(pg) -> list[list[str]]:
    return pg.eval_on_selector_all(
        "#conv-matrix tr",
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => c.textContent))",
    )


def _expected_matrix(n, k, s, p, d=1):
    kernel = np.arange(1, k * k + 1, dtype=np.float64).reshape(k, k)
    m = R.conv_matrix(kernel, (n, n), stride=s, padding=p, dilation=d)
    return [[f"k{int(v)}" if v else "" for v in row] for row in m]


def test_query_string_sets_output_size_formula_and_matrix(page, pages):
    pg = page.open(pages["conv"], "?input=7&kernel=3&stride=2&padding=1&dilation=1")
    assert pg.text_content("#output-size") == "4"
    assert pg.text_content("#formula") == explain_conv_output_size(7, 3, 2, 1, 1)
    matrix = _matrix(pg)
    assert len(matrix) == 16 and all(len(r) == 49 for r in matrix)
    assert matrix == _expected_matrix(7, 3, 2, 1)  # cnnkit.ops.reference.conv_matrix
    assert pg.input_value("#stride") == "2"  # the controls show the query's values
    page.check_offline()


def test_non_integer_case_reads_as_the_terminal(page, pages, capsys):
    pg = page.open(pages["conv"], "?input=7&kernel=3&stride=3&padding=0")
    formula = pg.text_content("#formula")
    assert "(7 - 3 + 0)/3 + 1 = 2.33" in formula
    assert "Use padding=1 (output 3)" in formula and "a stride of 1, 2 or 4" in formula
    assert pg.text_content("#output-size") == "2.33"
    assert main(["explain", "conv", "--input", "7", "--kernel", "3", "--stride", "3",
                 "--padding", "0", "--no-matrix"]) == 0  # fmt: skip
    terminal = capsys.readouterr().out.splitlines()
    assert formula.splitlines() == terminal[: len(formula.splitlines())]
    assert terminal[len(formula.splitlines())].startswith("receptive field")


def test_changing_a_control_updates_the_page(page, pages):
    pg = page.open(pages["conv"], "?input=7&kernel=3&stride=2&padding=1")
    assert len(_matrix(pg)) == 16
    pg.fill("#stride", "1")
    assert pg.text_content("#output-size") == "7"
    assert _matrix(pg) == _expected_matrix(7, 3, 1, 1)
    pg.fill("#kernel", "5")
    assert pg.text_content("#output-size") == "5"
    assert pg.text_content("#formula") == explain_conv_output_size(7, 5, 1, 1)
    pg.fill("#padding", "same")
    assert pg.text_content("#output-size") == "7"
    pg.fill("#dilation", "2")  # F_eff = 9, 'same' pads 4 + 4
    assert pg.text_content("#formula") == explain_conv_output_size(7, 5, 1, "same", 2)
    assert _matrix(pg) == _expected_matrix(7, 5, 1, "same", 2)
    # the animation fills the output cell by cell and lights the matrix row it uses
    pg.click("#step")
    pg.click("#step")
    assert pg.text_content("#step-label") == "step 2 of 49"
    assert pg.eval_on_selector_all("#conv-matrix tr.cur", "r => r.map(x => x.rowIndex)") == [1]
    pg.click("#reset")
    assert pg.text_content("#step-label") == "step 0 of 49"
    page.check_offline()


PADDINGS = [0, 1, 2, "same", "valid", "full", (1, 2)]


def _py_text(op, n, k, s, p, d):
    try:
        return operation_text(op, n, k, s, p, d)
    except CnnkitError:
        return "ERROR"


def test_js_arithmetic_equals_python_over_a_grid(page, pages):
    """One page load, one evaluate over every combination (>= 200 per operation)."""
    pg = page.open(pages["conv"])
    grid = list(itertools.product(range(1, 10), range(1, 5), range(1, 4), PADDINGS, (1, 2)))
    cases = [[n, k, s, list(p) if isinstance(p, tuple) else p, d] for n, k, s, p, d in grid]
    got = pg.evaluate(
        """([ops, cases]) => {
          const X = window.cnnkitExplain, out = [];
          for (const op of ops) for (const [n, k, s, p, d] of cases) {
            let text, size;
            try { text = X.opText(op, n, k, s, p, d); } catch (e) { text = "ERROR"; }
            try { size = X.outputSize(n, k, s, p, d, true, "kernel"); } catch (e) { size = null; }
            out.push([text, size]);
          }
          return out;
        }""",
        [list(OPERATIONS), cases],
    )
    i, fractional = 0, 0
    for op in OPERATIONS:
        for n, k, s, p, d in grid:
            text, size = got[i]
            i += 1
            assert text == _py_text(op, n, k, s, p, d), (op, n, k, s, p, d)
            if op == "conv":
                try:
                    want = conv_output_size(n, k, s, p, d, floor=True)
                except CnnkitError:
                    want = None
                assert size == want, (n, k, s, p, d)
                fractional += "not an integer" in text
    assert len(grid) >= 200 and fractional >= 100


def test_js_operations_equal_the_numpy_references(page, pages):
    rng = np.random.default_rng(0)
    pg = page.open(pages["conv"])
    x = rng.integers(-5, 6, size=(6, 7)).astype(float)
    w = rng.integers(-2, 3, size=(3, 3)).astype(float)
    js = pg.evaluate(
        """([x, w]) => {
          const X = window.cnnkitExplain, r = {};
          const g = (k, s, p, d) => ({kh: k, kw: k, sh: s, sw: s, dh: d, dw: d, pads: [[p, p], [p, p]]});
          r.conv = X.conv2d(x, w, g(3, 2, 1, 1));
          r.dil = X.conv2d(x, w, g(3, 1, 2, 2));
          for (const m of ["max", "min", "average"]) r[m] = X.pool2d(x, g(2, 2, 1, 1), m);
          const pooled = X.pool2d(x, g(3, 2, 0, 1), "max");
          r.pooled = pooled;
          r.unpool = X.unpool2d(pooled.y, pooled.idx, 6, 7);
          r.tconv = X.transposed2d(w, x.slice(0, 3).map(row => row.slice(0, 3)), g(3, 2, 1, 1), 5, 5);
          for (const m of ["nearest", "bilinear", "bed of nails"]) r[m] = X.upsample2d(x, 2, 3, m);
          return r;
        }""",
        [x.tolist(), w.tolist()],
    )
    b = x[None, None]
    close = np.testing.assert_allclose
    close(js["conv"], R.conv_nd(b, w[None, None], stride=2, padding=1)[0, 0])
    close(js["dil"], R.conv_nd(b, w[None, None], padding=2, dilation=2)[0, 0])
    close(js["max"]["y"], R.pool_nd(b, 2, 2, 1, "max")[0, 0])
    close(js["min"]["y"], R.pool_nd(b, 2, 2, 1, "min")[0, 0])
    close(js["average"]["y"], R.pool_nd(b, 2, 2, 1, "avg")[0, 0])
    y, idx = R.max_pool_with_indices(b, 3, 2)
    close(js["pooled"]["y"], y[0, 0])
    assert js["pooled"]["idx"] == idx[0, 0].tolist()
    close(js["unpool"], R.max_unpool_nd(y, idx, (6, 7))[0, 0])
    k3 = x[:3, :3]
    close(
        js["tconv"], R.conv_transpose_nd(w[None, None], k3[None, None], stride=2, padding=1)[0, 0]
    )
    close(js["nearest"], R.upsample_nearest(b, (2, 3))[0, 0])
    close(js["bed of nails"], R.upsample_bed_of_nails(b, (2, 3))[0, 0])
    close(js["bilinear"], R.upsample_linear(b, (2, 3))[0, 0], rtol=1e-12)


def test_every_operation_page_runs_offline(page, pages):
    seen = {}
    for op, path in pages.items():
        pg = page.open(path)
        for _ in range(3):
            pg.click("#step")
        seen[op] = pg.text_content("#output-size")
        html = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", html)
    # the decks' examples: seed 000's 4x4 max pooling (5 6 / 7 8) and its unpooling
    pg = page.open(pages["unpool"])
    pg.evaluate("() => { for (let i = 0; i < 4; i++) document.getElementById('step').click(); }")
    cells = pg.eval_on_selector_all(
        "#stage figure:last-of-type td", "c => c.map(x => x.textContent)"
    )
    assert cells == ["0", "0", "2", "0", "0", "1", "0", "0", "0", "0", "0", "0", "3", "0", "0", "4"]
    pg = page.open(pages["conv"], "?preset=seed002-padded")
    assert pg.text_content("#output-size") == "10 x 8"  # 8x6 input, padding 2, kernel 3
    assert len(_matrix(pg)) == 80
    assert seen == {"conv": "5", "pool": "2", "unpool": "4", "transposed": "5", "dilated": "3",
                    "upsample": "6"}  # fmt: skip
    page.check_offline()


def test_alexnet_model_page(page, tmp_path, capsys):
    from cnnkit.layers.summary import summary
    from cnnkit.models import create

    out = tmp_path / "alexnet.html"
    assert main(["explain", "alexnet", "--html", str(out)]) == 0
    pg = page.open(out)
    rows = pg.eval_on_selector_all(
        "#layers tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    conv1 = rows[0]
    assert conv1[2] == "Conv2D" and conv1[4] == "96 maps of 55x55" and conv1[5] == "34,944"
    assert any(r[4].endswith("27x27") for r in rows)
    want = summary(create("alexnet"), (3, 227, 227), print_fn=lambda line: None)
    assert [(r[1], r[5], r[6], r[7]) for r in rows] == [
        (w.name, f"{w.params:,}", f"{w.macs:,}", str(w.receptive_field or "-")) for w in want
    ]
    assert sum(p.numel() for p in create("alexnet").parameters()) == want.total_params
    pg.click("#layers tbody tr:nth-child(3)")  # pool1: a 27x27 map, field 19, jump 8
    pg.fill("#rf-i", "1")
    pg.fill("#rf-j", "2")
    assert "rows 8..26, columns 16..34" in pg.text_content("#rf-text")
    page.check_offline()


def test_receptive_field_box_is_the_gradient_support(page, tmp_path):
    """On a linear net with positive weights the input pixels that reach an output unit
    span exactly its receptive field (padding, strides and dilation included; a dilated
    layer without padding, since a dilated tap on the padding leaves a gap at the border
    that the drawn box, the arithmetic's field clipped to the input, does not show)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.AvgPool2d(2, 1),
        nn.Conv2d(2, 2, 3, dilation=2), nn.Conv2d(2, 1, 2, stride=2),
    )  # fmt: skip
    for p in net.parameters():
        p.data.uniform_(0.5, 1.0)
    out = write_model_page(tmp_path / "net.html", net, (1, 21, 19))
    pg = page.open(out)
    x = torch.ones(1, 1, 21, 19, requires_grad=True)
    feats, h = [], x
    for m in net:
        h = m(h)
        feats.append(h)
    for layer, f in enumerate(feats):
        for i, j in {(0, 0), (f.shape[2] - 1, f.shape[3] - 1), (f.shape[2] // 2, 1)}:
            (g,) = torch.autograd.grad(f[0, 0, i, j], x, retain_graph=True)
            rows, cols = torch.nonzero(g[0, 0] != 0, as_tuple=True)
            box = pg.evaluate("([k, i, j]) => window.cnnkitModel.rfBox(k, i, j)", [layer, i, j])
            assert [box[0][:2], box[1][:2]] == [
                [int(rows.min()), int(rows.max()) + 1],
                [int(cols.min()), int(cols.max()) + 1],
            ], (layer, i, j)
    page.check_offline()


def _gap_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )  # fmt: skip


def _png(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_run_page_shows_the_cam_of_the_predicted_class(page, tmp_path):
    torch.manual_seed(0)
    net = _gap_net().eval()
    x = torch.randn(12, 1, 16, 16)
    y = torch.arange(12) % 3
    out = write_model_page(
        tmp_path / "run.html", net, (1, 16, 16),
        run=RunExamples(x, y, ["a", "b", "c"], [[2, 1, 1], [0, 4, 0], [1, 0, 3]], "report.html"),
    )  # fmt: skip
    pg = page.open(out)
    with torch.no_grad():
        logits = net(x)
        maps = net[:5](x[:1])
    pred = int(logits[0].argmax())
    assert pg.get_attribute("#cam", "data-class-index") == str(pred)
    assert pg.text_content("#cam-caption").startswith(f"CAM of the predicted class {'abc'[pred]}")
    # CAM (Zhou et al.): sum_k w_pred,k f_k, min-max normalised, bilinear to the input size
    cam = torch.einsum("chw,c->hw", maps[0], net[7].weight[pred].detach())
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    cam = F.interpolate(cam[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    shown = _png(pg.get_attribute("#cam", "src")).astype(float) / 255
    np.testing.assert_allclose(shown, cam.clamp(0, 1).numpy(), atol=1 / 255 + 1e-6)
    wrong = (logits.argmax(1) != y).sum().item()
    assert len(pg.query_selector_all("#misclassified figure")) == min(wrong, 8)
    assert pg.text_content("#confusion").startswith("true \\ predicted")
    pg.click("#layers tbody tr:nth-child(1)")  # the first conv: 4 maps of 16x16
    assert pg.is_visible("#maps") and "conv2d" in pg.text_content("#maps-caption")
    assert _png(pg.get_attribute("#maps", "src")).shape[:2] == (
        35,
        35,
    )  # 2x2 grid of 16 px + 1 px gaps
    page.check_offline()


def test_cli_errors_name_what_would_work(capsys, tmp_path):
    assert main(["explain", "alexnt", "--html", str(tmp_path / "a.html")]) == 2
    assert "Did you mean 'alexnet'" in capsys.readouterr().err
    assert main(["explain", "pool", "--mode", "bilinear", "--html", str(tmp_path / "p.html")]) == 2
    assert "max, min, average" in capsys.readouterr().err
    assert main(["explain", "pool", "--input", "4", "--kernel", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "output size 2"


def test_a_trained_run_gets_a_model_page_linked_from_its_report(page, tmp_path):
    import cnnkit
    from cnnkit.cli.datasets import load_data
    from cnnkit.cli.run_folder import read_config

    run = tmp_path / "run"
    assert main(["demo", "--epochs", "1", "--out", str(run), "--verbose", "0"]) == 0
    pg = page.open(run / "report.html")
    pg.click("#model-page")
    assert pg.url.endswith("/run/model.html")
    assert pg.text_content("#cam-caption").startswith("Grad-CAM of the predicted class")
    # `cnnkit explain RUN --html` writes the same page anywhere, linking back to the report
    out = tmp_path / "pages" / "lenet.html"
    out.parent.mkdir()
    assert main(["explain", str(run), "--html", str(out)]) == 0
    pg = page.open(out)
    assert pg.get_attribute("a[href$='report.html']", "href") == "../run/report.html"
    config = read_config(run)
    data = load_data(config["dataset"]["name"], config["dataset"]["args"], None)
    pred = np.asarray(cnnkit.load(run).predict(data.x_test[:1])).argmax(1)[0]
    assert pg.get_attribute("#cam", "data-class-index") == str(pred)
    assert len(pg.query_selector_all("#confusion tr")) == 11  # header + 10 digits
    page.check_offline()
