import json
import shutil

import pytest
import torch

from slimbench.config import Paths
from slimbench.errors import ConfigError, IntegrityError
from slimbench.models import get_model
from slimbench.teachers import PUBLIC_CHECKPOINTS, load_public, load_teacher
from slimbench.training import evaluate

from conftest import SHARED, needs_shared


@needs_shared("teachers", "cifar10")
@pytest.mark.parametrize("arch", sorted(PUBLIC_CHECKPOINTS))
def test_public_checkpoints_load_strictly(arch, paths):
    model = load_public(arch, paths)
    reference = get_model(arch).state_dict()
    assert model.state_dict().keys() == reference.keys()


@needs_shared("teachers", "cifar10")
@needs_shared("datasets", "cifar10-jpeg")
def test_public_resnet20_is_accurate_on_cifar10_jpeg(paths):
    from slimbench.datasets import load_dataset

    data = load_dataset("cifar10_jpeg", subset={"test": 1000}, paths=paths)
    # shared/README: about 81% on all 10,000 JPEG test images as shipped
    assert 76 < evaluate(load_public("cifar_resnet20", paths), data.test, data) < 86


@needs_shared("teachers", "cifar10")
def test_corrupt_public_checkpoint_names_file_md5s_and_fix(tmp_path):
    shutil.copytree(SHARED / "teachers" / "cifar10", tmp_path / "mirror")
    (tmp_path / "mirror" / "resnet20-12fca82f.th").write_bytes(b"truncated")
    (tmp_path / "params.yaml").write_text("data:\n  teacher_mirrors: [mirror]\n")
    with pytest.raises(IntegrityError, match=r"corrupt file .*resnet20-12fca82f.th: expected md5 "
                                             r"1f38c81cdebd6bcce9b03d082161a36c, got [0-9a-f]{32}; fix:"):
        load_public("cifar_resnet20", Paths(tmp_path))


def test_missing_and_unknown_teachers(tmp_path):
    (tmp_path / "params.yaml").write_text("teachers:\n  t1: {dataset: digits, model: fashion_cnn}\n")
    with pytest.raises(ConfigError, match="unknown teacher 'nope'; valid teachers: t1"):
        load_teacher("nope", Paths(tmp_path))
    with pytest.raises(IntegrityError, match="missing teacher metadata .*t1.json; fix: `git checkout teachers/t1.json`"):
        load_teacher("t1", Paths(tmp_path))


def test_teacher_checkpoint_md5_is_verified(tmp_path, digits_model):
    (tmp_path / "params.yaml").write_text("teachers:\n  t1: {dataset: digits, model: fashion_cnn}\n")
    (tmp_path / "teachers").mkdir()
    torch.save({"state_dict": digits_model.state_dict()}, tmp_path / "teachers" / "t1.pt")
    meta = {"architecture": "fashion_cnn", "model_kwargs": {"image_size": 8}, "num_classes": 10,
            "in_channels": 1, "md5": "0" * 32}
    (tmp_path / "teachers" / "t1.json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="expected md5 0{32}, got"):
        load_teacher("t1", Paths(tmp_path))
    from slimbench.fileio import md5sum

    meta["md5"] = md5sum(tmp_path / "teachers" / "t1.pt")
    (tmp_path / "teachers" / "t1.json").write_text(json.dumps(meta))
    model, loaded = load_teacher("t1", Paths(tmp_path))
    assert not model.training and loaded["architecture"] == "fashion_cnn"
