"""Text-conditional GANs: GAN-CLS / GAN-INT (Reed et al. 2016) with ControlGAN's (Li et al. 2019)
word-level attention, word-level discriminator and stages of resolution as options.

Generator G(z, words): the sentence embedding s (the masked mean of the text states) is
compressed to `cond_dim` and joined with z; a linear map makes a 4x4 feature map, and each block
doubles the resolution (nearest neighbour + two 3x3 convolutions). Text enters every block, as in
DF-GAN: each convolution's output is scaled and shifted by an affine map of [z, s]. With
`word_attention`, blocks at `attention_res` and above add cross-attention from each position to
the words (ControlGAN / AttnGAN). With `stages` > 1 the last blocks each draw an image too (e.g.
16, 32, 64 px), each judged by its own discriminator. There is no batch normalisation, so an image
depends on its own z and caption only, never on the rest of its batch.

Discriminator D(x, words) -> (joint logit, word logit): residual blocks down to 4x4, then the
compressed sentence embedding is tiled over the 4x4 map and joined with it (GAN-CLS): one logit
for "real and matching". With `word_discriminator`, each word attends over the 8x8 region features
and the cosine between the word and what it attended to, averaged over the words, is a second
logit (ControlGAN's word-level discriminator). Spectral normalisation (Miyato et al. 2018) is
written here with one power iteration per training forward (`SNConv2d`, `SNLinear`).

StyleEncoder S(x) -> z: trained with ||z - S(G(z, t))||^2 (Reed et al.), so an image's style
(what the caption does not say) can be redrawn under another caption: G(S(x), t').
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import Attention, attention_mask
from t2i.models.text_encoder import masked_mean


@dataclass
class GanConfig:
    image_size: int = 32
    image_channels: int = 1
    context_dim: int = 384  # width of the text states (the frozen text encoder's)
    z_dim: int = 64  # the noise: what the caption leaves open
    cond_dim: int = 128  # the sentence embedding compressed (Reed et al.: 128)
    # G's widths from 4x4 up to image_size (log2(image_size) - 1 levels)
    channels: list[int] = field(default_factory=lambda: [128, 128, 64, 32])
    # D's widths from image_size down to 4x4 (the same number of levels)
    d_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    word_attention: bool = False  # G: cross-attention to the words at attention_res and above
    attention_res: int = 16
    heads: int = 4
    word_discriminator: bool = False  # D: a word-level logit from the 8x8 regions
    stages: int = 1  # images drawn (and judged) at the last `stages` resolutions
    spectral_norm: bool = True

    def __post_init__(self) -> None:
        levels = int(math.log2(self.image_size)) - 1
        if self.image_size < 8 or 2 ** (levels + 1) != self.image_size:
            raise ValueError(f"image_size {self.image_size} must be a power of 2, at least 8")
        if len(self.channels) != levels or len(self.d_channels) != levels:
            raise ValueError(
                f"channels {self.channels} and d_channels {self.d_channels} need {levels} "
                f"levels each: 4x4 to {self.image_size}x{self.image_size}"
            )
        if not 1 <= self.stages <= min(3, levels - 1):
            raise ValueError(f"stages {self.stages} must be 1 to {min(3, levels - 1)}")
        if self.word_attention and any(c % self.heads for c in self.channels):
            raise ValueError(f"channels {self.channels} must divide by heads {self.heads}")

    @property
    def resolutions(self) -> list[int]:
        """The sizes the generator draws, lowest first."""
        return [self.image_size >> k for k in reversed(range(self.stages))]

    @classmethod
    def preset(cls, name: str, **overrides) -> GanConfig:
        if name not in GAN_PRESETS:
            raise ValueError(f"unknown gan preset {name!r}; choose from {sorted(GAN_PRESETS)}")
        return replace(GAN_PRESETS[name], **overrides)


GAN_PRESETS: dict[str, GanConfig] = {
    "tiny": GanConfig(
        image_size=16,
        image_channels=3,
        context_dim=32,
        z_dim=8,
        cond_dim=16,
        channels=[32, 32, 16],
        d_channels=[16, 32, 32],
        attention_res=8,
        heads=2,
    ),
    "fashion": GanConfig(image_size=32, image_channels=1, context_dim=384),
    "shapes": GanConfig(
        image_size=64,
        image_channels=3,
        context_dim=128,
        channels=[128, 128, 96, 64, 24],
        d_channels=[16, 48, 96, 128, 128],
    ),
    "emoji": GanConfig(
        image_size=64,
        image_channels=3,
        context_dim=384,
        z_dim=100,
        channels=[128, 128, 96, 64, 24],
        d_channels=[16, 48, 96, 128, 128],
    ),
}


def sentence_embedding(context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) text states -> (B, D): the mean over the real tokens (GAN-INT mixes these)."""
    return masked_mean(context, mask)


