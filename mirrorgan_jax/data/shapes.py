"""The offline `shapes` data set: procedural images of coloured shapes with exact ground truth.

Every example is a pure function of `(seed, split, index)`: a scene (1 or 2 objects, each with a
colour, a shape and a size; a position for one object, a spatial relation for two), 10 captions
that state exactly the scene's attributes, and an anti-aliased rendering at any resolution (the
scene is resolution-free, so the 64 px and 256 px versions of an example show the same scene).

Attribute vocabulary (decode `attributes` with these; the order is `schema.ATTRIBUTE_FIELDS`):
  COLOURS    ((name, (r, g, b)), ...)  colour index -> name and nominal RGB
  SHAPES     shape index -> name ("circle", "square", "triangle", "star", "cross", "diamond")
  SIZES      size index -> name ("small", "large")
  POSITIONS  position index of a single object ("left", "right", "top", "bottom", "centre")
  RELATIONS  relation index, object0 relative to object1 ("left of", "right of", "above", "below")
  HELD_OUT_PAIRS  (colour, shape) index pairs that never occur in `train`/`test`; every
             `test_novel` example contains at least one of them.
  class_id = pair_index(colour0, shape0) = colour0 * len(SHAPES) + shape0.

Plain-python API (no TensorFlow needed): `sample_scene`, `render_scene`, `render_example`,
`split_captions`; caption templates and the caption parser live in `shapes_captions`. The tfds
builder `Shapes` is created lazily on first access (`from mirrorgan_jax.data.shapes import
Shapes`), so importing this module never imports tfds.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

from mirrorgan_jax.data import schema
from mirrorgan_jax.data.schema import INVERSE_RELATION, NUM_ATTRIBUTES
from mirrorgan_jax.data.shapes_captions import generate_captions

COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)),
    ("green", (40, 170, 60)),
    ("blue", (40, 90, 225)),
    ("yellow", (240, 210, 40)),
    ("purple", (145, 65, 190)),
    ("orange", (245, 135, 30)),
    ("cyan", (40, 200, 215)),
)
COLOUR_NAMES: tuple[str, ...] = tuple(name for name, _ in COLOURS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
BACKGROUNDS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("light", (228, 226, 218)),
    ("dark", (42, 46, 56)),
    ("grey", (140, 140, 140)),
    ("slate", (70, 90, 110)),
)
# (colour, shape): blue star, red diamond, green cross, yellow circle.
HELD_OUT_PAIRS: tuple[tuple[int, int], ...] = ((2, 3), (0, 5), (1, 4), (3, 0))
NUM_PAIRS = len(COLOURS) * len(SHAPES)
SPLITS: tuple[str, ...] = ("train", "test", "test_novel")
SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where and how big objects are, in units of the image side (resolution-free)."""

    radius: tuple[float, float]  # small, large (each x U(0.94, 1.06))
    pair_along: tuple[float, float]  # the two objects' coordinates along the relation axis
    pair_along_jitter: float
    position_centres: tuple[tuple[float, float], ...] = (
        (0.27, 0.5), (0.73, 0.5), (0.5, 0.27), (0.5, 0.73), (0.5, 0.5),
    )  # fmt: skip
    position_jitter: float = 0.04
    pair_across_jitter: float = 0.08


# "small" is the default geometry; "large" draws objects about 1.35x its size, so that a star's
# points and a cross's arms span several pixels at the generator's 32-px first stage; its pair
# is spread a little further so that two large objects never touch. Only sizes and positions
# differ: the same (seed, split, index) gives the same objects, colours, relations and captions.
GEOMETRIES: dict[str, Geometry] = {
    "large": Geometry(radius=(0.14, 0.205), pair_along=(0.235, 0.765), pair_along_jitter=0.0125),
    "small": Geometry(radius=(0.10, 0.17), pair_along=(0.25, 0.75), pair_along_jitter=0.03),
}
DEFAULT_GEOMETRY = "small"
_COLOUR_JITTER = 10
_MAX_ROTATION_DEG = 12.0


def pair_index(colour: int, shape: int) -> int:
    """Index of a colour-shape pair (the `class_id` of an example whose first object it is)."""
    return colour * len(SHAPES) + shape


_ALLOWED_PAIRS = tuple(
    (c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)) if (c, s) not in HELD_OUT_PAIRS
)
_ALL_PAIRS = tuple((c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)))


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    """One object of a scene; coordinates and radius are fractions of the image side."""

    colour: int
    shape: int
    size: int
    centre: tuple[float, float]  # (x, y), x to the right, y downwards
    radius: float  # the object fits in the circle of this radius around `centre`
    rotation: float  # degrees
    rgb: tuple[int, int, int]  # the drawn colour (the nominal colour +- a small jitter)


