"""The head API: networks built from a head description, stored in the card, rebuilt on load."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cfimg.card import ModelCard
from cfimg.checkpoint import load_model, save_checkpoint
from cfimg.heads import POOLINGS, HeadSpec
from cfimg.models import (
    ClassifierWithPreprocessing,
    create_model,
    feature_module,
    get_arch,
    head_module,
    head_parameter_names,
    network_logits,
    pool_module,
    tile_origins,
)
from cfimg.pooling import AttentionPool, CovariancePool, RelationPool

LEGACY = json.loads((Path(__file__).parent / "data" / "legacy_models.json").read_text())


def _legacy_inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 48, 48, 3), generator=generator, dtype=torch.uint8)


@pytest.mark.parametrize("arch", sorted(LEGACY))
def test_default_head_builds_the_network_cfimg_0_1_built(arch):
    """Logits pinned with the version before heads were a choice: same modules, same init."""
    torch.manual_seed(0)
    network = create_model(arch, pretrained=False).eval()
    card = ModelCard.from_dict(LEGACY[arch]["card"])
    with torch.no_grad():
        _p, logits = ClassifierWithPreprocessing(network, card.preprocessing)(_legacy_inputs())
    assert len(network.state_dict()) == LEGACY[arch]["state_keys"]
    np.testing.assert_allclose(logits.numpy(), LEGACY[arch]["logits"], rtol=1e-4, atol=1e-6)


def test_checkpoint_whose_card_has_no_head_loads_with_the_default_head(tmp_path):
    arch = "efficientnet_lite0"
    torch.manual_seed(0)
    state = create_model(arch, pretrained=False).state_dict()
    old_card = dict(LEGACY[arch]["card"])
    assert "head" not in old_card
    path = tmp_path / "old.pt"
    save_checkpoint(path, card=ModelCard.from_dict(old_card), model_state=state)
    payload = torch.load(path, weights_only=True)
    payload["card"].pop("head")  # exactly what the older version wrote
    torch.save(payload, path)
    network, card = load_model(path)
    assert card.head == HeadSpec()
    with torch.no_grad():
        _p, logits = ClassifierWithPreprocessing(network, card.preprocessing)(_legacy_inputs())
    np.testing.assert_allclose(logits.numpy(), LEGACY[arch]["logits"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("arch", ["efficientnet_lite0", "mobilenet_v3_small", "resnet18"])
def test_every_pooling_builds_saves_and_reloads_identically(tmp_path, arch, pooling):
    head = HeadSpec(pooling=pooling, dropout=0.1)
    network = create_model(arch, head=head, pretrained=False).eval()
    with torch.no_grad():  # make the learned pooling parameters matter
        for parameter in pool_module(network).parameters():
            parameter.add_(0.05)
    card = ModelCard(arch=arch, preprocessing=get_arch(arch).preprocessing.with_size(64), head=head)
    save_checkpoint(tmp_path / "m.pt", card=card, model_state=network.state_dict())
    loaded, loaded_card = load_model(tmp_path / "m.pt")
    assert loaded_card.head == head
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), network(x))


@pytest.mark.parametrize("pooling", ["avg", "attn"])
@pytest.mark.parametrize("arch", ["efficientnet_lite0", "mobilenet_v3_small", "resnet18"])
def test_feature_module_is_the_last_spatial_map_the_pool_reads(arch, pooling):
    network = create_model(arch, head=HeadSpec(pooling=pooling), pretrained=False).eval()
    seen = {}
    feature_module(network).register_forward_hook(lambda _m, _i, out: seen.update(features=out))
    pool_module(network).register_forward_pre_hook(lambda _m, args: seen.update(pooled=args[0]))
    with torch.no_grad():
        network(torch.rand(1, 3, 64, 64))
    assert seen["features"].ndim == 4 and seen["features"].shape[-1] > 1
    assert seen["pooled"] is seen["features"]


def test_head_parameters_are_the_classifier_and_a_learned_pool():
    network = create_model("efficientnet_lite0", head=HeadSpec("attn"), pretrained=False)
    names = head_parameter_names(network)
    assert {"classifier.weight", "classifier.bias"} <= names
    assert any(name.startswith("global_pool.") for name in names)
    assert not any(name.startswith("blocks.") for name in names)
    assert head_module(network) is network.classifier


def test_attention_pool_starts_as_average_pooling_and_keeps_its_weights():
    pool = AttentionPool(channels=8)
    features = torch.rand(3, 8, 5, 7)
    torch.testing.assert_close(pool(features), features.mean(dim=(2, 3)))
    assert pool.last_weights.shape == (3, 5, 7)
    torch.testing.assert_close(pool.last_weights.sum(dim=(1, 2)), torch.ones(3))


def test_relation_pool_starts_as_average_pooling_and_takes_any_number_of_cells():
    pool = RelationPool(channels=8, dim=16, heads=4)
    for height, width in ((5, 7), (12, 12)):
        features = torch.rand(3, 8, height, width)
        torch.testing.assert_close(pool(features), features.mean(dim=(2, 3)))
    with torch.no_grad():
        torch.nn.init.normal_(pool.up.weight)
    features = torch.rand(2, 8, 4, 4)
    assert not torch.allclose(pool(features), features.mean(dim=(2, 3)))
    # the cells are compared with each other: a mean of what each cell gives alone would be
    # additive over cells, f([a, b]) + f([c, d]) == f([a, d]) + f([c, b]); attention is not
    a, b, c, d = torch.rand(4, 8, 1, 1)
    pair = lambda left, right: pool(torch.cat([left, right], dim=2)[None])[0]  # noqa: E731
    assert not torch.allclose(pair(a, b) + pair(c, d), pair(a, d) + pair(c, b))


def test_covariance_pool_starts_as_average_pooling_and_sees_what_occurs_together():
    pool = CovariancePool(channels=8, dim=4)
    for height, width in ((5, 7), (12, 12)):
        features = torch.rand(3, 8, height, width)
        torch.testing.assert_close(pool(features), features.mean(dim=(2, 3)))
    with torch.no_grad():
        torch.nn.init.normal_(pool.up.weight)
    # two photos whose channels have the same means over the cells, so average pooling cannot
    # tell them apart; in the second the upper channels of the two cells are swapped, which
    # changes which features occur together
    a, b = torch.rand(2, 8)
    swapped_a, swapped_b = torch.cat([a[:4], b[4:]]), torch.cat([b[:4], a[4:]])
    together = torch.stack([a, b], dim=1)[None, :, :, None]  # [1, 8, 2, 1]
    apart = torch.stack([swapped_a, swapped_b], dim=1)[None, :, :, None]
    torch.testing.assert_close(together.mean(dim=(2, 3)), apart.mean(dim=(2, 3)))
    assert not torch.allclose(pool(together), pool(apart))


def test_unknown_pooling_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="avg, max, avgmax, gem, attn, relate, cov"):
        HeadSpec(pooling="median")


@pytest.mark.parametrize(
    "arch, size_px", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
)
def test_larger_lite_backbones_load_their_packaged_imagenet_weights(arch, size_px):
    assert get_arch(arch).preprocessing.img_size_px == size_px
    network = create_model(arch, pretrained=True)
    random = create_model(arch, pretrained=False)
    stem = "conv_stem.weight"
    assert not torch.equal(network.state_dict()[stem], random.state_dict()[stem])


@pytest.mark.parametrize("pooling", ["max", "gem", "attn", "relate", "cov"])
def test_every_head_exports_to_onnx_and_matches_pytorch(tmp_path, pooling):
    from cfimg.preprocess import Preprocessing

    head = HeadSpec(pooling=pooling)
    torch.manual_seed(0)
    network = create_model("mobilenet_v3_small", head=head, pretrained=False).eval()
    with torch.no_grad():
        for parameter in pool_module(network).parameters():
            parameter.add_(0.1)  # attention that is not uniform, a GeM power that is not 3
        torch.nn.init.normal_(head_module(network).weight, std=1.0)
    prep = Preprocessing(img_size_px=48, resize_px=48)
    card = ModelCard(arch="mobilenet_v3_small", preprocessing=prep, head=head)
    onnx_engine, torch_engine, images = _exported_and_saved(tmp_path, network, card)
    assert onnx_engine.card.head == head
    np.testing.assert_allclose(
        onnx_engine.predict(images)[0], torch_engine.predict(images)[0], atol=1e-4
    )


def _exported_and_saved(tmp_path, network, card):
    """(ONNX engine, PyTorch engine) of `network` saved with `card` and exported, and 3 random
    frames of the card's size to feed both."""
    from cfimg.engines import load_engine
    from cfimg.export import export_onnx

    save_checkpoint(tmp_path / "m.pt", card=card, model_state=network.state_dict())
    report = export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", max_check_images=8)
    assert (tmp_path / "m.onnx").is_file(), report
    side = card.preprocessing.img_size_px
    images = np.random.default_rng(0).integers(0, 256, (3, side, side, 3), dtype=np.uint8)
    return load_engine(tmp_path / "m.onnx"), load_engine(tmp_path / "m.pt"), images