# ---------------------------------------------------------------- spectral normalisation


class SpectralNorm:
    """W / sigma(W), sigma estimated by power iteration on a stored vector u (one iteration per
    training forward, as Miyato et al.); u is a buffer, so checkpoints and EMA copies keep it."""

    def init_sn(self, enabled: bool) -> None:
        self.sn = enabled
        if enabled:
            u = F.normalize(torch.randn(self.weight.shape[0]), dim=0)
            self.register_buffer("u", u)

    def normalised(self) -> torch.Tensor:
        if not self.sn:
            return self.weight
        w = self.weight.flatten(1)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            wf = w.float()
            if self.training:
                v = F.normalize(wf.t() @ self.u, dim=0)
                self.u.copy_(F.normalize(wf @ v, dim=0))
            u = self.u.clone()  # the graph keeps its own copy: later iterations change the buffer
            v = F.normalize(wf.t() @ u, dim=0)
        sigma = u @ w.float() @ v
        return self.weight / sigma.to(self.weight.dtype)


class SNConv2d(nn.Conv2d, SpectralNorm):
    def __init__(self, *args, sn: bool = True, **kw):
        super().__init__(*args, **kw)
        self.init_sn(sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalised(), self.bias)


class SNLinear(nn.Linear, SpectralNorm):
    def __init__(self, *args, sn: bool = True, **kw):
        super().__init__(*args, **kw)
        self.init_sn(sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalised(), self.bias)


# ---------------------------------------------------------------- generator


