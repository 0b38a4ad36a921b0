"""CUB-200-2011 with the Reed captions: the official MirrorGAN configuration
(`qiaott/MirrorGAN cfg/train_bird.yml`).

  python -m mirrorgan_jax.main --config=configs/cub.py --workdir=runs/cub \
      --config.data.manual_dir=/path/to/birds
"""

from configs import common


def get_config(arg: str = ""):
    c = common.get_base_config()
    c.data.name = "cub"
    c.data.tokenizer = "attngan"
    c.data.captions_per_image = 10
    c.data.words_num = 18
    c.model.n_words = 5450
    c.model.gf_dim, c.model.df_dim, c.model.r_num = 32, 64, 2
    c.train.batch_size = 12
    c.train.epochs = 600
    c.train.lambda1 = 10.0
    c.eval.words_num = 25
    return c
