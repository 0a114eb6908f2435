"""Named evaluation protocols: which images are queries and which are gallery, per trial.

A protocol is separate from the dataset reader: it only needs the dataset
root and reproduces the reference's test lists exactly (order included), so a
number printed next to a protocol name means the same thing everywhere.

Names (``protocol_names()`` lists them all):

* ``sysu/{all,indoor}/{single,multi}/{official,seeded}`` - queries are every
  image of the test identities in the infrared cameras 3 and 6; the gallery is
  1 (single) or 10 (multi) visible images per (identity, camera) from cameras
  1,2,4,5 (all) or 1,2 (indoor), over 10 trials.
  ``official`` takes the first shots of row ``trial`` of the dataset's
  ``exp/rand_perm_cam.mat`` (the SYSU-MM01 MATLAB protocol; image index i is
  the i-th file of the folder in sorted order).
  ``seeded`` is the AGW-family Python draw: ``random.seed(trial)``, one
  ``random.choice`` per existing (identity, camera) folder. For ``multi`` the
  reference has no seeded draw; vireid's is ``random.seed(trial)`` and one
  ``random.sample`` of min(10, n) files per folder, in the same visiting order.
* ``regdb/trial{1..10}/{v2i,i2v}`` - the lists ``idx/test_{visible,thermal}_{t}.txt``;
  v2i = visible queries against the thermal gallery; one trial (each RegDB
  trial has its own trained model).
* ``llcm/{i2v,v2i}`` and ``llcm/v2i_as_released`` - queries are every test
  image of one modality (NIR cameras 1,2,4-9 or VIS cameras 1-9), the gallery
  one random image per (identity, camera) of the other modality
  (``random.seed(trial)``), 10 trials. The released LLCM code's "VIS->IR"
  numbers actually rank the *sampled NIR* images (as queries) against *all*
  VIS images; ``v2i_as_released`` reproduces that, ``v2i`` is the direct one.
* ``folder/{i2v,v2i}`` - your own labelled images in the folder layout
  (``<root>/{visible,infrared}/<person>/[cam<K>/]<image>``, see
  :mod:`vireid.data.datasets.folder`): every image of one modality as queries
  against every image of the other; one trial. The camera rule is off
  (image-level CMC, as RegDB) unless every image has a camera folder; then
  gallery images with the query's identity and camera are dropped (LLCM's rule).
* ``market1501``, ``dukemtmc``, ``msmt17`` - the single-modality standard:
  every image of ``query/`` against every image of ``bounding_box_test/``
  (MSMT17: ``list_query.txt`` against ``list_gallery.txt``), files in sorted
  (list) order; junk images (person -1) are left out of the gallery,
  distractors (0000) stay in it; the ``market1501`` rule drops the gallery
  images of the query's identity seen by the query's camera; image-level CMC;
  one trial (nothing is sampled).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vireid.data import layouts
from vireid.data.layouts import (
    LLCM_INFRARED_CAMS,
    LLCM_INFRARED_DIR,
    LLCM_VISIBLE_CAMS,
    LLCM_VISIBLE_DIR,
    REGDB_TRIALS,
    SYSU_GALLERY_CAMS,
    SYSU_INFRARED_CAMS,
    read_id_line,
    read_index_list,
    sorted_names,
)
from vireid.data.records import INFRARED, VISIBLE, Sample

SYSU_TRIALS = tuple(range(10))
LLCM_TRIALS = tuple(range(10))
MULTI_SHOTS = 10
# RegDB has no camera ids; these stand for the two sensors (no rule uses them).
REGDB_CAMERA = {VISIBLE: 1, INFRARED: 2}


@dataclass(frozen=True)
class TestSplit:
    query: list[Sample]
    gallery: list[Sample]
    rule: str | None = None  # overrides the protocol's camera rule for this split (folder data)


@dataclass(frozen=True)
class Protocol:
    """A named way to build query/gallery lists from a dataset root, per trial."""

    name: str
    dataset: str  # which on-disk layout it reads: sysu, regdb, llcm, folder, market1501, dukemtmc or msmt17
    rule: str  # the camera rule of ``vireid.evaluation.evaluate``
    trials: tuple[int, ...]
    description: str
    _build: Callable[[Path, int], TestSplit]

    def build(self, root: str | Path, trial: int) -> TestSplit:
        if trial not in self.trials:
            raise ValueError(f"protocol {self.name!r} has trials {list(self.trials)}, got {trial!r}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {root} (protocol {self.name})")
        return self._build(root, trial)


# ---------------------------------------------------------------- SYSU-MM01


def sysu_test_ids(root: Path) -> list[int]:
    return read_id_line(Path(root) / "exp" / "test_id.txt")


def _sysu_folder(root: Path, cam: int, pid: int) -> Path:
    return Path(root) / f"cam{cam}" / f"{pid:04d}"


def _sample(root: Path, rel: str, pid: int, cam: int, modality: int) -> Sample:
    return Sample(str(Path(root) / rel), pid, cam, modality)


def sysu_query(root: Path) -> list[Sample]:
    """AGW order: ids ascending, then camera 3 files, then camera 6 files, sorted."""
    root = Path(root)
    out = []
    for pid in sorted(sysu_test_ids(root)):
        for cam in SYSU_INFRARED_CAMS:
            folder = _sysu_folder(root, cam, pid)
            if folder.is_dir():
                out += [Sample(str(folder / f), pid, cam, INFRARED) for f in sorted_names(folder)]
    return out


def sysu_gallery_seeded(root: Path, mode: str, trial: int, shots: int = 1) -> list[Sample]:
    """The AGW ``random.seed(trial)`` gallery: per id (ascending), per camera, per existing folder."""
    root = Path(root)
    rng = random.Random(trial)
    out = []
    for pid in sorted(sysu_test_ids(root)):
        for cam in SYSU_GALLERY_CAMS[mode]:
            folder = _sysu_folder(root, cam, pid)
            if not folder.is_dir():
                continue  # a missing folder consumes no random numbers, as in the reference
            names = sorted_names(folder)
            if not names:
                continue
            picked = [rng.choice(names)] if shots == 1 else rng.sample(names, min(shots, len(names)))
            out += [Sample(str(folder / f), pid, cam, VISIBLE) for f in picked]
    return out


def sysu_query_official(root: Path) -> list[Sample]:
    """Official MATLAB order: camera-major (3 then 6), then ascending id, files sorted."""
    root = Path(root)
    ids = sorted(sysu_test_ids(root))
    out = []
    for cam in SYSU_INFRARED_CAMS:
        for pid in ids:
            folder = _sysu_folder(root, cam, pid)
            if folder.is_dir():
                out += [Sample(str(folder / f), pid, cam, INFRARED) for f in sorted_names(folder)]
    return out


def sysu_gallery_official(root: Path, mode: str, trial: int, shots: int) -> list[Sample]:
    """First ``shots`` entries of row ``trial`` of rand_perm_cam{cam}{id}; camera-major order."""
    root = Path(root)
    perms = _load_rand_perm_cam(root / "exp" / "rand_perm_cam.mat")
    out = []
    for cam in SYSU_GALLERY_CAMS[mode]:
        for pid in sorted(sysu_test_ids(root)):
            folder = _sysu_folder(root, cam, pid)
            if not folder.is_dir():
                continue
            names = sorted_names(folder)
            perm = _perm_for(perms, cam, pid)
            if perm is None or perm.size == 0:
                if names:
                    raise ValueError(
                        f"{root / 'exp' / 'rand_perm_cam.mat'}: no permutation for camera {cam}, "
                        f"identity {pid}, but {folder} holds {len(names)} images"
                    )
                continue
            if perm.ndim != 2 or perm.shape[0] <= trial:
                raise ValueError(
                    f"rand_perm_cam{{{cam}}}{{{pid}}} has shape {perm.shape}; expected 10 rows "
                    f"(one per trial) to read trial {trial}"
                )
            for index in perm[trial, :shots]:
                i = int(index)
                if not 1 <= i <= len(names):
                    raise ValueError(
                        f"rand_perm_cam{{{cam}}}{{{pid}}} selects image {i} but {folder} holds "
                        f"{len(names)} images; the .mat does not match this copy of the dataset"
                    )
                out.append(Sample(str(folder / names[i - 1]), pid, cam, VISIBLE))
    return out


def _load_rand_perm_cam(path: Path):
    if not path.is_file():
        raise FileNotFoundError(
            f"the official SYSU-MM01 split file is missing: {path}. It ships with the dataset "
            f"(and in the SYSU-MM01 authors' evaluation code as evaluation/data_split/"
            f"rand_perm_cam.mat); or use a '.../seeded' protocol instead"
        )
    from vireid.utils.optional import require

    sio = require("scipy.io", "mat", "reading exp/rand_perm_cam.mat")
    try:
        mat = sio.loadmat(str(path))
    except (ValueError, NotImplementedError, OSError) as exc:
        raise ValueError(f"cannot read {path} as a MATLAB file: {exc}") from None
    if "rand_perm_cam" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} has no variable 'rand_perm_cam' (found: {found})")
    return mat["rand_perm_cam"]


def _perm_for(perms, cam: int, pid: int):
    """rand_perm_cam{cam}{pid} from scipy's nested object arrays (None if absent)."""
    cams = perms.ravel()
    if cam > len(cams):
        return None
    per_id = cams[cam - 1].ravel()
    if pid > len(per_id):
        return None
    cell = per_id[pid - 1]
    while getattr(cell, "dtype", None) is not None and cell.dtype == object and cell.size == 1:  # unwrap 1x1 cells
        cell = cell.ravel()[0]
    return cell


