"""Caption templates of the `shapes` data set and a parser that reads their attributes back.

Every caption states all attributes of its scene (colours, shapes, sizes and the position or the
relation) and nothing else, using one of 12 single-object or 11 two-object templates with
synonyms ("large"/"big", "small"/"little", "circle"/"round shape"/"disc", ...). A two-object
caption may name the objects in either order ("a red star left of a blue square" or
"a blue square right of a red star"); `swap_objects` maps between the two readings.
"""

from __future__ import annotations

import re

import numpy as np

from mirrorgan_jax.data import schema

CAPTIONS_PER_IMAGE = 10

# Synonyms, indexed like shapes.COLOURS / SIZES / SHAPES / POSITIONS / RELATIONS.
COLOUR_WORDS: tuple[tuple[str, ...], ...] = (
    ("red",),
    ("green",),
    ("blue",),
    ("yellow",),
    ("purple", "violet"),
    ("orange",),
    ("cyan",),
)
SIZE_WORDS: tuple[tuple[str, ...], ...] = (("small", "little"), ("large", "big"))
SHAPE_WORDS: tuple[tuple[str, ...], ...] = (
    ("circle", "round shape", "disc"),
    ("square", "box"),
    ("triangle",),
    ("star",),
    ("cross", "plus sign"),
    ("diamond", "rhombus"),
)
POSITION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("on the left", "at the left", "on the left side", "in the left half"),
    ("on the right", "at the right", "on the right side", "in the right half"),
    ("at the top", "near the top", "in the upper half"),
    ("at the bottom", "near the bottom", "in the lower half"),
    ("in the centre", "in the middle", "at the center"),
)
RELATION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("to the left of", "left of", "on the left side of"),
    ("to the right of", "right of", "on the right side of"),
    ("above", "over"),
    ("below", "under", "beneath"),
)
SINGLE_TEMPLATES: tuple[str, ...] = (
    "a {obj} {pos}",
    "{pos} there is a {obj}",
    "there is a {obj} {pos}",
    "the image shows a {obj} {pos}",
    "a {obj} is {pos}",
    "a {colour} {shape} that is {size}, {pos}",
    "{pos} we can see a {obj}",
    "a picture of a {obj} {pos}",
    "a {size} {shape} {pos}, coloured {colour}",
    "one {obj} placed {pos}",
    "a {obj} sits {pos}",
    "{pos} is a {obj}",
)
PAIR_TEMPLATES: tuple[str, ...] = (
    "a {a} {rel} a {b}",
    "there is a {a} {rel} a {b}",
    "the {a} is {rel} the {b}",
    "{rel} a {b} there is a {a}",
    "a {a} placed {rel} a {b}",
    "we can see a {a} {rel} a {b}",
    "the image shows a {a} {rel} a {b}",
    "two shapes: a {a} {rel} a {b}",
    "a {a} sits {rel} a {b}",
    "{rel} the {b} is a {a}",
    "a {a} is {rel} a {b}",
)
# Keywords of the position (single object) and relation (two objects) readings.
_POSITION_KEYWORDS = dict(
    left=0, right=1, top=2, upper=2, bottom=3, lower=3, centre=4, center=4, middle=4
)
_RELATION_KEYWORDS = dict(left=0, right=1, above=2, over=2, below=3, under=3, beneath=3)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.random() * len(options))]


def _with_articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _object_words(obj, rng: np.random.Generator) -> dict[str, str]:
    colour = _pick(rng, COLOUR_WORDS[obj.colour])
    shape = _pick(rng, SHAPE_WORDS[obj.shape])
    size = _pick(rng, SIZE_WORDS[obj.size])
    return dict(colour=colour, shape=shape, size=size, obj=f"{size} {colour} {shape}")


