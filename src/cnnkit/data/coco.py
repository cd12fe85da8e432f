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

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnkit._core.errors import CnnkitError, short_repr
from cnnkit._core.json_file import read_json
from cnnkit._core.paths import inside
from cnnkit.data.base import JointTransform
from cnnkit.data.images import load_image, to_chw_float
from cnnkit.data.masks import polygons_to_mask, rle_decode

#: the largest annotation file read, in bytes (COCO's instances_train2017.json: 448 MB)
MAX_JSON_BYTES = 1 << 30
#: the most images (COCO ``images``, VIA entries) a file may list
MAX_IMAGES = 1_000_000
#: the most annotations (COCO ``annotations``, VIA regions over all images) a file may hold
MAX_ANNOTATIONS = 10_000_000
#: the most categories a COCO file may list
MAX_CATEGORIES = 100_000
#: the most points one polygon may have
MAX_POINTS = 100_000


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
                size = seg.get("size")
                if isinstance(size, list | tuple) and tuple(size) != (height, width):
                    raise CnnkitError(  # before decoding: the size sets the memory it takes
                        f"{rec['file']}: an RLE mask is {short_repr(tuple(size), 60)} but the "
                        f"image is {(height, width)} (H, W)."
                    )
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
        return read_json(
            path, MAX_JSON_BYTES, "an annotation file",
            "cnnkit.data.coco.MAX_JSON_BYTES; raise it for a larger dataset",
        )  # fmt: skip
    except FileNotFoundError:
        raise CnnkitError(f"annotation file {path} does not exist.") from None


def _count(path: Path, what: str, n: int, limit: int, name: str) -> None:
    if n > limit:
        raise CnnkitError(
            f"{path}: {n} {what}, over the limit of {limit} (cnnkit.data.coco.{name}; raise it "
            "for a larger dataset)."
        )


def _objects(path: Path, data: dict, key: str, limit: int, name: str) -> list[dict]:
    """``data[key]``, checked to be a list of at most ``limit`` JSON objects."""
    value = data.get(key, [])
    if not isinstance(value, list):
        raise CnnkitError(f"{path}: {key!r} must be a list; found a {type(value).__name__}.")
    _count(path, f"entries in {key!r}", len(value), limit, name)
    for i, v in enumerate(value):
        if not isinstance(v, dict):
            raise CnnkitError(f"{path}: {key}[{i}] must be an object; found {short_repr(v, 60)}.")
    return value


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CnnkitError(f"{what} must be an integer; found {short_repr(value, 60)}.")
    return value


def _numbers(values, what: str, limit: int | None = None) -> list[float]:
    """A list of finite numbers (at most ``limit``, default 2 x MAX_POINTS), as floats."""
    limit = 2 * MAX_POINTS if limit is None else limit
    if not isinstance(values, list):
        raise CnnkitError(f"{what} must be a list of numbers; found {short_repr(values, 60)}.")
    if len(values) > limit:
        raise CnnkitError(
            f"{what} holds {len(values)} numbers, over the limit of {limit} "
            "(cnnkit.data.coco.MAX_POINTS points)."
        )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise CnnkitError(f"{what} holds {short_repr(v, 60)}; expected finite numbers.")
    return [float(v) for v in values]


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
    where = [str(path)]  # the entry being read, for the message of an unforeseen error
    try:
        records, categories = _coco_records(data, images, path, include_crowd, where)
        names = ["__background__"] + [str(c["name"]) for c in categories]
        ids = [c["id"] for c in categories]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        what = f"the field {err} is missing" if isinstance(err, KeyError) else repr(err)
        raise CnnkitError(
            f"{path}: not a well-formed COCO file: {what[:200]} (in {where[0]}). "
            "Images need 'id' and 'file_name'; annotations need 'image_id' and 'category_id', "
            "a 'bbox' [x, y, w, h] and/or a 'segmentation'; categories need 'id' and 'name'."
        ) from err
    ds = InstanceDataset(records, names, transform, path.name)
    ds.category_ids = ids
    return ds


