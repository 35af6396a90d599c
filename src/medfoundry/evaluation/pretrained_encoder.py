"""Encoders on equal footing: a medfoundry checkpoint, a timm model with ImageNet weights, or either
architecture with random weights, all behind one interface with ``.embed(images)``.

A *source* is a checkpoint folder (written by ``medfoundry pretrain``) or a timm model name.
``pretrained=False`` builds the same architecture with random weights: the from-scratch
baseline. timm backbones keep their BatchNorm layers (replacing them would throw away the
ImageNet statistics); checkpoint encoders keep whatever normalisation they were trained with.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.models.config import EncoderConfig, ModelConfig
from medfoundry.models.encoder import HUB_PREFIXES, Encoder, create_encoder
from medfoundry.models.encoder_resize import load_resized_weights
from medfoundry.registry import unknown_name_message
from medfoundry.released import is_released
from medfoundry.training.checkpoint import load_checkpoint_config
from medfoundry.training.model_loading import load_multitask_model

__all__ = ["PretrainedEncoder", "load_encoder", "looks_like_path", "pooled_levels", "weights_sha256"]

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224


class PretrainedEncoder(nn.Module):
    """An image encoder and what is needed to rebuild it under decoders and heads.

    Input: ``(B, 3, H, W)`` float32 in [0, 1] (normalisation happens inside).

    Args:
        encoder: The encoder (in eval mode).
        config: Its architecture, as ``create_encoder`` arguments (``pretrained`` is False:
            the weights live in ``encoder``).
        image_size: Side of the square input the encoder is evaluated at.
        source: Where it came from (checkpoint folder or timm name), for reports.
        pretrained: Whether the source's weights were loaded (False: random initialisation).

    Attributes:
        weights_sha256: Hash of the weights, identifying cached features.
    """

    def __init__(
        self, encoder: Encoder, *, config: EncoderConfig, image_size: int, source: str, pretrained: bool
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.image_size = image_size
        self.source = source
        self.pretrained = pretrained
        self.weights_sha256 = weights_sha256(encoder)

    @property
    def out_channels(self) -> int:
        """Width of the embedding (of the deepest map)."""
        return self.encoder.out_channels

    @property
    def num_levels(self) -> int:
        """Maps in the feature pyramid."""
        return len(self.encoder.feature_info)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature pyramid: ``(B, C_i, H/s_i, W/s_i)`` maps, finest first."""
        return list(self.encoder(images))

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, levels: Sequence[int] = (-1,)) -> torch.Tensor:
        """Global averages of pyramid maps, concatenated: ``(B, sum of their channels)`` float32.

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            levels: Which maps (``-1``: the deepest, the default, as probes and heads use it;
                ``[-2, -1]``: also the one above it).
        """
        return pooled_levels(self.encoder(images), levels)

    def model_config(self, **decoders: object) -> ModelConfig:
        """A ``ModelConfig`` that rebuilds this architecture (weights not included)."""
        return ModelConfig.model_validate(
            {"image_size": self.image_size, "encoder": self.config.model_dump(), **decoders}
        )


