import copy
import io

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimbench import metrics
from slimbench.models import get_model


def flop_counter_macs(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name,shape", [("cifar_resnet20", (1, 3, 32, 32)), ("vgg8_dwsep", (1, 3, 32, 32)),
                                        ("mobilenet_v1", (1, 3, 32, 32)), ("fashion_cnn", (1, 3, 28, 28))])
def test_mac_counter_agrees_with_torch_flop_counter(name, shape):
    model = get_model(name).eval()
    x = torch.randn(shape)
    assert metrics.count_macs(model, x) == flop_counter_macs(model, x)


def test_resnet20_macs_match_the_literature():
    # He et al. CIFAR ResNet-20: about 41M multiply-accumulates per 32x32 image
    assert 40e6 < metrics.count_macs(get_model("cifar_resnet20"), torch.randn(1, 3, 32, 32)) < 42e6


def test_sparsity_and_nonzero_count_planted_zeros():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10, bias=False), torch.nn.Linear(10, 10))
    with torch.no_grad():
        model[0].weight[:3] = 0  # 30 of 200 prunable weights
    assert metrics.sparsity(model) == pytest.approx(30 / 200)
    assert metrics.count_stored_params(model) == 210
    assert metrics.count_nonzero(model) == 210 - 30 - int((model[1].bias == 0).sum())
    assert metrics.per_layer_sparsity(model) == {"0": pytest.approx(0.3), "1": 0.0}


def test_size_bytes_is_the_saved_state_dict():
    model = get_model("fashion_cnn")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert metrics.size_bytes(model) == len(buffer.getvalue())
    assert metrics.size_bytes(model) > 4 * metrics.count_stored_params(model)


def test_weight_bits_of_a_float_model():
    assert metrics.weight_bits(get_model("fashion_cnn")) == 32


def test_paired_latency_alternates_turns_abba_and_keeps_every_turn():
    calls = []
    first, second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    first.register_forward_hook(lambda *a: calls.append("A"))
    second.register_forward_hook(lambda *a: calls.append("B"))
    timing = metrics.paired_latency(first, second, torch.randn(1, 4), rounds=4, warmup=1, min_turn_ms=0)
    assert len(timing.reference_ms) == len(timing.case_ms) == 4 and min(timing.case_ms) > 0
    assert timing.forwards_per_turn == 1
    # warm-up AB, one probe each (AB), then turns A B | B A | A B | B A
    assert "".join(calls) == "AB" + "AB" + "ABBAABBA"


def test_paired_latency_turns_repeat_a_fast_model_up_to_the_minimum_turn_time():
    calls = []
    model = torch.nn.Linear(4, 4)
    model.register_forward_hook(lambda *a: calls.append(1))
    timing = metrics.paired_latency(model, copy.deepcopy(model), torch.randn(1, 4), rounds=2, warmup=0,
                                    min_turn_ms=50.0)
    assert timing.forwards_per_turn > 1  # a Linear(4, 4) forward takes far less than 50 ms
    assert len(calls) == 2 + 4 * timing.forwards_per_turn  # (the copy keeps the hook) two probes, four turns


def test_model_md5_follows_the_weights_not_the_object():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    b = copy.deepcopy(a)
    assert metrics.model_md5(a) == metrics.model_md5(b)
    with torch.no_grad():
        b[0].weight[0, 0] += 1e-7  # one float's last bits
    assert metrics.model_md5(a) != metrics.model_md5(b)
    b = copy.deepcopy(a)
    b[1].num_batches_tracked += 1  # buffers count too
    assert metrics.model_md5(a) != metrics.model_md5(b)


def test_model_md5_reads_quantized_models():
    from torch.ao.quantization import quantize_dynamic
    torch.manual_seed(0)
    q = quantize_dynamic(nn.Sequential(nn.Linear(8, 8)), {nn.Linear}, dtype=torch.qint8)
    assert metrics.model_md5(q) == metrics.model_md5(copy.deepcopy(q))
    assert len(metrics.model_md5(q)) == 32


def test_zipped_size_shrinks_with_zeros_and_per_layer_counts_differences():
    from slimbench.metrics import per_layer_params, zipped_size_bytes
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    sparse = copy.deepcopy(dense)
    with torch.no_grad():
        sparse[0].weight[:, :48].zero_()
    assert zipped_size_bytes(sparse) < 0.6 * zipped_size_bytes(dense)
    rows = per_layer_params(dense, sparse)
    assert rows[0] == {"module": "0", "before": 4096, "after": 1024, "difference": -3072}
    assert rows[1]["difference"] == 0
