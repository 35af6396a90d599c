"""Device and precision errors name the key the user set."""

from __future__ import annotations

import pytest
import torch

from medfoundry.errors import ConfigError
from medfoundry.training.device import resolve_device, resolve_precision


def test_messages_name_the_key_they_are_given() -> None:
    with pytest.raises(ConfigError, match=r"^training.device: unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match=r"^--device: unknown device 'tpu'"):
        resolve_device("tpu", "--device")
    with pytest.raises(ConfigError, match=r"^finetune.precision: fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"), "finetune.precision")
    assert resolve_precision("bf16", torch.device("cpu")) == (torch.bfloat16, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_a_gpu_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--device: 'cuda' requested but no CUDA device is available"):
        resolve_device("cuda", "--device")