def _coco_records(data: dict, images: Path, path: Path, include_crowd: bool, where: list):
    """The per-image records and sorted categories of a COCO dict. Each entry is checked
    (its fields, their types, its file name inside ``images``) and a problem raises
    :class:`CnnkitError` naming the entry; ``where[0]`` follows the entry being read."""
    categories = _objects(path, data, "categories", MAX_CATEGORIES, "MAX_CATEGORIES")
    for i, c in enumerate(categories):
        where[0] = f"categories[{i}]"
        if "id" not in c or "name" not in c:
            raise CnnkitError(f"{path}: categories[{i}] needs 'id' and 'name'.")
        _int(c["id"], f"{path}: categories[{i}] 'id'")
    categories = sorted(categories, key=lambda c: c["id"])
    label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    records, by_id = [], {}
    for i, img in enumerate(_objects(path, data, "images", MAX_IMAGES, "MAX_IMAGES")):
        where[0] = f"images[{i}]"
        for key in ("id", "file_name"):
            if key not in img:
                raise CnnkitError(
                    f"{path}: images[{i}] has no {key!r}; images need 'id' and 'file_name'."
                )
        image_id = int(img["id"])
        size = [img.get("height"), img.get("width")]
        for key, v in zip(("height", "width"), size, strict=True):
            if v is not None and (_int(v, f"{path}: image {image_id} {key!r}") < 1):
                raise CnnkitError(f"{path}: image {image_id} has {key} {v}; expected >= 1.")
        rec = {
            "file": inside(images, img["file_name"], f"{path}: image {image_id}"),
            "image_id": image_id,
            "height": size[0],
            "width": size[1],
            "instances": [],
        }
        by_id[rec["image_id"]] = rec
        records.append(rec)
    for i, ann in enumerate(
        _objects(path, data, "annotations", MAX_ANNOTATIONS, "MAX_ANNOTATIONS")
    ):
        name = f"annotation {short_repr(ann['id'], 40)}" if "id" in ann else f"annotations[{i}]"
        where[0] = name
        if ann.get("iscrowd", 0) and not include_crowd:
            continue
        for key in ("image_id", "category_id"):
            if key not in ann:
                raise CnnkitError(f"{path}: {name} has no {key!r}.")
        rec = by_id.get(ann["image_id"])
        if rec is None:
            raise CnnkitError(
                f"{path}: annotation {short_repr(ann.get('id'), 40)} refers to image_id "
                f"{short_repr(ann['image_id'], 40)}, which is not in 'images'."
            )
        if ann["category_id"] not in label_of:
            raise CnnkitError(
                f"{path}: annotation {short_repr(ann.get('id'), 40)} has category_id "
                f"{short_repr(ann['category_id'], 40)}, not among the categories "
                f"{short_repr(sorted(label_of), 200)}."
            )
        seg = _segmentation(ann.get("segmentation"), rec, f"{path}: {name} segmentation")
        bbox = ann.get("bbox")
        box = None
        if bbox is not None:
            x, y, w, h = _box(bbox, f"{path}: {name} bbox")
            if w < 0 or h < 0:
                raise CnnkitError(
                    f"{path}: {name} has the box {short_repr(bbox, 80)} [x, y, w, h] with a "
                    "negative width or height; w and h must be >= 0."
                )
            box = [x, y, x + w, y + h]
        rec["instances"].append(
            {
                "label": label_of[ann["category_id"]],
                "segmentation": seg,
                "bbox": box,
                "iscrowd": _int(ann.get("iscrowd", 0), f"{path}: {name} 'iscrowd'"),
            }
        )
    return records, categories


def _box(bbox, what: str) -> list[float]:
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise CnnkitError(f"{what} must be [x, y, w, h]; found {short_repr(bbox, 80)}.")
    return _numbers(bbox, what)


def _segmentation(seg, rec: dict, what: str):
    """A COCO ``segmentation``: ``None``/``[]``, a list of flat polygons, or an RLE dict."""
    if seg is None:
        return []
    if isinstance(seg, dict):
        counts, size = seg.get("counts"), seg.get("size")
        if isinstance(counts, list) and size is None and rec["height"] and rec["width"]:
            size = [rec["height"], rec["width"]]
        if not isinstance(counts, str | list) or not (
            isinstance(size, list) and len(size) == 2 and all(_is_size(v) for v in size)
        ):
            raise CnnkitError(
                f"{what}: an RLE needs 'counts' (a string or a list of ints) and 'size' "
                f"[H, W]; found {short_repr(seg, 80)}."
            )
        if isinstance(counts, list):
            _numbers(counts, f"{what} counts", limit=MAX_POINTS * 100)
        return {"size": size, "counts": counts}
    if not isinstance(seg, list):
        raise CnnkitError(
            f"{what} must be a list of polygons or an RLE; found {short_repr(seg, 80)}."
        )
    polygons = []
    for j, poly in enumerate(seg):
        values = _numbers(poly, f"{what} polygon {j}")
        if len(values) % 2:
            raise CnnkitError(f"{what} polygon {j} has an odd number of coordinates.")
        polygons.append(values)
    return polygons


