import functools
import gzip
import hashlib
import http.server
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10
from torchvision.io import encode_jpeg

from slimbench.datasets import DATASETS, load_dataset
from slimbench.datasets.base import ImageSet, load_prepared, seeded_split
from slimbench.datasets.cifar10 import load_cifar10, load_cifar10_jpeg
from slimbench.datasets.fashion_mnist import _verified
from slimbench.datasets.fashion_mnist import load_raw as load_fashion_mnist
from slimbench.datasets.food11 import load_food11
from slimbench.errors import IntegrityError

from conftest import SHARED, needs_shared

FMNIST = SHARED / "datasets" / "fashion-mnist"


@pytest.fixture
def http_mirror(tmp_path):
    """Serve ``tmp_path/www`` on loopback; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_splits_are_seeded_disjoint_and_carved_from_train(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.val.labels, again.val.labels)
    assert len(digits.train) + len(digits.val) == 1438 and len(digits.test) == 359
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.val.images, digits.val.images)


def test_seeded_split_partitions_every_item():
    items = ImageSet(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100))
    train, val = seeded_split(items, 0.2, seed=3)
    assert len(val) == 20 and sorted(train.labels.tolist() + val.labels.tolist()) == list(range(100))


def test_subsets_cap_each_part(digits):
    small = load_dataset("digits", subset={"train": 100, "val": 50, "test": 30})
    assert (len(small.train), len(small.val), len(small.test)) == (100, 50, 30)


@needs_shared("datasets", "fashion-mnist")
def test_fashion_mnist_from_a_local_mirror_with_official_md5s():
    raw = load_fashion_mnist([str(FMNIST)], online=False)
    assert raw.train.images.shape == (60000, 1, 28, 28) and len(raw.test) == 10000
    assert raw.classes[0] == "T-shirt/top"


@needs_shared("datasets", "fashion-mnist")
def test_fashion_mnist_accepts_file_urls_and_rewritten_gzip_headers(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    regzipped = tmp_path / name  # Debian's package recompressed the files: new .gz md5, same bytes
    regzipped.write_bytes(gzip.compress(gzip.decompress((FMNIST / name).read_bytes()), mtime=1))
    assert _verified(regzipped, name, "bb300cfdad3c16e7a12a480ee83cd310")
    regzipped.write_bytes(gzip.compress(b"not the labels"))
    assert not _verified(regzipped, name, "bb300cfdad3c16e7a12a480ee83cd310")


@needs_shared("datasets", "fashion-mnist")
def test_corrupt_fashion_mnist_file_names_file_and_both_md5s(tmp_path):
    mirror = tmp_path / "fashion-mnist"
    mirror.mkdir()
    for f in FMNIST.glob("*.gz"):
        (mirror / f.name).symlink_to(f)
    bad = mirror / "t10k-labels-idx1-ubyte.gz"
    bad.unlink()
    bad.write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(IntegrityError, match=r"corrupt file .*t10k-labels.*expected md5 bb300cfdad3c16e7a12a480ee83cd310, got [0-9a-f]{32}; fix:"):
        load_fashion_mnist([str(tmp_path)], online=False)


def test_missing_data_without_online_access_says_how_to_get_it(tmp_path):
    with pytest.raises(IntegrityError, match="Fashion-MNIST files not found in .*; fix: .*SLIMBENCH_MIRROR"):
        load_fashion_mnist([str(tmp_path)], online=False)
    with pytest.raises(IntegrityError, match="cifar10-jpeg.tar.gz not found"):
        load_cifar10_jpeg([str(tmp_path)], online=False)


@needs_shared("datasets", "fashion-mnist")
def test_fashion_mnist_through_torchvision_download_from_an_http_mirror(http_mirror):
    www, url = http_mirror
    (www / "fashion-mnist").mkdir()
    for f in FMNIST.glob("*.gz"):
        (www / "fashion-mnist" / f.name).symlink_to(f)
    raw = load_fashion_mnist([url], online=False)
    assert len(raw.train) == 60000 and int(raw.test.labels[0]) == 9  # first test item: ankle boot


def _write_tiny_cifar(folder: Path, per_batch: int = 4) -> Path:
    """A CIFAR-10 archive in the official python format, tiny."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        blob = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                "labels": rng.integers(0, 10, per_batch).tolist(), "batch_label": name}
        (batches / name).write_bytes(pickle.dumps(blob))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta))
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    return archive


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """The generated archive, with torchvision's expected md5 sums pointed at it."""
    archive = _write_tiny_cifar(tmp_path / "src")
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    batches = tmp_path / "src" / "cifar-10-batches-py"
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(archive))
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(batches / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(batches / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5(batches / "batches.meta")})
    return archive


def test_cifar10_from_a_local_archive_in_the_official_format(tiny_cifar, tmp_path):
    mirror = tmp_path / "mirror" / "cifar10"
    mirror.mkdir(parents=True)
    (mirror / tiny_cifar.name).write_bytes(tiny_cifar.read_bytes())
    raw = load_cifar10([str(tmp_path / "mirror")], online=False)
    assert raw.train.images.shape == (20, 3, 32, 32) and len(raw.test) == 4 and raw.classes[0] == "airplane"


def test_cifar10_through_torchvision_download(tiny_cifar, http_mirror):
    www, url = http_mirror
    (www / "cifar10").mkdir()
    (www / "cifar10" / tiny_cifar.name).write_bytes(tiny_cifar.read_bytes())
    raw = load_cifar10([url], online=False)
    assert len(raw.train) == 20


def test_cifar10_corrupt_archive_is_named(tiny_cifar, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / tiny_cifar.name).write_bytes(b"junk")
    with pytest.raises(IntegrityError, match="corrupt file .*cifar-10-python.tar.gz: expected md5"):
        load_cifar10([str(tmp_path / "m")], online=False)


@needs_shared("datasets", "cifar10-jpeg")
def test_cifar10_jpeg_is_its_own_dataset_with_all_images():
    data = load_dataset("cifar10_jpeg")
    assert (len(data.train) + len(data.val), len(data.test)) == (50000, 10000)
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_food11(root: Path) -> None:
    for folder, count in [("training", 3), ("validation", 1), ("evaluation", 2)]:
        (root / folder).mkdir(parents=True)
        for label in range(11):
            for n in range(count):
                img = torch.full((3, 40, 50), label * 20, dtype=torch.uint8)
                (root / folder / f"{label}_{n}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())


def test_food11_course_layout(tmp_path):
    _write_food11(tmp_path / "food11")
    raw = load_food11([str(tmp_path)], online=False, image_size=16)
    assert raw.train.images.shape == (44, 3, 16, 16) and len(raw.test) == 22
    assert torch.bincount(raw.test.labels).tolist() == [2] * 11
    assert abs(int(raw.train.images[raw.train.labels == 5].float().mean()) - 100) <= 3


def test_food11_rejects_misnamed_files(tmp_path):
    _write_food11(tmp_path / "food11")
    (tmp_path / "food11" / "training" / "pizza_1.jpg").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="pizza_1.jpg is not named `<label>_<n>.jpg`"):
        load_food11([str(tmp_path)], online=False)


def test_corrupt_prepared_cache_says_how_to_rebuild(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(IntegrityError, match="corrupt prepared data .*x.pt.*fix: delete it and run `slimbench prepare x`"):
        load_prepared(bad)


def test_every_registered_dataset_has_a_description():
    assert all(DATASETS.get(n).description for n in DATASETS.list())
