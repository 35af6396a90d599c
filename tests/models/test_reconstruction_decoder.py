from __future__ import annotations

import torch

from medfoundry.models.reconstruction_decoder import ReconstructionDecoder


def test_unshuffle_puts_each_kept_token_back_at_its_position() -> None:
    """Without blocks, each output row depends on one input: a kept token or the mask token."""
    decoder = ReconstructionDecoder(8, 12, dim=16, depth=0, num_heads=2, use_mask_token=True)
    kept_positions = torch.tensor([[5, 0, 9, 2]])  # the order in which the encoder kept them
    order = torch.cat([kept_positions, torch.tensor([[p for p in range(16) if p not in (5, 0, 9, 2)]])], 1)
    ids_restore = order.argsort(dim=1)
    tokens = torch.randn(1, 4, 8)
    base = decoder(tokens, 4, ids_restore)
    for i, position in enumerate(kept_positions[0].tolist()):
        changed = tokens.clone()
        changed[0, i] += 1.0
        differs = (decoder(changed, 4, ids_restore) - base).abs().sum(-1)[0] > 0
        assert differs.nonzero().flatten().tolist() == [position]


def test_full_grid_decoding_and_positions() -> None:
    decoder = ReconstructionDecoder(8, 12, dim=16, depth=1, num_heads=2)
    out = decoder(torch.zeros(2, 9, 8), grid=3)
    assert out.shape == (2, 9, 12)
    assert not torch.allclose(out[0, 0], out[0, 1])  # identical tokens differ only by position
    assert decoder.mask_token is None
