"""IPT (Chen et al., "Pre-Trained Image Processing Transformer", CVPR 2021): multi-head, multi-tail transformer.

Structure, module names and parameter names follow huawei-noah/Pretrained-IPT `model/ipt.py` and
`model/common.py` (MeanShift, ResBlock, Upsampler, default_conv) exactly, so an official checkpoint loads
with `strict=True`. Written afresh from that structure; nothing is copied.

State-dict keys: `sub_mean.{weight,bias}`, `add_mean.{weight,bias}` (fixed 1x1 convs), per task t
`head.{t}.0.*` (3x3 conv 3->n_feats), `head.{t}.{1,2}.body.{0,2}.*` (two ResBlocks of 5x5 convs),
`tail.{t}.0.{0,2,..}.*` (Upsampler: 3x3 conv to 4n (x2 per factor 2) or 9n (x3), then PixelShuffle; empty
for scale 1), `tail.{t}.1.*` (3x3 conv n_feats->3); the transformer `body.linear_encoding.*`,
`body.mlp_head.{0,3}.*`, `body.query_embed.weight (num_queries, seq*E)`, `body.encoder.layers.{i}.
{self_attn.in_proj_weight, self_attn.out_proj.weight, linear1, linear2, norm1, norm2}.*`,
`body.decoder.layers.{i}.{self_attn, multihead_attn, linear1, linear2, norm1..3}.*`,
`body.position_encoding.pe.weight (seq, E)` and the buffer `body.position_encoding.position_ids (1, seq)`
(filled in if a checkpoint lacks it). E = n_feats * patch_dim**2, seq = (patch_size / patch_dim)**2.

Differences from the official module, all outside the state dict:
- MeanShift weights are buffers here (frozen parameters there), so `parameters()` holds only trainable
  tensors (24 fewer numbers); the state-dict keys and values are the same.
- Transformer layers are initialised independently (the official code deep-copies one layer N times).
- `forward` takes images in [0, 1] (scaled to [0, rgb_range] inside, back on the way out, not quantised),
  a `task` (index or name) instead of `set_scale`, and tiles whole images itself (below).

Tiling (the official `Model.forward_chop`, test time): the transformer body sees patch_size x patch_size
tiles only. Tiles of patch_size are taken with stride patch_size/4 (official shave = patch_size/2,
stride shave/2), the last row/column flush with the image border; each tile's output counts only in its
centre (a patch_size/4 margin is dropped, except along the image border), and overlapping centres are
averaged. That is the official scheme (same tiles, margins and averaging; the border strips are blended
slightly differently). Images smaller than a tile are padded (reflect, or replicate when tiny) and
cropped back. An input of exactly patch_size x patch_size goes straight through, as in official training.

Output size: SR tasks return (B, 3, s*H, s*W) for scale s; denoise / derain tasks (scale 1) keep (H, W).
The default task is the first one with scale 1 ("noise30" for the paper variant), so `model(x)` maps
(B, 3, H, W) -> (B, 3, H, W) like every other model in the zoo.

Official checkpoints (IPT_sr2.pt, IPT_denoise30.pt, ...) are single-task models (their test commands pass
one --scale, num_queries 1): load them with e.g. `build(variant="paper", scales=[2], tasks=["sr2"],
num_queries=1, pretrained="IPT_sr2.pt")`. Published size: 115.31M for one task (body with one query +
one head + one tail).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restorebench.models.restorer import Restorer, zero_
from restorebench.models.weights import load_strict, resolve_kwargs

_ARCH_KEYS = (
    "n_feats",
    "patch_size",
    "patch_dim",
    "num_heads",
    "num_layers",
    "num_queries",
    "scales",
    "rgb_range",
    "n_colors",
    "dropout_rate",
    "no_norm",
    "no_mlp",
    "pos_every",
    "no_pos",
    "tasks",
    "default_task",
    "crop_batch_size",
    "image_residual",
)

PAPER_TASKS: tuple[str, ...] = ("sr2", "sr3", "sr4", "noise30", "noise50", "rain")
_VARIANT_CFG: dict[str, dict] = {
    "demo": dict(
        n_feats=16, patch_size=24, patch_dim=3, num_heads=2, num_layers=1, num_queries=2,
        scales=(2, 1), tasks=("sr2", "noise30"), rgb_range=255, image_residual=True,
    ),
    "paper": dict(
        n_feats=64, patch_size=48, patch_dim=3, num_heads=12, num_layers=12, num_queries=6,
        scales=(2, 3, 4, 1, 1, 1), tasks=PAPER_TASKS, rgb_range=255,
    ),
}  # fmt: skip
VARIANTS: tuple[str, ...] = tuple(_VARIANT_CFG)
DEFAULT_VARIANT = "paper"
# Params (under the profile) IPT's cells read beyond its own entries: the finetuning architecture keeps the
# pretrained head that pretrain.ipt.heads names (train.cells.cell_model). restorebench.pipeline lists them.
PARAMS_KEYS = ("pretrain.ipt.heads",)
PUBLISHED_PARAMS_ONE_TASK = 115.31e6
PUBLISHED_GMACS_PER_PATCH = 33.0  # per 48x48 input patch (docs/ARCHITECTURE.md)


def variant_patch_size(variant: str) -> int:
    """The tile (and training input) side of an IPT variant."""
    return int(_VARIANT_CFG[variant]["patch_size"])


# --------------------------------------------------------------------------------------------- CNN parts


def default_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """'Same' conv as EDSR / IPT `common.default_conv`."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Module):
    """Fixed 1x1 conv adding (sign=+1) or subtracting (sign=-1) rgb_range * the DIV2K mean per channel.

    `weight` (3,3,1,1) and `bias` (3,) are buffers with the official key names; (B,3,H,W) -> (B,3,H,W).
    """

    def __init__(
        self,
        rgb_range: float,
        rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040),
        rgb_std: Sequence[float] = (1.0, 1.0, 1.0),
        sign: int = -1,
    ) -> None:
        super().__init__()
        std = torch.tensor(rgb_std)
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1))
        self.register_buffer("bias", sign * rgb_range * torch.tensor(rgb_mean) / std)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias)