# ---------------------------------------------------------------- RegDB


def regdb_test_list(root: Path, trial: int, modality: int) -> list[Sample]:
    kind = "visible" if modality == VISIBLE else "thermal"
    entries = read_index_list(Path(root) / "idx" / f"test_{kind}_{trial}.txt")
    return [_sample(root, rel, label, REGDB_CAMERA[modality], modality) for rel, label in entries]


# ---------------------------------------------------------------- LLCM

_LLCM_LAYOUT = {VISIBLE: (LLCM_VISIBLE_DIR, LLCM_VISIBLE_CAMS), INFRARED: (LLCM_INFRARED_DIR, LLCM_INFRARED_CAMS)}


def llcm_test_ids(root: Path) -> list[int]:
    return read_id_line(Path(root) / "idx" / "test_id.txt")


def llcm_query(root: Path, modality: int) -> list[Sample]:
    """Every test image of one modality: ids ascending, cameras in order, files sorted."""
    return _llcm_walk(root, modality, pick=None)


def llcm_gallery(root: Path, modality: int, trial: int) -> list[Sample]:
    """One ``random.choice`` per existing (id, camera) folder after ``random.seed(trial)``."""
    rng = random.Random(trial)
    return _llcm_walk(root, modality, pick=lambda names: [rng.choice(names)])


