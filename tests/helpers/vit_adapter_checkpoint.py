"""The key set and shapes of ViT-Adapter's released segmentation checkpoints, written from the sources.

This is the test's own, independent description of the published layout (it does not read
restorebench's MMSEG_KEY_TABLE): the modules named below build exactly these state-dict entries.

Sources (github.com/czczup/ViT-Adapter, segmentation/, read with the search tool):
  mmseg_custom/models/backbones/base/beit.py       BEiT: cls_token, patch_embed.proj, blocks.{i}.{gamma_1,
      gamma_2, norm1, attn.qkv (no bias), attn.q_bias, attn.v_bias, attn.relative_position_bias_table
      ((2g-1)^2 + 3, heads), attn.relative_position_index (persistent buffer, g*g + 1 square),
      attn.proj, norm2, mlp.fc1, mlp.fc2}; no absolute position embedding (use_abs_pos_emb=False)
  mmseg_custom/models/backbones/beit_adapter.py    level_embed (3, E), spm, interactions, up
      (ConvTranspose2d E->E, 2x2), norm1..norm4 (SyncBatchNorm)
  mmseg_custom/models/backbones/adapter_modules.py SpatialPriorModule (stem 0/1/3/4/6/7, conv2..4 .0/.1,
      fc1..fc4 with bias), Injector (query_norm, feat_norm, attn, gamma), Extractor (query_norm, feat_norm,
      attn, ffn.fc1, ffn.dwconv.dwconv, ffn.fc2, ffn_norm), extra_extractors.{0,1} in the last block;
      ops MSDeformAttn: sampling_offsets (heads*levels*points*2), attention_weights (heads*levels*points),
      value_proj (E -> E*ratio), output_proj (E*ratio -> E)
  mmseg_custom/models/plugins/msdeformattn_pixel_decoder.py  input_convs.{0,1,2} (ConvModule: conv with
      bias + gn), encoder.layers.{i} (attentions.0 = mmcv MultiScaleDeformableAttention, ffns.0.layers.0.0,
      ffns.0.layers.1, norms.0, norms.1), level_encoding (Embedding 3), lateral_convs.0 / output_convs.0
      (conv without bias + gn), mask_feature (1x1 conv)
  mmseg_custom/models/decode_heads/mask2former_head.py  query_embed, query_feat, level_embed (Embeddings),
      transformer_decoder.layers.{i} (attentions.0 cross / attentions.1 self: .attn = nn.MultiheadAttention
      in_proj_weight, in_proj_bias, out_proj; ffns.0.layers.0.0 / .1; norms.0..2), transformer_decoder.post_norm,
      cls_embed (num_classes + 1), mask_embed.{0,2,4}; mmseg BaseDecodeHead's conv_seg (num_classes)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Arch:
    """ViT-Adapter + Mask2Former sizes. Defaults: configs/ade20k/mask2former_beitv2_adapter_large_896_80k_ade20k_ss.py."""

    embed: int = 1024
    depth: int = 24
    heads: int = 16
    img_size: int = 896
    patch: int = 16
    conv_inplane: int = 64
    deform_heads: int = 16
    points: int = 4
    deform_ratio: float = 0.5
    cffn_ratio: float = 0.25
    interactions: list[list[int]] = field(default_factory=lambda: [[0, 5], [6, 11], [12, 17], [18, 23]])
    feat: int = 1024  # decode_head feat_channels = out_channels
    pixel_ffn: int = 4096
    pixel_layers: int = 6
    pixel_heads: int = 32
    queries: int = 200
    decoder_layers: int = 9
    decoder_ffn: int = 4096
    num_classes: int = 150


def _ln(prefix: str, dim: int) -> dict[str, tuple]:
    return {prefix + ".weight": (dim,), prefix + ".bias": (dim,)}


def _bn(prefix: str, dim: int) -> dict[str, tuple]:
    return {**_ln(prefix, dim), prefix + ".running_mean": (dim,), prefix + ".running_var": (dim,),
            prefix + ".num_batches_tracked": ()}


def _linear(prefix: str, cin: int, cout: int) -> dict[str, tuple]:
    return {prefix + ".weight": (cout, cin), prefix + ".bias": (cout,)}


def _deform(prefix: str, dim: int, heads: int, levels: int, points: int, ratio: float = 1.0) -> dict[str, tuple]:
    value = int(dim * ratio)
    return {**_linear(prefix + ".sampling_offsets", dim, heads * levels * points * 2),
            **_linear(prefix + ".attention_weights", dim, heads * levels * points),
            **_linear(prefix + ".value_proj", dim, value), **_linear(prefix + ".output_proj", value, dim)}


def _mha(prefix: str, dim: int) -> dict[str, tuple]:
    return {prefix + ".in_proj_weight": (3 * dim, dim), prefix + ".in_proj_bias": (3 * dim,),
            **_linear(prefix + ".out_proj", dim, dim)}


def published_shapes(a: Arch) -> dict[str, tuple]:
    """{checkpoint key: shape} of a ViT-Adapter BEiT-adapter + Mask2Former segmentation checkpoint."""
    e, s = a.embed, {}
    g = a.img_size // a.patch
    s["backbone.cls_token"] = (1, 1, e)
    s["backbone.patch_embed.proj.weight"] = (e, 3, a.patch, a.patch)
    s["backbone.patch_embed.proj.bias"] = (e,)
    for i in range(a.depth):
        b = f"backbone.blocks.{i}."
        s[b + "gamma_1"] = s[b + "gamma_2"] = (e,)
        s.update(_ln(b + "norm1", e))
        s[b + "attn.qkv.weight"] = (3 * e, e)
        s[b + "attn.q_bias"] = s[b + "attn.v_bias"] = (e,)
        s[b + "attn.relative_position_bias_table"] = ((2 * g - 1) ** 2 + 3, a.heads)
        s[b + "attn.relative_position_index"] = (g * g + 1, g * g + 1)
        s.update(_linear(b + "attn.proj", e, e))
        s.update(_ln(b + "norm2", e))
        s.update(_linear(b + "mlp.fc1", e, 4 * e))
        s.update(_linear(b + "mlp.fc2", 4 * e, e))
    c = a.conv_inplane
    s["backbone.level_embed"] = (3, e)
    for idx, (cin, cout) in zip((0, 3, 6), ((3, c), (c, c), (c, c)), strict=True):
        s[f"backbone.spm.stem.{idx}.weight"] = (cout, cin, 3, 3)
        s.update(_bn(f"backbone.spm.stem.{idx + 1}", cout))
    for name, cin, cout in (("conv2", c, 2 * c), ("conv3", 2 * c, 4 * c), ("conv4", 4 * c, 4 * c)):
        s[f"backbone.spm.{name}.0.weight"] = (cout, cin, 3, 3)
        s.update(_bn(f"backbone.spm.{name}.1", cout))
    for n, cin in zip(("fc1", "fc2", "fc3", "fc4"), (c, 2 * c, 4 * c, 4 * c), strict=True):
        s[f"backbone.spm.{n}.weight"] = (e, cin, 1, 1)
        s[f"backbone.spm.{n}.bias"] = (e,)
    hidden = int(e * a.cffn_ratio)

    def extractor(p: str) -> None:
        s.update(_ln(p + ".query_norm", e))
        s.update(_ln(p + ".feat_norm", e))
        s.update(_deform(p + ".attn", e, a.deform_heads, 1, a.points, a.deform_ratio))
        s.update(_linear(p + ".ffn.fc1", e, hidden))
        s[p + ".ffn.dwconv.dwconv.weight"] = (hidden, 1, 3, 3)
        s[p + ".ffn.dwconv.dwconv.bias"] = (hidden,)
        s.update(_linear(p + ".ffn.fc2", hidden, e))
        s.update(_ln(p + ".ffn_norm", e))

    for i in range(len(a.interactions)):
        p = f"backbone.interactions.{i}"
        s.update(_ln(p + ".injector.query_norm", e))
        s.update(_ln(p + ".injector.feat_norm", e))
        s.update(_deform(p + ".injector.attn", e, a.deform_heads, 3, a.points, a.deform_ratio))
        s[p + ".injector.gamma"] = (e,)
        extractor(p + ".extractor")
        if i == len(a.interactions) - 1:
            extractor(p + ".extra_extractors.0")
            extractor(p + ".extra_extractors.1")
    s["backbone.up.weight"] = (e, e, 2, 2)
    s["backbone.up.bias"] = (e,)
    for k in range(1, 5):
        s.update(_bn(f"backbone.norm{k}", e))
    # pixel decoder
    f, pd = a.feat, "decode_head.pixel_decoder."
    for i in range(3):
        s[pd + f"input_convs.{i}.conv.weight"] = (f, e, 1, 1)
        s[pd + f"input_convs.{i}.conv.bias"] = (f,)
        s.update(_ln(pd + f"input_convs.{i}.gn", f))
    for i in range(a.pixel_layers):
        p = pd + f"encoder.layers.{i}."
        s.update(_deform(p + "attentions.0", f, a.pixel_heads, 3, 4))
        s.update(_linear(p + "ffns.0.layers.0.0", f, a.pixel_ffn))
        s.update(_linear(p + "ffns.0.layers.1", a.pixel_ffn, f))
        s.update(_ln(p + "norms.0", f))
        s.update(_ln(p + "norms.1", f))
    s[pd + "level_encoding.weight"] = (3, f)
    s[pd + "lateral_convs.0.conv.weight"] = (f, e, 1, 1)
    s.update(_ln(pd + "lateral_convs.0.gn", f))
    s[pd + "output_convs.0.conv.weight"] = (f, f, 3, 3)
    s.update(_ln(pd + "output_convs.0.gn", f))
    s[pd + "mask_feature.weight"] = (f, f, 1, 1)
    s[pd + "mask_feature.bias"] = (f,)
    # transformer decoder and prediction heads
    s["decode_head.query_embed.weight"] = s["decode_head.query_feat.weight"] = (a.queries, f)
    s["decode_head.level_embed.weight"] = (3, f)
    for i in range(a.decoder_layers):
        p = f"decode_head.transformer_decoder.layers.{i}."
        s.update(_mha(p + "attentions.0.attn", f))
        s.update(_mha(p + "attentions.1.attn", f))
        s.update(_linear(p + "ffns.0.layers.0.0", f, a.decoder_ffn))
        s.update(_linear(p + "ffns.0.layers.1", a.decoder_ffn, f))
        for n in range(3):
            s.update(_ln(p + f"norms.{n}", f))
    s.update(_ln("decode_head.transformer_decoder.post_norm", f))
    s.update(_linear("decode_head.cls_embed", f, a.num_classes + 1))
    for n in (0, 2, 4):
        s.update(_linear(f"decode_head.mask_embed.{n}", f, f))
    s["decode_head.conv_seg.weight"] = (a.num_classes, f, 1, 1)
    s["decode_head.conv_seg.bias"] = (a.num_classes,)
    return s


INTEGER_KEYS = ("relative_position_index", "num_batches_tracked")


def synthetic_checkpoint(a: Arch, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the published layout (distinct values everywhere, so a test can find each by value)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in published_shapes(a).items():
        if key.endswith(INTEGER_KEYS):
            out[key] = torch.randint(0, 10, shape, generator=gen, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.1
    return out


def parameter_count(shapes: dict[str, tuple]) -> int:
    """Parameters (not buffers) of a published key set."""
    return sum(int(torch.tensor(s).prod()) if s else 1 for k, s in shapes.items()
               if not k.endswith((*INTEGER_KEYS, "running_mean", "running_var")))
