"""The offline shapes data set: determinism, exact labels, captions, held-out pairs, tfds build."""

import re

import numpy as np
import pytest

from mirrorgan_jax.data import schema, shapes
from mirrorgan_jax.data import shapes_captions as sc
from tests.attribute_rows import pair, single

SEED = 7
F = schema.ATTRIBUTE_FIELDS.index


@pytest.fixture(scope="module")
def examples():
    """40 rendered examples per split at 64 px."""
    return {
        split: [shapes.render_example(i, split, SEED, 64) for i in range(40)]
        for split in shapes.SPLITS
    }


def test_same_seed_same_bytes_other_seed_differs():
    a = shapes.render_example(3, "train", SEED, 64)
    b = shapes.render_example(3, "train", SEED, 64)
    c = shapes.render_example(3, "train", SEED + 1, 64)
    assert a["image"].tobytes() == b["image"].tobytes()
    assert a["captions"] == b["captions"] and (a["attributes"] == b["attributes"]).all()
    assert a["image"].tobytes() != c["image"].tobytes()
    assert a["image"].shape == (64, 64, 3) and a["image"].dtype == np.uint8


def test_scene_is_resolution_free():
    small = shapes.render_example(5, "test", SEED, 64)
    large = shapes.render_example(5, "test", SEED, 256)
    assert large["image"].shape == (256, 256, 3)
    assert small["captions"] == large["captions"]
    assert (small["attributes"] == large["attributes"]).all()


def test_attribute_layout_and_class_id(examples):
    for split, exs in examples.items():
        for index, ex in enumerate(exs):
            a = ex["attributes"]
            assert a.shape == (schema.NUM_ATTRIBUTES,) and a.dtype == np.int64
            assert ex["class_id"] == shapes.pair_index(a[F("colour0")], a[F("shape0")])
            if a[F("num_objects")] == 1:
                assert 0 <= a[F("position0")] < len(shapes.POSITIONS)
                assert (a[[F("colour1"), F("shape1"), F("size1"), F("relation")]] == -1).all()
            else:
                assert a[F("num_objects")] == 2 and a[F("position0")] == -1
                assert 0 <= a[F("relation")] < len(shapes.RELATIONS)
            assert ex["key"] == f"{split}_{index:06d}"
    counts = [ex["attributes"][0] for exs in examples.values() for ex in exs]
    assert set(counts) == {1, 2}


def _nearest_colour(rgb) -> int:
    nominal = np.array([c for _, c in shapes.COLOURS], np.float64)
    return int(np.argmin(((nominal - np.asarray(rgb, np.float64)) ** 2).sum(1)))


def test_rendered_colour_at_object_centre_is_the_label(examples):
    for exs in examples.values():
        for ex in exs:
            for obj in ex["objects"]:
                x, y = (int(v) for v in obj["centre_px"])
                pixel = ex["image"][y, x].astype(int)
                assert _nearest_colour(pixel) == obj["colour"]
                assert np.abs(pixel - np.array(obj["rgb"])).max() <= 2


def test_positions_relations_and_no_overlap(examples):
    for exs in examples.values():
        for ex in exs:
            a, objs = ex["attributes"], ex["objects"]
            if len(objs) == 1:
                x, y = np.array(objs[0]["centre_px"]) / 64
                expected = {0: x < 0.35, 1: x > 0.65, 2: y < 0.35, 3: y > 0.65}
                expected[4] = abs(x - 0.5) < 0.1 and abs(y - 0.5) < 0.1
                assert expected[int(a[F("position0")])]
                continue
            (x0, y0), (x1, y1) = (o["centre_px"] for o in objs)
            dx, dy = x1 - x0, y1 - y0  # object0 relative to object1
            relation = int(a[F("relation")])
            assert {0: dx > 0, 1: dx < 0, 2: dy > 0, 3: dy < 0}[relation]
            along, across = (abs(dx), abs(dy)) if relation < 2 else (abs(dy), abs(dx))
            assert along > 2 * across  # unambiguous: the stated axis dominates
            # every shape fits in 1.14 x its radius (a rotated square's corner)
            assert np.hypot(dx, dy) > 1.14 * (objs[0]["radius_px"] + objs[1]["radius_px"])