@dataclasses.dataclass(frozen=True)
class Scene:
    """A sampled scene: objects, single-object position or two-object relation (else -1)."""

    objects: tuple[ShapeObject, ...]
    position: int
    relation: int
    background: int

    def attributes(self) -> np.ndarray:
        """int64 [NUM_ATTRIBUTES] in `schema.ATTRIBUTE_FIELDS` order, -1 where not defined."""
        o0 = self.objects[0]
        o1 = self.objects[1] if len(self.objects) > 1 else None
        values = dict(
            num_objects=len(self.objects),
            colour0=o0.colour,
            shape0=o0.shape,
            size0=o0.size,
            position0=self.position,
            colour1=o1.colour if o1 else -1,
            shape1=o1.shape if o1 else -1,
            size1=o1.size if o1 else -1,
            relation=self.relation,
        )
        return np.array([values[f] for f in schema.ATTRIBUTE_FIELDS], np.int64)

    @property
    def class_id(self) -> int:
        return pair_index(self.objects[0].colour, self.objects[0].shape)


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"shapes: unknown split {split!r}; expected one of {SPLITS}")
    return SPLITS.index(split)


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"shapes: seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, _split_id(split), index, stream])


def geometry_named(name: str) -> Geometry:
    """The `Geometry` of `GEOMETRIES[name]`, with an error naming the choices."""
    if name not in GEOMETRIES:
        raise ValueError(f"shapes: unknown geometry {name!r}; expected one of {tuple(GEOMETRIES)}")
    return GEOMETRIES[name]


def _make_object(rng, pair, centre, geometry: Geometry) -> ShapeObject:
    colour, shape = pair
    size = int(rng.integers(len(SIZES)))
    radius = geometry.radius[size] * rng.uniform(0.94, 1.06)
    rotation = 0.0 if shape == 0 else rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG)
    base = np.array(COLOURS[colour][1])
    rgb = np.clip(base + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3), 0, 255)
    return ShapeObject(
        colour, shape, size, (float(centre[0]), float(centre[1])), float(radius), float(rotation),
        tuple(int(v) for v in rgb),
    )  # fmt: skip


def sample_scene(index: int, split: str, seed: int, geometry: str = DEFAULT_GEOMETRY) -> Scene:
    """The scene of example `index` of `split` (deterministic in `(seed, split, index)`).

    train/test draw every object from the non-held-out pairs; in test_novel one randomly chosen
    object gets a held-out pair and the other (if any) any pair. `geometry` (a key of
    `GEOMETRIES`) sets sizes and positions only.
    """
    g = geometry_named(geometry)
    rng = _rng(seed, split, index, 0)
    num_objects = int(rng.integers(1, 3))
    if split == "test_novel":
        novel_slot = int(rng.integers(num_objects))
        pairs = [
            HELD_OUT_PAIRS[rng.integers(len(HELD_OUT_PAIRS))]
            if k == novel_slot
            else _ALL_PAIRS[rng.integers(len(_ALL_PAIRS))]
            for k in range(num_objects)
        ]
    else:
        pairs = [_ALLOWED_PAIRS[rng.integers(len(_ALLOWED_PAIRS))] for _ in range(num_objects)]
    background = int(rng.integers(len(BACKGROUNDS)))
    if num_objects == 1:
        position = int(rng.integers(len(POSITIONS)))
        centre = np.array(g.position_centres[position]) + rng.uniform(
            -g.position_jitter, g.position_jitter, 2
        )
        return Scene((_make_object(rng, pairs[0], centre, g),), position, -1, background)
    relation = int(rng.integers(len(RELATIONS)))
    # relation 0: object0 left of object1 -> object0 at the smaller x; 2: above -> smaller y.
    first, second = (0, 1) if relation in (0, 2) else (1, 0)
    along = np.array(g.pair_along)[[first, second]] + rng.uniform(
        -g.pair_along_jitter, g.pair_along_jitter, 2
    )
    across = 0.5 + rng.uniform(-g.pair_across_jitter, g.pair_across_jitter, 2)
    horizontal = relation in (0, 1)
    centres = [(a, c) if horizontal else (c, a) for a, c in zip(along, across, strict=True)]
    objects = tuple(_make_object(rng, pairs[k], centres[k], g) for k in range(2))
    return Scene(objects, -1, relation, background)