def generate_captions(scene, rng: np.random.Generator, num: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """`num` captions of `scene` (a `shapes.Scene`), each from a different template."""
    templates = SINGLE_TEMPLATES if len(scene.objects) == 1 else PAIR_TEMPLATES
    if num > len(templates):
        raise ValueError(f"shapes captions: num={num} > {len(templates)} templates")
    captions = []
    for t in rng.permutation(len(templates))[:num]:
        if len(scene.objects) == 1:
            words = _object_words(scene.objects[0], rng)
            words["pos"] = _pick(rng, POSITION_PHRASES[scene.position])
            text = templates[t].format(**words)
        else:
            a, b, relation = scene.objects[0], scene.objects[1], scene.relation
            if rng.integers(2):  # name object1 first: "b inverse-relation a"
                a, b, relation = b, a, schema.INVERSE_RELATION[relation]
            text = templates[t].format(
                a=_object_words(a, rng)["obj"],
                b=_object_words(b, rng)["obj"],
                rel=_pick(rng, RELATION_PHRASES[relation]),
            )
        captions.append(_with_articles(text))
    return captions


def _lexicon() -> list[tuple[tuple[str, ...], str, int]]:
    """(word tuple, kind, index) entries, longest phrases first."""
    entries = []
    for kind, table in (("colour", COLOUR_WORDS), ("size", SIZE_WORDS), ("shape", SHAPE_WORDS)):
        for index, options in enumerate(table):
            entries += [(tuple(o.split()), kind, index) for o in options]
    return sorted(entries, key=lambda e: -len(e[0]))


_LEXICON = _lexicon()


def parse_caption(text: str) -> np.ndarray:
    """Attributes int64 [NUM_ATTRIBUTES] read from a caption in the template language.

    Shape words delimit objects: colour/size words go to the object whose shape follows them
    (or, with one object, to that object wherever they are). With two objects, the object named
    right after the relation phrase is object1 (the landmark). Missing attributes are -1.
    Raises ValueError when the caption names no shape or more than two.
    """
    words = re.findall(r"[a-z]+", text.lower())
    found: list[tuple[int, str, int]] = []  # (word position, kind, index)
    i = 0
    while i < len(words):
        for phrase, kind, index in _LEXICON:
            if tuple(words[i : i + len(phrase)]) == phrase:
                found.append((i, kind, index))
                i += len(phrase)
                break
        else:
            i += 1
    shape_at = [pos for pos, kind, _ in found if kind == "shape"]
    if not 1 <= len(shape_at) <= 2:
        raise ValueError(f"shapes captions: expected 1 or 2 shape words in {text!r}")
    objects = [dict(colour=-1, shape=-1, size=-1) for _ in shape_at]
    for pos, kind, index in found:
        k = 0 if len(shape_at) == 1 else (0 if pos <= shape_at[0] else 1)
        objects[k][kind] = index
    attrs = dict(num_objects=len(objects), position0=-1, relation=-1)
    if len(objects) == 1:
        hits = [_POSITION_KEYWORDS[w] for w in words if w in _POSITION_KEYWORDS]
        attrs["position0"] = hits[0] if hits else -1
    else:
        keys = _RELATION_KEYWORDS
        rel_at = [(p, keys[w]) for p, w in enumerate(words) if w in keys]
        if rel_at:
            pos, attrs["relation"] = rel_at[0]
            if shape_at[0] > pos:  # "left of a B there is an A": the first named is object1
                objects = objects[::-1]
    objects += [dict(colour=-1, shape=-1, size=-1)] * (2 - len(objects))
    for k, obj in enumerate(objects):
        attrs.update({f"{name}{k}": value for name, value in obj.items()})
    return np.array([attrs[f] for f in schema.ATTRIBUTE_FIELDS], np.int64)


def swap_objects(attributes: np.ndarray) -> np.ndarray:
    """The same two-object scene described from object1's side (relation inverted)."""
    a = np.array(attributes, np.int64)
    if a[schema.ATTRIBUTE_FIELDS.index("num_objects")] != 2:
        return a
    f = schema.ATTRIBUTE_FIELDS.index
    for name in ("colour", "shape", "size"):
        a[f(f"{name}0")], a[f(f"{name}1")] = a[f(f"{name}1")], a[f(f"{name}0")]
    a[f("relation")] = schema.INVERSE_RELATION[a[f("relation")]]
    return a
