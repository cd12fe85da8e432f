"""cnnkit.report: headless plots and the self-contained report.html of a run folder,
parsed with html.parser and rendered in headless Chromium (skipped without one)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnkit.report import (
    ERROR_COLOURS,
    plot_cam,
    plot_confusion_matrix,
    plot_feature_maps,
    plot_filters,
    plot_history,
    plot_instances,
    plot_per_class,
    plot_segmentation,
    read_history_csv,
    segmentation_errors,
    write_run_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"


def _png_pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    return imread(path)


def _not_blank(pixels: np.ndarray) -> bool:
    rgb = pixels[..., :3]
    return float(rgb.std()) > 0.01 and float((rgb < 0.9).mean()) > 0.001


def test_plots_write_png_files_without_pyplot_state(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    rng = np.random.default_rng(0)
    calls = [
        lambda p: plot_history({"loss": [1.0, 0.5], "val_loss": [1.2, 0.8], "acc": [0.5, 0.7]}, p),
        lambda p: plot_confusion_matrix([[5, 1], [2, 7]], ["a", "b"], p, normalize=True),
        lambda p: plot_per_class({"a": {"precision": 0.8, "recall": 0.6, "support": 3}}, p),
        lambda p: plot_segmentation(rng.random((3, 12, 12)), np.eye(12), np.eye(12)[::-1], p),
        lambda p: plot_cam(rng.random((2, 1, 12, 12)), rng.random((2, 12, 12)), p),
        lambda p: plot_instances(
            rng.random((20, 20, 3)),
            {
                "boxes": [[1, 1, 9, 9]],
                "labels": [1],
                "scores": [0.9],
                "masks": rng.random((1, 20, 20)),
            },
            p,
            target={"boxes": [[2, 2, 8, 8]], "labels": [1]},
        ),
        lambda p: plot_feature_maps({"conv": rng.random((1, 4, 6, 6))}, p),
        lambda p: plot_filters(rng.standard_normal((4, 3, 3, 3)), p),
    ]
    for i, call in enumerate(calls):
        path = tmp_path / "sub" / f"plot{i}.png"
        assert call(path) == path
        assert _not_blank(_png_pixels(path)), path.name
    assert plt.get_fignums() == before, "plots must not leave pyplot figures open"


def test_segmentation_errors_follow_seed_003_colours():
    truth = np.array([[0, 1, 1], [0, 2, 0], [1, 0, 2]])
    pred = np.array([[0, 1, 0], [1, 1, 0], [1, 2, 2]])
    codes = segmentation_errors(truth, pred)
    for (r, c), code in np.ndenumerate(codes):
        t, p = truth[r, c], pred[r, c]
        want = 0 if t == p == 0 else 1 if t == p else 2 if p == 0 else 3 if t == 0 else 4
        assert code == want, (r, c)
    # seed 003: "Yellow are correctly identified pixels, blue false negatives and red
    # false positives"
    yellow, blue, red = (np.array(ERROR_COLOURS[k]) for k in ERROR_COLOURS if k != "wrong class")
    assert yellow[0] > 0.8 and yellow[1] > 0.7 and yellow[2] < 0.3
    assert blue[2] > 0.8 and blue[0] < 0.3
    assert red[0] > 0.8 and red[1] < 0.3 and red[2] < 0.3
    assert list(ERROR_COLOURS)[:3] == ["correct", "false negative", "false positive"]


def test_segmentation_plot_colours_errors_in_the_png(tmp_path):
    truth = np.zeros((40, 40), int)
    truth[:, :20] = 1  # left half road
    pred = np.zeros((40, 40), int)
    pred[:20, :] = 1  # top half predicted road: top-left correct, bottom-left FN, top-right FP
    path = plot_segmentation(np.zeros((40, 40)), truth, pred, tmp_path / "s.png")
    px = _png_pixels(path)[..., :3]
    flat = px.reshape(-1, 3)

    def share(colour):  # fraction of pixels near 0.25*black + 0.75*colour
        return float((np.abs(flat - 0.75 * np.array(colour)).max(1) < 0.08).mean())

    for name in ("correct", "false negative", "false positive"):
        assert share(ERROR_COLOURS[name]) > 0.005, name
    assert share(ERROR_COLOURS["wrong class"]) == 0


def test_plot_inputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="3 class names"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.ones((2, 3)), None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="differ in shape"):
        plot_segmentation(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((3, 4)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="dict metric"):
        plot_history([1, 2], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_per_class_accepts_sklearn_report_and_history_csv_round_trip(tmp_path):
    from sklearn.metrics import classification_report

    from cnnkit.train.callbacks import CSVLogger

    rep = classification_report([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 1], output_dict=True)
    assert plot_per_class(rep, tmp_path / "pc.png").is_file()
    as_lists = {"precision": [0.5, 1.0], "recall": [1.0, 0.25]}
    assert plot_per_class(as_lists, tmp_path / "pc2.png", class_names=["x", "y"]).is_file()

    logger = CSVLogger(tmp_path / "history.csv")
    logs = [{"loss": 0.9, "val_loss": 1.0, "accuracy": 0.6}, {"loss": 0.4, "val_loss": 0.7}]
    logger.on_train_begin()
    for epoch, row in enumerate(logs):
        logger.on_epoch_end(epoch, row)
    logger.on_train_end()
    h = read_history_csv(tmp_path / "history.csv")
    assert h["epoch"] == [0.0, 1.0]
    assert h["loss"] == [0.9, 0.4] and h["val_loss"] == [1.0, 0.7]
    assert h["accuracy"][0] == 0.6 and np.isnan(h["accuracy"][1])
    assert plot_history(tmp_path / "history.csv", tmp_path / "h.png").is_file()


# ---------------------------------------------------------------------------- report.html


class _Page(HTMLParser):
    """Tags, tables (rows of cell texts), images and the text of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table_with(self, first_header: str) -> list[list[str]]:
        return next(t for t in self.tables if t and t[0] and t[0][0] == first_header)


