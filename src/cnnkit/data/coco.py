"""Instance annotations for detection and instance segmentation: COCO JSON and VIA JSON.

Both readers return an :class:`InstanceDataset` whose items are ``(image, target)``:

- ``image``: ``Tensor[3, H, W]`` float32 in [0, 1];
- ``target``: ``{'boxes': Tensor[K, 4] float32 (x1, y1, x2, y2) in pixels,
  'labels': Tensor[K] int64 (1..num_classes, 0 is background), 'masks': Tensor[K, H, W]
  uint8 0/1, 'image_id': Tensor[] int64, 'area': Tensor[K] float32, 'iscrowd': Tensor[K]
  int64}`` - the format of torchvision's detection models (Faster/Mask R-CNN).

- COCO: T.-Y. Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014
  (``instances_*.json``: ``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]`` and
  ``segmentation`` as polygons or RLE, ``categories``).
- VIA: A. Dutta, A. Zisserman, "The VIA Annotation Software for Images, Audio and Video",
  ACM MM 2019 (``via_region_data.json``, as in the balloon set of W. Abdulla's Mask R-CNN
  tutorial, 2018): per image ``filename`` and ``regions`` with ``shape_attributes``
  ``{'name': 'polygon', 'all_points_x': [...], 'all_points_y': [...]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnkit._core.errors import CnnkitError
from cnnkit.data.base import JointTransform
from cnnkit.data.images import load_image, to_chw_float
from cnnkit.data.masks import polygons_to_mask, rle_decode


class InstanceDataset(Dataset):
    """Images with per-instance boxes, labels and masks, decoded per item.

    ``records[i]`` holds ``file``, ``image_id``, optional ``height``/``width`` and
    ``instances``: a list of ``{'label', 'segmentation', 'bbox' (x1, y1, x2, y2) or None,
    'iscrowd'}`` with ``segmentation`` a list of flat polygons or an RLE dict.
    ``classes[0]`` is ``'__background__'``.
    """

    def __init__(self, records, classes, transform=None, name="instances"):
        self.records = records
        self.classes = list(classes)
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    def instance_counts(self) -> list[int]:
        """Instances per image, read from the annotations (no image is decoded)."""
        return [len(r["instances"]) for r in self.records]

    def target(self, index: int, height: int, width: int) -> dict[str, torch.Tensor]:
        """The target dict of item ``index`` for an image of ``height`` x ``width``."""
        rec = self.records[index]
        masks, boxes = [], []
        for inst in rec["instances"]:
            seg = inst["segmentation"]
            if isinstance(seg, dict):
                mask = rle_decode(seg)
                if mask.shape != (height, width):
                    raise CnnkitError(
                        f"{rec['file']}: an RLE mask is {mask.shape} but the image is "
                        f"{(height, width)} (H, W)."
                    )
            else:
                mask = polygons_to_mask(seg, height, width)
            masks.append(mask)
            boxes.append(inst["bbox"] if inst["bbox"] is not None else _mask_box(mask))
        k = len(masks)
        stacked = np.stack(masks) if k else np.zeros((0, height, width), dtype=np.uint8)
        crowd = [int(i["iscrowd"]) for i in rec["instances"]]
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(k, 4),
            "labels": torch.tensor([i["label"] for i in rec["instances"]], dtype=torch.int64),
            "masks": torch.from_numpy(stacked),
            "image_id": torch.tensor(rec["image_id"], dtype=torch.int64),
            "area": torch.tensor([float(m.sum()) for m in masks], dtype=torch.float32),
            "iscrowd": torch.tensor(crowd, dtype=torch.int64),
        }

    def __getitem__(self, index: int):
        rec = self.records[index]
        array = load_image(rec["file"], "RGB")
        height, width = array.shape[:2]
        expected = (rec.get("height"), rec.get("width"))
        if None not in expected and expected != (height, width):
            raise CnnkitError(
                f"{rec['file']}: the image is {height} x {width} but the annotations say "
                f"{expected[0]} x {expected[1]} (H x W)."
            )
        image = to_chw_float(array)
        target = self.target(index, height, width)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"InstanceDataset({self.name!r}, images={len(self)}, "
            f"instances={sum(self.instance_counts())}, classes={self.classes[1:]})"
        )


def _mask_box(mask: np.ndarray) -> list[float]:
    """Pixel-edge box ``(x1, y1, x2, y2)`` of a mask's nonzero pixels (zeros if empty)."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CnnkitError(f"annotation file {path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{path}: not valid JSON ({err}).") from err