def _tiled_lite0(tiles: int = 2, tile_px: int = 48, frame_px: int = 64):
    """A random EfficientNet-Lite0 whose head runs on tiles, and its card."""
    from cfimg.preprocess import Preprocessing

    head = HeadSpec(pooling="relate", tiles=tiles, tile_px=tile_px)
    torch.manual_seed(0)
    network = create_model("efficientnet_lite0", head=head, pretrained=False).eval()
    with torch.no_grad():
        for parameter in pool_module(network).parameters():
            parameter.add_(0.1)
        # logits of a few units (the random backbone's features run to ~1e5): probabilities
        # that are neither 0 nor 1, so the parity checks below can fail
        torch.nn.init.normal_(head_module(network).weight, std=1e-5)
    prep = Preprocessing(img_size_px=frame_px, resize_px=frame_px)
    return network, ModelCard(arch="efficientnet_lite0", preprocessing=prep, head=head)


def test_a_tiled_head_averages_the_logits_of_tiles_spread_over_the_frame():
    network, _card = _tiled_lite0(tiles=3, frame_px=80)
    assert tile_origins(network, 80, 80) == [(t, left) for t in (0, 16, 32) for left in (0, 16, 32)]
    frames = torch.rand(2, 3, 80, 80)
    with torch.no_grad():
        by_hand = torch.stack(
            [
                network(frames[:, :, t : t + 48, left : left + 48])
                for t, left in tile_origins(network, 80, 80)
            ],
            dim=1,
        ).mean(dim=1)
        close = dict(rtol=1e-4, atol=1e-4)  # batched and one-by-one float sums differ a little
        torch.testing.assert_close(network_logits(network, frames), by_hand, **close)
        crop = frames[:, :, :48, :48]  # a training view is one tile: it passes whole
        torch.testing.assert_close(network_logits(network, crop), network(crop), **close)
        assert not torch.allclose(network_logits(network, frames), network(frames))