def test_captions_state_exactly_the_labels(examples):
    for exs in examples.values():
        for ex in exs:
            assert len(ex["captions"]) == 10 and len(set(ex["captions"])) == 10
            for caption in ex["captions"]:
                parsed = sc.parse_caption(caption)
                a = ex["attributes"]
                assert (parsed == a).all() or (parsed == sc.swap_objects(a)).all(), caption


def test_parse_caption_on_hand_written_text():
    parsed = sc.parse_caption("A big violet round shape to the right of a little cyan plus sign.")
    names = dict(zip(schema.ATTRIBUTE_FIELDS, parsed.tolist(), strict=True))
    assert names == dict(
        num_objects=2, colour0=4, shape0=0, size0=1, position0=-1,
        colour1=6, shape1=4, size1=0, relation=1,
    )  # fmt: skip
    single = sc.parse_caption("on the left there is a red star")
    assert single[F("position0")] == 0 and single[F("size0")] == -1
    with pytest.raises(ValueError, match="shape"):
        sc.parse_caption("nothing here")


def _skeleton(caption: str) -> str:
    """The caption with every attribute phrase replaced by '#': one skeleton per template."""
    phrases = [p for table in (sc.COLOUR_WORDS, sc.SIZE_WORDS, sc.SHAPE_WORDS,
                               sc.POSITION_PHRASES, sc.RELATION_PHRASES)
               for options in table for p in options]  # fmt: skip
    pattern = r"\b(" + "|".join(sorted(map(re.escape, phrases), key=len, reverse=True)) + r")\b"
    text = re.sub(pattern, "#", caption)
    return re.sub(r"#( #)+", "#", re.sub(r"\ban?\b", "a", text))


def test_at_least_eight_templates_with_synonyms(examples):
    exs = examples["train"]
    for n in (1, 2):
        captions = [c for ex in exs if ex["attributes"][0] == n for c in ex["captions"]]
        assert len({_skeleton(c) for c in captions}) >= 8
    words = {w for ex in exs for c in ex["captions"] for w in c.split()}
    assert {"large", "big", "small", "little"} <= words
    assert any("round shape" in c for ex in exs for c in ex["captions"])


def test_held_out_pairs_only_in_test_novel():
    held = set(shapes.HELD_OUT_PAIRS)
    assert len(held) >= 4
    for split in ("train", "test"):
        for i in range(400):
            scene = shapes.sample_scene(i, split, SEED)
            assert not {(o.colour, o.shape) for o in scene.objects} & held
    seen = set()
    for i in range(200):
        pairs = {(o.colour, o.shape) for o in shapes.sample_scene(i, "test_novel", SEED).objects}
        assert pairs & held
        seen |= pairs & held
    assert seen == held


def test_vocabulary_sizes():
    assert len(shapes.COLOURS) >= 6 and len(shapes.SHAPES) >= 5 and len(shapes.SIZES) == 2
    assert len(shapes.BACKGROUNDS) >= 3
    assert len(sc.SINGLE_TEMPLATES) >= 10 and len(sc.PAIR_TEMPLATES) >= 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        shapes.render_example(0, "valid", SEED)
    with pytest.raises(ValueError, match="seed"):
        shapes.sample_scene(0, "train", -1)


def test_workers_do_not_change_records():
    one = list(shapes.generate_records("test", 70, SEED, 32, num_workers=1))
    two = list(shapes.generate_records("test", 70, SEED, 32, num_workers=2))
    assert [k for k, _ in one] == [k for k, _ in two]
    assert all(a["image"] == b["image"] for (_, a), (_, b) in zip(one, two, strict=True))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("shapes_tfds")
    builder = shapes.Shapes(
        data_dir=str(data_dir), num_train=16, num_test=4, num_test_novel=4, image_size=32,
        seed=SEED, num_workers=1,
    )  # fmt: skip
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return builder


