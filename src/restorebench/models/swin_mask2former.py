"""Swin Transformer + Mask2Former, whole (transformers' modules), turned restorer.

    x (B, 3, H, W) in [0, 1] -> ImageNet-normalise -> reflect-pad to a multiple of 32
    -> SwinBackbone: maps at strides 4, 8, 16, 32
    -> Mask2FormerPixelDecoder: 1x1 projections of strides 8/16/32 -> `encoder_layers` multi-scale
       deformable-attention encoder layers -> `multi_scale_features` (strides 32, 16, 8; feature_size wide)
       -> FPN step onto stride 4 -> `mask_features` (B, mask_feature_size, H/4, W/4)
    -> QueryDecoder: Mask2FormerTransformerModule (object queries; masked-attention decoder layers that
       cross-attend to the three multi-scale maps in turn) -> per query q: hidden state h_q (layer-normed)
       -> channel weights w_q = class_predictor(h_q) (3 values) and mask m_q = sigmoid(mask_embed(h_q) .
       mask_features) (H/4 x W/4) -> image_4 = sum_q w_q m_q: (B, 3, H/4, W/4)
    -> RestorationHead(concat(mask_features, image_4), x) -> residual; output x + residual, cropped to H, W.

This is Mask2Former's semantic inference (`semantic_inference` in facebookresearch/Mask2Former
mask_former_model.py: einsum("qc,qhw->chw", softmax(class logits)[..., :-1], sigmoid(mask logits))) with 3
output channels instead of 150 classes. Two choices differ from it, on purpose:
  - The class embedding is a Linear(hidden_dim, 3) with no softmax and no "no object" column: an image
    residual is signed and unbounded, and a softmax would confine every query's colour to a simplex
    (non-negative, summing to at most 1); there is no "no object" outcome when every query paints. This
    3-way predictor is the one new tensor of the query decoder (the checkpoint's 151-way predictor is
    dropped).
  - The masks keep the sigmoid of semantic inference: the checkpoint's mask embedding was trained for
    sigmoid (soft membership) masks, so each query keeps painting the region it learnt to segment.

Tensor paths that carry information to the image (everything else is not computed):
  1. input -> RestorationHead's shallow full-resolution branch;
  2. backbone -> pixel decoder -> mask_features -> RestorationHead (concatenated);
  3. mask_features -> per-query masks (einsum with the mask embedding) -> image_4 -> RestorationHead;
  4. multi_scale_features (+ transformer level embedding, sine positions) -> cross-attention keys/values
     of every decoder layer -> query states; the learnt query features and query positions
     (queries_features, queries_embedder) -> self/cross attention -> final layer norm -> class_predictor
     (channel weights) and mask_predictor (mask embedding) -> image_4.
The intermediate decoder layers' masks gate the next layer's cross-attention (Mask2Former's masked
attention: a detached, thresholded mask, as in the original), and with `aux_loss=True` each intermediate
layer also paints an image through the same head (deep supervision, `aux_outputs`); off by default.

Loading a facebook/mask2former-swin-*-ade-semantic snapshot fills `backbone.*` (from
`model.pixel_level_module.encoder.*`), `decoder.*` (from `model.pixel_level_module.decoder.*`) and
`query_decoder.transformer_module.*` (from `model.transformer_module.*`): every tensor except the 151-way
`class_predictor` (and the loss's `criterion.empty_weight` buffer).

transformers' multi-scale deformable attention for this decoder is pure PyTorch (F.grid_sample in
`multi_scale_deformable_attention`); no custom CUDA op is involved, on CPU or GPU.

Variants (facebook/mask2former-swin-{tiny,small,large}-ade-semantic configs and Mask2Former's
maskformer2_swin_*_bs16_160k configs: feature_size = mask_feature_size = hidden_dim = 256, 6 encoder
layers, encoder FFN 1024, 8 heads, 100 queries, decoder FFN 2048, decoder_layers 10 as transformers counts
them (9 masked-attention layers + the prediction from the learnt queries), common stride 4, drop_path 0.3):
    demo    Swin embed 16, depths 1,1,1,1, window 4; decoder width 32, 1 encoder layer, 8 queries,
            2 decoder layers
    swin-t  embed 96, depths 2,2,6,2, heads 3,6,12,24, window 7 (Mask2Former Swin-T: 47.4M parameters)
    swin-s  embed 96, depths 2,2,18,2, heads 3,6,12,24, window 7
    swin-l  embed 192, depths 2,2,18,2, heads 6,12,24,48, window 12
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from transformers import Mask2FormerConfig, SwinConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoderLayer,
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerTransformerModule,
)

from restorebench.models.heads import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    RestorationHead,
    SegmentationRestorer,
    pad_to_multiple,
    swin_layer_id,
)
from restorebench.models.swin_upernet import (
    DEMO_HEAD,
    HEAD_KEYS,
    SWIN_ARCH,
    SWIN_KEY_RULES,
    SWIN_KEYS,
    make_swin_backbone,
    snapshot_arch,
    swin_config,
)
from restorebench.models.weights import adapt_keys, load_checked, read_pretrained

VARIANTS: tuple[str, ...] = ("demo", "swin-t", "swin-s", "swin-l")
AUX_LOSS = True  # deep supervision: aux_loss=True keeps aux_outputs in training (Mask2FormerRestorer)

PIXEL_DECODER_KEYS = ("feature_size", "mask_feature_size", "encoder_layers", "encoder_feedforward_dim",
                      "num_attention_heads")
PIXEL_DECODER_DEFAULT: dict[str, int] = dict(
    feature_size=256, mask_feature_size=256, encoder_layers=6, encoder_feedforward_dim=1024, num_attention_heads=8
)
PIXEL_DECODER_DEMO: dict[str, int] = dict(
    feature_size=32, mask_feature_size=32, encoder_layers=1, encoder_feedforward_dim=64, num_attention_heads=2
)

# The masked-attention transformer decoder (Mask2FormerConfig fields; the hub configs' values, which are
# also Mask2FormerConfig's defaults). decoder_layers counts as transformers does: 9 layers + 1.
TRANSFORMER_KEYS = ("hidden_dim", "decoder_layers", "num_queries", "dim_feedforward")
TRANSFORMER_DEFAULT: dict[str, int] = dict(hidden_dim=256, decoder_layers=10, num_queries=100, dim_feedforward=2048)
TRANSFORMER_DEMO: dict[str, int] = dict(hidden_dim=32, decoder_layers=3, num_queries=8, dim_feedforward=64)

# Hub Mask2Former checkpoints -> this module: pixel-level module and transformer module, then the Swin
# renames. Not mapped (so not loaded): `class_predictor.*` (151-way) and `criterion.empty_weight`.
M2F_KEY_RULES: list[tuple[str, str]] = [
    (r"^model\.pixel_level_module\.encoder\.", "backbone."),
    (r"^model\.pixel_level_module\.decoder\.", "decoder."),
    (r"^model\.transformer_module\.", "query_decoder.transformer_module."),
    *SWIN_KEY_RULES,
]


def deformable_init_(
    sampling_offsets: nn.Linear, attention_weights: nn.Linear, n_heads: int, n_levels: int, n_points: int
) -> None:
    """Deformable DETR init: offsets start on a ring of head directions (point i at distance i + 1), uniform
    attention (zero weights). Shared by the Mask2Former pixel decoder and the ViT-Adapter's attention."""
    with torch.no_grad():
        nn.init.zeros_(sampling_offsets.weight)
        thetas = torch.arange(n_heads, dtype=torch.float32) * (2.0 * math.pi / n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(n_heads, 1, 1, 2)
        grid = grid.repeat(1, n_levels, n_points, 1)
        for i in range(n_points):
            grid[:, :, i, :] *= i + 1
        sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(attention_weights.weight)
        nn.init.zeros_(attention_weights.bias)


def init_pixel_decoder_(decoder: Mask2FormerPixelDecoder) -> None:
    """Initialise a standalone Mask2FormerPixelDecoder as Mask2Former does.

    transformers initialises it only through Mask2FormerPreTrainedModel._init_weights (its `level_embed` is
    allocated uninitialised), so a decoder built on its own needs this. Follows that method and the original
    (facebookresearch/Mask2Former, msdeformattn.py): level embeddings N(0, 1); deformable attention with zero
    offset weights, offset biases on a ring of directions (point i at distance i + 1), zero attention
    weights (uniform attention), Xavier value/output projections; convs c2_xavier_fill (kaiming_uniform,
    a=1, zero bias); linears Xavier; norms at identity.
    """
    with torch.no_grad():
        for m in decoder.modules():
            if isinstance(m, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
                deformable_init_(m.sampling_offsets, m.attention_weights, m.n_heads, m.n_levels, m.n_points)
                nn.init.xavier_uniform_(m.value_proj.weight)
                nn.init.zeros_(m.value_proj.bias)
                nn.init.xavier_uniform_(m.output_proj.weight)
                nn.init.zeros_(m.output_proj.bias)
        deform = {id(p) for m in decoder.modules()
                  if isinstance(m, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention)
                  for p in m.parameters()}
        for m in decoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and id(m.weight) not in deform:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(decoder.level_embed)


def mask2former_config(**cfg: int) -> Mask2FormerConfig:
    """A Mask2FormerConfig for the pixel decoder and transformer decoder built here (the Swin backbone_config
    inside it is a placeholder: the backbone is built separately). cfg: PIXEL_DECODER_KEYS, TRANSFORMER_KEYS."""
    return Mask2FormerConfig(
        backbone_config=SwinConfig(out_features=["stage1", "stage2", "stage3", "stage4"]),
        feature_strides=[4, 8, 16, 32],
        common_stride=4,
        **{**PIXEL_DECODER_DEFAULT, **TRANSFORMER_DEFAULT, **cfg},
    )


def make_pixel_decoder(feature_channels: Sequence[int], **cfg: int) -> Mask2FormerPixelDecoder:
    """A Mask2Former pixel decoder over 4 maps at strides 4, 8, 16, 32 with `feature_channels` channels.

    cfg: PIXEL_DECODER_KEYS (feature_size, mask_feature_size, encoder_layers, encoder_feedforward_dim,
    num_attention_heads). feature_size must be a multiple of 32 (GroupNorm(32, .)).
    forward(list of 4 maps).mask_features: (B, mask_feature_size, H/4, W/4).
    """
    decoder = Mask2FormerPixelDecoder(mask2former_config(**cfg), feature_channels=list(feature_channels))
    init_pixel_decoder_(decoder)
    return decoder


class QueryDecoder(nn.Module):
    """Mask2Former's masked-attention transformer decoder + a 3-channel class embedding, painting an image.

    forward(multi_scale_features (3 maps, strides 32/16/8, feature_size channels), mask_features
    (B, mask_feature_size, h, w)) -> (B, out_channels, h, w) = sum_q class_predictor(h_q) * sigmoid(m_q),
    Mask2Former's semantic inference without the softmax / no-object column (see the module docstring).
    With `intermediate=True` the images painted after each earlier decoder layer are kept in
    `self.intermediate_images` (for deep supervision); otherwise that list is empty.
    """

    def __init__(self, config: Mask2FormerConfig, out_channels: int = 3) -> None:
        super().__init__()
        self.transformer_module = Mask2FormerTransformerModule(config.feature_size, config)
        # the checkpoint's class predictor is Linear(hidden_dim, num_labels + 1); this one paints channels
        self.class_predictor = nn.Linear(config.hidden_dim, out_channels)
        self.intermediate_images: list[Tensor] = []
        init_transformer_module_(self.transformer_module)

    def paint(self, hidden: Tensor, mask_logits: Tensor) -> Tensor:
        """hidden (Q, B, D) layer-normed query states, mask_logits (B, Q, h, w) -> (B, out_channels, h, w)."""
        weights = self.class_predictor(hidden.transpose(0, 1))  # (B, Q, C)
        return torch.einsum("bqc,bqhw->bchw", weights, mask_logits.sigmoid())

    def forward(self, multi_scale_features: Sequence[Tensor], mask_features: Tensor, *,
                intermediate: bool = False) -> Tensor:
        out = self.transformer_module(list(multi_scale_features), mask_features)
        states, masks = out.intermediate_hidden_states, out.masks_queries_logits
        self.intermediate_images = (
            [self.paint(h, m) for h, m in zip(states[:-1], masks[:-1], strict=True)] if intermediate else []
        )
        return self.paint(states[-1], masks[-1])


def init_transformer_module_(module: Mask2FormerTransformerModule) -> None:
    """Initialise a standalone Mask2FormerTransformerModule as Mask2FormerPreTrainedModel._init_weights does:
    decoder layers' matrices Xavier-uniform, cross-attention input bias zero, query / level embeddings
    N(0, 1), input projections (if any) Xavier with zero bias; the mask MLP keeps nn.Linear's init."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, Mask2FormerMaskedAttentionDecoderLayer):
                for p in m.parameters():
                    if p.dim() > 1:
                        nn.init.xavier_uniform_(p)
                nn.init.zeros_(m.cross_attn.in_proj_bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight)
        for proj in module.input_projections:
            if isinstance(proj, nn.Conv2d):
                nn.init.xavier_uniform_(proj.weight)
                nn.init.zeros_(proj.bias)


class Mask2FormerRestorer(SegmentationRestorer):
    """The forward shared by swin_mask2former and vit_adapter: backbone features -> `decoder` (pixel decoder)
    -> `query_decoder` (QueryDecoder) -> concat(mask_features, painted 1/4 image) -> `head`.

    Subclasses build `normalize`, `backbone`, `decoder`, `query_decoder`, `head` (a RestorationHead over
    mask_feature_size + 3 channels) and implement `features(x) -> 4 maps at strides 4, 8, 16, 32`.
    aux_loss: in training mode, also keep `aux_outputs`: the full-resolution images (B, 3, H, W) painted
    by each intermediate decoder layer through the same head, for a deep-supervision loss.
    """

    decoder: Mask2FormerPixelDecoder
    query_decoder: QueryDecoder
    aux_loss: bool = False

    def features(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised, padded -> (B, mask_feature_size + 3, H/4, W/4)."""
        pixel = self.decoder(self.features(x), return_dict=True)
        keep = self.aux_loss and self.training
        image = self.query_decoder(pixel.multi_scale_features, pixel.mask_features, intermediate=keep)
        self._aux_inputs = [torch.cat([pixel.mask_features, im], 1) for im in self.query_decoder.intermediate_images]
        return torch.cat([pixel.mask_features, image], 1)

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        aux = getattr(self, "_aux_inputs", [])
        self._aux_inputs = []
        if aux:
            h, w = x.shape[-2:]
            xp = pad_to_multiple(x, self.pad_multiple)
            self.aux_outputs = [(xp + self.head(f, xp))[..., :h, :w] for f in aux]
        else:
            self.aux_outputs = []
        return out

    def decoder_features(self) -> list[tuple[str, nn.Module]]:
        """DCPT hook points, coarse to fine: the pixel decoder (its strides 32/16/8 maps and the 1/4 mask
        features) and the query decoder (the painted 1/4 image)."""
        return [("decoder", self.decoder), ("query_decoder", self.query_decoder)]
class SwinMask2Former(Mask2FormerRestorer):
    """Swin + Mask2Former (pixel decoder and transformer decoder) restorer; forward (B,3,H,W) in [0,1] ->
    (B,3,H,W). See the module docstring for the data flow."""

    pad_multiple = 32

    def __init__(
        self,
        swin: SwinConfig,
        *,
        head_channels: tuple[int, int] = (64, 32),
        shallow_channels: int = 32,
        aux_loss: bool = False,
        **decoder_cfg: int,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = make_swin_backbone(swin)
        self.depths = list(swin.depths)
        self.swin_config = swin
        self.m2f_config = mask2former_config(**decoder_cfg)
        self.decoder = make_pixel_decoder(self.backbone.channels, **{k: v for k, v in decoder_cfg.items()
                                                                     if k in PIXEL_DECODER_KEYS})
        self.query_decoder = QueryDecoder(self.m2f_config, 3)
        self.aux_loss = aux_loss
        mask_dim = self.decoder.mask_projection.out_channels
        self.head = RestorationHead(mask_dim + 3, 3, channels=tuple(head_channels), shallow_channels=shallow_channels)

    def features(self, x: Tensor) -> list[Tensor]:
        return list(self.backbone(x).feature_maps)

    def backbone_layer_id(self, name: str) -> int:
        return swin_layer_id(name, self.depths)

    @property
    def num_layers(self) -> int:
        """SimMIM's count for Swin (microsoft/SimMIM optimizer.py, build_finetune_optimizer): sum(depths) + 2."""
        return sum(self.depths) + 2

    def checkpoint_parameters(self) -> list[str]:
        """Names of this model's parameters that a facebook/mask2former-swin-* snapshot of this architecture
        fills: M2F_KEY_RULES applied to the keys of transformers' Mask2FormerForUniversalSegmentation with the
        same configuration, built on the meta device (no memory, no download)."""
        from transformers import Mask2FormerForUniversalSegmentation

        config = mask2former_config(**{k: getattr(self.m2f_config, k) for k in (*PIXEL_DECODER_KEYS, *TRANSFORMER_KEYS)})
        config.backbone_config = self.swin_config
        with torch.device("meta"):
            reference = Mask2FormerForUniversalSegmentation(config)
        own = dict(self.named_parameters())
        mapped = adapt_keys(reference.state_dict(), own.keys(), M2F_KEY_RULES)
        return [k for k in mapped if k in own]


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs: Any) -> SwinMask2Former:
    """Build a Swin-Mask2Former restorer (backbone, pixel decoder, masked-attention transformer decoder).

    variant: one of VARIANTS (default "swin-t"); with a snapshot, config.json gives the tensor shapes (the
        drop path stays the official config's, swin_upernet.snapshot_arch) and a given variant must agree.
    pretrained: hub id (e.g. "facebook/mask2former-swin-tiny-ade-semantic"), snapshot folder, or a
        .safetensors/.pth file (a Mask2Former checkpoint or a state dict saved from this model).
    kwargs: embed_dim, depths, num_heads, window_size, drop_path_rate (Swin); feature_size,
        mask_feature_size, encoder_layers, encoder_feedforward_dim, num_attention_heads (pixel decoder and
        decoder attention heads); hidden_dim, decoder_layers, num_queries, dim_feedforward (transformer
        decoder); head_channels, shallow_channels (RestorationHead); aux_loss (deep supervision, off).
    """
    allowed = set(SWIN_KEYS) | set(HEAD_KEYS) | set(PIXEL_DECODER_KEYS) | set(TRANSFORMER_KEYS) | {"aux_loss"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"swin_mask2former: unknown keyword(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"swin_mask2former: unknown variant {variant!r}; choose from {list(VARIANTS)}")
    ckpt = read_pretrained(pretrained) if pretrained is not None else None
    arch = dict(SWIN_ARCH[variant or "swin-t"])
    demo = variant == "demo"
    dec = {**(PIXEL_DECODER_DEMO if demo else PIXEL_DECODER_DEFAULT), **(TRANSFORMER_DEMO if demo else TRANSFORMER_DEFAULT)}
    head: dict[str, Any] = dict(DEMO_HEAD) if demo else {}
    if ckpt is not None and ckpt.config is not None:
        cfg = ckpt.config
        if cfg.get("model_type") != "mask2former" or not isinstance(cfg.get("backbone_config"), dict):
            raise ValueError(f"{ckpt.path}: config.json is not a Mask2Former config (model_type={cfg.get('model_type')})")
        bb = cfg["backbone_config"]
        if bb.get("model_type", "swin") != "swin":
            raise ValueError(f"{ckpt.path}: backbone is {bb.get('model_type')!r}, this model needs a Swin backbone")
        arch = snapshot_arch(bb, variant, str(ckpt.path))  # shapes from config.json, drop path from SWIN_ARCH
        # absent fields take Mask2FormerConfig's defaults (= the *_DEFAULT dicts), as transformers would
        dec = {**PIXEL_DECODER_DEFAULT, **TRANSFORMER_DEFAULT,
               **{k: cfg[k] for k in (*PIXEL_DECODER_KEYS, *TRANSFORMER_KEYS) if k in cfg}}
    arch.update({k: kwargs[k] for k in SWIN_KEYS if k in kwargs})
    dec.update({k: kwargs[k] for k in (*PIXEL_DECODER_KEYS, *TRANSFORMER_KEYS) if k in kwargs})
    head.update({k: kwargs[k] for k in HEAD_KEYS if k in kwargs})
    model = SwinMask2Former(swin_config(arch), **head, aux_loss=bool(kwargs.get("aux_loss", False)), **dec)
    if ckpt is not None:
        sd = adapt_keys(ckpt.state_dict, model.state_dict().keys(), M2F_KEY_RULES)
        required = ["backbone."]
        for prefix in ("decoder.", "query_decoder.transformer_module."):  # present in a full checkpoint: must load
            if any(k.startswith(prefix) for k in sd):
                required.append(prefix)
        load_checked(model, sd, required_prefixes=required, source=str(ckpt.path))
    return model