def collate_instances(batch):
    """DataLoader ``collate_fn`` for instance data: a tuple of images and a tuple of targets."""
    return tuple(zip(*batch))


def coco_instances(
    images: str | os.PathLike,
    annotations_json: str | os.PathLike,
    *,
    include_crowd: bool = True,
    transform: JointTransform | None = None,
) -> InstanceDataset:
    """COCO-format instance annotations (Lin et al. 2014).

    Args:
        images: folder holding the files named by ``images[*].file_name``.
        annotations_json: a COCO ``instances_*.json``.
        include_crowd: keep ``iscrowd=1`` annotations (flagged in ``target['iscrowd']``).
        transform: joint transform ``t(image, target) -> (image, target)`` per item.

    Category ids (COCO's run 1..90 with gaps) become labels ``1..K`` in sorted id order;
    ``classes[label]`` is the category name and ``category_ids[label - 1]`` the original id.
    Boxes come from ``bbox`` ``[x, y, w, h]`` -> ``(x, y, x + w, y + h)``; masks from
    polygons (rasterised at pixel centres) or RLE (compressed or not).
    """
    images, path = Path(images), Path(annotations_json)
    data = _read_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise CnnkitError(f"{path}: a COCO file needs 'images' and 'annotations' lists.")
    try:
        records, categories = _coco_records(data, images, path, include_crowd)
        names = ["__background__"] + [str(c["name"]) for c in categories]
        ids = [c["id"] for c in categories]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        what = f"the field {err} is missing" if isinstance(err, KeyError) else repr(err)
        raise CnnkitError(
            f"{path}: not a well-formed COCO file: {what}. Images need 'id' and 'file_name'; "
            "annotations need 'image_id' and 'category_id', a 'bbox' [x, y, w, h] and/or a "
            "'segmentation'; categories need 'id' and 'name'."
        ) from err
    ds = InstanceDataset(records, names, transform, path.name)
    ds.category_ids = ids
    return ds