def test_tfds_build_matches_the_python_api(built):
    info = built.info
    assert {k: v.num_examples for k, v in info.splits.items()} == dict(
        train=16, test=4, test_novel=4
    )
    assert info.metadata["settings"]["seed"] == SEED
    ds = built.as_dataset(split="test_novel")
    rows = list(ds.as_numpy_iterator())
    assert len(rows) == 4
    for row in rows:
        key = row["key"].decode()
        index = int(key.split("_")[-1])
        ex = shapes.render_example(index, "test_novel", SEED, 32)
        np.testing.assert_array_equal(row["image"], ex["image"])  # PNG is lossless
        assert [c.decode() for c in row["captions"]] == ex["captions"]
        np.testing.assert_array_equal(row["attributes"], ex["attributes"])
        assert row["class_id"] == ex["class_id"]
    assert sorted(len(v) for v in built.captions.values()) == [4, 4, 16]


def test_canonical_attributes_matches_swap_objects():
    rows = np.stack(
        [
            single(1, 2, 0, 4),
            pair(0, 1, 0, 2, 3, 1, 0),  # left of: already canonical
            pair(0, 1, 0, 2, 3, 1, 1),  # right of -> swapped, left of
            pair(4, 5, 1, 6, 0, 0, 2),  # above: canonical
            pair(4, 5, 1, 6, 0, 0, 3),  # below -> swapped, above
        ]
    )
    canon = shapes.canonical_attributes(rows)
    np.testing.assert_array_equal(canon[[0, 1, 3]], rows[[0, 1, 3]])
    np.testing.assert_array_equal(canon[2], sc.swap_objects(rows[2]))
    np.testing.assert_array_equal(canon[4], sc.swap_objects(rows[4]))
    assert canon[2, F("relation")] == 0 and canon[4, F("relation")] == 2
    np.testing.assert_array_equal(shapes.canonical_attributes(canon), canon)  # idempotent
    np.testing.assert_array_equal(rows[2], pair(0, 1, 0, 2, 3, 1, 1))  # input not modified
    with pytest.raises(ValueError, match="attributes"):
        shapes.canonical_attributes(np.zeros((3, 4), np.int64))


@pytest.mark.parametrize("geometry", sorted(shapes.GEOMETRIES))
def test_geometries_change_only_sizes_and_positions(geometry):
    """Every geometry draws the same objects, colours, relations and captions for an index;
    objects never overlap (every shape fits in 1.14 x its radius) and their centres stay
    inside the image; the large geometry's objects are bigger than the small one's."""
    for split in shapes.SPLITS:
        for i in range(60):
            ex = shapes.render_example(i, split, SEED, 32, geometry)
            ref = shapes.render_example(i, split, SEED, 32, "small")
            assert ex["captions"] == ref["captions"]
            assert (ex["attributes"] == ref["attributes"]).all()
            objs = ex["objects"]
            for o, r in zip(objs, ref["objects"], strict=True):
                assert o["radius_px"] >= r["radius_px"]
                assert all(o["radius_px"] < c < 32 - o["radius_px"] for c in o["centre_px"])
            if len(objs) == 2:
                gap = np.hypot(*np.subtract(objs[0]["centre_px"], objs[1]["centre_px"]))
                assert gap > 1.14 * (objs[0]["radius_px"] + objs[1]["radius_px"])
    large, small = shapes.GEOMETRIES["large"], shapes.GEOMETRIES["small"]
    assert min(large.radius) > min(small.radius) and max(large.radius) > max(small.radius)
    with pytest.raises(ValueError, match="unknown geometry 'huge'"):
        shapes.sample_scene(0, "train", SEED, "huge")
