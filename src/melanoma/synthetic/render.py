"""Drawing one synthetic dermoscopy image.

A lesion is drawn from the cues dermatologists use (the ABCD rule and the structures of
dermoscopy): asymmetry, border irregularity, colour variety, diameter, and structures such as an
atypical network, peripheral dots, streaks and a blue-white veil. How strongly a lesion shows them
is one latent "atypia" value, drawn per diagnosis with overlapping distributions, so the task is
learnable but not trivial. Each patient has a look (skin tone, usual nevus colour and size) that
their benign lesions follow and a melanoma departs from (the "ugly duckling" sign). Hair, the
dermoscope's vignette, ruler marks, lighting and colour casts are drawn independently of the
diagnosis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from melanoma.inputs.skin_tone import ita, rgb_to_lab

PALETTE: dict[str, tuple[float, float, float]] = {
    "light_brown": (0.66, 0.47, 0.32),
    "dark_brown": (0.38, 0.23, 0.14),
    "black": (0.12, 0.09, 0.08),
    "blue_gray": (0.42, 0.47, 0.58),
    "red": (0.74, 0.33, 0.33),
    "white": (0.90, 0.87, 0.85),
    "pink": (0.86, 0.58, 0.58),
    "purple": (0.45, 0.20, 0.35),
}
# A patient's tone t = TONE_MAX * u ** TONE_SKEW (u uniform) darkens the lightest skin by 1 - 0.35 t.
TONE_MAX, TONE_SKEW = 1.3, 2.5
# Each image's colour cast: a gain per channel around 1 (one device's white balance varies little).
CAST_SD = 0.01
_MELANOMA_COLOURS = ["dark_brown", "black", "blue_gray", "red", "white", "light_brown"]
_BENIGN_COLOURS = ["light_brown", "dark_brown"]

# Atypia (0..1) by nine-class name: Beta(a, b). Melanoma is shifted up but overlaps the others.
_ATYPIA_BETA: dict[str, tuple[float, float]] = {
    "melanoma": (3.2, 2.4),
    "nevus": (1.6, 4.5),
    "unknown": (1.4, 5.0),
    "BKL": (2.0, 4.0),
    "BCC": (2.2, 3.5),
    "AK": (2.0, 4.0),
    "SCC": (2.2, 3.5),
    "VASC": (1.8, 4.0),
    "DF": (1.6, 4.5),
}


@dataclass
class PatientLook:
    """What a patient's skin and ordinary moles look like."""

    skin: tuple[float, float, float]
    nevus_colour: tuple[float, float, float]
    nevus_radius: float  # fraction of the image's short side
    elongation: float
    hairiness: float


@dataclass
class LesionParams:
    """Everything that decides one image; written to the generator's truth."""

    name: str  # nine-class diagnosis name
    atypia: float
    asymmetry: float
    border: float
    n_colours: int
    radius: float
    deviation: float
    streaks: bool
    veil: bool
    hairs: int
    vignette: bool
    ruler: bool
    light: float
    cast_r: float
    cast_g: float
    cast_b: float
    jpeg_quality: int


def sample_patient(rng: np.random.Generator, tone_skew: float | None = None) -> PatientLook:
    """Draw a patient's look. Skin tones are mostly light with a thin darker tail, as in the ISIC
    populations (ITA of the skin drawn: median about 55 degrees, 79% above 41, 13% below 28, 6% at or
    below 10; `truth/images.csv` records each image's `skin_ita`)."""
    tone = TONE_MAX * rng.uniform(0.0, 1.0) ** (TONE_SKEW if tone_skew is None else tone_skew)
    skin = np.array([0.93, 0.76, 0.66]) * (1 - 0.35 * tone) + rng.normal(0, 0.02, 3)
    nevus = np.array(PALETTE["light_brown"]) * rng.uniform(0.7, 1.1) + rng.normal(0, 0.03, 3)
    return PatientLook(
        skin=tuple(float(v) for v in np.clip(skin, 0.3, 1.0)),
        nevus_colour=tuple(float(v) for v in np.clip(nevus, 0.1, 0.9)),
        nevus_radius=float(rng.uniform(0.16, 0.26)),
        elongation=float(rng.uniform(0.0, 0.15)),
        hairiness=float(rng.gamma(1.2, 3.0)),
    )


