"""Defaults shared by every experiment config. Each experiment file overrides what differs.

Sections: `data` (data set, tokenizer, input pipeline), `model` (widths and switches of every
network), `damsm` / `stream` / `train` (the three training stages), `eval`, `sample`.
Read only by `main.py` and the stage drivers; modules receive plain typed fields.
"""

import ml_collections
from ml_collections import config_dict


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mixed_precision = "float32"  # or "bfloat16": activations/convs in bf16, params/losses f32
    # JAX's persistent compilation cache: a folder, "off", or "" for $JAX_COMPILATION_CACHE_DIR
    # when set, else <workdir>/jax_cache. A restart then loads what an earlier run compiled.
    c.compilation_cache_dir = ""

    # ---- data ----
    d = c.data = ml_collections.ConfigDict()
    d.name = "shapes"  # shapes | cub | coco
    d.manual_dir = ""  # folder the user supplies (cub/coco); unused by shapes
    d.data_dir = ""  # where prepared tfds shards live; "" -> <workdir>/data
    d.overwrite = False  # --mode=prepare rebuilds an existing prepared set only when True
    d.skip_corrupt = False  # skip (and count) unreadable images instead of failing
    d.allow_fewer_captions = False  # accept caption files with < captions_per_image lines
    d.captions_per_image = 10
    d.words_num = 18  # T: captions are zero-padded / cut to this many tokens
    d.long_caption = "subset"  # "subset" (official random ordered subset) | "truncate"
    d.tokenizer = "sentencepiece"  # "sentencepiece" | "attngan"
    d.vocab_size = 0  # sentencepiece vocabulary size (0 -> sized from the corpus)
    d.shuffle_buffer = 2048
    d.prefetch = 2
    d.random_crop = True  # official 76/64 rescale + random crop + flip (training batches only)
    d.shapes = ml_collections.ConfigDict(
        dict(num_train=20000, num_test=2000, num_test_novel=1000, image_size=64, seed=1234)
    )
    # Object sizes and positions (data/shapes.py GEOMETRIES): "small", or "large" (objects
    # about 1.35x wider, used by configs/shapes.py:shape_aware).
    d.shapes.geometry = "small"

    # ---- model ----
    m = c.model = ml_collections.ConfigDict()
    m.n_words = 0  # 0 -> taken from the prepared tokenizer; set for describe/import
    m.word_embedding_dim = 300  # RNN_ENCODER ninput (constructor default)
    m.text_embedding_dim = 256  # TEXT.EMBEDDING_DIM (nef)
    m.text_dropout = 0.5
    m.gf_dim = 32
    m.df_dim = 64
    m.z_dim = 100
    m.condition_dim = 100
    # Scale of the CA's noise (c = mu + scale * eps * sigma): 1 is the official sampling; 0 makes
    # c = mu, so the first stage sees the whole sentence code (not in the official code).
    m.ca_noise_scale = 1.0
    m.discriminator_batchnorm = True  # False: no BatchNorm in the Ds (not in the official code)
    m.discriminator_spectral_norm = False  # True: spectrally normalised D convs (not official)
    m.r_num = 2
    m.branch_num = 3  # stages: 64 / 128 / 256
    m.base_size = 64
    m.word_attention_mask = "official"  # "official" (its quirk) | "per_sample"
    m.sentence_attention_softmax = "channel"  # "channel" (official) | "spatial"
    m.sentence_attention = True  # False: the ablation without sentence-level attention
    m.stream_backbone = "resnet152"  # resnet152 | resnet50 | resnet18 | resnet_tiny
    m.stream_embed_size = 256  # CAP.embed_size
    m.stream_hidden_size = 256  # CAP.hidden_size (the LSTM uses 2x)
    m.stream_image_size = 224
    m.damsm_backbone = "inception_v3"  # inception_v3 | tiny
    m.damsm_image_size = 299

    # ---- DAMSM pretraining (taoxugit/AttnGAN code/pretrain_DAMSM.py) ----
    dm = c.damsm = ml_collections.ConfigDict()
    dm.batch_size = 48
    dm.epochs = 600
    dm.steps = 0  # >0 overrides epochs
    dm.lr = 0.002
    dm.lr_decay = 0.98  # per epoch while lr > lr_min
    dm.lr_min = 0.0002
    dm.grad_clip = 0.25
    # torchvision `inception_v3` ImageNet weights (.pth / .npz): the image encoder's trunk starts
    # from them, as the official CNN_ENCODER does.
    dm.trunk_weights = ""
    # True: the image encoder's trunk is never updated (official, with ImageNet weights). Unset
    # (None): True exactly when `trunk_weights` is given.
    dm.freeze_trunk = config_dict.placeholder(bool)
    dm.gamma1 = 4.0
    dm.gamma2 = 5.0
    dm.gamma3 = 10.0
    dm.checkpoint_every = 1000
    dm.log_every = 100

    # ---- STREAM pretraining (docs/official-differences.md) ----
    st = c.stream = ml_collections.ConfigDict()
    st.batch_size = 128
    st.epochs = 5
    st.steps = 0
    st.lr = 1e-3
    st.freeze_backbone = True  # frozen when ImageNet weights are supplied
    st.backbone_weights = ""  # ImageNet ResNet weights (.npz / .pth)
    st.checkpoint_every = 1000
    st.log_every = 100

    # ---- backbone pretraining on rendered attributes (`shapes` only; train/backbone.py) ----
    bp = c.backbone_pretrain = ml_collections.ConfigDict()
    bp.steps = 0  # >0: the DAMSM trunk and the STREAM backbone start from attribute classifiers
    bp.num_images = 5000  # the first N `train` scenes, rendered in memory
    bp.num_test_images = 500  # `test` scenes the report's accuracy is measured on
    bp.batch_size = 32
    bp.lr = 2e-3

    # ---- MirrorGAN training (qiaott/MirrorGAN cfg/train_bird.yml) ----
    t = c.train = ml_collections.ConfigDict()
    t.batch_size = 12
    t.epochs = 600
    t.steps = 0
    t.lr_g = 2e-4
    t.lr_d = 2e-4
    t.beta1 = 0.5
    t.beta2 = 0.999
    t.ema_decay = 0.999
    t.ema_warmup = False  # True: decay min(ema_decay, (1+t)/(10+t)) for short runs
    t.lambda1 = 10.0  # STREAM weight (TRAIN.SMOOTH.LAMBDA1)
    t.r1_gamma = 0.0  # >0: R1 penalty in each D loss (not in the official code)
    # Options from later text-to-image GANs, none in the official code (train/gan.py):
    t.adversarial_loss = "bce"  # "bce" (official) | "hinge"
    t.ma_gp_weight = 0.0  # >0: matching-aware gradient penalty on real image-text pairs
    t.diffaugment = ""  # DiffAugment policy of the Ds' inputs, e.g. "translation,cutout"
    t.checkpoint_every = 2000
    t.keep_checkpoints = 3
    t.log_every = 100
    t.image_every = 1000

    # ---- evaluation / sampling ----
    e = c.eval = ml_collections.ConfigDict()
    e.num_images = 30000
    e.split = "test"
    e.batch_size = 50
    e.words_num = 25
    e.r_precision_candidates = 100
    e.r_precision_folds = 10
    e.inception_weights = ""
    e.classifier_steps = 1500  # shapes attribute classifier (trained on real renders)
    e.classifier_train_images = 10000
    e.classifier_test_images = 2000

    # ---- released PyTorch weights for --mode=import_torch (.pth, or .npz with official keys) ----
    w = c.weights = ml_collections.ConfigDict()
    w.text_encoder = ""  # AttnGAN DAMSM text_encoder*.pth (RNN_ENCODER)
    w.image_encoder = ""  # AttnGAN DAMSM image_encoder*.pth (CNN_ENCODER)
    w.generator = ""  # MirrorGAN/AttnGAN netG*.pth
    w.discriminators = ""  # comma-separated netD0,netD1,netD2 files, smallest stage first
    w.caption_cnn = ""  # STREAM encoder
    w.caption_rnn = ""  # STREAM decoder

    s = c.sample = ml_collections.ConfigDict()
    s.num_samples = 1
    s.batch_size = 16
    return c