class ResBlock(nn.Module):
    """x + conv(relu(conv(x))) (EDSR ResBlock without BN, res_scale 1); keys `body.0.*`, `body.2.*`."""

    def __init__(self, n_feats: int, kernel_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats, kernel_size),
            nn.ReLU(True),
            default_conv(n_feats, n_feats, kernel_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class Upsampler(nn.Sequential):
    """x2^k: k x (conv to 4n + PixelShuffle(2)); x3: conv to 9n + PixelShuffle(3); x1: empty (identity)."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:  # 1, 2, 4, 8 ...
            for _ in range(int(math.log2(scale))):
                layers += [default_conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [default_conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"IPT upsampler supports scales 2^k and 3, not {scale}")
        super().__init__(*layers)


# --------------------------------------------------------------------------------------------- transformer


class LearnedPositionalEncoding(nn.Module):
    """Learned embedding per patch position: returns (1, seq, E)."""

    def __init__(self, max_position_embeddings: int, embedding_dim: int, seq_length: int) -> None:
        super().__init__()
        self.pe = nn.Embedding(max_position_embeddings, embedding_dim)
        self.seq_length = seq_length
        self.register_buffer("position_ids", torch.arange(seq_length).unsqueeze(0))  # (1, seq)

    def forward(self) -> Tensor:
        return self.pe(self.position_ids[:, : self.seq_length])


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder layer (DETR-style, ReLU MLP); tokens (seq, B, E) -> (seq, B, E)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, no_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, bias=False)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.Identity() if no_norm else nn.LayerNorm(d_model)
        self.norm2 = nn.Identity() if no_norm else nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        nn.init.kaiming_uniform_(self.self_attn.in_proj_weight, a=math.sqrt(5))  # as the official layer

    def forward(self, src: Tensor, pos: Tensor | None = None) -> Tensor:
        s = self.norm1(src)
        qk = s if pos is None else s + pos
        src = src + self.dropout1(self.self_attn(qk, qk, s, need_weights=False)[0])
        s = self.norm2(src)
        return src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(s)))))


class TransformerDecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention with the task query as position, cross-attention to memory."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, no_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, bias=False)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, bias=False)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.Identity() if no_norm else nn.LayerNorm(d_model)
        self.norm2 = nn.Identity() if no_norm else nn.LayerNorm(d_model)
        self.norm3 = nn.Identity() if no_norm else nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    @staticmethod
    def _add(t: Tensor, pos: Tensor | None) -> Tensor:
        return t if pos is None else t + pos

    def forward(
        self, tgt: Tensor, memory: Tensor, pos: Tensor | None = None, query_pos: Tensor | None = None
    ) -> Tensor:
        """tgt, memory (seq, B, E); pos (seq, 1, E) or None; query_pos (seq, B, E) or None."""
        t = self.norm1(tgt)
        qk = self._add(t, query_pos)
        tgt = tgt + self.dropout1(self.self_attn(qk, qk, t, need_weights=False)[0])
        t = self.norm2(tgt)
        t = self.multihead_attn(self._add(t, query_pos), self._add(memory, pos), memory, need_weights=False)[
            0
        ]
        tgt = tgt + self.dropout2(t)
        t = self.norm3(tgt)
        return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(t)))))


class _Stack(nn.Module):
    """A `layers` ModuleList (keys `encoder.layers.{i}.*` / `decoder.layers.{i}.*`)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)