def load_encoder(
    source: str | Path,
    *,
    pretrained: bool = True,
    image_size: int | None = None,
    model_kwargs: dict[str, object] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> PretrainedEncoder:
    """Load an encoder to embed images, probe or fine-tune.

    Args:
        source: A medfoundry checkpoint folder, a released encoder (``medfoundry:<name>``,
            ``medfoundry ls`` lists them), a timm model name (e.g. ``resnet18``), or an
            exported encoder: ``hf-hub:ORG/NAME`` (``medfoundry export --hf``, then pushed; read
            through the Hugging Face cache) or ``local-dir:DIR``.
        pretrained: Load the source's weights: the checkpoint's, or timm's ImageNet weights
            (downloaded from the Hugging Face hub, so they need internet access the first
            time). ``False`` gives the same architecture with random weights.
        image_size: Input side in pixels; default: the checkpoint's (an exported encoder's
            ``input_size``), or 224 for timm names.
        model_kwargs: Extra ``timm.create_model`` arguments for timm names (e.g.
            ``{"window_size": 4}`` for a Swin at small sizes).
        seed: Seeds the random initialisation (``pretrained=False``).
        device: Where the encoder lives.

    Returns:
        The encoder in eval mode.

    Raises:
        ConfigError: a folder that is not a medfoundry checkpoint, an unknown timm name, or
            ImageNet weights that cannot be downloaded; one line each.

    Examples:
        >>> encoder = load_encoder("resnet10t", pretrained=False, image_size=32)
        >>> tuple(encoder.embed(torch.rand(2, 3, 32, 32)).shape)
        (2, 512)
    """
    text = str(source)
    with torch.random.fork_rng(devices=[]):  # random weights must not shift the caller's RNG stream
        torch.manual_seed(seed)
        if is_released(text) or (looks_like_path(text) and not text.startswith(HUB_PREFIXES)):
            loaded = _from_checkpoint(Path(text), pretrained, image_size)
        else:
            loaded = _from_timm(text, pretrained, image_size, model_kwargs)
    return loaded.to(device).eval()


def pooled_levels(maps: Sequence[torch.Tensor], levels: Sequence[int] = (-1,)) -> torch.Tensor:
    """Global averages of the pyramid maps at ``levels``, concatenated: ``(B, sum of their
    channels)`` float32 (every embedding of an encoder's pyramid is pooled this one way)."""
    return torch.cat([maps[level].float().mean(dim=(-2, -1)) for level in levels], dim=1)


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def looks_like_path(text: str) -> bool:
    """Whether an encoder source names a folder (a checkpoint) rather than a timm model."""
    return Path(text).exists() or "/" in text or "\\" in text or text.startswith(".")


def _from_checkpoint(path: Path, pretrained: bool, image_size: int | None) -> PretrainedEncoder:
    if not (is_released(path) or path.exists()):
        raise ConfigError(f"encoder '{path}': no such checkpoint folder (nor is it a timm model name)")
    model_cfg = ModelConfig.model_validate(load_checkpoint_config(path)["model"])
    size = image_size or model_cfg.image_size
    config = model_cfg.encoder.model_copy(update={"pretrained": False})
    if not pretrained:
        encoder = create_encoder(img_size=size, **config.model_dump())
    elif size == model_cfg.image_size:
        encoder = load_multitask_model(path)[0].encoder
    else:  # the input-size contract: rebuilt at the new size, or refused before any work
        rebuilt = create_encoder(img_size=size, **config.model_dump())
        trained = load_multitask_model(path)[0].encoder
        try:
            encoder = load_resized_weights(
                rebuilt, trained, trained_size=model_cfg.image_size, image_size=size
            )
        except ConfigError as e:
            raise ConfigError(f"encoder '{path}': {p}" for p in e.problems) from None
        log.warning(
            "encoder %s was trained at %d px; evaluating it at %d px", path, model_cfg.image_size, size
        )
    return PretrainedEncoder(encoder, config=config, image_size=size, source=str(path), pretrained=pretrained)


def _from_timm(
    name: str, pretrained: bool, image_size: int | None, model_kwargs: dict[str, object] | None
) -> PretrainedEncoder:
    exported = name.startswith(HUB_PREFIXES)
    if not (exported or timm.is_model(name)):
        raise ConfigError(
            f"{unknown_name_message('timm model', name, timm.list_models())}; "
            "or give the folder of a medfoundry checkpoint"
        )
    config = EncoderConfig(name=name, model_kwargs=model_kwargs, use_groupnorm=False)
    size = image_size or (None if exported else DEFAULT_IMAGE_SIZE)
    try:
        encoder = create_encoder(
            name,
            pretrained=pretrained,
            img_size=size,
            model_kwargs=model_kwargs,
            use_groupnorm=False,
            config_key=None,  # the message names the encoder (and the study its entry)
        )
    except ConfigError as e:
        raise ConfigError(f"encoder '{name}' (pretrained={pretrained}): {p}" for p in e.problems) from None
    size = size or int(encoder.backbone.pretrained_cfg["input_size"][-1])  # an export's own size
    return PretrainedEncoder(encoder, config=config, image_size=size, source=name, pretrained=pretrained)