def sample_lesion(
    rng: np.random.Generator,
    name: str,
    look: PatientLook,
    atypia: dict[str, tuple[float, float]] | None = None,
) -> LesionParams:
    """Draw the parameters of one lesion of diagnosis `name` on a patient with `look` (`atypia`:
    another Beta(a, b) per name, for a clinic that sees other stages of the diseases)."""
    a, b = (atypia or {}).get(name, _ATYPIA_BETA[name])
    atypia = float(rng.beta(a, b))

    def cue(scale: float = 0.18) -> float:
        return float(np.clip(atypia + rng.normal(0, scale), 0, 1))

    n_colours = int(np.clip(round(1 + 3.5 * atypia + rng.normal(0, 0.8)), 1, 5))
    radius = look.nevus_radius * float(np.exp(rng.normal(0, 0.12))) * (0.85 + 0.6 * cue(0.25))
    cast = rng.normal(1.0, CAST_SD, 3)
    return LesionParams(
        name=name,
        atypia=atypia,
        asymmetry=cue(),
        border=cue(),
        n_colours=n_colours,
        radius=float(min(radius, 0.42)),
        deviation=float(0.04 + 0.3 * cue(0.2)),
        streaks=bool(rng.random() < 0.55 * atypia**1.5),
        veil=bool(rng.random() < 0.6 * atypia**2),
        hairs=int(rng.poisson(look.hairiness)),
        vignette=bool(rng.random() < 0.3),
        ruler=bool(rng.random() < 0.15),
        light=float(rng.uniform(0.0, 0.25)),
        cast_r=float(cast[0]),
        cast_g=float(cast[1]),
        cast_b=float(cast[2]),
        jpeg_quality=int(rng.integers(88, 97)),
    )


def params_record(look: PatientLook, p: LesionParams) -> dict[str, object]:
    """A flat dict of a lesion's parameters for the truth table."""
    rec: dict[str, object] = asdict(p)
    rec.update({f"skin_{c}": v for c, v in zip("rgb", look.skin, strict=True)})
    rec["skin_ita"] = skin_ita(look.skin)
    return rec


def skin_ita(skin: tuple[float, float, float]) -> float:
    """The individual typology angle of a skin colour as drawn (before any cast or lighting)."""
    lab = rgb_to_lab(np.array([skin], np.float32))[0]
    return float(ita(lab[0], lab[2]))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _outline(
    rng: np.random.Generator, p: LesionParams, look: PatientLook, cx: float, cy: float, r: float
) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    rad = np.ones_like(theta)
    rad += look.elongation * np.cos(2 * theta + rng.uniform(0, 2 * np.pi))
    for k in range(2, 5):  # low orders: asymmetric shape
        rad += 0.22 * p.asymmetry * rng.normal(0, 1) / k * np.cos(k * theta + rng.uniform(0, 6.3))
    for k in range(5, 25):  # high orders: ragged, notched border
        rad += 0.09 * p.border * rng.normal(0, 1) / math.sqrt(k) * np.cos(k * theta + rng.uniform(0, 6.3))
    rad = np.clip(rad, 0.35, 1.8) * r
    pts = np.stack([cx + rad * np.cos(theta), cy + rad * np.sin(theta)], axis=1)
    return np.round(pts * 8).astype(np.int32)  # 3 bits of sub-pixel precision


def _lesion_mask(h: int, w: int, outline: np.ndarray, softness: float) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [outline], 1.0, lineType=cv2.LINE_AA, shift=3)
    if softness > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), softness)
    return mask


def _colour(name: str) -> np.ndarray:
    return np.array(PALETTE[name], np.float32)