def _polygon(shape: int, r: float) -> np.ndarray:
    """Vertices [V, 2] of a non-circle shape of outer radius r around the origin."""
    if shape == 1:  # square, half side 0.8 r
        h = 0.8 * r
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    if shape == 2:  # equilateral triangle pointing up, circumradius r
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        return r * np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == 3:  # five-pointed star
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == 4:  # plus-shaped cross, arm half width 0.3 r
        a, w = r, 0.3 * r
        return np.array(
            [[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w],
             [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]]
        )  # fmt: skip
    if shape == 5:  # diamond (rhombus), taller than wide
        return np.array([[0.0, -r], [0.65 * r, 0.0], [0.0, r], [-0.65 * r, 0.0]])
    raise ValueError(f"shapes: unknown shape index {shape}")


def _background(scene: Scene, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """float [S, S, 3]: plain colour, a mild linear gradient, a smooth mottled texture (a 16 x 16
    noise grid, bicubic-upsampled, so alike at every resolution) and a faint grey grain."""
    base = np.array(BACKGROUNDS[scene.background][1], np.float32)
    ramp = np.linspace(-1.0, 1.0, image_size, dtype=np.float32)
    gx, gy = rng.uniform(-10.0, 10.0, 2)
    gradient = gx * ramp[None, :] + gy * ramp[:, None]  # [S, S]
    coarse = Image.fromarray(rng.standard_normal((16, 16), dtype=np.float32))
    texture = np.asarray(coarse.resize((image_size, image_size), Image.Resampling.BICUBIC))
    grain = rng.standard_normal((image_size, image_size), dtype=np.float32)
    return base + (gradient + 6.0 * texture + grain)[:, :, None]


def render_scene(scene: Scene, image_size: int, noise_seed: int | list[int] = 0) -> np.ndarray:
    """uint8 [S, S, 3]: the scene drawn 4x supersampled, box-downsampled (anti-aliased).

    Only each object's pixel-aligned bounding box is supersampled: nearest upsampling and a box
    downsample of the same factor leave the untouched background pixels exactly as they were.
    """
    if image_size < 8:
        raise ValueError(f"shapes: image_size must be >= 8, got {image_size}")
    rng = np.random.default_rng(noise_seed)
    image = np.clip(np.round(_background(scene, image_size, rng)), 0, 255).astype(np.uint8)
    ss = SUPERSAMPLE
    for obj in scene.objects:
        cx, cy, r = (v * image_size for v in (*obj.centre, obj.radius))
        reach = 1.2 * r + 1.0  # every shape lies within 1.14 r of its centre
        x0, y0 = (max(0, int(np.floor(v - reach))) for v in (cx, cy))
        x1, y1 = (min(image_size, int(np.ceil(v + reach))) for v in (cx, cy))
        w, h = x1 - x0, y1 - y0
        patch = Image.fromarray(image[y0:y1, x0:x1]).resize((w * ss, h * ss), Image.NEAREST)
        draw = ImageDraw.Draw(patch)
        px, py, pr = (cx - x0) * ss, (cy - y0) * ss, r * ss
        if obj.shape == 0:
            draw.ellipse([px - pr, py - pr, px + pr, py + pr], fill=obj.rgb)
        else:
            theta = np.deg2rad(obj.rotation)
            rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
            points = _polygon(obj.shape, pr) @ rot.T + np.array([px, py])
            draw.polygon([tuple(p) for p in points.tolist()], fill=obj.rgb)
        image[y0:y1, x0:x1] = np.asarray(patch.resize((w, h), Image.Resampling.BOX), np.uint8)
    return image


def render_example(
    index: int, split: str, seed: int, image_size: int = 64, geometry: str = DEFAULT_GEOMETRY
) -> dict:
    """One example as plain python/numpy (`geometry`: a key of `GEOMETRIES`).

    Returns dict(image uint8 [S, S, 3], captions list[str] (10), class_id int,
    attributes int64 [NUM_ATTRIBUTES], key str, objects list[dict] (colour, shape, size,
    centre_px (x, y), radius_px, rgb), background str).
    """
    scene = sample_scene(index, split, seed, geometry)
    captions = generate_captions(scene, _rng(seed, split, index, 1))
    image = render_scene(scene, image_size, [seed, _split_id(split), index, 2])
    objects = [
        dict(
            colour=o.colour,
            shape=o.shape,
            size=o.size,
            centre_px=(o.centre[0] * image_size, o.centre[1] * image_size),
            radius_px=o.radius * image_size,
            rgb=o.rgb,
        )
        for o in scene.objects
    ]
    return dict(
        image=image,
        captions=captions,
        class_id=scene.class_id,
        attributes=scene.attributes(),
        key=example_key(split, index),
        objects=objects,
        background=BACKGROUNDS[scene.background][0],
    )


def example_key(split: str, index: int) -> str:
    """The `key` of an example, e.g. 'train_000042'."""
    return f"{split}_{index:06d}"


def split_captions(split: str, num: int, seed: int) -> list[list[str]]:
    """The captions of the first `num` examples of `split` without rendering (for tokenizers);
    the same in every geometry."""
    return [
        generate_captions(sample_scene(i, split, seed), _rng(seed, split, i, 1)) for i in range(num)
    ]


# Values of each attribute field, aligned with schema.ATTRIBUTE_FIELDS (num_objects as the count
# itself: 0, 1, 2, where 0 never occurs): the classes of an attribute classifier's heads.
ATTRIBUTE_CLASSES: tuple[int, ...] = tuple(
    {
        "num_objects": 3,
        "colour0": len(COLOURS),
        "shape0": len(SHAPES),
        "size0": len(SIZES),
        "position0": len(POSITIONS),
        "colour1": len(COLOURS),
        "shape1": len(SHAPES),
        "size1": len(SIZES),
        "relation": len(RELATIONS),
    }[f]
    for f in schema.ATTRIBUTE_FIELDS
)
_FIELD = {name: i for i, name in enumerate(schema.ATTRIBUTE_FIELDS)}


def check_attributes(attributes, what: str) -> np.ndarray:
    """`attributes` as int64 [N, NUM_ATTRIBUTES], or ValueError naming `what`."""
    a = np.asarray(attributes)
    if a.ndim != 2 or a.shape[1] != NUM_ATTRIBUTES or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"{what}: expected integer attributes [N, {NUM_ATTRIBUTES}] "
            f"(schema.ATTRIBUTE_FIELDS), got {a.dtype} {a.shape}"
        )
    return a.astype(np.int64)


