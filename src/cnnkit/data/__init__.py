"""Datasets: real-file readers with checked downloads, synthetic task data, joint transforms.

Readers return ``torch.utils.data.Dataset``s; the small ones (:class:`ArrayDataset`) also
give the whole set in memory with ``.tensors()``. Files live under ``$CNNKIT_DATA`` or
``~/.cache/cnnkit``; ``download=True`` fetches them with checksum verification.
"""

# synthetic task data and joint transforms (their own modules):
from cnnkit.data import synthetic, transforms
from cnnkit.data.base import ArrayDataset
from cnnkit.data.cifar import cifar10, cifar100
from cnnkit.data.coco import InstanceDataset, coco_instances, collate_instances, via_instances
from cnnkit.data.digits import digits
from cnnkit.data.download import (
    RemoteFile,
    default_root,
    download_file,
    ensure_files,
    extract_archive,
    file_digest,
)
from cnnkit.data.folders import image_folder, segmentation_folder
from cnnkit.data.idx import read_idx
from cnnkit.data.isbi import isbi2012
from cnnkit.data.masks import polygons_to_mask, rle_decode, rle_encode
from cnnkit.data.mnist import fashion_mnist, mnist
from cnnkit.data.mnist1d import mnist1d
from cnnkit.data.safe_pickle import restricted_load, restricted_loads
from cnnkit.data.text import ZHANG_ALPHABET, text_csv
from cnnkit.data.ucr import ucr