def _draw_dots(
    img: np.ndarray,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    r: float,
    atypia: float,
    colour: np.ndarray,
) -> None:
    n = int(rng.integers(3, 10) + 14 * atypia)
    for _ in range(n):
        # Benign: dots spread evenly in the centre. Atypical: irregular, at the periphery.
        rr = r * (rng.uniform(0, 0.65) if rng.random() > atypia else rng.uniform(0.6, 1.0))
        ang = rng.uniform(0, 2 * np.pi)
        size = max(1, int(round(r * (0.035 + 0.05 * atypia * rng.random()))))
        centre = (int(cx + rr * np.cos(ang)), int(cy + rr * np.sin(ang)))
        cv2.circle(img, centre, size, colour.tolist(), -1, lineType=cv2.LINE_AA)


def _draw_network(
    lesion: np.ndarray, rng: np.random.Generator, mask: np.ndarray, r: float, atypia: float, strength: float
) -> None:
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = max(3.0, r / rng.uniform(4.0, 6.0))
    warp = atypia * period * 0.8
    xw = xx + warp * _smooth_noise(rng, h, w, 6)
    yw = yy + warp * _smooth_noise(rng, h, w, 6)
    lines = (np.abs(np.sin(np.pi * xw / period)) < 0.25) | (np.abs(np.sin(np.pi * yw / period)) < 0.25)
    broken = _smooth_noise(rng, h, w, 8) > (1.2 - 1.8 * atypia)  # atypical networks break up
    net = (lines & ~broken).astype(np.float32) * mask
    lesion *= (1 - strength * net)[..., None]


def _draw_special(
    img: np.ndarray, rng: np.random.Generator, name: str, cx: float, cy: float, r: float
) -> None:
    """Structures of the non-melanocytic classes, drawn over the lesion."""
    if name == "BKL":  # milia-like cysts and comedo-like openings
        for _ in range(int(rng.integers(4, 12))):
            rr, ang = r * rng.uniform(0, 0.8), rng.uniform(0, 2 * np.pi)
            c = (int(cx + rr * np.cos(ang)), int(cy + rr * np.sin(ang)))
            colour = _colour("white") if rng.random() < 0.6 else _colour("dark_brown")
            cv2.circle(img, c, max(1, int(r * 0.05)), colour.tolist(), -1, lineType=cv2.LINE_AA)
    elif name in ("BCC", "SCC", "AK"):  # arborizing / dotted vessels, keratin
        for _ in range(int(rng.integers(2, 6)) if name == "BCC" else 0):
            pt = np.array([cx, cy]) + rng.normal(0, r * 0.3, 2)
            ang = rng.uniform(0, 2 * np.pi)
            for _ in range(int(rng.integers(4, 9))):
                ang += rng.normal(0, 0.6)
                nxt = pt + r * 0.15 * np.array([np.cos(ang), np.sin(ang)])
                p0, p1 = tuple(int(v) for v in pt), tuple(int(v) for v in nxt)
                cv2.line(img, p0, p1, _colour("red").tolist(), 1, lineType=cv2.LINE_AA)
                pt = nxt
        if name in ("SCC", "AK"):
            centre = (int(cx), int(cy))
            axes = (max(1, int(r * 0.35)), max(1, int(r * 0.25)))
            cv2.ellipse(img, centre, axes, rng.uniform(0, 180), 0, 360, (0.93, 0.9, 0.78), -1)
    elif name == "VASC":  # red-purple lacunae
        for _ in range(int(rng.integers(4, 10))):
            rr, ang = r * rng.uniform(0, 0.7), rng.uniform(0, 2 * np.pi)
            c = (int(cx + rr * np.cos(ang)), int(cy + rr * np.sin(ang)))
            colour = _colour("purple" if rng.random() < 0.5 else "red")
            cv2.circle(img, c, max(1, int(r * rng.uniform(0.1, 0.2))), colour.tolist(), -1, cv2.LINE_AA)
    elif name == "DF":  # central white scar-like patch
        axes = (max(1, int(r * 0.3)), max(1, int(r * 0.22)))
        cv2.ellipse(img, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, (0.88, 0.84, 0.8), -1)


def _base_colour(rng: np.random.Generator, p: LesionParams, look: PatientLook) -> np.ndarray:
    if p.name in ("BCC", "AK", "SCC"):
        base = _colour("pink")
    elif p.name == "VASC":
        base = _colour("red") * 0.9
    else:
        base = np.array(look.nevus_colour, np.float32)
    # The further a lesion departs from the patient's usual mole, the more suspicious it is:
    # it moves towards a darker, redder or bluer colour.
    target = _colour(["dark_brown", "black", "blue_gray", "red"][int(rng.integers(4))])
    return np.clip(base + min(0.7, 1.6 * p.deviation) * (target - base), 0.05, 0.95)