def _llcm_walk(root, modality, pick):
    root = Path(root)
    folder_name, cams = _LLCM_LAYOUT[modality]
    out = []
    for pid in sorted(llcm_test_ids(root)):
        for cam in cams:
            folder = root / folder_name / f"cam{cam}" / f"{pid:04d}"
            if not folder.is_dir():
                continue
            names = sorted_names(folder)
            if pick is not None and names:
                names = pick(names)
            out += [Sample(str(folder / f), pid, cam, modality) for f in names]
    return out


# ---------------------------------------------------------------- your own folders


def folder_split(root: Path, query_modality: int) -> TestSplit:
    """All images of one modality against all of the other; camera rule only when every image has a camera."""
    from vireid.data.datasets.folder import FolderDataset
    from vireid.data.records import NO_CAMERA

    dataset = FolderDataset(root)
    if dataset.problems:
        raise ValueError(f"{root} is not a folder dataset: " + "; ".join(dataset.problems))
    samples = dataset.train
    query = [s for s in samples if s.modality == query_modality]
    gallery = [s for s in samples if s.modality != query_modality]
    with_cameras = bool(samples) and all(s.camid != NO_CAMERA for s in samples)
    return TestSplit(query, gallery, "llcm" if with_cameras else "regdb")


def _folder(direction: str) -> Protocol:
    q_mod = INFRARED if direction == "i2v" else VISIBLE
    words = "infrared queries vs visible gallery" if direction == "i2v" else "visible queries vs infrared gallery"
    return Protocol(f"folder/{direction}", "folder", "regdb", (0,),
                    f"your own labelled folders: {words}, all images; camera rule only when every image has "
                    "a cam<K> folder (then LLCM's same identity + camera rule); one trial",
                    lambda root, t: folder_split(root, q_mod))


# ---------------------------------------------------------------- single-modality re-ID sets


def named_folder_split(root: Path, names: layouts.NameFormat) -> TestSplit:
    """Market-1501 / DukeMTMC-reID: ``query/`` vs ``bounding_box_test/`` without its junk (person -1)."""
    root = Path(root)
    parts = {}
    for role in ("query", "gallery"):
        folder = root / layouts.SINGLE_FOLDERS[role]
        if not folder.is_dir():
            raise FileNotFoundError(f"missing folder {folder} ({names.dataset} keeps its {role} images there)")
        parts[role] = [Sample(path, pid, cam, VISIBLE) for path, pid, cam in layouts.scan_named_images(folder, names)
                       if pid != layouts.JUNK_PID]
    return TestSplit(parts["query"], parts["gallery"])


def msmt17_split(root: Path) -> TestSplit:
    """MSMT17 (V1 or V2): ``list_query.txt`` vs ``list_gallery.txt``, both under the test folder."""
    root = Path(root)
    test_dir = root / layouts.MSMT_VERSIONS[layouts.msmt_version(root) or "V1"][1]
    parts = {}
    for role in ("query", "gallery"):
        entries = layouts.read_msmt_list(root / layouts.MSMT_LISTS[role], test_dir)
        parts[role] = [Sample(path, pid, cam, VISIBLE) for path, pid, cam in entries if pid != layouts.JUNK_PID]
    return TestSplit(parts["query"], parts["gallery"])


