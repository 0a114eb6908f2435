"""Numpy renderer of synthetic pedestrians for the visible and infrared cameras.

The point is a real cross-modality problem, not noise: an identity keeps its
body, clothes and accessories in every camera, a camera keeps its background,
viewpoint, scale, lighting and blur, and the infrared image is a grey level
driven by body heat and material emissivity, so clothing colour does not
survive the change of modality (a red and a blue cotton shirt look the same in
infrared; bare arms and faces glow). Everything is drawn at the target size
with vectorised masks, which is what makes >= 200 images/s possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Material -> fraction of body heat that shows through it in infrared (emissivity and thickness
# together): thick or reflective materials hide body heat, thin cotton lets it through.
MATERIALS = {
    "cotton": 0.80,
    "synthetic": 0.62,
    "wool": 0.48,
    "denim": 0.55,
    "leather": 0.35,
}
MATERIAL_NAMES = tuple(MATERIALS)
PATTERNS = ("plain", "hstripes", "vstripes", "checks", "block")
VIEWS = ("front", "back", "side")


def _rng(*key: int) -> np.random.Generator:
    """A generator that depends only on the key, so every image is reproducible alone."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A clothing colour: saturated, muted or near-neutral, as people wear."""
    kind = rng.random()
    hue = rng.random()
    if kind < 0.35:  # near neutral: black, grey, white
        v = rng.choice([0.08, 0.2, 0.45, 0.7, 0.92]) + rng.normal(0, 0.03)
        return np.clip(np.full(3, v) + rng.normal(0, 0.02, 3), 0, 1)
    sat = rng.uniform(0.5, 0.95) if kind < 0.7 else rng.uniform(0.2, 0.5)
    val = rng.uniform(0.35, 0.95)
    return _hsv(hue, sat, val)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


@dataclass(frozen=True)
class Garment:
    colour: np.ndarray
    colour2: np.ndarray  # second colour of the pattern
    pattern: str
    material: str
    period: float  # pattern period as a fraction of body height


@dataclass(frozen=True)
class Identity:
    """What stays the same for one person in every camera."""

    height: float  # fraction of the frame height at camera scale 1
    build: float  # width multiplier
    head: float  # head radius relative to height
    legs: float  # leg length fraction of height
    skin: np.ndarray
    heat: float  # infrared brightness of bare skin
    hair: np.ndarray
    long_hair: bool
    top: Garment
    short_sleeves: bool
    bottom: Garment
    bottom_kind: str  # trousers, shorts, skirt
    shoes: np.ndarray
    hat: Garment | None
    bag: Garment | None
    bag_kind: str  # backpack or shoulder


def _garment(rng: np.random.Generator) -> Garment:
    return Garment(
        colour=_colour(rng),
        colour2=_colour(rng),
        pattern=PATTERNS[rng.choice(len(PATTERNS), p=[0.45, 0.2, 0.1, 0.12, 0.13])],
        material=MATERIAL_NAMES[rng.integers(len(MATERIAL_NAMES))],
        period=float(rng.uniform(0.03, 0.07)),
    )


def make_identity(seed: int, pid: int) -> Identity:
    rng = _rng(seed, pid, 101)
    skin_v = rng.uniform(0.35, 0.9)
    skin = np.array([skin_v, skin_v * rng.uniform(0.72, 0.85), skin_v * rng.uniform(0.55, 0.72)])
    hat = _garment(rng) if rng.random() < 0.25 else None
    bag = _garment(rng) if rng.random() < 0.5 else None
    return Identity(
        height=float(rng.uniform(0.8, 0.94)),
        build=float(rng.uniform(0.8, 1.3)),
        head=float(rng.uniform(0.06, 0.075)),
        legs=float(rng.uniform(0.44, 0.52)),
        skin=skin,
        heat=float(rng.uniform(0.82, 0.98)),
        hair=_hsv(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.6)),
        long_hair=bool(rng.random() < 0.4),
        top=_garment(rng),
        short_sleeves=bool(rng.random() < 0.4),
        bottom=_garment(rng),
        bottom_kind=("trousers", "shorts", "skirt")[rng.choice(3, p=[0.7, 0.15, 0.15])],
        shoes=_colour(rng) * 0.6,
        hat=hat,
        bag=bag,
        bag_kind="backpack" if rng.random() < 0.6 else "shoulder",
    )