def _is_size(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1 << 16


def _via_regions(entry: dict, where: str) -> list[dict]:
    regions = entry.get("regions", [])
    regions = list(regions.values()) if isinstance(regions, dict) else regions
    if not isinstance(regions, list):
        raise CnnkitError(
            f"{where}: 'regions' must be a list or an object; found {short_repr(regions, 60)}."
        )
    for r, region in enumerate(regions):
        if not isinstance(region, dict):
            raise CnnkitError(
                f"{where}, region {r}: a region must be an object with 'shape_attributes'; "
                f"found {short_repr(region, 60)}."
            )
    return regions


def _via_shape(shape, where: str) -> list[list[float]]:
    if not isinstance(shape, dict):
        raise CnnkitError(
            f"{where}: 'shape_attributes' must be an object like {{'name': 'polygon', "
            f"'all_points_x': [...], 'all_points_y': [...]}}; found {short_repr(shape, 60)}."
        )
    kind = shape.get("name")
    if kind in ("polygon", "polyline"):
        xs = _numbers(shape.get("all_points_x", []), f"{where}: all_points_x", limit=MAX_POINTS)
        ys = _numbers(shape.get("all_points_y", []), f"{where}: all_points_y", limit=MAX_POINTS)
        if len(xs) != len(ys) or len(xs) < 3:
            raise CnnkitError(
                f"{where}: a polygon needs as many x as y points, at least 3; found "
                f"{len(xs)} x and {len(ys)} y."
            )
        return [[v for xy in zip(xs, ys) for v in xy]]
    if kind == "rect":
        missing = [k for k in ("x", "y", "width", "height") if k not in shape]
        if missing:
            raise CnnkitError(
                f"{where}: a rect needs x, y, width and height; {missing[0]!r} is missing."
            )
        x, y, w, h = _numbers([shape[k] for k in ("x", "y", "width", "height")], f"{where}: rect")
        if w < 0 or h < 0:
            raise CnnkitError(f"{where}: a rect with width {w} and height {h}; both must be >= 0.")
        return [[x, y, x + w, y, x + w, y + h, x, y + h]]
    raise CnnkitError(
        f"{where}: region shape {short_repr(kind, 40)} is not supported (polygon, rect)."
    )


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
    _count(path, "image entries", len(entries), MAX_IMAGES, "MAX_IMAGES")
    found_names = set()
    parsed = []
    regions_seen = 0
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            raise CnnkitError(f"{path}: entry {short_repr(key, 80)} has no 'filename'.")
        if not isinstance(entry["filename"], str):
            raise CnnkitError(
                f"{path}: entry {short_repr(key, 80)} has the filename "
                f"{short_repr(entry['filename'], 60)}; expected a file name."
            )
        file = inside(folder, entry["filename"], f"{path}: entry {short_repr(key, 80)}")
        items = []
        regions = _via_regions(entry, f"{path} ({entry['filename']})")
        regions_seen += len(regions)
        _count(path, "regions", regions_seen, MAX_ANNOTATIONS, "MAX_ANNOTATIONS")
        for r, region in enumerate(regions):
            where = f"{path} ({entry['filename']}, region {r})"
            if "shape_attributes" not in region:
                raise CnnkitError(f"{where}: the region has no 'shape_attributes'.")
            polys = _via_shape(region["shape_attributes"], where)
            name = None
            if label_attribute is not None:
                attributes = region.get("region_attributes") or {}
                if not isinstance(attributes, dict):
                    raise CnnkitError(
                        f"{where}: 'region_attributes' must be an object; found "
                        f"{short_repr(attributes, 60)}."
                    )
                name = attributes.get(label_attribute)
                if isinstance(name, dict):  # VIA checkbox attributes: {'name': True}
                    name = next((k for k, v in name.items() if v), None)
                if name is None:
                    raise CnnkitError(f"{where}: no region attribute {label_attribute!r}.")
                found_names.add(str(name))
            items.append((polys, name))
        parsed.append((entry, file, items))
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
    for image_id, (entry, file, items) in enumerate(parsed):
        instances = []
        for polys, name in items:
            xy = np.asarray(polys[0]).reshape(-1, 2)
            box = [float(xy[:, 0].min()), float(xy[:, 1].min()),
                   float(xy[:, 0].max()), float(xy[:, 1].max())]  # fmt: skip
            label = 1 if name is None else label_of[str(name)]
            instances.append({"label": label, "segmentation": polys, "bbox": box, "iscrowd": 0})
        if not file.is_file():
            raise CnnkitError(f"{path}: image {entry['filename']} is not in {folder}.")
        records.append({"file": file, "image_id": image_id, "instances": instances})
    return InstanceDataset(records, ["__background__", *names], transform, f"via:{folder.name}")
