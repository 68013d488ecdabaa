"""Damaged data and teacher files end in one-line IntegrityErrors naming the file and a fix."""

import gzip
import hashlib
import json

import pytest
import torch
from torchvision.datasets import FashionMNIST

from slimbench.config import Paths
from slimbench.datasets import fashion_mnist, load_dataset
from slimbench.datasets.base import ImageSet, RawDataset, load_prepared, save_prepared
from slimbench.errors import IntegrityError
from slimbench.teachers import TABLE_KEYS, load_teacher, read_teacher_meta


def one_line_error(excinfo, *parts: str) -> str:
    """The message of a raised IntegrityError: one line, with ``parts`` and a fix."""
    text = str(excinfo.value)
    assert "\n" not in text, text
    assert "fix:" in text, text
    for part in parts:
        assert part in text, text
    return text


def flip(path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


# -- prepared tensors -------------------------------------------------------------------------

MARKER = bytes(range(256))  # the train images' bytes, easy to find inside the saved file


def tiny_raw() -> RawDataset:
    images = torch.frombuffer(bytearray(MARKER), dtype=torch.uint8).view(4, 1, 8, 8).clone()
    return RawDataset(ImageSet(images, torch.arange(4)), ImageSet(images[:2].clone(), torch.arange(2)),
                      ["a", "b", "c", "d"], "f" * 32, (0.5,), (0.25,))


@pytest.fixture
def prepared(tmp_path):
    """tmp_path/data/prepared/digits.pt written by save_prepared from a tiny dataset."""
    path = Paths(tmp_path).prepared / "digits.pt"
    save_prepared(path, tiny_raw())
    return path


def test_prepared_round_trip(prepared):
    raw = load_prepared(prepared)
    assert torch.equal(raw.train.images, tiny_raw().train.images) and raw.classes == ["a", "b", "c", "d"]


def test_byte_flip_in_prepared_tensors_is_named_with_its_fix(prepared, tmp_path):
    offset = prepared.read_bytes().index(MARKER) + 100
    flip(prepared, offset)
    torch.load(prepared, weights_only=True)  # torch itself does not notice
    before = sorted(p.name for p in prepared.parent.iterdir())
    with pytest.raises(IntegrityError) as excinfo:
        load_dataset("digits", paths=Paths(tmp_path))
    one_line_error(excinfo, str(prepared), "content md5", "`slimbench prepare digits`", "`dvc repro data@digits`")
    assert sorted(p.name for p in prepared.parent.iterdir()) == before  # nothing rebuilt or left half-written


def test_byte_flip_in_prepared_metadata_is_caught(tmp_path):
    path = tmp_path / "digits.pt"
    raw = tiny_raw()
    raw.source_md5 = "0123456789abcdef" * 2
    save_prepared(path, raw)
    data = path.read_bytes()
    flip(path, data.index(b"0123456789abcdef"), 0x01)  # '0' -> '1': still loads, with another source md5
    assert torch.load(path, weights_only=True)["source_md5"].startswith("1")  # which keys the case cache
    with pytest.raises(IntegrityError) as excinfo:
        load_prepared(path)
    one_line_error(excinfo, str(path))


def test_prepared_file_without_content_md5_says_how_to_rebuild(tmp_path):
    raw = tiny_raw()
    path = tmp_path / "fashion_mnist.pt"  # as written before the content md5 existed
    torch.save({"train": (raw.train.images, raw.train.labels), "test": (raw.test.images, raw.test.labels),
                "classes": raw.classes, "source_md5": raw.source_md5, "mean": raw.mean, "std": raw.std}, path)
    with pytest.raises(IntegrityError) as excinfo:
        load_prepared(path)
    one_line_error(excinfo, str(path), "no content md5", "`slimbench prepare fashion_mnist`")


def test_unreadable_prepared_file_is_one_line(tmp_path):
    path = tmp_path / "digits.pt"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(IntegrityError) as excinfo:
        load_prepared(path)
    one_line_error(excinfo, str(path), "`slimbench prepare digits`")


# -- Fashion-MNIST .gz files (tiny stand-ins with their md5 sums patched in) -----------------------

NAMES = [url.rsplit("/", 1)[-1] for url, _ in FashionMNIST.resources]


@pytest.fixture
def fake_fmnist(monkeypatch):
    """name -> .gz bytes of tiny random content, with FashionMNIST's md5 sums pointed at them."""
    gen = torch.Generator().manual_seed(0)
    files, resources, decompressed = {}, [], {}
    for name in NAMES:
        content = torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).numpy().tobytes()
        files[name] = gzip.compress(content, mtime=0)
        resources.append((f"https://example.invalid/{name}", hashlib.md5(files[name]).hexdigest()))
        decompressed[name] = hashlib.md5(content).hexdigest()
    monkeypatch.setattr(FashionMNIST, "resources", resources)
    monkeypatch.setattr(fashion_mnist, "DECOMPRESSED_MD5", decompressed)
    return files


def write_mirror(folder, files):
    (folder / "fashion-mnist").mkdir(parents=True)
    for name, data in files.items():
        (folder / "fashion-mnist" / name).write_bytes(data)
    return folder / "fashion-mnist"