def _place(rng: np.random.Generator, p: LesionParams, h: int, w: int) -> tuple[float, float, float]:
    """The lesion's centre (x, y) and radius in pixels of an h x w image."""
    s = min(h, w)
    cx = w / 2 + rng.normal(0, 0.05 * s)
    cy = h / 2 + rng.normal(0, 0.05 * s)
    return cx, cy, p.radius * s


def _draw_lesion(img: np.ndarray, rng: np.random.Generator, p: LesionParams, look: PatientLook) -> None:
    h, w = img.shape[:2]
    cx, cy, r = _place(rng, p, h, w)
    mask = _lesion_mask(h, w, _outline(rng, p, look, cx, cy, r), softness=r * (0.12 - 0.09 * p.border))

    lesion = np.empty_like(img)
    lesion[:] = _base_colour(rng, p, look)
    # Colour variety: extra colours in blotches.
    melanocytic = p.name in ("melanoma", "nevus", "unknown", "BKL", "DF")
    pool = _MELANOMA_COLOURS if p.atypia > 0.45 else _BENIGN_COLOURS
    for i in range(p.n_colours - 1):
        zone = _smooth_noise(rng, h, w, 5 + i) > rng.uniform(0.2, 0.9)
        zone_f = cv2.GaussianBlur(zone.astype(np.float32), (0, 0), max(0.8, r * 0.05))
        colour = _colour(pool[int(rng.integers(len(pool)))])
        lesion += (colour - lesion) * (0.75 * zone_f)[..., None]
    if melanocytic and p.name != "BKL":
        _draw_network(lesion, rng, mask, r, p.atypia, strength=0.35)
    if p.veil:  # blue-white veil
        veil = cv2.GaussianBlur((_smooth_noise(rng, h, w, 4) > 0.5).astype(np.float32), (0, 0), r * 0.1)
        lesion += (_colour("blue_gray") - lesion) * (0.6 * veil)[..., None]
    texture = 1 + 0.06 * _smooth_noise(rng, h, w, 16)
    lesion *= texture[..., None]
    img += (lesion - img) * (0.92 * mask)[..., None]

    if melanocytic and p.name != "BKL":
        _draw_dots(img, rng, cx, cy, r, p.atypia, _colour("black" if p.atypia > 0.5 else "dark_brown"))
    if p.streaks:
        for _ in range(int(rng.integers(5, 14))):
            ang = rng.uniform(0, 2 * np.pi)
            r0, r1 = r * rng.uniform(0.75, 0.9), r * rng.uniform(1.05, 1.25)
            p0 = (int(cx + r0 * np.cos(ang)), int(cy + r0 * np.sin(ang)))
            p1 = (int(cx + r1 * np.cos(ang)), int(cy + r1 * np.sin(ang)))
            cv2.line(img, p0, p1, _colour("dark_brown").tolist(), max(1, int(r * 0.03)), cv2.LINE_AA)
    _draw_special(img, rng, p.name, cx, cy, r)