class WordAttention(nn.Module):
    """Each position attends over the caption's words; added to the features (ControlGAN)."""

    def __init__(self, channels: int, context_dim: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)  # per image: no batch statistics
        self.attn = Attention(channels, heads, context_dim)

    def forward(self, h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        tokens = self.norm(h).flatten(2).transpose(1, 2)
        sdpa_mask, keep = attention_mask(mask)
        out = self.attn(tokens, words, sdpa_mask, keep)
        return h + out.transpose(1, 2).reshape(b, c, height, width)


class UpBlock(nn.Module):
    """x2 nearest, then two 3x3 convolutions each modulated by [z, s] (scale and shift)."""

    def __init__(self, in_ch: int, out_ch: int, cond: int, words: int = 0, heads: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.affine1 = nn.Linear(cond, 2 * out_ch)
        self.affine2 = nn.Linear(cond, 2 * out_ch)
        for affine in (self.affine1, self.affine2):  # start as the identity modulation
            nn.init.zeros_(affine.weight)
            nn.init.zeros_(affine.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attention = WordAttention(out_ch, words, heads) if words else None

    def forward(self, h, cond, words=None, mask=None) -> torch.Tensor:
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        y = F.leaky_relu(modulate(self.conv1(h), self.affine1(cond)), 0.2)
        y = F.leaky_relu(modulate(self.conv2(y), self.affine2(cond)), 0.2)
        out = self.skip(h) + y
        return out if self.attention is None else self.attention(out, words, mask)


def modulate(h: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    scale, shift = params[:, :, None, None].chunk(2, dim=1)
    return h * (1 + scale) + shift


class GanGenerator(nn.Module):
    """G(z, context, mask) -> images at config.resolutions, each (B, C, r, r) in [-1, 1]."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = c = config
        self.compress = nn.Linear(c.context_dim, c.cond_dim)
        cond = c.z_dim + c.cond_dim
        self.start = nn.Linear(cond, c.channels[0] * 16)
        self.blocks = nn.ModuleList()
        for i, (a, b) in enumerate(zip(c.channels, c.channels[1:])):
            res = 8 << i
            words = c.context_dim if c.word_attention and res >= c.attention_res else 0
            self.blocks.append(UpBlock(a, b, cond, words, c.heads))
        self.to_image = nn.ModuleList(
            nn.Conv2d(ch, c.image_channels, 3, padding=1) for ch in c.channels[-c.stages :]
        )

    def forward(
        self,
        z: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor,
        sentence: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """sentence: the (B, context_dim) sentence embedding to use instead of the context's own
        (GAN-INT's interpolations)."""
        s = sentence_embedding(context, mask) if sentence is None else sentence
        cond = torch.cat([z, F.leaky_relu(self.compress(s), 0.2)], dim=1)
        h = self.start(cond).view(len(z), -1, 4, 4)
        images = []
        first_stage = len(self.blocks) - self.config.stages + 1  # block index of stage 0's output
        for i, block in enumerate(self.blocks):
            h = block(h, cond, context, mask)
            if i + 1 >= first_stage:
                images.append(torch.tanh(self.to_image[i + 1 - first_stage](h)))
        return images


# ---------------------------------------------------------------- discriminator


class DownBlock(nn.Module):
    """A 3x3 convolution, a 2x average pool, a second 3x3 convolution at the half size (a third
    of the cost of both at full size), with a pooled 1x1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int, sn: bool):
        super().__init__()
        self.conv1 = SNConv2d(in_ch, out_ch, 3, padding=1, sn=sn)
        self.conv2 = SNConv2d(out_ch, out_ch, 3, padding=1, sn=sn)
        self.skip = SNConv2d(in_ch, out_ch, 1, sn=sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2), 2)
        return self.conv2(y) + self.skip(F.avg_pool2d(x, 2))


class WordLogit(nn.Module):
    """ControlGAN's word-level discriminator: each word attends over the image regions; the
    cosine between the word and its attended regions, averaged over the words, scaled."""

    def __init__(self, channels: int, context_dim: int, sn: bool):
        super().__init__()
        self.regions = SNConv2d(channels, context_dim, 1, sn=sn)
        self.scale = nn.Parameter(torch.tensor(4.0))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, feats: torch.Tensor, words: torch.Tensor, mask: torch.Tensor):
        regions = self.regions(feats).flatten(2)  # (B, D, N)
        attn = (words @ regions / math.sqrt(words.shape[-1])).softmax(-1)  # (B, L, N)
        attended = attn @ regions.transpose(1, 2)  # (B, L, D)
        cos = F.cosine_similarity(attended, words, dim=-1)  # (B, L)
        m = mask.to(cos.dtype)
        mean = (cos * m).sum(1) / m.sum(1).clamp(min=1)
        return self.scale * mean + self.bias


class GanDiscriminator(nn.Module):
    """D(x, context, mask) at one resolution -> (joint logit (B,), word logit (B,) or None)."""

    def __init__(self, config: GanConfig, resolution: int):
        super().__init__()
        c, sn = config, config.spectral_norm
        levels = int(math.log2(resolution)) - 1
        chans = c.d_channels[-levels:]
        self.from_image = SNConv2d(c.image_channels, chans[0], 3, padding=1, sn=sn)
        self.blocks = nn.ModuleList(DownBlock(a, b, sn) for a, b in zip(chans, chans[1:]))
        self.compress = SNLinear(c.context_dim, c.cond_dim, sn=sn)
        self.joint = SNConv2d(chans[-1] + c.cond_dim, chans[-1], 3, padding=1, sn=sn)
        self.out = SNConv2d(chans[-1], 1, 4, sn=sn)
        self.word_logit = WordLogit(chans[-2], c.context_dim, sn) if c.word_discriminator else None

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor,
        sentence: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.from_image(x)
        regions = None
        for block in self.blocks:
            regions = h
            h = block(h)
        h = F.leaky_relu(h, 0.2)  # (B, C, 4, 4); `regions` the 8x8 map before the last block
        s = sentence_embedding(context, mask) if sentence is None else sentence
        tiled = F.leaky_relu(self.compress(s), 0.2)[:, :, None, None].expand(-1, -1, 4, 4)
        joint = F.leaky_relu(self.joint(torch.cat([h, tiled], dim=1)), 0.2)
        logit = self.out(joint).flatten()
        if self.word_logit is None:
            return logit, None
        return logit, self.word_logit(regions, context, mask)


# ---------------------------------------------------------------- style encoder


class StyleEncoder(nn.Module):
    """S(x) -> z (B, z_dim): which noise would redraw this image (Reed et al.'s style encoder)."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = c = config
        chans = c.d_channels
        layers: list[nn.Module] = [nn.Conv2d(c.image_channels, chans[0], 3, padding=1)]
        for a, b in zip(chans, chans[1:]):
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(a, b, 4, stride=2, padding=1)]
        layers += [nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(chans[-1] * 16, c.z_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GanNet(nn.Module):
    """What a GAN model folder's `gan/` holds: the generator and the style encoder. The
    discriminators stay in the training checkpoints."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        self.generator = GanGenerator(config)
        self.style = StyleEncoder(config)

    def forward(self, z, context, mask, sentence=None) -> torch.Tensor:
        """The final image (B, C, H, W) in [-1, 1]."""
        return self.generator(z, context, mask, sentence)[-1]