def test_a_tiled_head_exports_to_onnx_and_matches_pytorch(tmp_path):
    network, card = _tiled_lite0(tiles=2)  # TF-'same' padding: made static for the tile's size
    onnx_engine, torch_engine, images = _exported_and_saved(tmp_path, network, card)
    assert onnx_engine.card.head == card.head
    onnx_p, onnx_logits = onnx_engine.predict(images)
    torch_p, torch_logits = torch_engine.predict(images)
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)


def test_gradcam_of_a_tiled_head_covers_the_frame_and_explains_its_verdict():
    from cfimg.explain import gradcam_batch

    network, card = _tiled_lite0(tiles=2)
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    heatmaps, p_counterfeit = gradcam_batch(network, card, images)
    assert heatmaps.shape == (2, 64, 64)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    with torch.no_grad():
        verdict_p, _logits = ClassifierWithPreprocessing(network, card.preprocessing)(
            torch.from_numpy(images)
        )
    np.testing.assert_allclose(p_counterfeit, verdict_p[:, card.counterfeit_index], atol=1e-5)


def test_a_head_of_tiles_needs_a_tile_side():
    with pytest.raises(ValueError, match="tile side"):
        HeadSpec(tiles=2)
    with pytest.raises(ValueError, match="tiles 0"):
        HeadSpec(tiles=0)