def canonical_attributes(attributes) -> np.ndarray:
    """[N, NUM_ATTRIBUTES] with every two-object row in canonical order.

    A two-object scene has two equally true descriptions ("A left of B" = "B right of A",
    `shapes_captions.swap_objects`), so which object is "object0" cannot be read off the image.
    In canonical order object0 is the left object of a horizontal pair and the upper object of a
    vertical pair, so the relation is always "left of" (0) or "above" (2): rows with relation
    "right of" (1) or "below" (3) get their objects swapped and the relation inverted; other
    rows are returned unchanged.
    """
    a = check_attributes(attributes, "canonical_attributes").copy()
    rel = a[:, _FIELD["relation"]]
    swap = (a[:, _FIELD["num_objects"]] == 2) & ((rel == 1) | (rel == 3))
    for name in ("colour", "shape", "size"):
        c0, c1 = _FIELD[f"{name}0"], _FIELD[f"{name}1"]
        a[swap, c0], a[swap, c1] = a[swap, c1], a[swap, c0].copy()
    inverse = np.asarray(INVERSE_RELATION)
    a[swap, _FIELD["relation"]] = inverse[rel[swap]]
    return a


def render_dataset(
    split: str,
    num: int,
    seed: int,
    image_size: int,
    start: int = 0,
    geometry: str = DEFAULT_GEOMETRY,
) -> tuple[np.ndarray, np.ndarray]:
    """Examples `start .. start+num-1` of `split`, rendered in memory in `geometry`.

    Returns (images uint8 [num, S, S, 3], canonical attributes int64 [num, NUM_ATTRIBUTES]).
    """
    images = np.empty((num, image_size, image_size, 3), np.uint8)
    attributes = np.empty((num, NUM_ATTRIBUTES), np.int64)
    for k in range(num):
        ex = render_example(start + k, split, seed, image_size, geometry)
        images[k], attributes[k] = ex["image"], ex["attributes"]
    return images, canonical_attributes(attributes)


def _encoded_example(args: tuple[int, str, int, int, str]) -> tuple[str, dict]:
    index, split, seed, image_size, geometry = args
    ex = render_example(index, split, seed, image_size, geometry)
    buf = io.BytesIO()
    Image.fromarray(ex["image"]).save(buf, format="PNG", compress_level=1)  # fast, lossless
    record = dict(
        image=buf.getvalue(),
        captions=ex["captions"],
        class_id=ex["class_id"],
        key=ex["key"],
        attributes=ex["attributes"],
    )
    return ex["key"], record