def _fake_run(root: Path) -> Path:
    run = root / "demo-run"
    (run / "plots").mkdir(parents=True)
    command = "cnnkit train digits-lenet5 --epochs 3 --out 'runs/a&b' --note \"<b>x</b>\""
    config = {"name": "digits-lenet5", "model": "lenet5", "epochs": 3, "note": EVIL}
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "command": command}))
    metrics = {
        "test": {"loss": 0.123456, "accuracy": 0.98765, "samples": 540},
        "val": {"loss": 0.2, "accuracy": 0.9512},
        "per_class": {
            "zero": {"precision": 0.99, "recall": 0.97, "f1": 0.98, "support": 54},
            EVIL: {"precision": 0.91, "recall": 0.93, "f1": 0.92, "support": 55},
        },
        "confusion_matrix": [[52, 2], [4, 51]],
        "class_names": ["zero", EVIL],
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "history.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.8,0.9,0.85,0.7\n1,0.95,0.3,0.94,0.25\n"
    )
    (run / "summary.txt").write_text(
        "Layer (type)   Output Shape   Param #\nTotal params: 61,706\n"
    )
    env = {"torch": "2.x", "device": "cpu", "precision": "fp32", "memory_format": "contiguous"}
    (run / "environment.json").write_text(json.dumps({**env, "torch_threads": 2}))
    rng = np.random.default_rng(1)
    plot_cam(rng.random((8, 8)), rng.random((8, 8)), run / "plots" / f"cam{EVIL[:7]}.png")
    return run


def test_write_run_report_is_self_contained_and_escaped(tmp_path):
    run = _fake_run(tmp_path)
    out = write_run_report(run)
    assert out == run / "report.html"
    raw = out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(raw)
    # metrics table: metric rows, test and val columns, 4 decimals
    table = page.table_with("metric")
    assert table[0] == ["metric", "test", "val"]
    rows = {r[0]: r[1:] for r in table[1:]}
    assert rows["accuracy"] == ["0.9877", "0.9512"]
    assert rows["loss"] == ["0.1235", "0.2000"]
    assert rows["samples"] == ["540", ""]
    per_class = {r[0]: r for r in page.table_with("class")[1:]}
    assert per_class[EVIL][1:4] == ["0.9100", "0.9300", "0.9200"]  # escaped, shown as text
    # the missing plots were drawn, then every plot embedded as a data URI
    for name in ("history.png", "confusion_matrix.png", "per_class.png"):
        assert (run / "plots" / name).is_file()
    imgs = [a for tag, a in page.tags if tag == "img"]
    assert len(imgs) == 4
    for a in imgs:
        prefix = "data:image/png;base64,"
        assert a["src"].startswith(prefix)
        assert base64.b64decode(a["src"][len(prefix) :])[:8] == PNG_MAGIC
    # no script, no external resource, no event handler; hostile strings are text
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed"}
    for _, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs)
        assert not any(v and "//" in v and not v.startswith("data:") for v in attrs.values())
    assert "<script>" not in raw and "&lt;script&gt;" in raw
    text = "".join(page.text)
    assert "cnnkit train digits-lenet5 --epochs 3 --out 'runs/a&b' --note \"<b>x</b>\"" in text
    assert "Total params: 61,706" in text and "memory_format" in text and "fp32" in text
    assert "not recorded" not in text
    assert "cnnkit run digits-lenet5" in text


def test_write_run_report_skips_missing_files(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    page = _Page()
    page.feed(write_run_report(run, title="T <1>").read_text())
    text = "".join(page.text)
    for what in ("metrics.json", "plots", "command", "history.csv", "summary.txt"):
        assert f"{what}: not recorded" in text
    assert "config.yaml: not recorded" in text and "environment.json: not recorded" in text
    assert "T <1>" in text and not [a for t, a in page.tags if t == "img"]
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
    (run / "history.csv").write_text("not,a\n")  # a header without rows
    page = _Page()
    page.feed(write_run_report(run).read_text())
    assert page.table_with("metric")[1] == ["accuracy", "0.5000"]
    with pytest.raises(ValueError, match="not a folder"):
        write_run_report(tmp_path / "nowhere")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(
    _chromium() is None, reason="no chromium binary on PATH (Debian package 'chromium')"
)
def test_report_renders_in_headless_chromium(tmp_path):
    report = write_run_report(_fake_run(tmp_path))
    base = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Page()
    page.feed(dom.stdout)
    rows = {r[0]: r[1:] for r in page.table_with("metric")[1:]}
    assert rows["accuracy"] == ["0.9877", "0.9512"]
    assert len([a for t, a in page.tags if t == "img"]) == 4
    assert "script" not in {t for t, _ in page.tags}
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1000,1400", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    assert _not_blank(_png_pixels(shot))
