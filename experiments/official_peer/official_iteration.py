"""Time the official PyTorch MirrorGAN training iteration (github qiaott/MirrorGAN) at a batch size.

    python experiments/official_peer/official_iteration.py --official_dir=.official \
        --batch=12 [--steps=5] [--warmup=2] [--device=auto|cpu|cuda] [--n_words=5450]

Prints one JSON line: the median and minimum wall time of an iteration, images/s, peak memory
(`torch.cuda.max_memory_allocated` on a GPU, the process's peak RSS on the CPU), or
`"oom": true` when the batch does not fit. `side_by_side.py` runs it beside the port's benchmark.

What runs is the official `Trainer.train()` itself (trainer.py), built at `cfg/train_bird.yml`
over `cfg/config.py` (the CUB config: 3 stages 64/128/256, GF_DIM 32, DF_DIM 64, Z_DIM 100,
CONDITION_DIM 100, EMBEDDING_DIM 256, WORDS_NUM 18, CAP embed 256 / hidden 256 (LSTM 512),
ResNet-152 STREAM CNN), fed by a data loader that yields random batches of the official shapes.
The loader marks the iterations: each fetch of a batch waits for the device and takes the time,
so one interval is one whole official iteration (prepare_data, STEM, G, the three D updates, the
G loss with STREAM, the G update and the EMA); after `warmup + steps` iterations the loader ends
the run. Config values set on top of the yml (no code change): TRAIN.BATCH_SIZE, CUDA (the
device), GPU_ID 0.

Inputs: captions drawn exactly as `mirrorgan_jax.tools.benchmark.random_batch` draws them (the same
lengths, so the same packed sequences and the same attention width T), images U(-1, 1) at 64, 128
and 256 px placed on the device before timing (the port's benchmark also times a batch already
on the device); the official `prepare_data` still sorts the batch and moves the captions.

Weights: random, with the official initialisation. `build_models` applies `weights_init` to G and
the Ds; the text encoder keeps its own U(-0.1, 0.1) embedding init; the ResNet-152 and
Inception-v3 keep torchvision's default init. Nothing is downloaded or read from disk.

The Inception-v3 DAMSM image encoder (`CNN_ENCODER`) is built and moved to the device, as the
official trainer does, although the iteration never calls it (only `save_img_results`, every
1000 iterations): its ~27M frozen weights (~0.1 GB) count in the official peak memory.

Patches (applied at run time; the checkout stays as fetched; each text replacement must match
the expected number of times, else the run stops and names the file):
  Missing modules, stubbed only when not installed (none of them is used by the iteration):
  - `easydict` (cfg/config.py): a dict with attribute access that converts nested dicts, which
    is what `cfg` and `cfg_from_file` use of it.
  - `six` (trainer.py `from six.moves import range`): `six.moves.range` is Python 3's range.
  - `nltk`, `pandas` (datasets.py, imported for the caption files; only `prepare_data` is used).
  - `skimage` (miscc/utils.py, used to draw attention images only).
  Python 3 / current PyTorch:
  - cfg/config.py `_merge_a_into_b`: `a.iteritems()` -> `a.items()`, `b.has_key(k)` -> `k in b`
    (Python 2 dict methods); `cfg_from_file`: `yaml.load(f)` -> `yaml.safe_load(f)` (PyYAML >= 6
    requires a Loader).
  - trainer.py and miscc/losses.py: `x.data[0]` -> `x.item()` for the logged losses (indexing a
    0-dim tensor is an error since PyTorch 0.4; `.item()` reads the same number).
  - model.py `CAPTION_RNN.forward` packs with `cap_lens` on the device: `pack_padded_sequence`
    now requires CPU lengths, so the model module's `pack_padded_sequence` gets the lengths
    moved to the CPU first (a no-op on the CPU).
  CPU / GPU placement:
  - trainer.py `Trainer.__init__`: `torch.cuda.set_device(cfg.GPU_ID)` only when cfg.CUDA.
  - miscc/losses.py `generator_loss`: `captions.cuda()` (a no-op statement) and the caption
    targets' `.cuda()` -> `.to(<the fake images' device>)`, which is the same on a GPU and lets
    the CPU run.
  No dataset, no pretrained files, no network:
  - `torch.load` (the STEM, STREAM and image-encoder checkpoints in `build_models`) and
    model.py's `model_zoo.load_url` (the Inception-v3 ImageNet weights) return a marker that
    `nn.Module.load_state_dict` takes as "keep the random weights".
  - model.py's `models.resnet152(pretrained=True)` builds `torchvision.models.resnet152(
    weights=None)` (same network, random weights, no download).
  - `Trainer.save_model` never runs: the loader ends the run inside the first epoch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import types

import numpy as np

# The CUB vocabulary size (the official captions pickle for birds has 5450 words).
CUB_N_WORDS = 5450

# (file in the checkout, old text, new text, expected count): the source patches listed in the
# module docstring. A count that does not match means a different checkout: the run stops.
SOURCE_PATCHES = {
    "cfg/config.py": [
        ("a.iteritems()", "a.items()", 1),
        ("not b.has_key(k)", "k not in b", 1),
        ("yaml.load(f)", "yaml.safe_load(f)", 1),
    ],
    "miscc/losses.py": [
        ("g_loss.data[0]", "g_loss.item()", 1),
        ("            captions.cuda()\n", "            captions.to(fake_imgs[i].device)\n", 1),
        (
            "batch_first=True)[0].cuda()",
            "batch_first=True)[0].to(fake_imgs[i].device)",
            1,
        ),
    ],
    "trainer.py": [
        ("torch.cuda.set_device(cfg.GPU_ID)", "cfg.CUDA and torch.cuda.set_device(cfg.GPU_ID)", 1),
        ("errD.data[0]", "errD.item()", 1),
        ("kl_loss.data[0]", "kl_loss.item()", 1),
        ("errD_total.data[0], errG_total.data[0]", "errD_total.item(), errG_total.item()", 1),
    ],
}


def random_captions(batch: int, words_num: int, n_words: int, seed: int = 0):
    """(tokens [B, T] int64 with 0 at pads, lengths [B] int64, descending): the draw that
    `mirrorgan_jax.tools.benchmark.random_batch` makes with the same seed, so both sides pack
    the same caption lengths."""
    rs = np.random.RandomState(seed)
    lengths = np.sort(rs.randint(max(2, words_num // 2), words_num + 1, batch))[::-1]
    tokens = rs.randint(1, n_words, (batch, words_num))
    tokens[np.arange(words_num)[None] >= lengths[:, None]] = 0
    return tokens.astype(np.int64), lengths.astype(np.int64)


class _IterationsDone(Exception):
    """Raised by the timing loader once the requested iterations have run."""


class _TimingLoader:
    """The official data loader's interface (`len`, `iter`, `.next()`), yielding one fixed
    random batch and taking the time at each fetch, after waiting for the device."""

    def __init__(self, batch_data, iterations: int, sync):
        self.batch_data, self.iterations, self.sync = batch_data, iterations, sync
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []  # process CPU time, all threads

    def __len__(self) -> int:
        return self.iterations + 1

    def __iter__(self):
        return self

    def next(self):
        self.sync()
        self.stamps.append(time.perf_counter())
        self.cpu_stamps.append(time.process_time())
        if len(self.stamps) > self.iterations:
            raise _IterationsDone
        imgs, captions, lengths, class_ids, keys = self.batch_data
        # prepare_data reorders the image list in place: hand it a fresh list every time
        return [list(imgs), captions, lengths, class_ids, keys]

    __next__ = next


class _AttrDict(dict):
    """Stand-in for `easydict.EasyDict`: nested dicts become attribute dicts."""

    def __init__(self, d=None, **kwargs):
        super().__init__()
        for k, v in dict(d or {}, **kwargs).items():
            self[k] = _AttrDict(v) if isinstance(v, dict) and not isinstance(v, _AttrDict) else v

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def _stub_missing_modules() -> list[str]:
    """Stand-ins for the official imports that the iteration does not need, only where the real
    package is not installed. Returns the names stubbed."""

    def unused(name):
        def fail(*_a, **_k):
            raise RuntimeError(f"{name} is a stand-in: the timed iteration should not use it")

        return fail

    stubbed = []

    def missing(name):
        try:
            __import__(name)
            return False
        except ImportError:
            stubbed.append(name)
            return True

    if missing("easydict"):
        sys.modules["easydict"] = types.SimpleNamespace(EasyDict=_AttrDict)
    if missing("six"):
        six = types.ModuleType("six")
        six.moves = types.ModuleType("six.moves")
        six.moves.range = range
        sys.modules["six"], sys.modules["six.moves"] = six, six.moves
    if missing("nltk"):
        nltk = types.ModuleType("nltk")
        nltk.tokenize = types.ModuleType("nltk.tokenize")
        nltk.tokenize.RegexpTokenizer = unused("nltk.tokenize.RegexpTokenizer")
        sys.modules["nltk"], sys.modules["nltk.tokenize"] = nltk, nltk.tokenize
    if missing("pandas"):
        sys.modules["pandas"] = types.ModuleType("pandas")
    if missing("skimage"):
        skimage = types.ModuleType("skimage")
        skimage.transform = types.ModuleType("skimage.transform")
        skimage.transform.pyramid_expand = unused("skimage.transform.pyramid_expand")
        sys.modules["skimage"], sys.modules["skimage.transform"] = skimage, skimage.transform
    return stubbed


def _load_patched(official_dir: str, name: str, relpath: str):
    """Import official module `name` from `relpath` with SOURCE_PATCHES[relpath] applied to its
    text (the file on disk is not changed; tracebacks still name it)."""
    path = os.path.join(official_dir, relpath)
    with open(path) as f:
        src = f.read()
    for old, new, count in SOURCE_PATCHES[relpath]:
        found = src.count(old)
        if found != count:
            raise RuntimeError(
                f"{path}: expected {count} occurrence(s) of {old!r}, found {found}; "
                "is this checkout qiaott/MirrorGAN at commit deb220f?"
            )
        src = src.replace(old, new)
    if "." in name:
        importlib.import_module(name.rsplit(".", 1)[0])  # the official package first
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    if "." in name:
        parent, child = name.rsplit(".", 1)
        setattr(sys.modules[parent], child, module)
    exec(compile(src, path, "exec"), module.__dict__)
    return module


def load_official(official_dir: str, batch: int, cuda: bool):
    """The official modules, patched as the module docstring lists, with `cfg` set to
    cfg/train_bird.yml plus batch size and device. Returns (cfg, trainer module)."""
    import torch
    import torchvision
    from torch.nn.utils import rnn as rnn_utils

    official_dir = os.path.abspath(official_dir)
    if not os.path.isfile(os.path.join(official_dir, "trainer.py")):
        raise SystemExit(
            f"--official_dir={official_dir}: no trainer.py there; expected a checkout of "
            "github qiaott/MirrorGAN (see experiments/official_peer/README.md)"
        )
    sys.path.insert(0, official_dir)
    _stub_missing_modules()

    keep_random = object()  # what the patched loaders return instead of a state dict
    original_load_state_dict = torch.nn.Module.load_state_dict

    def load_state_dict(self, state_dict, *args, **kwargs):
        if state_dict is keep_random:
            return None
        return original_load_state_dict(self, state_dict, *args, **kwargs)

    torch.nn.Module.load_state_dict = load_state_dict
    torch.load = lambda *args, **kwargs: keep_random

    config_module = _load_patched(official_dir, "cfg.config", "cfg/config.py")
    cfg = config_module.cfg
    config_module.cfg_from_file(os.path.join(official_dir, "cfg", "train_bird.yml"))
    cfg.TRAIN.BATCH_SIZE = batch
    cfg.CUDA = cuda
    cfg.GPU_ID = 0

    import model  # the official model.py

    def resnet152(pretrained=False, **kwargs):
        del pretrained  # same network, random weights: no download
        return torchvision.models.resnet152(weights=None, **kwargs)

    model.models = types.SimpleNamespace(
        resnet152=resnet152, inception_v3=torchvision.models.inception_v3
    )
    model.model_zoo = types.SimpleNamespace(load_url=lambda *args, **kwargs: keep_random)

    def pack_padded_sequence(seq, lengths, *args, **kwargs):
        if torch.is_tensor(lengths):
            lengths = lengths.cpu()
        return rnn_utils.pack_padded_sequence(seq, lengths, *args, **kwargs)

    model.pack_padded_sequence = pack_padded_sequence
    _load_patched(official_dir, "miscc.losses", "miscc/losses.py")
    trainer = _load_patched(official_dir, "trainer", "trainer.py")
    return cfg, trainer


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def measure(
    official_dir: str,
    batch: int,
    steps: int,
    warmup: int,
    device: str,
    n_words: int,
    seed: int = 0,
) -> dict:
    """Build the official trainer at `batch` and time `steps` iterations after `warmup`."""
    import torch

    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device=cuda: this torch sees no CUDA device")
    t_start = time.perf_counter()
    cfg, trainer = load_official(official_dir, batch, cuda)
    torch.manual_seed(seed)
    dev = torch.device("cuda" if cuda else "cpu")
    words_num = cfg.TEXT.WORDS_NUM
    tokens, lengths = random_captions(batch, words_num, n_words, seed)
    sizes = [cfg.TREE.BASE_SIZE * 2**i for i in range(cfg.TREE.BRANCH_NUM)]
    gen = torch.Generator(device=dev).manual_seed(seed)
    images = [
        torch.rand(batch, 3, s, s, generator=gen, device=dev).mul_(2).sub_(1) for s in sizes
    ]  # [B, 3, s, s] in [-1, 1]
    batch_data = (
        images,
        torch.from_numpy(tokens)[:, :, None],  # [B, T, 1], as the official loader collates
        torch.from_numpy(lengths),
        torch.arange(batch),
        [f"random_{i}" for i in range(batch)],
    )
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    loader = _TimingLoader(batch_data, warmup + steps, sync)
    record = {
        "side": "official",
        "batch": batch,
        "dtype": "float32",
        "device_kind": torch.cuda.get_device_name(0) if cuda else "cpu",
        "image_sizes": sizes,
        "words_num": words_num,
        "n_words": n_words,
        "torch": torch.__version__,
    }
    if cuda:
        record["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        record["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        record["device_total_gb"] = torch.cuda.mem_get_info()[1] / 1e9
    with tempfile.TemporaryDirectory() as out_dir:
        official = trainer.Trainer(out_dir, loader, n_words, ixtoword={})
        try:
            official.train()
            raise RuntimeError("the official train() returned before the loader ended it")
        except _IterationsDone:
            pass
        except torch.OutOfMemoryError as e:
            record.update(oom=True, error=str(e).splitlines()[0])
            return record
    intervals = np.diff(loader.stamps)[warmup:]  # one interval = one iteration
    med = float(statistics.median(intervals))
    cpu_intervals = np.diff(loader.cpu_stamps)[warmup:]
    record.update(
        oom=False,
        setup_s=loader.stamps[0] - t_start,
        steps=len(intervals),
        warmup=warmup,
        median_s=med,
        min_s=float(min(intervals)),
        images_per_s=batch / med,
        # on a shared CPU, wall time depends on the other processes; CPU time less so
        median_process_cpu_s=float(statistics.median(cpu_intervals)),
        peak_rss_gb=_peak_rss_gb(),
    )
    if cuda:
        record["peak_device_gb"] = torch.cuda.max_memory_allocated() / 1e9
        record["peak_device_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official_dir", required=True, help="checkout of qiaott/MirrorGAN")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--n_words", type=int, default=CUB_N_WORDS)
    args = parser.parse_args(argv)
    if args.batch < 2 or args.steps < 1 or args.warmup < 0:
        parser.error(
            f"--batch={args.batch} --steps={args.steps} --warmup={args.warmup}: expected a batch "
            ">= 2 (the official 'wrong' pairs use B-1), steps >= 1 and warmup >= 0"
        )
    record = measure(
        args.official_dir, args.batch, args.steps, args.warmup, args.device, args.n_words
    )
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
