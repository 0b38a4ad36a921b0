"""COCO-2014: AttnGAN's COCO dimensions (GF 48 / DF 96 / R 3,
`taoxugit/AttnGAN code/cfg/coco_attn2.yml`; MirrorGAN released no COCO config).

  python -m mirrorgan_jax.main --config=configs/coco.py --workdir=runs/coco \
      --config.data.manual_dir=/path/to/coco
"""

from configs import common


def get_config(arg: str = ""):
    c = common.get_base_config()
    c.data.name = "coco"
    c.data.tokenizer = "attngan"
    c.data.captions_per_image = 5
    c.data.words_num = 12
    c.model.n_words = 27297
    c.model.gf_dim, c.model.df_dim, c.model.r_num = 48, 96, 3
    c.train.batch_size = 14
    c.train.epochs = 120
    c.damsm.epochs = 600
    c.eval.words_num = 20
    return c