def _draw_artifacts(img: np.ndarray, rng: np.random.Generator, p: LesionParams) -> None:
    h, w = img.shape[:2]
    for _ in range(p.hairs):
        p0 = rng.uniform(0, 1, 2) * (w, h)
        p1 = p0 + rng.normal(0, 0.6, 2) * max(h, w)
        ctrl = (p0 + p1) / 2 + rng.normal(0, 0.15, 2) * max(h, w)
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p1
        colour = (np.array([0.1, 0.07, 0.05]) * rng.uniform(0.6, 2.0)).tolist()
        thickness = 1 if max(h, w) < 400 else int(max(h, w) / 300)
        cv2.polylines(img, [np.round(curve).astype(np.int32)], False, colour, thickness, cv2.LINE_AA)
    if p.ruler:
        edge = int(rng.integers(4))
        step = max(3, int(min(h, w) * 0.04))
        for i, pos in enumerate(range(step, (w if edge < 2 else h) - step, step)):
            length = int(min(h, w) * (0.06 if i % 5 == 0 else 0.03))
            if edge == 0:
                cv2.line(img, (pos, h - 1), (pos, h - 1 - length), (0.05, 0.05, 0.05), 1)
            elif edge == 1:
                cv2.line(img, (pos, 0), (pos, length), (0.05, 0.05, 0.05), 1)
            elif edge == 2:
                cv2.line(img, (0, pos), (length, pos), (0.05, 0.05, 0.05), 1)
            else:
                cv2.line(img, (w - 1, pos), (w - 1 - length, pos), (0.05, 0.05, 0.05), 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    gradient = ((xx / w - 0.5) * np.cos(ang) + (yy / h - 0.5) * np.sin(ang)) * 2 * p.light
    img *= (1 + gradient)[..., None]
    img *= np.array([p.cast_r, p.cast_g, p.cast_b], np.float32)
    if p.vignette:
        dist = np.hypot(xx - w / 2, yy - h / 2) / (0.5 * math.hypot(w, h))
        edge = rng.uniform(0.7, 0.95)
        keep = 1 / (1 + np.exp((dist - edge) * 40))
        img *= (0.05 + 0.95 * keep)[..., None]


def _drawn_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(16, round(width * scale)), max(16, round(height * scale))


def lesion_geometry(
    seed: int, look: PatientLook, p: LesionParams, width: int, height: int, max_side: int = 768
) -> dict[str, float]:
    """Where render() puts the lesion: lesion_x, lesion_y (its centre, as fractions of the width
    and height) and lesion_r (its nominal radius, as a fraction of the short side; the outline
    wanders around that circle by the lesion's border irregularity)."""
    rng = np.random.default_rng(seed)  # replays render's draws up to the placement
    w, h = _drawn_size(width, height, max_side)
    _smooth_noise(rng, h, w, 6)
    cx, cy, r = _place(rng, p, h, w)
    return {"lesion_x": cx / w, "lesion_y": cy / h, "lesion_r": r / min(h, w)}


@dataclass(frozen=True)
class Device:
    """Another clinic's camera, applied to a drawn picture: its white balance (a gain per channel),
    its tone curve (contrast around mid-grey, and a lift: a flatter, brighter picture), a dark ring
    at the field's edge, a lower resolution (drawn at `scale` of the size, scaled back up) and
    optical blur (Gaussian, in pixels of the written size)."""

    gains: tuple[float, float, float] = (0.96, 1.0, 1.07)
    contrast: float = 0.7
    lift: float = 0.08
    ring: float = 0.6  # how dark the ring is at the corners (0: none)
    scale: float = 0.45
    blur: float = 1.2


def through_device(rgb: np.ndarray, device: Device) -> np.ndarray:
    """A uint8 RGB picture as `device` would record it."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(8, round(w * device.scale)), max(8, round(h * device.scale))),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    if device.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), device.blur)
    img *= np.array(device.gains, np.float32)
    img = 0.5 + device.contrast * (img - 0.5) + device.lift
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.hypot(xx - w / 2, yy - h / 2) / (0.5 * math.hypot(w, h))
    img *= (1 - device.ring * np.clip((dist - 0.6) / 0.4, 0, 1) ** 2)[..., None]
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def render(
    seed: int, look: PatientLook, p: LesionParams, width: int, height: int, max_side: int = 768
) -> np.ndarray:
    """Draw one RGB uint8 image of `width` x `height` (drawn at most at `max_side`, then resized)."""
    rng = np.random.default_rng(seed)
    w, h = _drawn_size(width, height, max_side)
    img = np.empty((h, w, 3), np.float32)
    img[:] = np.array(look.skin, np.float32)
    img *= (1 + 0.04 * _smooth_noise(rng, h, w, 6))[..., None]
    _draw_lesion(img, rng, p, look)
    _draw_artifacts(img, rng, p)
    img += rng.normal(0, 0.012, img.shape).astype(np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if (w, h) != (width, height):
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_CUBIC)
    return out