def generate_records(
    split: str,
    num: int,
    seed: int,
    image_size: int,
    num_workers: int = 0,
    geometry: str = DEFAULT_GEOMETRY,
) -> Iterator[tuple[str, dict]]:
    """Yields `(key, record)` in index order; the image is PNG bytes (the tfds feature encoding).

    num_workers: 0 -> min(os.cpu_count(), 8); 1 -> in process. Output does not depend on it.
    """
    geometry_named(geometry)
    jobs = [(i, split, seed, image_size, geometry) for i in range(num)]
    workers = num_workers or min(os.cpu_count() or 1, 8)
    if workers <= 1 or num < 1024:  # small sets (tests) stay in process: no fork
        yield from map(_encoded_example, jobs)
        return
    # fork (not spawn, which re-imports the caller's __main__): the workers only run numpy and
    # PIL, never TensorFlow, so the parent's TF threads are no concern.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_encoded_example, jobs, chunksize=64)


# The shapes builder's settings: (default, minimum). Stored in its DatasetInfo metadata.
BUILDER_SETTINGS: dict[str, tuple[int, int]] = {
    "num_train": (20000, 1),
    "num_test": (2000, 1),
    "num_test_novel": (1000, 1),
    "image_size": (64, 8),
    "seed": (1234, 0),
}


def _make_builder_class():
    import tensorflow_datasets as tfds

    class Shapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """tfds builder of the shapes set: splits train / test / test_novel, tfrecord, offline.

        Shapes(data_dir=D, num_train=20000, num_test=2000, num_test_novel=1000, image_size=64,
               seed=1234, geometry="large", num_workers=0).download_and_prepare(
                   download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        The settings are stored in the DatasetInfo metadata (`metadata.json`); after a build,
        `captions[split]` holds every example's captions in index order.
        """

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "First release."}
        # No checksums file to find: tfds' code_path lookup for a builder inside a package
        # imports the `importlib_resources` backport, which is not a dependency here.
        code_path = None

        def __init__(self, *, num_workers: int = 0, geometry: str = DEFAULT_GEOMETRY, **kwargs):
            # The settings (BUILDER_SETTINGS, each an int, and the geometry's name) come as
            # keywords; the rest go to tfds.
            self.settings = {
                k: int(kwargs.pop(k, default)) for k, (default, _) in BUILDER_SETTINGS.items()
            }
            geometry_named(geometry)
            for k, v in self.settings.items():
                minimum = BUILDER_SETTINGS[k][1]
                if v < minimum:
                    raise ValueError(
                        f"shapes: {k}={v}, expected >= {minimum} (tfds splits cannot be empty)"
                    )
            self.settings["geometry"] = geometry
            self._num_workers = num_workers
            # split -> captions of each example, filled while the split is generated.
            self.captions: dict[str, list[list[str]]] = {}
            kwargs.setdefault("file_format", "tfrecord")
            super().__init__(**kwargs)

        def _info(self):
            # dataset_info_from_configs() needs the builder's package directory, which a builder
            # made inside a function does not have.
            return tfds.core.DatasetInfo(
                builder=self,
                description=__doc__,
                features=schema.tfds_features(),
                metadata=tfds.core.MetadataDict(
                    settings=dict(self.settings),
                    colours=[n for n, _ in COLOURS],
                    shapes=list(SHAPES),
                    held_out_pairs=[list(p) for p in HELD_OUT_PAIRS],
                ),
            )

        def _split_generators(self, dl_manager):
            s = self.settings
            sizes = dict(train=s["num_train"], test=s["num_test"], test_novel=s["num_test_novel"])
            return {split: self._generate_examples(split, n) for split, n in sizes.items()}

        def _generate_examples(self, split, num):
            s = self.settings
            self.captions[split] = []
            for key, record in generate_records(
                split,
                num,
                s["seed"],
                s["image_size"],
                num_workers=self._num_workers,
                geometry=s["geometry"],
            ):
                self.captions[split].append(record["captions"])
                yield key, record

    return Shapes


_BUILDER_CLASS = None


def __getattr__(name: str):
    # PEP 562: the tfds builder class is made on first access so the module imports without tfds.
    global _BUILDER_CLASS
    if name == "Shapes":
        if _BUILDER_CLASS is None:
            _BUILDER_CLASS = _make_builder_class()
        return _BUILDER_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTRIBUTE_CLASSES",
    "BACKGROUNDS",
    "DEFAULT_GEOMETRY",
    "GEOMETRIES",
    "Geometry",
    "COLOURS",
    "COLOUR_NAMES",
    "HELD_OUT_PAIRS",
    "INVERSE_RELATION",
    "NUM_PAIRS",
    "POSITIONS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Scene",
    "ShapeObject",
    "canonical_attributes",
    "check_attributes",
    "example_key",
    "generate_records",
    "pair_index",
    "render_dataset",
    "render_example",
    "render_scene",
    "sample_scene",
    "split_captions",
]