@dataclass(frozen=True)
class Camera:
    """What stays the same for every image of one camera."""

    infrared: bool
    background: np.ndarray  # H x W x 3 (visible) or H x W (infrared), float in [0, 1]
    views: np.ndarray  # probabilities of front, back, side
    scale: float
    gain: float
    cast: np.ndarray  # white balance of the visible camera
    blur: float  # sigma in pixels
    noise: float
    ambient: float  # infrared: brightness of the surroundings (cold outdoors, warm indoors)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Blobby texture: a coarse random grid upsampled bilinearly."""
    gh, gw = cells + 1, max(2, cells // 2 + 1)
    grid = rng.random((gh, gw))
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.minimum(ys.astype(int), gh - 2)
    x0 = np.minimum(xs.astype(int), gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def make_camera(seed: int, cam: int, infrared: bool, indoor: bool, size: tuple[int, int],
                dim: float = 1.0) -> Camera:
    """A camera with its own scene; ``dim`` < 1 makes a low-light visible camera (LLCM)."""
    h, w = size
    rng = _rng(seed, cam, 202)
    horizon = int(h * rng.uniform(0.45, 0.7))
    wall = _colour(rng) * 0.7 + 0.2 if indoor else np.array([0.55, 0.62, 0.72]) * rng.uniform(0.7, 1.1)
    floor = _colour(rng) * 0.5 + 0.15
    bg = np.empty((h, w, 3))
    bg[:horizon] = wall
    bg[horizon:] = floor
    texture = _smooth_noise(rng, h, w, int(rng.integers(3, 9)))
    bg *= (0.75 + 0.5 * texture)[..., None]
    # A few vertical structures (doors, poles, trees) that belong to the scene.
    for _ in range(int(rng.integers(1, 4))):
        x0 = int(rng.integers(0, w - 4))
        width = int(rng.integers(2, max(3, w // 5)))
        top = int(rng.integers(0, horizon))
        bg[top:, x0:x0 + width] = _colour(rng) * 0.8
    if infrared:
        # The scene in infrared: walls and floor are near ambient, structures a bit warmer or colder.
        ambient = rng.uniform(0.3, 0.45) if indoor else rng.uniform(0.12, 0.3)
        grey = ambient + 0.18 * (texture - 0.5) + 0.1 * (bg.mean(axis=2) - 0.5)
        background = np.clip(grey, 0, 1).astype(np.float32)
    else:
        ambient = 0.0
        background = np.clip(bg, 0, 1).astype(np.float32)
    views = rng.dirichlet([2.0, 2.0, 1.2])
    return Camera(
        infrared=infrared,
        background=background,
        views=views,
        scale=float(rng.uniform(0.86, 1.04)),
        gain=float(rng.uniform(0.8, 1.15) * dim),
        cast=np.clip(1 + rng.normal(0, 0.08, 3), 0.8, 1.2),
        blur=float(rng.uniform(0.3, 1.2) if not infrared else rng.uniform(0.7, 1.6)),
        noise=float(rng.uniform(0.005, 0.02) if not infrared else rng.uniform(0.01, 0.035)),
        ambient=float(ambient),
    )


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


class _Canvas:
    """Painter's algorithm on one image: each shape overwrites what is behind it."""

    def __init__(self, camera: Camera, shift: int):
        self.infrared = camera.infrared
        self.image = np.roll(camera.background, shift, axis=1).copy()
        h, w = self.image.shape[:2]
        self.yy, self.xx = _grid(h, w)

    def ellipse(self, cy, cx, ry, rx):
        return ((self.yy - cy) / ry) ** 2 + ((self.xx - cx) / rx) ** 2 <= 1.0

    def capsule(self, y0, x0, y1, x1, r):
        """Pixels within r of the segment (y0,x0)-(y1,x1): limbs and straps."""
        dy, dx = y1 - y0, x1 - x0
        t = ((self.yy - y0) * dy + (self.xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6)
        t = np.clip(t, 0.0, 1.0)
        return (self.yy - y0 - t * dy) ** 2 + (self.xx - x0 - t * dx) ** 2 <= r * r

    def trapezoid(self, top, bottom, cx, half_top, half_bottom):
        f = np.clip((self.yy - top) / max(bottom - top, 1e-6), 0, 1)
        half = half_top + (half_bottom - half_top) * f
        return (self.yy >= top) & (self.yy <= bottom) & (np.abs(self.xx - cx) <= half)

    def paint(self, mask, colour, heat, garment: Garment | None = None, origin=(0.0, 0.0), unit=1.0):
        """Fill ``mask`` with the colour (visible) or the heat value (infrared).

        Patterns only change colour, never heat: the same material has the
        same emissivity whatever it is dyed, which is why stripes vanish in
        infrared.
        """
        if self.infrared:
            self.image[mask] = heat
            return
        if garment is None or garment.pattern == "plain":
            self.image[mask] = colour
            return
        period = max(garment.period * unit, 1.5)
        ys = (self.yy[mask] - origin[0]) / period
        xs = (self.xx[mask] - origin[1]) / period
        if garment.pattern == "hstripes":
            second = (ys % 2) < 1
        elif garment.pattern == "vstripes":
            second = (xs % 2) < 1
        elif garment.pattern == "checks":
            second = ((ys % 2) < 1) ^ ((xs % 2) < 1)
        else:  # a chest block / logo
            second = (np.abs(ys - 3.5) < 1.5) & (np.abs(xs) < 1.5)
        self.image[mask] = np.where(second[:, None], garment.colour2, garment.colour)


def _garment_heat(identity: Identity, garment: Garment) -> float:
    """Infrared brightness of clothing: body heat seen through the material."""
    return identity.heat * MATERIALS[garment.material]


def render(identity: Identity, camera: Camera, key: tuple[int, ...], view: str | None = None) -> np.ndarray:
    """One image (H x W x 3 uint8) of ``identity`` seen by ``camera``; ``key`` fixes pose and noise.

    ``view`` forces front/back/side (RegDB records each person from one side);
    by default the camera's viewpoint distribution decides.
    """
    return render_with_keypoints(identity, camera, key, view)[0]


def render_with_keypoints(identity: Identity, camera: Camera, key: tuple[int, ...],
                          view: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render`'s image and the 17 COCO keypoints of the person drawn in it, (17, 3) [x, y, confidence].

    The keypoints come from the same body geometry the painter used (see
    :func:`_joints`), in the image's pixel coordinates (pixel j spans [j, j+1)).
    """
    rng = _rng(*key, 303)
    h, w = camera.background.shape[:2]
    drawn = VIEWS[rng.choice(3, p=camera.views)]  # drawn even when forced: the rest of the stream stays put
    view = view or drawn
    scale = camera.scale * rng.uniform(0.95, 1.05)
    body_h = identity.height * scale * h
    feet = min(h - 1.0, h * 0.5 + body_h * 0.5 + rng.normal(0, 0.02 * h))
    top = feet - body_h
    cx = w / 2 + rng.normal(0, 0.05 * w)
    canvas = _Canvas(camera, int(rng.integers(-w // 4, w // 4 + 1)))
    keypoints = _draw_person(canvas, identity, view, top, feet, cx, rng)
    if rng.random() < 0.25:
        _draw_occluder(canvas, rng, h, w)
    return _finish(canvas.image, camera, rng), keypoints


def _draw_person(c: _Canvas, p: Identity, view: str, top, feet, cx, rng) -> np.ndarray:
    """Back to front: backpack, hair, legs, torso, arms, bags, head; sizes relative to the body height.

    Returns the person's 17 COCO keypoints (:func:`_joints`)."""
    body_h = feet - top
    unit = body_h  # pattern periods scale with the person
    side = view == "side"
    width = p.build * body_h * (0.1 if side else 0.135)
    head_r = p.head * body_h * 1.35
    head_cy = top + head_r
    neck = top + 2 * head_r
    hip = feet - p.legs * body_h
    shoulder = neck + 0.02 * body_h
    skin_heat = p.heat
    top_heat = _garment_heat(p, p.top)
    bottom_heat = _garment_heat(p, p.bottom)

    # Backpack behind the body when seen from the front (only its straps show).
    if p.bag is not None and p.bag_kind == "backpack" and view != "back":
        bx = cx + (width * 0.9 if side else 0)
        c.paint(c.ellipse((shoulder + hip) / 2, bx, (hip - shoulder) * 0.4, width * 0.7), p.bag.colour,
                _carried_heat(p.bag, p))

    if p.long_hair and view != "back":  # behind the shoulders when the face is visible
        _long_hair(c, p, head_cy, cx, shoulder + 0.07 * body_h, head_r)

    # Legs (walking: spread by a random phase); the far leg first.
    stride = rng.uniform(-1, 1) * width * (0.9 if side else 0.35)
    leg_r = width * 0.32
    for sign in (-1, 1):
        lx = cx + sign * (0 if side else width * 0.45)
        fx = lx + sign * stride
        shorts = p.bottom_kind == "shorts"
        knee_y = hip + (feet - hip) * 0.5
        bare = c.capsule(hip, lx, feet - leg_r, fx, leg_r * 0.85)
        c.paint(bare, p.skin, skin_heat)
        cover_end = knee_y if shorts else feet - leg_r
        if p.bottom_kind != "skirt":
            c.paint(c.capsule(hip, lx, cover_end, lx + (fx - lx) * (cover_end - hip) / (feet - hip), leg_r),
                    p.bottom.colour, bottom_heat, p.bottom, (hip, cx), unit)
        c.paint(c.ellipse(feet - leg_r * 0.5, fx + (leg_r * 0.6 if side else 0), leg_r * 0.6, leg_r * 1.1),
                p.shoes, skin_heat * 0.45)
    if p.bottom_kind == "skirt":
        c.paint(c.trapezoid(hip - 0.02 * body_h, hip + (feet - hip) * 0.45, cx, width * 0.95, width * 1.35),
                p.bottom.colour, bottom_heat, p.bottom, (hip, cx), unit)

    # Torso.
    c.paint(c.trapezoid(shoulder, hip + 0.02 * body_h, cx, width, width * 0.85), p.top.colour, top_heat,
            p.top, (shoulder, cx), unit)

    # Arms: swing opposite to the legs; short sleeves leave warm bare forearms.
    arm_r = width * 0.24
    swing = -stride * 0.6
    for sign in ((1,) if side else (-1, 1)):
        ax = cx + sign * (0 if side else width * 1.05)
        hx = ax + (swing if side else sign * width * 0.15 - swing * sign * 0.3)
        hand_y = hip + 0.03 * body_h
        c.paint(c.capsule(shoulder + arm_r, ax, hand_y, hx, arm_r * 0.9), p.skin, skin_heat)
        sleeve_end = shoulder + (hand_y - shoulder) * (0.4 if p.short_sleeves else 0.95)
        t = (sleeve_end - shoulder) / (hand_y - shoulder)
        c.paint(c.capsule(shoulder + arm_r, ax, sleeve_end, ax + (hx - ax) * t, arm_r), p.top.colour, top_heat,
                p.top, (shoulder, cx), unit)

    # Shoulder bag on one side, backpack seen from behind.
    if p.bag is not None and p.bag_kind == "shoulder":
        c.paint(c.capsule(shoulder, cx - width * 0.6, hip, cx + width * 0.6, width * 0.08), p.bag.colour,
                _carried_heat(p.bag, p))
        c.paint(c.ellipse(hip, cx + width * 1.1, width * 0.45, width * 0.5), p.bag.colour, _carried_heat(p.bag, p))
    if p.bag is not None and p.bag_kind == "backpack" and view == "back":
        c.paint(c.ellipse((shoulder + hip) / 2 - 0.02 * body_h, cx, (hip - shoulder) * 0.38, width * 0.8),
                p.bag.colour, _carried_heat(p.bag, p))
    elif p.bag is not None and p.bag_kind == "backpack" and view == "front":
        for sign in (-1, 1):
            c.paint(c.capsule(shoulder, cx + sign * width * 0.5, hip - 0.05 * body_h, cx + sign * width * 0.6,
                              width * 0.08), p.bag.colour, _carried_heat(p.bag, p))

    # Head: long hair behind it, then the face (warm) or the back of the head, then a hat.
    c.paint(c.capsule(neck - head_r * 0.2, cx, shoulder + 0.01 * body_h, cx, head_r * 0.45), p.skin, skin_heat)
    if p.long_hair and view == "back":
        _long_hair(c, p, head_cy, cx, shoulder + 0.07 * body_h, head_r)
    face = c.ellipse(head_cy, cx, head_r, head_r * 0.82)
    if view == "back":
        c.paint(face, p.hair, skin_heat * 0.7)
    else:
        c.paint(face, p.skin, skin_heat)
        hair_cap = face & (c.yy < head_cy - head_r * 0.35)
        if side:
            hair_cap |= face & (c.xx < cx - head_r * 0.3)
        c.paint(hair_cap, p.hair, skin_heat * 0.7)
    if p.hat is not None:
        c.paint(c.ellipse(head_cy - head_r * 0.55, cx, head_r * 0.55, head_r * 1.08), p.hat.colour,
                _carried_heat(p.hat, p) * 0.8)
    return _joints(view, cx, width, head_r, head_cy, shoulder, hip, feet, stride, swing, arm_r, leg_r)


def _joints(view: str, cx, width, head_r, head_cy, shoulder, hip, feet, stride, swing, arm_r, leg_r) -> np.ndarray:
    """The 17 COCO keypoints (x, y, confidence) of a person drawn by :func:`_draw_person`.

    Joints sit where the painter put the body parts: shoulders at the top of
    the arm capsules, wrists at their ends, elbows half-way; hips at the top
    of the leg capsules, ankles at their ends, knees half-way; eyes, ears and
    nose on the head ellipse. Seen from the front a person's left side is on
    the image's right; from the back on its left. From the side (the face
    looks to +x, so the camera sees the right side) the far side's joints
    get confidence 0.3; joints of a face seen from behind get confidence 0.
    Canvas pixel j sits at x = j + 0.5 in keypoint coordinates.
    """
    side = view == "side"
    left = -1.0 if view == "back" else 1.0  # image direction of the person's left side (front/back)
    out = np.zeros((17, 3), dtype=np.float32)

    def put(index, x, y, conf):
        out[index] = (x + 0.5, y + 0.5, conf)

    face = 0.0 if view == "back" else 1.0
    eye_y = head_cy - 0.15 * head_r
    if side:
        put(0, cx + 0.8 * head_r, head_cy + 0.1 * head_r, 1.0)
        put(1, cx + 0.5 * head_r, eye_y, 0.3)
        put(2, cx + 0.5 * head_r, eye_y, 1.0)
        put(3, cx - 0.1 * head_r, head_cy, 0.3)
        put(4, cx - 0.1 * head_r, head_cy, 1.0)
    else:
        put(0, cx, head_cy + 0.15 * head_r, face)
        for index, sign in ((1, left), (2, -left)):
            put(index, cx + sign * 0.35 * head_r, eye_y, face)
        for index, sign in ((3, left), (4, -left)):
            put(index, cx + sign * 0.8 * head_r, head_cy, 1.0)
    hand_y = hip + 0.03 * (feet - (head_cy - head_r))
    # (image-side sign, confidence) of the person's left and right limbs
    sides = {0: (-1.0, 0.3), 1: (1.0, 1.0)} if side else {0: (left, 1.0), 1: (-left, 1.0)}
    for lr, (sign, conf) in sides.items():  # lr 0 = left joints (odd COCO index), 1 = right
        ax = cx if side else cx + sign * width * 1.05
        hx = ax + (sign * swing if side else sign * width * 0.15 - swing * sign * 0.3)
        sy = shoulder + arm_r
        put(5 + lr, ax, sy, conf)
        put(7 + lr, (ax + hx) / 2, (sy + hand_y) / 2, conf)
        put(9 + lr, hx, hand_y, conf)
        lx = cx if side else cx + sign * width * 0.45
        fx = lx + sign * stride
        ankle_y = feet - leg_r
        put(11 + lr, lx, hip, conf)
        put(13 + lr, (lx + fx) / 2, (hip + ankle_y) / 2, conf)
        put(15 + lr, fx, ankle_y, conf)
    return out


def _long_hair(c: _Canvas, p: Identity, head_cy, cx, end_y, head_r) -> None:
    c.paint(c.capsule(head_cy, cx, end_y, cx, head_r * 0.9), p.hair, p.heat * 0.65)


def _carried_heat(garment: Garment, p: Identity) -> float:
    """Accessories are carried, not worn against the skin: mostly ambient."""
    return 0.35 * p.heat * MATERIALS[garment.material] + 0.12


def _draw_occluder(c: _Canvas, rng, h: int, w: int) -> None:
    """Something between the camera and the person: a pole, a railing or a parked object."""
    kind = rng.integers(3)
    colour = _colour(rng)
    heat = float(rng.uniform(0.1, 0.4))
    if kind == 0:
        x0 = rng.uniform(0, w)
        mask = np.abs(c.xx - x0) < rng.uniform(0.04, 0.12) * w
    elif kind == 1:
        y0 = rng.uniform(0.55, 0.8) * h
        mask = np.abs(c.yy - y0) < rng.uniform(0.02, 0.05) * h
    else:
        mask = (c.yy > rng.uniform(0.65, 0.85) * h) & (np.abs(c.xx - rng.uniform(0, w)) < rng.uniform(0.2, 0.45) * w)
    c.paint(mask, colour, heat)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding (sums of shifted slices: no scipy)."""
    radius = max(1, int(round(2 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    pad = [(radius, radius), (0, 0)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge")
    out = sum(t * padded[i:i + image.shape[0]] for i, t in enumerate(taps))
    pad = [(0, 0), (radius, radius)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(out, pad, mode="edge")
    return sum(t * padded[:, i:i + image.shape[1]] for i, t in enumerate(taps))


def _finish(image: np.ndarray, camera: Camera, rng) -> np.ndarray:
    """Camera response: lighting, white balance, blur and sensor noise, then 8 bits."""
    light = np.float32(camera.gain * rng.uniform(0.85, 1.15))
    if camera.infrared:
        image = image * light
    else:
        image = image * (light * camera.cast).astype(np.float32)
        image = image ** np.float32(rng.uniform(0.9, 1.1))
    image = _blur(image, camera.blur * rng.uniform(0.8, 1.2))
    image = image + camera.noise * rng.standard_normal(image.shape, dtype=np.float32)
    out = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if camera.infrared:  # stored as three equal channels, like the real infrared images
        out = np.repeat(out[..., None], 3, axis=2)
    return out
