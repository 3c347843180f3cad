"""HDR to SDR for the 720p rendition: a 3D LUT that libavfilter's `lut3d` applies to the scaled RGB frames.

iPhones record HLG (Dolby Vision 8.4's base layer), other phones HDR10 (PQ), both in BT.2020. An SDR phone
shown those pixels as BT.709 sees a washed-out, dim picture, so the rendition is converted. FFmpeg's usual
`zscale` + `tonemap` chain needs zimg, which PyAV's wheels do not ship, and swscale cannot linearise PQ or HLG;
`lut3d` is in every build. The whole conversion is one function of the source's R'G'B', sampled on a 33^3 grid
(PQ and HLG are perceptually even, so tetrahedral interpolation between the grid points is invisible):

1. EOTF to display light: PQ (SMPTE ST 2084) gives nits directly; HLG's inverse OETF gives scene light, its
   OOTF (system gamma 1.2 on a 1,000-nit display, BT.2100) display light.
2. BT.2020 to BT.709 primaries (a 3x3 matrix in linear light; out-of-gamut components clip at 0).
3. Tone-map: HDR reference white (203 nits, BT.2408) lands at 80 % of SDR white; above 70 % the brightest
   component is rolled off smoothly toward 100 % (an exponential shoulder with slope 1 at the knee), and the
   other components are scaled by the same factor, so highlights keep their hue instead of turning white.
4. BT.1886's inverse EOTF (gamma 2.4): what an SDR screen expects of BT.709 video.
"""

from __future__ import annotations

import math
from pathlib import Path

# FFmpeg's AVColorTransferCharacteristic values for the two HDR transfers.
TRC_PQ = 16  # SMPTE ST 2084
TRC_HLG = 18  # ARIB STD-B67
HDR_TRANSFERS = frozenset({TRC_PQ, TRC_HLG})
LUT_SIZE = 33  # 35,937 points, computed in ~0.1 s (pure Python: numpy is not a worker dependency)
REFERENCE_WHITE_NITS = 203.0  # BT.2408: HDR graphics white / diffuse white
SDR_REFERENCE_WHITE = 0.8  # where HDR reference white lands, in linear SDR (1.0 = the screen's white)
KNEE = 0.7  # below this (linear SDR), the picture is left as it is
HLG_DISPLAY_NITS = 1000.0
_BT2020_TO_BT709 = (
    (1.6605, -0.5876, -0.0728),
    (-0.1246, 1.1329, -0.0083),
    (-0.0182, -0.1006, 1.1187),
)
_BT2020_LUMA = (0.2627, 0.6780, 0.0593)
RGB = tuple[float, float, float]


def is_hdr(color_trc: int | None) -> bool:
    return color_trc in HDR_TRANSFERS


def write_lut(path: Path, color_trc: int) -> Path:
    """A `.cube` LUT for `lut3d` turning R'G'B' of `color_trc` (PQ or HLG, BT.2020) into BT.709 SDR."""
    grid = [i / (LUT_SIZE - 1) for i in range(LUT_SIZE)]
    lines = [f"LUT_3D_SIZE {LUT_SIZE}"]
    for blue in grid:  # .cube order: red varies fastest, then green, then blue
        for green in grid:
            for red in grid:
                lines.append("{:.6f} {:.6f} {:.6f}".format(*to_sdr((red, green, blue), color_trc)))
    path.write_text("\n".join(lines) + "\n")
    return path


def to_sdr(signal: RGB, color_trc: int) -> RGB:
    """BT.2020 R'G'B' (0..1, `color_trc`) as BT.709 SDR R'G'B' (0..1)."""
    nits = _pq_to_nits(signal) if color_trc == TRC_PQ else _hlg_to_nits(signal)
    scale = SDR_REFERENCE_WHITE / REFERENCE_WHITE_NITS
    linear = [
        max(0.0, sum(m * n for m, n in zip(row, nits, strict=True))) * scale for row in _BT2020_TO_BT709
    ]
    brightest = max(linear)
    factor = _shoulder(brightest) / brightest if brightest > KNEE else 1.0
    r, g, b = (min(1.0, value * factor) ** (1 / 2.4) for value in linear)
    return r, g, b


def _shoulder(value: float) -> float:
    """From KNEE up, approach 1.0 without reaching it, continuing the identity's slope at the knee."""
    headroom = 1.0 - KNEE
    return KNEE + headroom * (1.0 - math.exp(-(value - KNEE) / headroom))


def _pq_to_nits(signal: RGB) -> RGB:
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32

    def eotf(value: float) -> float:
        power = value ** (1 / m2)
        return 10_000.0 * (max(power - c1, 0.0) / (c2 - c3 * power)) ** (1 / m1)

    r, g, b = (eotf(value) for value in signal)
    return r, g, b


def _hlg_to_nits(signal: RGB) -> RGB:
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    scene = [v * v / 3 if v <= 0.5 else (math.exp((v - c) / a) + b) / 12 for v in signal]
    luma = sum(k * v for k, v in zip(_BT2020_LUMA, scene, strict=True))
    gain = HLG_DISPLAY_NITS * luma**0.2 if luma > 0 else 0.0  # OOTF: system gamma 1.2
    red, green, blue = (gain * v for v in scene)
    return red, green, blue