def _single(name: str) -> Protocol:
    if name == "msmt17":
        build, words = (lambda root, t: msmt17_split(root)), "list_query.txt vs list_gallery.txt"
    else:
        names = layouts.MARKET_NAMES if name == "market1501" else layouts.DUKE_NAMES
        build, words = (lambda root, t: named_folder_split(root, names)), "query/ vs bounding_box_test/"
    return Protocol(name, name, "market1501", (0,),
                    f"{name}: {words}; gallery images with the query's identity and camera and junk (-1) dropped, "
                    "distractors (0000) kept; image-level CMC; one trial", build)


# ---------------------------------------------------------------- registry


def _sysu(mode: str, shots_name: str, split: str) -> Protocol:
    shots = 1 if shots_name == "single" else MULTI_SHOTS
    if split == "official":
        build = lambda root, t: TestSplit(sysu_query_official(root), sysu_gallery_official(root, mode, t, shots))  # noqa: E731
        how = "gallery from exp/rand_perm_cam.mat (official MATLAB protocol)"
    else:
        build = lambda root, t: TestSplit(sysu_query(root), sysu_gallery_seeded(root, mode, t, shots))  # noqa: E731
        how = ("gallery drawn with random.seed(trial) (AGW-compatible)" if shots == 1
               else "gallery drawn with random.seed(trial), random.sample of 10 (vireid-defined)")
    cams = "cams 1,2,4,5" if mode == "all" else "cams 1,2"
    return Protocol(
        f"sysu/{mode}/{shots_name}/{split}", "sysu", "sysu", SYSU_TRIALS,
        f"SYSU-MM01 {mode}-search {shots_name}-shot: IR cams 3,6 queries vs {shots} visible "
        f"image(s) per id and camera ({cams}); {how}; 10 trials",
        build,
    )


def _regdb(trial: int, direction: str) -> Protocol:
    q_mod, g_mod = (VISIBLE, INFRARED) if direction == "v2i" else (INFRARED, VISIBLE)
    build = lambda root, t: TestSplit(regdb_test_list(root, t, q_mod), regdb_test_list(root, t, g_mod))  # noqa: E731
    words = "visible queries vs thermal gallery" if direction == "v2i" else "thermal queries vs visible gallery"
    return Protocol(f"regdb/trial{trial}/{direction}", "regdb", "regdb", (trial,),
                    f"RegDB split {trial}: {words}, all test images; no camera filtering", build)


def _llcm(direction: str) -> Protocol:
    if direction == "i2v":
        build = lambda root, t: TestSplit(llcm_query(root, INFRARED), llcm_gallery(root, VISIBLE, t))  # noqa: E731
        words = "all NIR queries vs one VIS image per id and camera"
    elif direction == "v2i":
        build = lambda root, t: TestSplit(llcm_query(root, VISIBLE), llcm_gallery(root, INFRARED, t))  # noqa: E731
        words = "all VIS queries vs one NIR image per id and camera"
    else:
        build = lambda root, t: TestSplit(llcm_gallery(root, INFRARED, t), llcm_query(root, VISIBLE))  # noqa: E731
        words = ("as the released code computes 'VIS->IR': one sampled NIR image per id and camera "
                 "as queries vs all VIS images")
    return Protocol(f"llcm/{direction}", "llcm", "llcm", LLCM_TRIALS,
                    f"LLCM: {words}; random.seed(trial), 10 trials", build)


def _all_protocols() -> dict[str, Protocol]:
    items = [
        _sysu(mode, shots, split)
        for mode in ("all", "indoor")
        for shots in ("single", "multi")
        for split in ("official", "seeded")
    ]
    items += [_regdb(t, d) for t in REGDB_TRIALS for d in ("v2i", "i2v")]
    items += [_llcm(d) for d in ("i2v", "v2i", "v2i_as_released")]
    items += [_folder(d) for d in ("i2v", "v2i")]
    items += [_single(name) for name in ("market1501", "dukemtmc", "msmt17")]
    return {p.name: p for p in items}


PROTOCOLS = _all_protocols()


def protocol_names() -> list[str]:
    return list(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        families = ("sysu/{all,indoor}/{single,multi}/{official,seeded}, regdb/trial{1..10}/{v2i,i2v}, "
                    "llcm/{i2v,v2i,v2i_as_released}, folder/{i2v,v2i}, market1501, dukemtmc, msmt17")
        raise ValueError(f"unknown protocol {name!r}; known: {families}") from None
