import pytest
import torch

from psr.device import resolve_device
from psr.engine import fit
from psr.engine.runtime import resolve_amp


def test_amp_is_off_on_cpu_and_explicit_values_are_honoured():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None
    assert resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda(kit, tmp_path, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    cfg = kit.tiny_config(epochs1=3, epochs2=1, device="cuda", amp=amp, augment=kit.no_aug)
    result = fit(
        kit.tiny_model(),
        kit.make_split(48),
        kit.make_split(24, seed=1),
        cfg,
        tmp_path,
        model_config=kit.model_config,
    )
    losses = [h["train_loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
