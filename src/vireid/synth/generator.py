"""Synthetic visible/infrared pedestrian datasets written in the real on-disk layouts.

SYSU-MM01, RegDB and LLCM need a licence request, so tests, demos and CI use
these instead: the same folders, file names and list files as the real sets,
so every reader and protocol runs unchanged. Each image is a pure function of
(seed, identity, camera, image number), so output does not depend on the
number of worker processes. The tree is written into a temporary sibling
folder and renamed into place at the end: a crash never leaves a half dataset.

Layout-specific choices (documented because readers depend on them):

- SYSU: ids 1..N; about 20% test and 20% val ids (like 96/99 of 491); cams
  1,2,4,5 visible, 3,6 infrared (cam 3 films cam 2's room); not every id is
  in every camera, but each has at least one visible and one infrared camera;
  test ids' visible folders hold the full ``images`` count so ten-shot
  galleries never run short. ``exp/rand_perm_cam.mat`` is written when scipy
  is installed: ``rand_perm_cam`` is a 6x1 cell (camera) of 1xN cells (id) of
  10 x n 1-based permutations (empty for a missing folder), so the common
  Python reading ``perm[cam - 1][0].squeeze()[pid - 1][trial][:shots]`` works.
- RegDB: person folders ``Visible/<p>/`` and ``Thermal/<p>/`` with
  ``<female|male>_<front|back>_<v|t>_<serial:05d>_<n>.bmp``; visible and
  thermal image n of a person share the pose (a dual camera); trial t splits
  the ids in half at random, labels are 0-based within each split.
- LLCM: nine cameras that each record visible by day and near-infrared by
  night (same scene); ``test_nir/cam3`` exists but is empty, like the real
  set; training images live in ``train_vis/camK/<pid>/`` and
  ``train_nir/camK/<pid>/``; labels in the lists are 0-based over training
  ids; file names never contain "cam" (the reference parses the text after
  the first "cam" in a path).
- Market-1501 / DukeMTMC-reID / MSMT17: visible only (every camera is a
  colour camera; MSMT17's capture slots morning / noon / afternoon light the
  scene differently). Half the ids train, half test; an id appears in at
  least two cameras (a query always has a cross-camera match); per test id
  and camera the first image is the query, the rest the gallery. Market:
  names ``PPPP_cCsS_FFFFFF_NN.jpg``, cameras 1-6, plus a few junk (``-1``)
  and distractor (``0000``) images of people outside the set in
  ``bounding_box_test/``. Duke: ``PPPP_cC_fFFFFFFF.jpg``, cameras 1-8, plus
  a few gallery-only identities (the real set's distractors; it has no junk
  or 0000 images). MSMT17 (V1): ``train/`` and ``test/`` person folders
  named by the 0-based label of their split, files
  ``PPPP_SSS_CC_<date><slot>_<frame>_0.jpg``, cameras 1-15 (13-15 indoor),
  the four list files; ``list_val.txt`` holds about every tenth training image.

Every layout also gets ``keypoints.json`` at the root: the 17 COCO body
keypoints of each image, taken from the renderer's own body geometry, in the
format of :mod:`vireid.data.keypoints` (what SPOT trains and tests with).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from vireid.data import layouts
from vireid.data.keypoints import DEFAULT_FILE as KEYPOINT_FILE
from vireid.data.keypoints import write_keypoints
from vireid.synth.render import make_camera, make_identity, render, render_with_keypoints

LAYOUTS = ("sysu", "regdb", "llcm", "market1501", "dukemtmc", "msmt17")
SINGLE_MODALITY_LAYOUTS = ("market1501", "dukemtmc", "msmt17")
DEFAULT_IMAGES = {"sysu": 10, "regdb": 10, "llcm": 6, "market1501": 6, "dukemtmc": 6, "msmt17": 6}
DEFAULT_SIZE = (128, 64)  # height, width
MIN_IDS = 3

# SYSU cameras: scene (rooms and places; cam 3 is cam 2's room in infrared), infrared, indoor, presence probability.
SYSU_CAMERAS = {1: (1, False, True, 0.6), 2: (2, False, True, 0.6), 3: (2, True, True, 0.85),
                4: (4, False, False, 0.8), 5: (5, False, False, 0.8), 6: (6, True, False, 0.85)}


@dataclass(frozen=True)
class CameraSpec:
    scene: int
    infrared: bool
    indoor: bool
    dim: float = 1.0


@dataclass(frozen=True)
class ImageJob:
    relpath: str
    pid: int
    camera: CameraSpec
    key: tuple[int, ...]
    view: str | None = None


@dataclass
class Plan:
    """Everything to write: images plus small text/mat files."""

    jobs: list[ImageJob]
    texts: dict[str, str]
    empty_dirs: list[str]
    folder_counts: dict[tuple[int, int], int] | None = None  # SYSU (cam, pid) -> images, for rand_perm_cam.mat
    num_ids: int = 0


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, *key])


def _split(seed: int, ids: list[int], fractions: tuple[float, ...], salt: int) -> list[list[int]]:
    """Random disjoint subsets of ``ids`` with the given fractions (each non-empty); the rest last."""
    order = list(_rng(seed, salt).permutation(ids))
    parts, start = [], 0
    for fraction in fractions:
        n = max(1, round(fraction * len(ids)))
        parts.append(sorted(int(i) for i in order[start:start + n]))
        start += n
    parts.append(sorted(int(i) for i in order[start:]))
    return parts


def _count(rng: np.random.Generator, images: int, full: bool) -> int:
    return images if full else int(rng.integers(math.ceil(images / 2), images + 1))


def plan_sysu(num_ids: int, seed: int, images: int) -> Plan:
    ids = list(range(1, num_ids + 1))
    test, val, train = _split(seed, ids, (0.2, 0.2), salt=1)
    test_set = set(test)
    jobs, counts = [], {}
    for pid in ids:
        rng = _rng(seed, 2, pid)
        present = {cam: rng.random() < spec[3] for cam, spec in SYSU_CAMERAS.items()}
        if not any(present[c] for c in layouts.SYSU_VISIBLE_CAMS):
            present[int(rng.choice(layouts.SYSU_VISIBLE_CAMS))] = True
        if not any(present[c] for c in layouts.SYSU_INFRARED_CAMS):
            present[int(rng.choice(layouts.SYSU_INFRARED_CAMS))] = True
        for cam, (scene, infrared, indoor, _) in SYSU_CAMERAS.items():
            if not present[cam]:
                continue
            n = _count(rng, images, full=pid in test_set and not infrared)
            counts[(cam, pid)] = n
            spec = CameraSpec(scene, infrared, indoor)
            for k in range(1, n + 1):
                jobs.append(ImageJob(f"cam{cam}/{pid:04d}/{k:04d}.jpg", pid, spec, (seed, 3, pid, cam, k)))
    texts = {f"exp/{name}_id.txt": ",".join(map(str, part)) + "\n"
             for name, part in (("train", train), ("val", val), ("test", test))}
    return Plan(jobs, texts, [], folder_counts=counts, num_ids=num_ids)


def plan_regdb(num_ids: int, seed: int, images: int) -> Plan:
    ids = list(range(1, num_ids + 1))
    visible, thermal = CameraSpec(1, False, False), CameraSpec(1, True, False)  # one dual camera, one scene
    jobs, files = [], {}
    serial = 0
    for pid in ids:
        rng = _rng(seed, 4, pid)
        gender = "female" if rng.random() < 0.4 else "male"
        view = "front" if rng.random() < 0.5 else "back"
        files[pid] = []
        for n in range(1, images + 1):
            serial += 1
            key = (seed, 5, pid, n)  # same key for both modalities: a paired, co-located capture
            vis = f"Visible/{pid}/{gender}_{view}_v_{serial:05d}_{n}.bmp"
            thm = f"Thermal/{pid}/{gender}_{view}_t_{serial:05d}_{n}.bmp"
            jobs.append(ImageJob(vis, pid, visible, key, view))
            jobs.append(ImageJob(thm, pid, thermal, key, view))
            files[pid].append((vis, thm))
    texts = {}
    for trial in layouts.REGDB_TRIALS:
        train, test = _split(seed, ids, (0.5,), salt=100 + trial)
        for split, members in (("train", train), ("test", test)):
            for column, modality in ((0, "visible"), (1, "thermal")):
                lines = [f"{pair[column]} {label}" for label, pid in enumerate(members) for pair in files[pid]]
                texts[f"idx/{split}_{modality}_{trial}.txt"] = "\n".join(lines) + "\n"
    return Plan(jobs, texts, [], num_ids=num_ids)


def plan_llcm(num_ids: int, seed: int, images: int) -> Plan:
    ids = list(range(1, num_ids + 1))
    test, train = _split(seed, ids, (0.33,), salt=6)
    test_set = set(test)
    label = {pid: i for i, pid in enumerate(train)}
    jobs, lists = [], {"vis": [], "nir": []}
    for pid in ids:
        rng = _rng(seed, 7, pid)
        cams = {"vis": [c for c in layouts.LLCM_VISIBLE_CAMS if rng.random() < 0.45],
                "nir": [c for c in layouts.LLCM_INFRARED_CAMS if rng.random() < 0.45]}
        for mod, allowed in (("vis", layouts.LLCM_VISIBLE_CAMS), ("nir", layouts.LLCM_INFRARED_CAMS)):
            if not cams[mod]:
                cams[mod] = [int(rng.choice(allowed))]
        split = "test" if pid in test_set else "train"
        for mod in ("vis", "nir"):
            for cam in cams[mod]:
                spec = CameraSpec(cam, mod == "nir", indoor=cam % 3 == 0, dim=0.55 if mod == "vis" else 1.0)
                for k in range(1, _count(rng, images, full=False) + 1):
                    rel = f"{split}_{mod}/cam{cam}/{pid:04d}/{pid:04d}_c{cam:02d}_f{k:04d}.jpg"
                    jobs.append(ImageJob(rel, pid, spec, (seed, 8, pid, cam, mod == "nir", k)))
                    if split == "train":
                        lists[mod].append(f"{rel} {label[pid]}")
    texts = {"idx/test_id.txt": ",".join(map(str, test)) + "\n",
             "idx/train_vis.txt": "\n".join(lists["vis"]) + "\n",
             "idx/train_nir.txt": "\n".join(lists["nir"]) + "\n"}
    return Plan(jobs, texts, [f"{layouts.LLCM_INFRARED_DIR}/cam3"], num_ids=num_ids)


def _single_cameras(rng: np.random.Generator, cams: tuple[int, ...], p: float) -> list[int]:
    """The cameras one identity walks past: each with probability ``p``, at least two."""
    chosen = [c for c in cams if rng.random() < p]
    while len(chosen) < 2:
        extra = int(rng.choice([c for c in cams if c not in chosen]))
        chosen = sorted(chosen + [extra])
    return chosen


def _query_gallery(names: list[str]) -> tuple[list[str], list[str]]:
    """One query per (test identity, camera): the first image, when the camera has more than one."""
    return (names[:1], names[1:]) if len(names) > 1 else ([], names)


def plan_named_folders(num_ids: int, seed: int, images: int, layout: str) -> Plan:
    """Market-1501 or DukeMTMC-reID: three flat folders, identity and camera in each file name."""
    market = layout == "market1501"
    cams = tuple(range(1, 7)) if market else tuple(range(1, 9))
    ids = list(range(1, num_ids + 1))
    test, train = _split(seed, ids, (0.5,), salt=20 if market else 30)
    test_set = set(test)
    jobs, frame = [], 0

    def name(pid: int, cam: int, rng: np.random.Generator) -> str:
        nonlocal frame
        frame += int(rng.integers(1, 40))
        person = "-1" if pid < 0 else f"{pid:04d}"  # Market's junk images are named -1_...
        if market:
            return f"{person}_c{cam}s{int(rng.integers(1, 7))}_{frame:06d}_{int(rng.integers(1, 4)):02d}.jpg"
        return f"{pid:04d}_c{cam}_f{frame:07d}.jpg"

    def add(folder: str, pid: int, label_pid: int, cam: int, k: int, rng) -> str:
        rel = f"{folder}/{name(label_pid, cam, rng)}"
        spec = CameraSpec(cam + (20 if market else 40), False, False, dim=0.8 if market and cam == 6 else 1.0)
        jobs.append(ImageJob(rel, pid, spec, (seed, 21, pid, cam, k)))
        return rel

    for pid in ids:
        rng = _rng(seed, 22, pid)
        for cam in _single_cameras(rng, cams, 0.45 if market else 0.35):
            n = _count(rng, images, full=False)
            if pid not in test_set:
                for k in range(n):
                    add("bounding_box_train", pid, pid, cam, k, rng)
                continue
            query, gallery = _query_gallery(list(range(n)))
            for k in query:
                add("query", pid, pid, cam, k, rng)
            for k in gallery:
                add("bounding_box_test", pid, pid, cam, k, rng)
    # People outside the identity set, in the gallery only: Market names them 0000 (distractors) or -1 (junk);
    # DukeMTMC gives its gallery-only distractors ordinary ids after the others.
    extra = max(2, len(test) // 4)
    for j in range(extra):
        rng = _rng(seed, 23, j)
        stranger = 100_000 + j  # an identity of the generator that no labelled image uses
        cam = int(rng.choice(cams))
        if market:
            add("bounding_box_test", stranger, 0, cam, 0, rng)
            add("bounding_box_test", stranger + 50_000, -1, cam, 0, rng)
        else:
            for k in range(_count(rng, images, full=False)):
                add("bounding_box_test", stranger, num_ids + 1 + j, cam, k, rng)
    return Plan(jobs, {}, [], num_ids=num_ids)


MSMT_SLOTS = (("0113morning", 0.85), ("0113noon", 1.0), ("0113afternoon", 0.7), ("0302morning", 0.85),
              ("0302noon", 1.0), ("0303afternoon", 0.7))


def plan_msmt17(num_ids: int, seed: int, images: int) -> Plan:
    """MSMT17 V1: train/ and test/ person folders named by label, and the four list files."""
    ids = list(range(1, num_ids + 1))
    test, train = _split(seed, ids, (0.5,), salt=40)
    jobs, lists = [], {"train": [], "val": [], "query": [], "gallery": []}
    for split, members in (("train", train), ("test", test)):
        for label, pid in enumerate(members):
            rng = _rng(seed, 41, pid)
            running = 0
            for cam in _single_cameras(rng, tuple(range(1, 16)), 0.2):
                slot, dim = MSMT_SLOTS[int(rng.integers(len(MSMT_SLOTS)))]
                spec = CameraSpec(60 + cam, False, indoor=cam > 12, dim=dim)
                rels = []
                for k in range(_count(rng, images, full=False)):
                    frame = int(rng.integers(1, 9999))
                    rel = f"{label:04d}/{label:04d}_{running:03d}_{cam:02d}_{slot}_{frame:04d}_0.jpg"
                    running += 1
                    jobs.append(ImageJob(f"{split}/{rel}", pid, spec, (seed, 42, pid, cam, k)))
                    rels.append(f"{rel} {label}")
                if split == "train":
                    for line in rels:
                        lists["val" if int(rng.random() * 10) == 0 else "train"].append(line)
                else:
                    query, gallery = _query_gallery(rels)
                    lists["query"] += query
                    lists["gallery"] += gallery
    texts = {f"list_{part}.txt": "\n".join(lines) + "\n" for part, lines in lists.items()}
    return Plan(jobs, texts, [], num_ids=num_ids)


PLANNERS = {"sysu": plan_sysu, "regdb": plan_regdb, "llcm": plan_llcm,
            "market1501": lambda n, seed, images: plan_named_folders(n, seed, images, "market1501"),
            "dukemtmc": lambda n, seed, images: plan_named_folders(n, seed, images, "dukemtmc"),
            "msmt17": plan_msmt17}


@lru_cache(maxsize=64)
def _camera(seed: int, spec: CameraSpec, size: tuple[int, int]):
    return make_camera(seed, spec.scene, spec.infrared, spec.indoor, size, spec.dim)


@lru_cache(maxsize=4096)
def _identity(seed: int, pid: int):
    return make_identity(seed, pid)


def render_job(job: ImageJob, seed: int, size: tuple[int, int]) -> np.ndarray:
    return render(_identity(seed, job.pid), _camera(seed, job.camera, size), job.key, job.view)


def _write_chunk(args) -> dict:
    """Write a chunk of images; returns their keypoints, relative path -> ((width, height), (17, 3))."""
    root, jobs, seed, size = args
    keypoints = {}
    for job in jobs:
        path = os.path.join(root, job.relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels, keypoints[job.relpath] = render_with_keypoints(_identity(seed, job.pid),
                                                               _camera(seed, job.camera, size), job.key, job.view)
        keypoints[job.relpath] = ((size[1], size[0]), keypoints[job.relpath])
        image = Image.fromarray(pixels)
        if path.endswith(".jpg"):
            image.save(path, quality=92)
        else:
            image.save(path)
    return keypoints


def _write_rand_perm(root: Path, counts: dict[tuple[int, int], int], num_ids: int, seed: int) -> bool:
    """exp/rand_perm_cam.mat like the official one; skipped without scipy (it is optional)."""
    try:
        from scipy.io import savemat
    except ImportError:
        return False
    cells = np.empty((6, 1), dtype=object)  # readers index it as perm[cam - 1][0].squeeze()[pid - 1]
    for cam in range(1, 7):
        per_id = np.empty((1, num_ids), dtype=object)
        for pid in range(1, num_ids + 1):
            n = counts.get((cam, pid), 0)
            rng = _rng(seed, 9, cam, pid)
            per_id[0, pid - 1] = (np.stack([rng.permutation(n) + 1 for _ in range(10)]).astype(np.float64)
                                  if n else np.zeros((0, 0)))
        cells[cam - 1, 0] = per_id
    buffer = io.BytesIO()
    savemat(buffer, {"rand_perm_cam": cells})
    data = buffer.getvalue()
    # The MAT header's 116 text bytes hold a creation time; a fixed text keeps the file deterministic.
    header = b"MATLAB 5.0 MAT-file, written by vireid synth".ljust(116, b" ")
    (root / "exp" / "rand_perm_cam.mat").write_bytes(header + data[116:])
    return True


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ValueError(f"output {out} already exists and is not an empty folder; "
                             "pass overwrite=True (--overwrite)")


def generate(out: str | os.PathLike, layout: str, ids: int, seed: int = 0,
             size: tuple[int, int] = DEFAULT_SIZE, images: int | None = None,
             workers: int | None = None, overwrite: bool = False, progress: bool = False) -> dict:
    """Write a synthetic dataset in ``layout``'s real format to ``out``; returns a small summary.

    ``images`` is the number of images per (identity, camera) folder (at most;
    most folders get between half and all of it). ``workers`` defaults to the
    CPU count; the result is identical for any number of workers.
    """
    if layout not in PLANNERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if ids < MIN_IDS:
        raise ValueError(f"ids must be at least {MIN_IDS} (train and test identities are needed), got {ids}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width) of at least 16 pixels each, got {size}")
    images = DEFAULT_IMAGES[layout] if images is None else images
    if images < 1:
        raise ValueError(f"images per camera must be at least 1, got {images}")
    if layout in SINGLE_MODALITY_LAYOUTS and images < 2:
        raise ValueError(f"the {layout} layout needs at least 2 images per camera (one query, the rest gallery), "
                         f"got {images}")
    out = Path(out)
    _prepare_output(out, overwrite)
    plan = PLANNERS[layout](ids, seed, images)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the dataset should not be
    try:
        keypoints = _write_images(tmp, plan.jobs, seed, tuple(size), workers, progress)
        write_keypoints(tmp / KEYPOINT_FILE, keypoints)  # the body joints the renderer drew (SPOT reads them)
        for rel, text in plan.texts.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
        for rel in plan.empty_dirs:
            (tmp / rel).mkdir(parents=True, exist_ok=True)
        mat = plan.folder_counts is not None and _write_rand_perm(tmp, plan.folder_counts, plan.num_ids, seed)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    infrared = sum(job.camera.infrared for job in plan.jobs)
    return {"root": str(out), "layout": layout, "ids": ids, "images": len(plan.jobs),
            "visible": len(plan.jobs) - infrared, "infrared": infrared, "rand_perm_cam": bool(mat)}


def _write_images(root: Path, jobs: list[ImageJob], seed: int, size: tuple[int, int],
                  workers: int | None, progress: bool) -> dict:
    workers = max(1, min(workers or os.cpu_count() or 1, 32))
    chunk = 64
    chunks = [(str(root), jobs[i:i + chunk], seed, size) for i in range(0, len(jobs), chunk)]
    bar = _progress_bar(len(jobs)) if progress else None
    keypoints = {}
    if workers == 1 or len(chunks) == 1:
        for part in map(_write_chunk, chunks):
            keypoints.update(part)
            _advance(bar, len(part))
    else:
        with get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            for part in pool.imap_unordered(_write_chunk, chunks):
                keypoints.update(part)
                _advance(bar, len(part))
    if bar is not None:
        bar.close()
    return keypoints


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="synth")


def _advance(bar, n: int) -> None:
    if bar is not None:
        bar.update(n)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(tmp: Path, out: Path) -> None:
    """Atomic for a new or empty ``out``; an old tree is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None and old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()


def sample_grid(seed: int = 0, ids: int = 6, size: tuple[int, int] = DEFAULT_SIZE, per_camera: int = 2,
                gap: int = 2) -> np.ndarray:
    """One row per identity: SYSU visible cams 1,2,4,5 then infrared cams 3,6, ``per_camera`` images each.

    For the README figure: the same person's colours must not be what
    matches them in infrared.
    """
    cams = layouts.SYSU_VISIBLE_CAMS + layouts.SYSU_INFRARED_CAMS
    h, w = size
    rows = []
    for pid in range(1, ids + 1):
        tiles = []
        for cam in cams:
            scene, infrared, indoor, _ = SYSU_CAMERAS[cam]
            job_camera = CameraSpec(scene, infrared, indoor)
            for k in range(1, per_camera + 1):
                tiles.append(render_job(ImageJob("", pid, job_camera, (seed, 3, pid, cam, k)), seed, size))
                tiles.append(np.full((h, gap if k < per_camera else 3 * gap, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles[:-1], axis=1))
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)