@pytest.mark.parametrize("damage", ["truncated", "byte_flipped", "not_gzip"])
def test_corrupt_gz_in_a_mirror_is_named(fake_fmnist, tmp_path, damage):
    mirror = write_mirror(tmp_path / "m", fake_fmnist)
    bad = mirror / NAMES[2]
    if damage == "truncated":
        bad.write_bytes(fake_fmnist[NAMES[2]][:1000])
    elif damage == "byte_flipped":
        flip(bad, 2000)  # inside the deflate data: bad data or a CRC mismatch
    else:
        bad.write_bytes(b"this is no gzip file at all")
    (mirror / NAMES[0]).unlink()  # a missing earlier file must not hide the corrupt one
    with pytest.raises(IntegrityError) as excinfo:
        fashion_mnist.load_raw([str(tmp_path / "m")], online=False)
    text = one_line_error(excinfo, str(bad), "unreadable gzip", "dvc checkout --force datasets.dvc")
    assert "Traceback" not in text


def test_corrupt_copy_falls_through_to_a_good_mirror(fake_fmnist, tmp_path, capsys):
    bad = write_mirror(tmp_path / "first", fake_fmnist) / NAMES[1]
    bad.write_bytes(fake_fmnist[NAMES[1]][:100])
    write_mirror(tmp_path / "second", fake_fmnist)
    staged = tmp_path / "staged"
    sums = fashion_mnist._stage_local([str(tmp_path / "first"), str(tmp_path / "second")], staged)
    assert set(sums) == set(NAMES)
    assert (staged / NAMES[1][:-3]).read_bytes() == gzip.decompress(fake_fmnist[NAMES[1]])
    note = capsys.readouterr().err  # the skipped copy is reported, in one line
    assert note.count("\n") == 1 and str(bad) in note and str(tmp_path / "second") in note


def test_every_corrupt_copy_is_named_when_no_mirror_has_a_good_one(fake_fmnist, tmp_path):
    first = write_mirror(tmp_path / "first", fake_fmnist) / NAMES[3]
    second = write_mirror(tmp_path / "second", fake_fmnist) / NAMES[3]
    first.write_bytes(b"junk")
    second.write_bytes(gzip.compress(b"well-formed gzip, wrong content"))
    with pytest.raises(IntegrityError) as excinfo:
        fashion_mnist.load_raw([str(tmp_path / "first"), str(tmp_path / "second")], online=False)
    one_line_error(excinfo, str(first), str(second), "expected md5")


# -- teacher metadata ------------------------------------------------------------------------

@pytest.fixture
def teacher_root(tmp_path, digits_model):
    """A root with teacher t1 (the digits CNN) whose checkpoint and JSON agree."""
    from slimbench.fileio import md5sum

    (tmp_path / "params.yaml").write_text("teachers:\n  t1: {dataset: digits, model: fashion_cnn}\n")
    (tmp_path / "teachers").mkdir()
    torch.save({"state_dict": digits_model.state_dict()}, tmp_path / "teachers" / "t1.pt")
    meta = {"name": "t1", "dataset": "digits", "architecture": "fashion_cnn", "model_kwargs": {"image_size": 8},
            "num_classes": 10, "in_channels": 1, "md5": md5sum(tmp_path / "teachers" / "t1.pt")}
    (tmp_path / "teachers" / "t1.json").write_text(json.dumps(meta))
    load_teacher("t1", Paths(tmp_path))  # sound as written
    return Paths(tmp_path), meta


@pytest.mark.parametrize("text, what", [
    (None, "lacks md5"),
    ('{"architecture": "fashion_cnn", ', "JSONDecodeError"),
    ("", "JSONDecodeError"),
    ("[1, 2]", "not an object"),
    ("\xff\xfe", "unreadable"),
])
def test_broken_teacher_json_is_named_with_a_git_fix(teacher_root, text, what):
    paths, meta = teacher_root
    json_path = paths.teachers / "t1.json"
    if text is None:
        json_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "md5"}))
    elif text == "\xff\xfe":
        json_path.write_bytes(b"\xff\xfe\x00")
    else:
        json_path.write_text(text)
    with pytest.raises(IntegrityError) as excinfo:
        load_teacher("t1", paths)
    one_line_error(excinfo, str(json_path), what, "`git checkout teachers/t1.json`", "`dvc repro teacher@t1`")


def test_teacher_table_keys_are_checked(teacher_root):
    paths, meta = teacher_root
    json_path = paths.teachers / "t1.json"
    json_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "dataset"}))
    assert read_teacher_meta(json_path)["name"] == "t1"  # loading needs no dataset
    with pytest.raises(IntegrityError) as excinfo:
        read_teacher_meta(json_path, required=TABLE_KEYS)
    one_line_error(excinfo, str(json_path), "lacks dataset")


def test_malformed_md5_in_teacher_json(teacher_root):
    paths, meta = teacher_root
    (paths.teachers / "t1.json").write_text(json.dumps({**meta, "md5": 12}))
    with pytest.raises(IntegrityError) as excinfo:
        load_teacher("t1", paths)
    one_line_error(excinfo, str(paths.teachers / "t1.json"), "malformed md5")


def test_corrupt_teacher_checkpoint_names_a_forced_pull(teacher_root):
    paths, _ = teacher_root
    ckpt = paths.teachers / "t1.pt"
    flip(ckpt, ckpt.stat().st_size // 2)
    with pytest.raises(IntegrityError) as excinfo:
        load_teacher("t1", paths)
    one_line_error(excinfo, str(ckpt), "`dvc pull --force teachers/t1.pt`", "`git checkout teachers/t1.json`")


def test_checkpoint_that_does_not_fit_its_json(teacher_root):
    paths, meta = teacher_root
    (paths.teachers / "t1.json").write_text(json.dumps({**meta, "num_classes": 7}))
    with pytest.raises(IntegrityError) as excinfo:
        load_teacher("t1", paths)
    one_line_error(excinfo, str(paths.teachers / "t1.pt"), str(paths.teachers / "t1.json"), "does not fit")