class VisionTransformer(nn.Module):
    """IPT body: (B, C, P, P) features -> (B, C, P, P), on (P/patch_dim)**2 tokens of C*patch_dim**2 numbers."""

    def __init__(
        self,
        img_dim: int,
        patch_dim: int,
        num_channels: int,
        embedding_dim: int,
        num_heads: int,
        num_layers: int,
        hidden_dim: int,
        num_queries: int,
        dropout_rate: float = 0.0,
        no_norm: bool = False,
        mlp: bool = False,
        pos_every: bool = False,
        no_pos: bool = False,
    ) -> None:
        super().__init__()
        if embedding_dim % num_heads:
            raise ValueError(f"embedding dim {embedding_dim} is not divisible by num_heads {num_heads}")
        if img_dim % patch_dim:
            raise ValueError(f"patch_size {img_dim} is not divisible by patch_dim {patch_dim}")
        self.img_dim, self.patch_dim, self.embedding_dim = img_dim, patch_dim, embedding_dim
        self.seq_length = (img_dim // patch_dim) ** 2
        self.flatten_dim = patch_dim * patch_dim * num_channels
        self.mlp, self.pos_every, self.no_pos = mlp, pos_every, no_pos
        if not mlp:  # "mlp" is the official name of the --no_mlp flag: False keeps these modules
            self.linear_encoding = nn.Linear(self.flatten_dim, embedding_dim)
            self.mlp_head = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim),
                nn.Dropout(dropout_rate),
                nn.ReLU(),
                nn.Linear(hidden_dim, self.flatten_dim),
                nn.Dropout(dropout_rate),
            )
            self.query_embed = nn.Embedding(num_queries, embedding_dim * self.seq_length)
        args = (embedding_dim, num_heads, hidden_dim, dropout_rate, no_norm)
        self.encoder = _Stack([TransformerEncoderLayer(*args) for _ in range(num_layers)])
        self.decoder = _Stack([TransformerDecoderLayer(*args) for _ in range(num_layers)])
        if not no_pos:
            self.position_encoding = LearnedPositionalEncoding(
                self.seq_length, embedding_dim, self.seq_length
            )
        self.dropout_layer1 = nn.Dropout(dropout_rate)
        if no_norm:
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=1 / m.weight.size(1))

    def forward(self, x: Tensor, query_idx: int, con: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, C, P, P) -> (B, C, P, P); with con also the tokens (B, seq, C*patch_dim**2) (for the
        contrastive pretraining loss)."""
        b = x.shape[0]
        tokens = F.unfold(x, self.patch_dim, stride=self.patch_dim).permute(2, 0, 1)  # (seq, B, flat)
        query = None
        if not self.mlp:
            tokens = self.dropout_layer1(self.linear_encoding(tokens)) + tokens
            query = self.query_embed.weight[query_idx].view(-1, 1, self.embedding_dim).expand(-1, b, -1)
        pos = None if self.no_pos else self.position_encoding().transpose(0, 1)  # (seq, 1, E)
        if self.pos_every:
            mem = tokens
            for layer in self.encoder.layers:
                mem = layer(mem, pos=pos)
            out = mem
            for layer in self.decoder.layers:
                out = layer(out, mem, pos=pos, query_pos=query)
        else:
            mem = tokens if pos is None else tokens + pos
            for layer in self.encoder.layers:
                mem = layer(mem)
            out = mem
            for layer in self.decoder.layers:
                out = layer(out, mem, query_pos=query)
        if not self.mlp:
            out = self.mlp_head(out) + out
        out = out.transpose(0, 1)  # (B, seq, flat)
        img = F.fold(out.transpose(1, 2), self.img_dim, self.patch_dim, stride=self.patch_dim)
        return (img, out) if con else img


# --------------------------------------------------------------------------------------------- model


class IPT(Restorer):
    """IPT: (B, n_colors, H, W) in [0, 1] -> (B, n_colors, s*H, s*W) for the chosen task's scale s."""

    def __init__(
        self,
        n_feats: int = 64,
        patch_size: int = 48,
        patch_dim: int = 3,
        num_heads: int = 12,
        num_layers: int = 12,
        num_queries: int = 6,
        scales: Sequence[int] = (2, 3, 4, 1, 1, 1),
        rgb_range: float = 255,
        n_colors: int = 3,
        dropout_rate: float = 0.0,
        no_norm: bool = False,
        no_mlp: bool = False,
        pos_every: bool = False,
        no_pos: bool = False,
        tasks: Sequence[str] | None = None,
        default_task: int | str | None = None,
        crop_batch_size: int = 64,
        image_residual: bool = False,
    ) -> None:
        super().__init__()
        self.scales = tuple(int(s) for s in scales)
        self.tasks = tuple(tasks) if tasks is not None else tuple(f"task{i}" for i in range(len(self.scales)))
        if len(self.tasks) != len(self.scales):
            raise ValueError(f"{len(self.tasks)} task names {list(self.tasks)} for {len(self.scales)} scales")
        if not no_mlp and num_queries < len(self.scales):
            raise ValueError(f"num_queries {num_queries} < {len(self.scales)} tasks: task t uses query t")
        if patch_size % 4:
            raise ValueError(
                f"patch_size {patch_size} must be divisible by 4 (tiles overlap by patch_size/4)"
            )
        self.patch_size, self.rgb_range, self.crop_batch_size = patch_size, rgb_range, crop_batch_size
        self.image_residual = image_residual
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.ModuleList(
            nn.Sequential(default_conv(n_colors, n_feats, 3), ResBlock(n_feats, 5), ResBlock(n_feats, 5))
            for _ in self.scales
        )
        e = n_feats * patch_dim * patch_dim
        self.body = VisionTransformer(
            img_dim=patch_size, patch_dim=patch_dim, num_channels=n_feats, embedding_dim=e, num_heads=num_heads,
            num_layers=num_layers, hidden_dim=4 * e, num_queries=num_queries, dropout_rate=dropout_rate,
            no_norm=no_norm, mlp=no_mlp, pos_every=pos_every, no_pos=no_pos,
        )  # fmt: skip
        self.tail = nn.ModuleList(
            nn.Sequential(Upsampler(s, n_feats), default_conv(n_feats, n_colors, 3)) for s in self.scales
        )
        if default_task is None:  # first same-size task, so model(x) keeps the image size
            default_task = next((i for i, s in enumerate(self.scales) if s == 1), 0)
        self.default_task = self.task_index(default_task)
        # Layer-wise LR decay over the body: embeddings 0, encoder layer i -> 1+i, decoder layer j (and the
        # task queries, for j=0) -> 1+L+j, mlp_head 2L+1.
        self.num_layers = 2 * num_layers + 2

    def task_index(self, task: int | str | None) -> int:
        """Task index from an index, a name in `self.tasks`, or None (the default task)."""
        if task is None:
            return self.default_task
        if isinstance(task, str):
            if task not in self.tasks:
                raise ValueError(f"unknown IPT task {task!r}; this model has {list(self.tasks)}")
            return self.tasks.index(task)
        if not 0 <= int(task) < len(self.scales):
            raise ValueError(
                f"IPT task index {task} out of range 0..{len(self.scales) - 1} ({list(self.tasks)})"
            )
        return int(task)

    def forward_patch(self, x: Tensor, task: int, con: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The official `ipt.forward` on tiles: x (N, 3, P, P) on the 0..rgb_range scale -> (N, 3, sP, sP);
        with con also the body tokens (N, seq, n_feats*patch_dim**2)."""
        feats = self.head[task](self.sub_mean(x))
        res = self.body(feats, task, con=con)
        res, tokens = res if con else (res, None)
        out = self.tail[task](res + feats)
        if self.image_residual:  # not official: the tail predicts a correction of the (upsampled) input
            s = self.scales[task]
            y = out + (x if s == 1 else F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False))
        else:
            y = self.add_mean(out)
        return (y, tokens) if con else y

    def output_convs(self) -> list[nn.Conv2d]:
        """Each task's last conv: zeroed, an image_residual IPT starts as the identity (bicubic for SR)."""
        return [t[-1] for t in self.tail]

    # -- what the model answers about itself (models/restorer.py) --------------------------------------

    attention = "token"  # the body's nn.MultiheadAttention over patch tokens (SDPA inside)

    def decoder_features(self) -> list[tuple[str, nn.Module]]:
        """The transformer decoder of the body, one token map per layer (DCPT's hook points)."""
        return [(f"body.decoder.layers.{i}", layer) for i, layer in enumerate(self.body.decoder.layers)]

    def start_at_identity_(self) -> None:
        """With image_residual (the demo variant), each task's last conv at zero: every task starts as its input
        (bicubic-upsampled for SR). The official IPT has no input skip, so there is nothing to zero."""
        if self.image_residual:
            zero_(*self.output_convs())

    def adapt_pretrained(
        self, state: dict[str, Tensor], *, head: str | None = None, meta: dict | None = None,
        task: str | None = None, **ctx: object,
    ) -> dict[str, Tensor]:
        """A multi-task pretrained IPT's `state` as this (single-task, finetuning) IPT's init, as the paper
        finetunes: the body, plus the `head` task's head, tail and decoder query as task 0, the other tasks
        dropped. head None (a task IPT was not pretrained on): the body only, with this model's own new head,
        tail and query. meta: the pretraining run's record; its task_names and scales (IPT pretraining writes
        them) name the state's tasks. Without them the state is this very architecture's (DCPT pretrains the
        cell's own model) and passes as it is. task: the finetuning task (for the messages)."""
        if not meta or "task_names" not in meta:
            return dict(state)
        tasks, scales = list(meta["task_names"]), [int(v) for v in meta["scales"]]
        where = f"pretrain.ipt.heads.{task}" if task else "pretrain.ipt.heads"
        query = "body.query_embed.weight"
        out = {k: v for k, v in state.items() if k.startswith("body.") and k != query}
        out.update({k: v for k, v in state.items() if k.split(".")[0] in ("sub_mean", "add_mean")})
        if head is None:
            own = self.state_dict()
            out.update({k: v for k, v in own.items() if k.startswith(("head.", "tail.")) or k == query})
            return out
        if head not in tasks:
            raise ValueError(f"{where}: {head!r} is not a pretrained IPT task; tasks: {tasks}")
        t = tasks.index(head)
        if scales[t] != 1:
            raise ValueError(f"{where}: {head!r} is an SR task (x{scales[t]}); pick a same-size task")
        out[query] = state[query][t : t + 1].clone()
        for part in ("head", "tail"):
            prefix = f"{part}.{t}."
            out.update({f"{part}.0.{k[len(prefix):]}": v for k, v in state.items() if k.startswith(prefix)})
        return out

    def forward(self, x: Tensor, task: int | str | None = None) -> Tensor:
        """x (B, 3, H, W) in [0, 1], any H, W; task: index, name (e.g. "noise30") or None (default_task).

        Returns (B, 3, s*H, s*W) in ~[0, 1] (not clamped), s = the task's scale.
        """
        t = self.task_index(task)
        p = self.patch_size
        x = x * self.rgb_range
        if x.shape[-2:] == (p, p):
            y = self.forward_patch(x, t)
        else:
            y = self._forward_tiled(x, t)
        return y / self.rgb_range

    @staticmethod
    def _starts(length: int, tile: int, stride: int) -> list[int]:
        starts = list(range(0, length - tile + 1, stride))
        if starts[-1] != length - tile:
            starts.append(length - tile)
        return starts

    @staticmethod
    def _weights(
        starts: list[int], length: int, tile: int, margin: int, scale: int, like: Tensor
    ) -> list[Tensor]:
        """Per tile, a 0/1 vector of length tile*scale marking the centre it contributes (border kept)."""
        out = []
        for s in starts:
            lo = 0 if s == 0 else margin
            hi = tile if s + tile == length else tile - margin
            w = torch.zeros(tile * scale, dtype=like.dtype, device=like.device)
            w[lo * scale : hi * scale] = 1
            out.append(w)
        return out

    def _forward_tiled(self, x: Tensor, task: int) -> Tensor:
        b, c, h, w = x.shape
        p, s = self.patch_size, self.scales[task]
        ph, pw = max(p - h, 0), max(p - w, 0)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        hp, wp = x.shape[-2:]
        stride = margin = p // 4
        ys, xs = self._starts(hp, p, stride), self._starts(wp, p, stride)
        wy = self._weights(ys, hp, p, margin, s, x)
        wx = self._weights(xs, wp, p, margin, s, x)
        positions = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
        acc = x.new_zeros(b, c, hp * s, wp * s)
        norm = x.new_zeros(1, 1, hp * s, wp * s)
        per_call = max(1, self.crop_batch_size // b)
        for k in range(0, len(positions), per_call):
            chunk = positions[k : k + per_call]
            tiles = torch.cat([x[:, :, ys[i] : ys[i] + p, xs[j] : xs[j] + p] for i, j in chunk])
            out = self.forward_patch(tiles, task).split(b)
            for (i, j), o in zip(chunk, out, strict=True):
                wgt = wy[i][:, None] * wx[j][None, :]
                y0, x0 = ys[i] * s, xs[j] * s
                acc[:, :, y0 : y0 + p * s, x0 : x0 + p * s] += o * wgt
                norm[:, :, y0 : y0 + p * s, x0 : x0 + p * s] += wgt
        return (acc / norm)[:, :, : h * s, : w * s]

    # -- finetuning interface -----------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """{"backbone": the transformer body, "decoder": [] , "head": per-task heads and tails}.

        IPT has no decoder separate from its body (the transformer decoder is part of the pretrained body),
        so "decoder" is empty; the convolutional task heads (input stems) and tails (upsampler + output conv)
        are the task-specific "head" group. Each parameter appears exactly once.
        """
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": [], "decoder": [], "head": []}
        for name, p in self.named_parameters():
            groups["backbone" if name.startswith("body.") else "head"].append((name, p))
        return groups

    def layer_ids(self) -> dict[str, int]:
        """Body parameter name -> layer index in 0 .. num_layers-1 (see `num_layers`)."""
        n_enc = len(self.body.encoder.layers)
        ids: dict[str, int] = {}
        for name, _ in self.parameter_groups()["backbone"]:
            parts = name.split(".")
            if parts[1] in ("linear_encoding", "position_encoding"):
                ids[name] = 0
            elif parts[1] == "encoder":
                ids[name] = 1 + int(parts[3])
            elif parts[1] == "decoder":
                ids[name] = 1 + n_enc + int(parts[3])
            elif parts[1] == "query_embed":
                ids[name] = 1 + n_enc
            else:  # mlp_head
                ids[name] = self.num_layers - 1
        return ids


def finetune_kwargs(task: str, *, head: str | None = None) -> dict:
    """The builder keywords of the IPT a grid cell of `task` finetunes, as IPT finetunes: one same-size task
    (one head, tail and query), named after the pretrained task whose head it starts from (`head`,
    params pretrain.ipt.heads), else after `task` (a new head)."""
    return {"tasks": (head or task,), "scales": (1,), "num_queries": 1}


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs) -> IPT:
    """Build IPT.

    variant: "demo" (tiny, tasks sr2 + noise30, 24x24 tiles, image_residual) or "paper" (default: six
        tasks sr2, sr3, sr4, noise30, noise50, rain; n_feats 64, 48x48 tiles, patch_dim 3, 12 heads, 12+12
        layers, 6 queries).
    kwargs override the variant: n_feats, patch_size, patch_dim, num_heads, num_layers, num_queries, scales
        (one per task), rgb_range, the official flags no_norm / no_mlp / pos_every / no_pos, dropout_rate,
        n_colors, plus tasks (names, one per scale), default_task, crop_batch_size (tiles per call) and
        image_residual (not official; the demo's: output = input (bicubic-upsampled for SR) + the tail's
        output, so a briefly trained tiny IPT can start at the identity like NAFNet and Restormer).
    pretrained: checkpoint (file, snapshot folder or hub id) loaded strictly (a folder's config.json may
        give "variant" and keywords); see the module docstring for the single-task official files.
    """
    cfg = resolve_kwargs(_VARIANT_CFG, DEFAULT_VARIANT, variant, kwargs, _ARCH_KEYS, "ipt", pretrained)
    if "tasks" not in kwargs and cfg.get("tasks") is not None and len(cfg["scales"]) != len(cfg["tasks"]):
        cfg["tasks"] = None  # generic names task0.. when the task list changed length
    model = IPT(**cfg)
    if pretrained is not None:
        load_strict(
            model,
            pretrained,
            fill_missing=("body.position_encoding.position_ids",),
            source=f"ipt pretrained={pretrained}",
        )
    return model