def _coco_records(data: dict, images: Path, path: Path, include_crowd: bool):
    """The per-image records and sorted categories of a COCO dict (raises KeyError,
    TypeError or ValueError on malformed entries; :func:`coco_instances` explains them)."""
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    records, by_id = [], {}
    for img in data["images"]:
        rec = {
            "file": images / img["file_name"],
            "image_id": int(img["id"]),
            "height": img.get("height"),
            "width": img.get("width"),
            "instances": [],
        }
        by_id[rec["image_id"]] = rec
        records.append(rec)
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) and not include_crowd:
            continue
        rec = by_id.get(ann["image_id"])
        if rec is None:
            raise CnnkitError(
                f"{path}: annotation {ann.get('id')} refers to image_id {ann['image_id']}, "
                "which is not in 'images'."
            )
        if ann["category_id"] not in label_of:
            raise CnnkitError(
                f"{path}: annotation {ann.get('id')} has category_id {ann['category_id']}, "
                f"not among the categories {sorted(label_of)}."
            )
        seg = ann.get("segmentation")
        if isinstance(seg, dict) and isinstance(seg.get("counts"), list) and rec["height"]:
            seg = {"size": seg.get("size", [rec["height"], rec["width"]]), "counts": seg["counts"]}
        bbox = ann.get("bbox")
        box = None if bbox is None else [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]
        rec["instances"].append(
            {
                "label": label_of[ann["category_id"]],
                "segmentation": seg if seg is not None else [],
                "bbox": [float(v) for v in box] if box is not None else None,
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
        )
    return records, categories


def _via_regions(entry, path: Path) -> list[dict]:
    regions = entry.get("regions", [])
    return list(regions.values()) if isinstance(regions, dict) else list(regions)


def _via_shape(shape: dict, where: str) -> list[list[float]]:
    kind = shape.get("name")
    if kind in ("polygon", "polyline"):
        xs, ys = shape.get("all_points_x", []), shape.get("all_points_y", [])
        if len(xs) != len(ys) or len(xs) < 3:
            raise CnnkitError(
                f"{where}: a polygon needs as many x as y points, at least 3; found "
                f"{len(xs)} x and {len(ys)} y."
            )
        return [[float(v) for xy in zip(xs, ys) for v in xy]]
    if kind == "rect":
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        return [[x, y, x + w, y, x + w, y + h, x, y + h]]
    raise CnnkitError(f"{where}: region shape {kind!r} is not supported (polygon, rect).")


def via_instances(
    folder: str | os.PathLike,
    *,
    json_name: str = "via_region_data.json",
    label_attribute: str | None = None,
    classes: Sequence[str] | None = None,
    transform: JointTransform | None = None,
) -> InstanceDataset:
    """VGG Image Annotator (VIA 1.x/2.x) polygon regions, e.g. the balloon dataset.

    Args:
        folder: folder holding the images and ``json_name``.
        label_attribute: the ``region_attributes`` key naming each region's class;
            ``None`` puts every region in one class (``classes[0]`` or ``'object'``).
        classes: class names in label order (label ``i + 1`` = ``classes[i]``); by
            default the sorted names found under ``label_attribute``.
        transform: joint transform ``t(image, target) -> (image, target)`` per item.

    Boxes are the polygons' extents ``(min x, min y, max x, max y)``; masks are the
    polygons rasterised at pixel centres (see :mod:`cnnkit.data.masks`).
    """
    folder = Path(folder)
    path = folder / json_name
    data = _read_json(path)
    entries = data.get("_via_img_metadata", data) if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise CnnkitError(f"{path}: expected a VIA project: a dict of per-image entries.")
    found_names = set()
    parsed = []
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            raise CnnkitError(f"{path}: entry {key!r} has no 'filename'.")
        items = []
        for r, region in enumerate(_via_regions(entry, path)):
            where = f"{path} ({entry['filename']}, region {r})"
            polys = _via_shape(region.get("shape_attributes", {}), where)
            name = None
            if label_attribute is not None:
                name = (region.get("region_attributes") or {}).get(label_attribute)
                if isinstance(name, dict):  # VIA checkbox attributes: {'name': True}
                    name = next((k for k, v in name.items() if v), None)
                if name is None:
                    raise CnnkitError(f"{where}: no region attribute {label_attribute!r}.")
                found_names.add(str(name))
            items.append((polys, name))
        parsed.append((entry, items))
    if label_attribute is None:
        names = list(classes) if classes is not None else ["object"]
        if len(names) != 1:
            raise CnnkitError(
                f"via_instances: without label_attribute every region is one class; "
                f"received classes={names}."
            )
    else:
        names = list(classes) if classes is not None else sorted(found_names)
        unknown = found_names - set(names)
        if unknown:
            raise CnnkitError(f"{path}: region classes {sorted(unknown)} are not in {names}.")
    label_of = {n: i + 1 for i, n in enumerate(names)}
    records = []
    for image_id, (entry, items) in enumerate(parsed):
        instances = []
        for polys, name in items:
            xy = np.asarray(polys[0]).reshape(-1, 2)
            box = [float(xy[:, 0].min()), float(xy[:, 1].min()),
                   float(xy[:, 0].max()), float(xy[:, 1].max())]  # fmt: skip
            label = 1 if name is None else label_of[str(name)]
            instances.append({"label": label, "segmentation": polys, "bbox": box, "iscrowd": 0})
        file = folder / entry["filename"]
        if not file.is_file():
            raise CnnkitError(f"{path}: image {entry['filename']} is not in {folder}.")
        records.append({"file": file, "image_id": image_id, "instances": instances})
    return InstanceDataset(records, ["__background__", *names], transform, f"via:{folder.name}")
